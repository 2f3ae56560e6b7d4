"""`history pull` on a fake Salesforce org and a fake HubSpot portal that keep history as the
real ones do: each opportunity rebuilt as it was at every instant, in the fewest query calls
(one SOQL query per history object and one for the records, 2,000 rows a page); fields with no
history reported as approximated; a second pull adds nothing."""

from __future__ import annotations

import bisect
import datetime as dt
import math
import random
from collections import Counter

import pytest
import responses

from connector.app import build_app
from connector.history.pull import pull
from connector.history.snapshots import text
from connector.settings import Settings
from connector.state import utc_text
from tests.fake_history import HistoryOrg, HistoryPortal
from tests.fake_hubspot import TOKEN
from tests.fake_salesforce import INSTANCE, Clock

OPEN = ["Prospecting", "Qualification", "Needs Analysis", "Proposal/Price Quote"]
TRACKED = ("Proposal_Type__c", "Relationship_Level__c")
EDITED = ("StageName", "Amount", "Name", *TRACKED)


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def salesforce_app(tmp_path, org):
    settings = Settings(_env_file=None, salesforce_instance_url=INSTANCE,
                        salesforce_access_token="00Dxx!secret-session",
                        state_url=f"sqlite:///{tmp_path / 'state.db'}")
    return build_app(settings=settings, now=org.clock)


def by_record(store, id_field="Id"):
    found: dict[str, list[dict[str, str]]] = {}
    for row in store.read_snapshots():
        found.setdefault(row[id_field], []).append(row)
    return found


def at(snapshots, when):
    """The snapshot in force at `when`: the last one dated at or before it."""
    stamps = [s["as_of"] for s in snapshots]
    i = bisect.bisect_right(stamps, utc_text(when))
    return snapshots[i - 1] if i else None


def test_salesforce_history_rebuilds_every_opportunity_in_the_fewest_calls(tmp_path, rsps):
    org = HistoryOrg(rsps, Clock(), tracked=TRACKED)
    rng = random.Random(7)
    n = 2100
    truth: dict[str, list[tuple[dt.datetime, dict]]] = {}
    for i in range(n):
        rid = f"006{i:015d}"
        org.add(rid, StageName=rng.choice(OPEN), Amount=rng.randint(1, 500) * 100,
                Proposal_Type__c=rng.choice(["Firm", "Budgetary"]))
        truth[rid] = [(org.clock(), dict(org.records[rid]))]
    for _ in range(7500):
        rid = f"006{rng.randrange(n):015d}"
        field = rng.choice(EDITED)
        value = {"StageName": lambda: rng.choice(OPEN), "Amount": lambda: rng.randint(1, 500),
                 "Name": lambda: f"Deal {rng.random():.6f}",
                 "Proposal_Type__c": lambda: rng.choice(["Firm", "Budgetary", None]),
                 "Relationship_Level__c": lambda: rng.choice(["Known", "New", "Trusted"])}
        org.clock.advance(minutes=rng.randint(1, 600))
        org.edit(rid, **{field: value[field]()})
        truth[rid].append((org.clock(), dict(org.records[rid])))
    app = salesforce_app(tmp_path, org)
    org.clock.advance(seconds=1)
    report = pull(app.crm, app.loaded.rules, app.state, org.clock())

    field_rows = sum(r["Field"] in TRACKED for r in org.field_history)
    assert len(org.history) > 2000 and field_rows > 2000     # both queries page
    floor = math.ceil(n / 2000) + math.ceil(len(org.history) / 2000) + math.ceil(
        field_rows / 2000)
    assert report.api_calls == org.calls["query"] + org.calls["query_more"] == floor
    assert report.opportunities == n and report.orphans == 0

    snapshots = by_record(app.state)
    assert set(snapshots) == set(truth)
    checked = 0
    for rid, past in truth.items():
        final = past[-1][1]
        for when, record in past:
            for moment in (when, when + dt.timedelta(seconds=30)):
                got = at(snapshots[rid], moment)
                assert got is not None
                for name in ("StageName", "Amount", *TRACKED):
                    assert got[name] == text(record[name]), (rid, moment, name)
                assert got["Name"] == final["Name"]  # no history: the value read now
                checked += 1
    assert checked > 2 * n

    changed = {rid: {f for _, r in past for f in TRACKED if r[f] != past[0][1][f]}
               for rid, past in truth.items()}
    expected = Counter({f: sum(f not in c for c in changed.values()) for f in TRACKED})
    for name in ("Name", "Owner.Name", "Owner.Email", "Account.Name", "Weighted_Amount__c",
                 "Probability_Rule__c"):
        expected[name] = n
    assert report.approximated == expected
    assert {"StageName", "Proposal_Type__c", "Relationship_Level__c"} <= report.read_by_rules

    assert pull(app.crm, app.loaded.rules, app.state, org.clock()).snapshots == 0
    assert sum(map(len, by_record(app.state).values())) == report.snapshots


def test_since_reads_only_the_later_history(tmp_path, rsps):
    org = HistoryOrg(rsps, Clock(), tracked=TRACKED)
    for i in range(30):
        org.add(f"006{i:015d}", StageName="Prospecting")
    org.clock.advance(days=10)
    middle = org.clock()
    for i in range(0, 30, 3):
        org.edit(f"006{i:015d}", StageName="Qualification", Proposal_Type__c="Firm")
    app = salesforce_app(tmp_path, org)
    report = pull(app.crm, app.loaded.rules, app.state, org.clock(), since=middle)
    # 10 OpportunityHistory rows (stage, amount, probability, close date each) + 10 field rows.
    assert report.changes == 10 * 4 + 10
    snapshots = by_record(app.state)
    edited = snapshots["006000000000000000"]
    assert [s["StageName"] for s in edited] == ["Qualification"]  # nothing known before
    assert edited[0]["as_of"] > utc_text(middle)


def test_a_closing_snapshot_is_dated_on_the_close_date(tmp_path, rsps):
    org = HistoryOrg(rsps, Clock(), tracked=TRACKED)
    org.add("006A", StageName="Negotiation/Review", CloseDate="2026-12-31")
    org.clock.advance(days=2)
    org.edit("006A", StageName="Closed Won", CloseDate="2026-11-20")
    app = salesforce_app(tmp_path, org)
    pull(app.crm, app.loaded.rules, app.state, org.clock())
    # Closed on a date before the deal was last seen open: its closing snapshot sorts first.
    [won, opened] = by_record(app.state)["006A"]
    assert won["as_of"] == "2026-11-20T00:00:00.000000+00:00" < opened["as_of"]
    assert (won["StageName"], won["CloseDate"]) == ("Closed Won", "2026-11-20")
    assert (opened["StageName"], opened["CloseDate"]) == ("Negotiation/Review", "2026-12-31")


def test_hubspot_properties_with_history_rebuild_each_deal(tmp_path, rsps):
    portal = HistoryPortal(rsps, Clock())
    rng = random.Random(3)
    stages = ["appointmentscheduled", "qualifiedtobuy", "presentationscheduled"]
    truth: dict[str, list[tuple[dt.datetime, dict]]] = {}
    for i in range(120):
        deal = portal.add(str(5000 + i), dealstage=rng.choice(stages),
                          amount=str(rng.randint(1, 90) * 1000), proposal_type="Firm")
        truth[deal["hs_object_id"]] = [(portal.clock(), dict(deal))]
    for _ in range(400):
        did = str(5000 + rng.randrange(120))
        portal.clock.advance(hours=rng.randint(1, 48))
        portal.edit(did, **rng.choice([{"dealstage": rng.choice(stages)},
                                       {"amount": str(rng.randint(1, 90) * 1000)},
                                       {"relationship_level": rng.choice(["Known", "New"])}]))
        truth[did].append((portal.clock(), dict(portal.deals[did])))
    settings = Settings(_env_file=None, crm="hubspot", hubspot_access_token=TOKEN,
                        state_url=f"sqlite:///{tmp_path / 'state.db'}")
    app = build_app(settings=settings, now=portal.clock)
    crm = app.crm
    label = {s: crm.stage_label(s) for s in stages}
    report = pull(crm, app.loaded.rules, app.state, portal.clock())
    assert portal.history_reads == math.ceil(120 / 50)
    snapshots = by_record(app.state, "hs_object_id")
    for did, past in truth.items():
        for when, deal in past:
            got = at(snapshots[did], when)
            assert got is not None
            assert got["dealstage"] == label[deal["dealstage"]]
            assert got["amount"] == deal["amount"]
            assert got["relationship_level"] == (deal["relationship_level"] or "")
    assert report.approximated["hubspot_owner_id.name"] == 120
    assert "dealstage" not in report.approximated and "amount" not in report.approximated


def test_the_pull_command_says_what_it_read_and_what_is_approximated(tmp_path, rsps,
                                                                     monkeypatch, capsys):
    from connector.cli import main

    org = HistoryOrg(rsps, Clock(), tracked=TRACKED)
    for i in range(5):
        org.add(f"006{i:015d}", StageName="Prospecting")
    org.clock.advance(hours=1)
    org.edit("006000000000000000", Proposal_Type__c="Firm")
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", INSTANCE)
    monkeypatch.setenv("SALESFORCE_ACCESS_TOKEN", "00Dxx!secret-session")
    monkeypatch.setenv("STATE_URL", f"sqlite:///{tmp_path / 'state.db'}")
    assert main(["history", "pull", "--since", "2026-01-01"]) == 0
    out = capsys.readouterr().out
    assert "opportunities 5, history values 21, snapshots added 6; API calls 3" in out
    assert "Proposal_Type__c: 4 of 5 opportunities (read by the rules)" in out
    assert "Relationship_Level__c: 5 of 5 opportunities (read by the rules)" in out
    assert "Owner.Name: 5 of 5 opportunities\n" in out
    assert "secret" not in out
    assert main(["history", "pull", "--since", "yesterday"]) == 2
