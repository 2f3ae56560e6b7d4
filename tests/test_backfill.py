"""Turning rules on never mails the past (SPEC 2.2): the first sync of a deployment records what
is already true and fires nothing, even when it is interrupted and resumed; after it, a change
fires as usual, and so does a record seen for the first time. `sync --fire-backfill` opts in."""

from __future__ import annotations

import pytest

from connector.cli import main
from tests.fake_salesforce import INSTANCE
from tests.smtp_server import smtp  # noqa: F401 - the fixture
from tests.test_actions import HOOK, world  # noqa: F401 - the fixture
from tests.test_sync import fill, quick_app

LARGE = "006A00000000000001"
WON_IN_JUNE = "006A00000000000002"


def seed(org):
    org.add(LARGE, StageName="Negotiation/Review", Proposal_Type__c="Firm",
            Relationship_Level__c="Strategic", Amount=150000, Name="Fleet renewal")
    org.add(WON_IN_JUNE, StageName="Closed Won", Amount=400000, CloseDate="2026-06-30",
            Name="Old win")


def test_the_first_sync_records_what_is_true_and_fires_nothing(world):  # noqa: F811
    app, org, inbox, pushes = world
    seed(org)
    org.clock.advance(seconds=1)
    first = app.pipeline.poll()
    assert first.backfill and first.actions == 0 and first.backfilled >= 2
    assert app.pipeline.drain().done == 0
    assert app.state.items() == [] and inbox.messages == [] and pushes == []

    # The deal falls back and comes back: a change, which fires.
    for stage in ("Needs Analysis", "Negotiation/Review"):
        org.edit(LARGE, StageName=stage)
        org.clock.advance(seconds=1)
        report = app.pipeline.poll()
        assert not report.backfill
        app.pipeline.drain()
    assert [m["Subject"] for m in inbox.messages] == ["Approval needed: Fleet renewal (150000)"]
    assert len(pushes) == 1

    # A deal created after the first sync counts as false before: its true conditions fire.
    org.add("006A00000000000003", StageName="Negotiation/Review", Proposal_Type__c="Firm",
            Relationship_Level__c="Strategic", Amount=120000, Name="New fleet")
    org.clock.advance(seconds=1)
    assert app.pipeline.poll().actions == 2
    app.pipeline.drain()
    assert len(inbox.messages) == 2 and len(pushes) == 2


def test_fire_backfill_fires_what_is_true_once(world):  # noqa: F811
    app, org, inbox, _pushes = world
    seed(org)
    org.clock.advance(seconds=1)
    first = app.pipeline.poll(fire_backfill=True)
    assert first.backfill and first.actions >= 2 and first.backfilled == 0
    app.pipeline.drain()
    assert [m["Subject"] for m in inbox.messages] == ["Approval needed: Fleet renewal (150000)"]
    org.clock.advance(seconds=1)
    again = app.pipeline.poll(fire_backfill=True)  # only the first sync is a backfill
    assert not again.backfill and again.actions == 0


def test_a_dry_run_first_sync_does_not_end_the_backfill(world):  # noqa: F811
    app, org, _inbox, _pushes = world
    seed(org)
    org.clock.advance(seconds=1)
    dry = app.pipeline.poll(dry_run=True)
    assert dry.backfill and dry.actions == 0 and dry.backfilled >= 2
    org.clock.advance(seconds=1)
    real = app.pipeline.poll()
    assert real.backfill and real.actions == 0


def test_an_interrupted_backfill_is_resumed_as_a_backfill(tmp_path, org):
    fill(org, 2300, seed=3)                        # two pages of 2,000
    app = quick_app(tmp_path, org)
    org.fail_on["query_more"] = [(403, [{"errorCode": "REQUEST_LIMIT_EXCEEDED",
                                         "message": "TotalRequests Limit exceeded."}], {})] * 5
    org.clock.advance(seconds=1)
    first = app.pipeline.poll()
    assert first.stopped and first.read == 2000 and first.cursor is not None
    assert first.actions == 0 and first.backfilled > 0

    org.fail_on.clear()
    rerun = quick_app(tmp_path, org)               # a new process: the cursor is there now
    org.clock.advance(seconds=1)
    second = rerun.pipeline.poll()
    assert second.stopped is None and second.backfill
    assert second.read >= 300 and second.actions == 0 and second.backfilled > 0
    assert rerun.state.items() == []

    org.edit("006000000000000001", StageName="Closed Won", CloseDate="2026-11-20")
    org.clock.advance(seconds=1)
    third = rerun.pipeline.poll()                  # the backfill is over: a change fires
    assert not third.backfill and third.actions >= 1


def test_a_deployment_that_has_a_cursor_is_not_backfilled(tmp_path, org):
    """An upgrade: the cursor came from an earlier version, which had no backfill."""
    app = quick_app(tmp_path, org)
    app.state.set_cursor(app.pipeline.cursor_name, "2026-11-26T08:00:00+00:00")
    org.add(LARGE, StageName="Negotiation/Review", Proposal_Type__c="Firm",
            Relationship_Level__c="Strategic", Amount=150000)
    org.clock.advance(seconds=1)
    report = app.pipeline.poll()
    assert not report.backfill and report.actions == 2


@pytest.fixture
def org():
    import responses

    from tests.fake_salesforce import Clock, FakeOrg

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakeOrg(rsps, Clock())


@pytest.mark.parametrize("opt_in", [False, True])
def test_sync_says_it_backfilled_and_fire_backfill_opts_in(tmp_path, org, monkeypatch, capsys,
                                                           opt_in):
    seed(org)
    for name, value in {"SALESFORCE_INSTANCE_URL": INSTANCE,
                        "SALESFORCE_ACCESS_TOKEN": "00Dxx!session",
                        "STATE_URL": f"sqlite:///{tmp_path / 'state.db'}",
                        "MARKETING_WEBHOOK_URL": HOOK}.items():
        monkeypatch.setenv(name, value)
    code = main(["sync", "--dry-run", *(["--fire-backfill"] if opt_in else [])])
    out = capsys.readouterr().out
    if opt_in:
        assert "backfill" not in out and "actions queued 3" in out  # 2 + the old win's push
    else:
        assert "first sync, a backfill" in out and "actions queued 0" in out
    assert code == 0


def test_the_bundled_rules_never_mail_a_director_about_a_closed_deal():
    import csv
    import datetime as dt
    from pathlib import Path

    from connector.core.evaluate import Evaluator
    from connector.errors import RecordError
    from connector.files import load

    root = Path(__file__).resolve().parent.parent
    rules = load(root / "rules", root / "mappings").rules
    assert rules is not None
    evaluator = Evaluator(rules)
    mailed = {"open": 0, "closed": 0}
    with open(root / "examples" / "opportunities.csv", newline="") as f:
        for row in csv.DictReader(f):
            try:
                outcome = evaluator.evaluate(rules.mapping.read(row), dt.date(2026, 11, 26))
            except RecordError:
                continue
            if any(d.action == "notify-director" for d in outcome.due):
                mailed["closed" if outcome.won or outcome.lost else "open"] += 1
    assert mailed["closed"] == 0 and mailed["open"] > 0


def test_the_dry_run_report_says_a_first_sync_fires_nothing(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    report = tmp_path / "report.html"
    assert main(["simulate", str(root / "examples" / "opportunities.csv"), "--rules",
                 str(root / "rules"), "--mappings", str(root / "mappings"), "--report",
                 str(report), "--today", "2026-11-26"]) == 1  # the example's broken rows
    html = report.read_text()
    assert 'id="backfill"' in html and "fires nothing" in html
    assert "--fire-backfill" in html
