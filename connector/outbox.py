"""The runner of each kind of outbox item. An item's kind (`connector.state.Kind`, stored with
it) says what running it does; `RUNNERS` is the one place that says how.

A runner takes the pipeline (its ports: CRM, state, actions) and the item, and returns what
came of it as a plain value: `Done` (the item never runs again), `Waits` (it ran and now
waits for a person) or `Failed` (part of its work went through). Any other failure is an error
of the tree (connector.errors), raised: retried or parked by the drain.

An approval is read here in one pass: the request emails and waits, the verdict
(`record_verdict`, from the approver's click) ends the wait and queues what follows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from connector.actions import decode_values
from connector.approvals import PENDING, STATUS
from connector.errors import ConnectorError, RecordError, RetriableError, Text
from connector.formatting import listed
from connector.state import Commit, Kind, OutboxItem, StateStore

if TYPE_CHECKING:
    from connector.core.ruleset import RuleSet
    from connector.pipeline import Pipeline


# Items that re-read CRM records rather than act on the values stored with them.
RECORD_KINDS = frozenset({Kind.RECORD, Kind.WRITEBACK, Kind.NOTICE})


@dataclass(frozen=True)
class Done:
    """The item did its work: `text` says what, `added` are the outbox items it added."""

    text: str
    added: tuple[str, ...] = ()


@dataclass(frozen=True)
class Waits:
    """The item ran and now waits for a person; `then` is an item it added, to run now."""

    reason: str
    then: str | None = None


@dataclass(frozen=True)
class Failed:
    """The item failed (`error`: retried or parked as that error says) after part of its work
    was committed: `added` are the outbox items that part added, which run all the same."""

    error: ConnectorError
    added: tuple[str, ...] = ()


Ran = Done | Waits | Failed
Runner = Callable[["Pipeline", OutboxItem], Ran]


NO_RUNNER = Text("no action runner is configured")

def reprocess_records(pipeline: Pipeline, item: OutboxItem) -> Ran:
    """Read the records the item names and process them. A notice's records are new versions
    (those handled already are dropped); a parked record or write-back is processed again."""
    report = pipeline.fetch_and_process(list(item.payload.get("ids", [])),
                                        reprocess=item.kind != Kind.NOTICE)
    if report.failed or report.parked:
        return Failed(RecordError(listed(report.reasons, "; ") if report.reasons
                                  else Text("the record failed again")),
                      tuple(report.added))
    return Done(f"read {report.read}, wrote {report.written}, unchanged {report.unchanged}, "
                f"actions {report.actions}", tuple(report.added))


def run_action(pipeline: Pipeline, item: OutboxItem) -> Ran:
    """Send the email, push, order or contact, once for the item's key."""
    if pipeline.actions is None:
        raise RetriableError(NO_RUNNER)
    values = decode_values(item.payload.get("values", {}))
    return Done(pipeline.actions.run(item.action, item.key, values))


# --- approvals: the request, the verdict, the field it writes --------------------------------

def request_approval(pipeline: Pipeline, item: OutboxItem) -> Ran:
    """Email the approver, then note at once that it went: the Pending write-back, an item
    of its own, is that note. It is retried alone, and a rerun that finds it sends no
    second email. Only a crash between the SMTP server's answer and that one local
    transaction sends it twice, under the same Message-ID."""
    if pipeline.actions is None:
        raise RetriableError(NO_RUNNER)
    key = f"{item.key}:pending"
    sent = pipeline.state.item(key)
    if sent is None:
        values = decode_values(item.payload.get("values", {}))
        to, expires = pipeline.actions.request_approval(item.action, item.key, item.record_id,
                                                        values, pipeline.now())
        sent = OutboxItem(key, item.record_id, item.action, Kind.APPROVAL_FIELD,
                          {"field": str(pipeline.rules.actions[item.action].spec.field),
                           "value": PENDING, "unless": f"{item.key}:decision", "to": to,
                           "until": f"{expires:%Y-%m-%d}"})
        pipeline.state.commit([Commit(item.record_id, None, outbox=[sent])], pipeline.now())
    # Not done: it waits, visible in `outbox list`, until the approver decides.
    return Waits(Text("awaiting the decision of {to} until {until}", to=sent.payload["to"],
                      until=sent.payload["until"]), then=key)


@dataclass(frozen=True)
class Recorded:
    """What came of a verdict: `outcome` is 'recorded', 'already decided' or 'not pending';
    `added` are the outbox items it queued (the field's write, the actions that follow)."""

    outcome: str
    added: tuple[str, ...] = ()


def record_verdict(state: StateStore, rules: RuleSet, key: str, verdict: str,
                   now: dt.datetime) -> Recorded:
    """Record an approver's verdict once. What follows (the field written back, the actions
    named for the verdict) is queued in the outbox, so this needs neither the CRM nor the
    senders: only the state and the rules. The verdict, what follows it and the request's end
    are one transaction that only the first click gets through: a crash or a locked database
    leaves nothing, and the next click counts."""
    request = state.item(key)
    if request is None or request.kind != Kind.APPROVAL or request.action not in rules.actions:
        return Recorded("not pending")
    if state.item(f"{key}:decision") is not None:
        return Recorded("already decided")
    if request.status == "done":
        return Recorded("not pending")
    spec = rules.actions[request.action].spec
    follow = spec.on_approve if verdict == "approve" else spec.on_reject
    items = [OutboxItem(f"{key}:decision", request.record_id, request.action,
                        Kind.APPROVAL_FIELD, {"field": spec.field, "value": STATUS[verdict]})]
    items += [OutboxItem(f"{key}:{verdict}:{name}", request.record_id, name,
                         rules.actions[name].kind, dict(request.payload))
              for name in follow if name in rules.actions]
    if not state.record_verdict(key, items, now):
        return Recorded("already decided")
    return Recorded("recorded", tuple(i.key for i in items))


def write_approval_field(pipeline: Pipeline, item: OutboxItem) -> Ran:
    """Write Pending (unless the verdict came first), or the verdict."""
    unless = item.payload.get("unless")
    if unless and pipeline.state.item(unless) is not None:
        return Done(f"{item.payload['field']} left as decided")  # Pending came too late
    name, value = item.payload["field"], item.payload["value"]
    [result] = pipeline.crm.write([(item.record_id, {pipeline.mapping.crm_field(name): value})])
    if not result.ok:
        raise RecordError(Text("{code}: {reason}", code=result.code, reason=result.message))
    return Done(f"{name} = {value}")


RUNNERS: dict[str, Runner] = {
    Kind.RECORD: reprocess_records,
    Kind.WRITEBACK: reprocess_records,
    Kind.NOTICE: reprocess_records,
    Kind.EMAIL: run_action,
    Kind.HTTP: run_action,
    Kind.ERP: run_action,
    Kind.AUDIENCE: run_action,
    Kind.APPROVAL: request_approval,
    Kind.APPROVAL_FIELD: write_approval_field,
}

__all__ = ["RECORD_KINDS", "RUNNERS", "Done", "Failed", "Ran", "Recorded", "Runner", "Waits",
           "record_verdict"]
