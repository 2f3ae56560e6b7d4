"""The worker function on the SQS queue (moto) against the fake Salesforce org: it reads the
records a notice names, writes back, queues and runs the actions (email through SES, the HTTP
push); a poison message ends in the dead-letter queue after its retries while the rest of its
batch goes through; a message delivered twice is run once; change events from EventBridge are
stored and processed, the connector's own changes dropped."""

from __future__ import annotations

import json
import time

import pytest

from tests import test_lambda_harness as harness
from tests.test_lambda_harness import (
    HOOK,
    IDEMPOTENCY_TABLE,
    MAX_RECEIVE_COUNT,
    SENDER,
    LambdaContext,
    fixture,
    sent_emails,
)

aws, world, keep_logging = harness.aws, harness.world, harness.keep_logging  # fixtures

RECORD = "0065g00000QzW1xAAF"
OTHER = "0065g00000QzW2KAAV"
NOTICE = "notice:salesforce:outbound:04l5g00002RsNbTAAV"


def send(world, *bodies):
    for body in bodies:
        text = body if isinstance(body, str) else json.dumps(body)
        world.aws.sqs.send_message(QueueUrl=world.aws.queue_url, MessageBody=text)


def test_a_webhook_notice_is_processed_and_its_actions_run_once(world):
    assert world.webhook(fixture("apigw_v2_salesforce_outbound.json"))["statusCode"] == 200
    answers = world.work()
    assert all(a == {"batchItemFailures": []} for a in answers)
    assert world.org.records[RECORD]["Probability"] == 90 and world.org.writes[RECORD] == 1
    items = {i.key: i for i in world.items()}
    assert items[NOTICE].status == "done"
    actions = {i.action: i.status for i in items.values() if i.kind != "notice"}
    assert actions == {"notify-director": "done", "push-marketing": "done"}
    [email] = sent_emails()
    assert email["source"] == SENDER and "Approval needed" in email["raw"]
    assert "director@example.com" in email["raw"]
    hooks = [c for c in world.rsps.calls if c.request.url == HOOK]
    assert len(hooks) == 1
    # The same notice again (Salesforce resends): nothing new is written or sent.
    world.webhook(fixture("apigw_v2_salesforce_outbound.json"))
    world.work()
    assert world.org.writes[RECORD] == 1 and len(sent_emails()) == 1
    assert len([c for c in world.rsps.calls if c.request.url == HOOK]) == 1


def test_a_poison_message_goes_to_the_dead_letter_queue_and_the_rest_succeed(world):
    send(world, {"kind": "drain", "id": "a"}, "this is not JSON", {"kind": "drain", "id": "b"})
    first, *rest = world.aws.deliver(_worker(), rounds=MAX_RECEIVE_COUNT + 2)
    failed = [f["itemIdentifier"] for f in first["batchItemFailures"]]
    assert len(failed) == 1
    assert all(a["batchItemFailures"] == [{"itemIdentifier": failed[0]}] for a in rest)
    assert world.aws.messages() == []                       # the two good ones were deleted
    [dead] = world.aws.messages(world.aws.dlq_url)
    assert dead["MessageId"] == failed[0] and dead["Body"] == "this is not JSON"
    assert int(dead["Attributes"]["ApproximateReceiveCount"]) >= MAX_RECEIVE_COUNT


@pytest.mark.parametrize("body", [{"kind": "surprise"}, {"kind": "outbox"}, [1, 2],
                                  {"detail-type": "OpportunityChangeEvent", "detail": {}}])
def test_messages_no_retry_can_help_are_reported_failed(world, body):
    send(world, body)
    [answer] = world.aws.deliver(_worker())
    assert len(answer["batchItemFailures"]) == 1


def test_a_message_delivered_twice_is_run_once(world):
    world.webhook(fixture("apigw_v2_salesforce_outbound.json"))
    [message] = world.aws.messages()
    send(world, message["Body"])            # SQS delivers the same body again
    world.work()
    assert world.org.writes[RECORD] == 1
    assert world.org.calls["query"] + world.org.calls["composite"] <= 3
    record = world.aws.dynamodb.scan(TableName=IDEMPOTENCY_TABLE)["Items"]
    assert record and all(r["status"]["S"] == "COMPLETED" for r in record)
    assert min(int(r["expiration"]["N"]) for r in record) >= time.time() + 72 * 3600 - 60


def test_a_change_event_through_the_queue_is_stored_and_processed(world):
    event = fixture("sqs_event_eventbridge_cdc.json")
    send(world, event["Records"][0]["body"])
    answers = world.work()
    assert answers and all(a == {"batchItemFailures": []} for a in answers)
    assert world.org.writes[RECORD] == 1
    [notice] = [i for i in world.items() if i.kind == "notice"]
    assert notice.key == "notice:salesforce:cdc:0002b6e1-53f4-9d2a-7c11-8e0f4a6b2d3c:1"
    assert notice.status == "done"


def test_the_connectors_own_change_is_dropped(world):
    event = fixture("eventbridge_cdc_opportunity.json")
    event["detail"]["payload"]["ChangeEventHeader"]["changeOrigin"] = (
        "com/salesforce/api/rest/62.0;client=crm-automation")
    send(world, event)
    world.work()
    assert world.items() == [] and world.org.api_calls == 0


def test_an_overflow_polls_instead(world):
    event = fixture("eventbridge_cdc_opportunity.json")
    event["detail"]["payload"]["ChangeEventHeader"]["changeType"] = "GAP_OVERFLOW"
    event["detail"]["payload"]["ChangeEventHeader"]["recordIds"] = ["006*"]
    send(world, event)
    world.org.clock.advance(seconds=1)
    world.work()
    assert world.org.calls["query"] >= 1
    assert world.org.writes[RECORD] == 1 and world.org.writes[OTHER] == 1
    assert world.runtime().state.get_cursor("salesforce:Opportunity") is not None


def test_a_change_event_sent_straight_to_the_function(world):
    from connector.handlers.worker import lambda_handler

    result = lambda_handler(fixture("eventbridge_cdc_opportunity.json"), LambdaContext())
    assert result["notices"] == 1 and world.org.writes[RECORD] == 1


def test_an_action_that_fails_waits_and_the_next_drain_retries_it(world):
    import responses

    world.rsps.replace(responses.POST, HOOK, status=503)
    world.webhook(fixture("apigw_v2_salesforce_outbound.json"))
    world.work()
    [push] = [i for i in world.items() if i.action == "push-marketing"]
    assert push.status == "pending" and push.attempts == 1 and "503" in push.reason
    world.rsps.replace(responses.POST, HOOK, json={})
    world.org.clock.advance(hours=7)         # past the longest backoff
    send(world, {"kind": "drain", "id": "poll-2"})
    world.work()
    [push] = [i for i in world.items() if i.action == "push-marketing"]
    assert push.status == "done"
    assert len([c for c in world.rsps.calls if c.request.url == HOOK]) == 2


def _worker():
    from connector.handlers.worker import lambda_handler

    return lambda_handler


def test_one_bad_value_parks_its_item_and_never_reaches_the_dead_letter_queue(world):
    import responses

    world.rsps.replace(responses.POST, HOOK, body=RuntimeError("a library's surprise"))
    world.webhook(fixture("apigw_v2_salesforce_outbound.json"))
    answers = world.work()
    assert all(a == {"batchItemFailures": []} for a in answers)
    assert world.aws.messages(world.aws.dlq_url) == []
    items = {i.action: i for i in world.items()}
    assert items["push-marketing"].status == "parked"
    assert items["push-marketing"].reason == "unexpected RuntimeError: a library's surprise"
    assert items["notify-director"].status == "done" and len(sent_emails()) == 1


def test_a_workers_lease_ends_with_its_invocation(world):
    """Stopped at its timeout, a worker leaves no lease that outlives it: the next worker
    takes the item as soon as the function's time is up."""
    import datetime as dt

    import responses

    seen = []

    def hook(request):  # while the push runs: what does the state say of its lease?
        now = world.org.clock()
        seen.extend((i.action, i.lease_until - now) for i in world.items()
                    if i.lease_until is not None)
        return 200, {}, "{}"

    world.rsps.remove(responses.POST, HOOK)
    world.rsps.add_callback(responses.POST, HOOK, hook)
    world.webhook(fixture("apigw_v2_salesforce_outbound.json"))
    world.work()          # each invocation has 120 s left (the harness's context)
    assert [a for a, _ in seen] == ["push-marketing"]
    assert dt.timedelta(seconds=110) < seen[0][1] <= dt.timedelta(seconds=120)
