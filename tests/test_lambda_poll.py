"""The poll and sweep functions on their EventBridge schedules: the poll reads what changed
since the cursor kept in DynamoDB, writes back, and asks the worker to run the outbox; two
polls at once never move the cursor back; the sweep re-evaluates every open record, through the
same ledger, so nothing fires twice."""

from __future__ import annotations

import datetime as dt

from tests import test_lambda_harness as harness
from tests.test_lambda_harness import LambdaContext, fixture, sent_emails

aws, world, keep_logging = harness.aws, harness.world, harness.keep_logging  # fixtures

RECORD = "0065g00000QzW1xAAF"
OTHER = "0065g00000QzW2KAAV"
CURSOR = "salesforce:Opportunity"


def poll(world, fire_backfill=False, event_id=None):
    """A scheduled poll; `fire_backfill`: invoked by hand with {"fire_backfill": true}.
    The worker runs a drain message once per id: a later schedule has an `event_id` of its own."""
    from connector.handlers.poll import lambda_handler

    world.org.clock.advance(seconds=1)
    event = fixture("eventbridge_scheduled_event.json")
    if fire_backfill:
        event["fire_backfill"] = True
    if event_id is not None:
        event["id"] = event_id
    return lambda_handler(event, LambdaContext(function_name="crm-automation-test-poll"))


def test_a_scheduled_poll_writes_back_and_the_worker_runs_the_actions(world):
    result = poll(world, fire_backfill=True)
    assert result["read"] == 2 and result["written"] == 2 and result["actions"] == 2
    assert world.org.records[RECORD]["Probability"] == 90
    cursor = world.runtime().state.get_cursor(CURSOR)
    assert cursor is not None and cursor.startswith("2026-11-26T09:00:00")
    # The poll queued one drain message (with the schedule's event id); the worker fans out.
    assert world.aws.bodies() == [{"kind": "drain",
                                   "id": "89d1a02d-5ec7-412e-82f5-13505f849b41"}]
    world.work()
    statuses = {i.action: i.status for i in world.items()}
    assert statuses == {"notify-director": "done", "push-marketing": "done"}
    assert len(sent_emails()) == 1


def test_the_next_poll_sees_its_own_writes_as_no_change(world):
    poll(world, fire_backfill=True)
    world.work()
    world.new_container()                   # another cold start, same DynamoDB state
    result = poll(world)
    assert result["written"] == 0 and world.org.writes[RECORD] == 1
    world.work()
    assert len(sent_emails()) == 1


def test_two_polls_never_move_the_cursor_back(world):
    state = world.runtime().state
    state.set_cursor(CURSOR, "2026-11-26T09:10:00+00:00")
    state.set_cursor(CURSOR, "2026-11-26T09:05:00+00:00")   # a slower poll finishing late
    assert state.get_cursor(CURSOR) == "2026-11-26T09:10:00+00:00"


def test_a_stopped_poll_keeps_the_cursor_and_says_why(world):
    world.org.fail_on["query"] = [(403, [{"errorCode": "REQUEST_LIMIT_EXCEEDED",
                                          "message": "TotalRequests Limit exceeded."}], {})]
    result = poll(world)
    assert "stopped" in result and world.runtime().state.get_cursor(CURSOR) is None


def test_the_daily_sweep_reads_every_open_record_and_repeats_nothing(world):
    from connector.handlers.sweep import lambda_handler

    poll(world, fire_backfill=True)
    world.work()
    world.org.clock.advance(days=1)
    result = lambda_handler(fixture("eventbridge_scheduled_event.json"),
                            LambdaContext(function_name="crm-automation-test-sweep"))
    assert result["read"] == 2 and result["written"] == 0     # nothing changed, nothing new
    world.work()
    assert len(sent_emails()) == 1
    assert world.aws.bodies() == []
    assert dt.datetime.fromisoformat(world.runtime().state.get_cursor(CURSOR)) < \
        world.org.clock()


def test_the_first_scheduled_poll_is_a_backfill_and_a_change_then_fires(world):
    first = poll(world)
    assert first["backfill"] is True and first["backfilled"] == 2 and first["actions"] == 0
    assert world.org.records[RECORD]["Probability"] == 90   # the write-back is not held back
    world.work()
    assert world.items() == [] and sent_emails() == []
    # the deal falls back and comes back: a change, which fires
    for stage in ("Needs Analysis", "Negotiation/Review"):
        world.org.edit(RECORD, StageName=stage)
        result = poll(world, event_id=f"schedule-{stage}")
        assert result["backfill"] is False
        world.work()
    assert len(sent_emails()) == 1
