"""`sync` against a fake Salesforce org: only what changes is written, in the floor number of
calls; a second sync writes nothing; the connector's own echoes compute to no change; faults
park one record, stop cleanly, or are retried, and nothing is ever written twice."""

from __future__ import annotations

import math
import random

import pytest
import responses

from connector.app import build_app
from connector.settings import Settings
from tests.fake_salesforce import INSTANCE, Clock, FakeOrg

STAGES = ["Negotiation/Review", "Proposal/Price Quote", "Value Proposition", "Needs Analysis",
          "Qualification", "Prospecting", "Closed Won", "Closed Lost"]


@pytest.fixture
def org():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakeOrg(rsps, Clock())


def make_app(tmp_path, org):
    settings = Settings(_env_file=None, salesforce_instance_url=INSTANCE,
                        salesforce_access_token="00Dxx!secret-session",
                        state_url=f"sqlite:///{tmp_path / 'state.db'}")
    return build_app(settings=settings, now=org.clock)


def fill(org, n, seed=1):
    rng = random.Random(seed)
    for i in range(n):
        org.add(f"006{i:015d}", StageName=rng.choice(STAGES),
                Amount=rng.randint(1_000, 300_000),
                Proposal_Type__c=rng.choice(["Firm", "Budgetary", None]),
                Relationship_Level__c=rng.choice(["Strategic", "Trusted", "Known", "New"]),
                CloseDate=f"2027-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
                Probability=rng.choice([10, 20, 50, 90]))


def test_sync_writes_what_changes_in_the_floor_number_of_calls(tmp_path, org):
    fill(org, 2500)
    app = make_app(tmp_path, org)
    pipeline = app.pipeline  # describe: Opportunity, User, Account
    describe_calls = org.api_calls
    org.clock.advance(seconds=1)
    report = pipeline.poll()
    assert report.read == 2500 and report.failed == 0 and report.stopped is None
    written = sum(org.writes.values())
    assert report.written == written == len(org.writes)  # each changed record written once
    assert written > 1000
    calls = org.api_calls - describe_calls
    assert org.calls["query"] + org.calls["query_more"] == math.ceil(2500 / 2000)
    assert org.calls["composite"] == math.ceil(written / 1000)
    assert calls == math.ceil(2500 / 2000) + math.ceil(written / 1000)
    assert set(org.written_by) == {"client=crm-automation"}

    # Every record now holds what the rules give; a second sync reads only our own echoes.
    before = dict(org.writes)
    org.clock.advance(seconds=1)
    again = pipeline.poll()
    assert again.read == written          # the records whose modstamp our write moved
    assert again.written == 0 and again.unchanged == written
    assert dict(org.writes) == before


def test_the_sweep_fills_one_write_call_with_changes_from_five_pages(tmp_path, org):
    """300 changes spread over 5 sweep pages of 2,000: one Composite call (up to 1,000
    records), where writing each page's changes took 5."""
    rng = random.Random(3)
    for i in range(8_500):
        org.add(f"006{i:015d}", StageName=rng.choice(STAGES[:6]),
                Amount=rng.randint(1_000, 300_000), Probability=10,
                Relationship_Level__c=rng.choice(["Strategic", "Trusted", "Known", "New"]))
    pipeline = make_app(tmp_path, org).pipeline
    pipeline.sweep()                                 # every record now holds what rules give
    for record_id in rng.sample(sorted(org.records), 300):
        org.edit(record_id, Probability=1)
    before = org.calls["composite"]
    report = pipeline.sweep()
    assert report.stopped is None and report.read == 8_500 and report.written == 300
    assert org.calls["query"] + org.calls["query_more"] >= 5 * 2   # five pages, twice
    assert org.calls["composite"] - before == 1


def test_a_second_sync_with_nothing_new_reads_and_writes_nothing(tmp_path, org):
    fill(org, 50)
    pipeline = make_app(tmp_path, org).pipeline
    org.clock.advance(seconds=1)
    pipeline.poll()
    org.clock.advance(seconds=1)
    pipeline.poll()                        # the echoes
    org.clock.advance(minutes=10)
    third = pipeline.poll()
    assert third.written == 0
    # The overlap window re-reads the last 5 minutes; those versions are dropped unprocessed.
    assert third.read == third.skipped


def quick_app(tmp_path, org, sleeps=None):
    """An app whose retry policy records its waits instead of sleeping."""
    from connector.crm.salesforce.client import SalesforceCrm
    from connector.retry import RetryPolicy

    app = make_app(tmp_path, org)
    waits = sleeps if sleeps is not None else []
    app._crm = SalesforceCrm(app.settings, app.loaded.rules.mapping,
                             retry=RetryPolicy(sleep=waits.append))
    return app


def test_a_validation_error_parks_that_record_and_the_others_go_on(tmp_path, org):
    fill(org, 300)
    victim = "006000000000000007"
    org.invalid[victim] = "Amount must be approved before the probability changes"
    app = quick_app(tmp_path, org)
    org.clock.advance(seconds=1)
    report = app.pipeline.poll()
    assert report.parked == 1 and report.stopped is None
    assert org.writes[victim] == 0
    assert report.written == len(org.writes) and report.written > 100
    parked = app.state.items("parked")
    assert [(i.kind, i.record_id) for i in parked] == [("writeback", victim)]
    assert "FIELD_CUSTOM_VALIDATION_EXCEPTION" in parked[0].reason
    assert report.cursor is not None  # parked records do not hold the cursor back

    # The admin fixes the rule in Salesforce and retries: the record goes through, once.
    del org.invalid[victim]
    assert app.state.release(None, org.clock()) == 1
    drained = app.pipeline.drain()
    assert drained.done == 1 and org.writes[victim] == 1


def test_locked_rows_and_busy_servers_are_retried(tmp_path, org):
    fill(org, 40)
    org.locked["006000000000000003"] = 2
    org.fail_next.append((503, [{"errorCode": "SERVER_UNAVAILABLE",
                                 "message": "Service unavailable"}], {}))
    org.fail_next.append((429, [{"errorCode": "TOO_MANY_REQUESTS",
                                 "message": "Too many requests"}], {"Retry-After": "2"}))
    waits: list[float] = []
    app = quick_app(tmp_path, org, waits)
    org.clock.advance(seconds=1)
    report = app.pipeline.poll()
    assert report.stopped is None and report.parked == 0
    assert org.writes["006000000000000003"] == 1
    assert all(n == 1 for n in org.writes.values())
    assert 2.0 in waits  # Retry-After honoured


def test_request_limit_exceeded_stops_cleanly_with_the_cursor_kept(tmp_path, org):
    fill(org, 2500)
    app = quick_app(tmp_path, org)
    pipeline = app.pipeline
    org.clock.advance(seconds=1)
    # The second page of the poll is refused: the org's daily allowance is used up.
    org.fail_on["query_more"] = [(403, [{"errorCode": "REQUEST_LIMIT_EXCEEDED",
                                         "message": "TotalRequests Limit exceeded."}], {})]
    report = pipeline.poll()
    assert report.stopped and "REQUEST_LIMIT_EXCEEDED" in report.stopped
    first_page_cursor = report.cursor
    assert first_page_cursor is not None  # the first page was committed
    writes = dict(org.writes)
    # Next run (allowance back): resumes after the first page; nothing written twice.
    org.clock.advance(minutes=1)
    again = pipeline.poll()
    assert again.stopped is None
    assert all(n == 1 for n in org.writes.values())
    assert set(writes) <= set(org.writes)


class Killed(BaseException):
    """The process dies here (not an error anything may catch)."""


def test_a_crash_between_write_and_commit_loses_nothing_and_writes_nothing_twice(tmp_path, org):
    fill(org, 500)
    app = quick_app(tmp_path, org)
    pipeline = app.pipeline
    org.clock.advance(seconds=1)

    def die():
        org.after_write = None
        raise Killed

    org.after_write = die
    with pytest.raises(Killed):
        pipeline.poll(fire_backfill=True)  # the seeded deals' edges fire
    assert app.state.get_cursor(pipeline.cursor_name) is None
    assert app.state.items() == []          # nothing committed: no action queued yet
    written_before = dict(org.writes)
    assert written_before                   # ... but Salesforce has the writes

    rerun = quick_app(tmp_path, org)         # a new process on the same state
    org.clock.advance(seconds=1)
    report = rerun.pipeline.poll(fire_backfill=True)
    assert report.stopped is None
    assert dict(org.writes) == written_before  # nothing written twice, nothing left unwritten
    assert report.written == 0
    queued = [i for i in rerun.state.items() if i.kind in ("email", "http", "erp")]
    keys = [i.key for i in queued]
    assert len(keys) == len(set(keys)) and report.actions == len(keys) > 0


def test_records_sharing_a_timestamp_across_a_page_edge_are_not_skipped(tmp_path, org):
    fill(org, 2001)
    same = org.records["006000000000000000"]["SystemModstamp"]
    for record in org.records.values():
        record["SystemModstamp"] = same
    app = quick_app(tmp_path, org)
    pipeline = app.pipeline
    org.clock.advance(seconds=1)
    org.fail_on["query_more"] = [(503, [{"errorCode": "SERVER_UNAVAILABLE",
                                         "message": "down"}], {})] * 5
    first = pipeline.poll()
    assert first.stopped and first.read == 2000
    org.clock.advance(seconds=1)
    second = pipeline.poll()
    assert second.stopped is None
    # The rerun reads the record the first run never got to, and the first page again (its
    # records now carry our writes' newer stamps, and compute to no change).
    assert second.read == 2001 and second.written + first.written == len(org.writes)
    last = org.records["006000000000002000"]
    assert last["Probability_Rule__c"] is not None   # handled
    assert sum(org.writes.values()) == len(org.writes)  # none written twice


def test_a_transaction_that_commits_late_is_still_read(tmp_path, org):
    fill(org, 10)
    app = quick_app(tmp_path, org)
    pipeline = app.pipeline
    org.clock.advance(seconds=1)
    pipeline.poll()
    cursor = app.state.get_cursor(pipeline.cursor_name)
    # A long transaction stamped two minutes before the cursor commits only now.
    late = org.add("006LATE00000000001", StageName="Negotiation/Review",
                   Proposal_Type__c="Firm", Relationship_Level__c="Strategic")
    import datetime as dt

    from tests.fake_salesforce import stamp
    late["SystemModstamp"] = stamp(dt.datetime.fromisoformat(cursor) - dt.timedelta(minutes=2))
    org.clock.advance(seconds=1)
    pipeline.poll()
    assert org.records["006LATE00000000001"]["Probability"] == 90


def test_describe_is_cached_per_rule_set_version(tmp_path, org):
    fill(org, 5)
    assert make_app(tmp_path, org).pipeline is not None
    assert org.calls["describe"] == 3          # Opportunity, and User and Account for paths
    assert make_app(tmp_path, org).pipeline is not None  # the next run, same rules
    assert org.calls["describe"] == 3
