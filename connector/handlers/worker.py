"""The worker function, on the SQS work queue: the CRM and ERP work the webhook only noted.

Each message is one of:

- `{"kind": "outbox", "key": K, "attempts": n}`: run outbox item K (a webhook's notice: read the
  records it names, compute, write back; or an action: email, HTTP push, ERP order). The items
  it adds (the actions its rising edges fire) go back to the queue, one message each;
- `{"kind": "drain", "id": ...}`: from the poll and the sweep: queue every item that is due
  (new ones, retries whose time came);
- a Salesforce Change Data Capture event, as Event Relay puts it on EventBridge and a rule
  forwards it to the queue: stored as a notice (deduplicated by its transaction key and
  sequence number), then run like one.

Messages go through Powertools' BatchProcessor: a message that fails is reported in
`batchItemFailures` and comes back after the visibility timeout, while the rest of the batch is
deleted; after `maxReceiveCount` receives SQS moves it to the dead-letter queue. Idempotency
(Powertools, on DynamoDB, keyed on the message body, kept 72 hours) drops a message delivered
twice. The state decides the rest: an item is claimed by one worker at a time and never run
again once done, and the pipeline schedules its retries.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
)

from connector.errors import RefusedInput
from connector.handlers import runtime
from connector.state import LEASE

logger = runtime.logger()
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
config = IdempotencyConfig(event_key_jmespath="body", raise_on_no_idempotency_key=True,
                           expires_after_seconds=int(runtime.IDEMPOTENCY_TTL.total_seconds()))
FANOUT = 500   # items queued by one drain message; the next poll queues the rest


class PoisonMessage(RefusedInput):
    """A message no retry can help: it ends in the dead-letter queue."""


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config.register_lambda_context(context)
    if "Records" not in event and "detail" in event:
        # An EventBridge rule that targets the function itself (not the queue).
        return work(record={"messageId": str(event.get("id", "")), "body": json.dumps(event)},
                    lease=lease_for(context))
    return dict(process_partial_response(event=event, record_handler=handle_record,
                                         processor=processor, context=context))


def handle_record(record: SQSRecord, lambda_context: Any = None) -> dict[str, Any]:
    logger.set_correlation_id(record.message_id)
    logger.remove_keys(["outbox_key"])
    try:
        return work(record=record.raw_event, lease=lease_for(lambda_context))
    except IdempotencyAlreadyInProgressError:
        # The same message runs in another worker now; the state keeps either from doing it
        # twice, and the queue must not retry this copy.
        logger.info("the same message is being handled elsewhere")
        return {"skipped": "in progress elsewhere"}


def lease_for(context: Any) -> dt.timedelta:
    """The lease on the items this invocation runs: its time left, so that when the function
    is stopped at its timeout, the next worker can take the items at once."""
    if context is None:
        return LEASE
    return min(LEASE, dt.timedelta(milliseconds=max(1000, context.get_remaining_time_in_millis())))


def work(*, record: dict[str, Any], lease: dt.timedelta = LEASE) -> dict[str, Any]:
    return _idempotent()(record=record, lease=lease)


def _idempotent_work(*, record: dict[str, Any], lease: dt.timedelta) -> dict[str, Any]:
    try:
        body = json.loads(record["body"])
    except (KeyError, TypeError, ValueError):
        raise PoisonMessage("the message body is not JSON") from None
    if not isinstance(body, dict):
        raise PoisonMessage("the message body is not a JSON object")
    if "detail" in body and "detail-type" in body:
        return _change_event(body, lease)
    kind = body.get("kind")
    if kind == "outbox" and isinstance(body.get("key"), str) and body["key"]:
        logger.append_keys(outbox_key=body["key"])
        return _run([body["key"]], lease)
    if kind == "drain":
        return _fan_out()
    raise PoisonMessage(f"unknown message kind {str(kind)[:40]!r}")


def _run(keys: list[str], lease: dt.timedelta) -> dict[str, Any]:
    """Run these outbox items (each claimed first: never two workers on one), then queue the
    items they added. Whatever one item raises parks that item with the reason (the drain's
    rule): the message succeeds, and nothing reaches the dead-letter queue for one bad value."""
    rt = runtime.current()
    report = rt.app.pipeline.run_items(keys, lease)
    queued = rt.enqueue(report.added)
    result = {**runtime.summary(report), "queued": queued}
    logger.info("outbox items run", extra=result)
    return result


def _fan_out() -> dict[str, Any]:
    rt = runtime.current()
    due = rt.state.due(rt.now(), FANOUT)
    queued = rt.queue.send(runtime.outbox_message(i.key, i.attempts) for i in due)
    logger.info("due items queued", extra={"queued": queued})
    return {"queued": queued}


def _change_event(event: dict[str, Any], lease: dt.timedelta) -> dict[str, Any]:
    from connector.crm.events import WebhookRejected
    from connector.crm.salesforce.webhooks import parse_cdc_event
    from connector.state.notices import store_notice

    rt = runtime.current()
    try:
        notices = parse_cdc_event(event, rt.settings.salesforce_client_name)
    except WebhookRejected as exc:
        raise PoisonMessage(f"not a change event: {exc.reason}") from None
    if not notices:      # our own change, or a deletion
        return {"notices": 0}
    rules = rt.app.loaded.rules
    keys: list[str] = []
    for notice in notices:
        if rules is None or notice.object_type != rules.mapping.object:
            logger.info("change event for another object", extra={"object": notice.object_type})
            continue
        if notice.resync:  # Salesforce could not list the records: poll instead
            report = rt.app.pipeline.poll()
            rt.nudge(f"resync:{notice.dedupe_key}")
            logger.info("change event overflow: polled", extra=runtime.summary(report))
            continue
        store_notice(rt.state, notice.dedupe_key, list(notice.record_ids), rt.now())
        keys.append(f"notice:{notice.dedupe_key}")
    if not keys:
        return {"notices": 0}
    return {"notices": len(keys), **_run(keys, lease)}


_idempotent_for: tuple[Any, Any] = (None, None)   # (runtime, its idempotent function)


def _idempotent() -> Any:
    """`_idempotent_work` made idempotent on this runtime's IDEMPOTENCY_TABLE (built on first
    use, and again for a new runtime: tests start one per world)."""
    global _idempotent_for
    rt = runtime.current()
    if _idempotent_for[0] is not rt:
        table = rt.environ.get("IDEMPOTENCY_TABLE")
        if not table:
            from connector.errors import ConfigurationError, Text

            raise ConfigurationError(Text("IDEMPOTENCY_TABLE is not set: serverless.yml gives it "
                                          "to the worker"))
        store = DynamoDBPersistenceLayer(table_name=table, boto3_client=rt.client("dynamodb"))
        _idempotent_for = (rt, idempotent_function(
            data_keyword_argument="record", config=config, persistence_store=store)(
            _idempotent_work))
    return _idempotent_for[1]


__all__ = ["PoisonMessage", "handle_record", "lambda_handler", "work"]
