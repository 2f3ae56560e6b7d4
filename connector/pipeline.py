"""The use cases: process a batch of CRM records, poll once, take webhook notices, drain the
outbox. Everything else (CRM, state, actions, clock) comes in through ports, so the same code
runs from the command line, from `serve` and from the Lambda handlers.

The order of a batch is what makes it safe to crash at any line:
  1. drop the versions `(id, modstamp)` already handled (poll overlap, webhook redelivery);
  2. evaluate; 3. write back only what changed;
  4. commit, in one transaction, the handled versions, the ledger, the new outbox items and
     the snapshots of the records whose values changed;
  5. only then move the cursor past the batch.
A crash before 4 redoes the batch: the write-back now computes to no change, and the rising
edges, never recorded, fire once. A crash before 5 re-reads records already handled: dropped.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from connector.actions import ActionRunner, decode_values, encode_values, idempotency_key
from connector.core.edges import rising_edges
from connector.core.evaluate import Evaluator, Outcome
from connector.core.ruleset import RuleSet
from connector.core.values import parse_datetime
from connector.crm import Crm, Record, json_value
from connector.errors import ConnectorError, FatalError, RecordError, RetriableError
from connector.history.snapshots import Snapshotter
from connector.state import Commit, OutboxItem, Snapshot, StateStore
from connector.state.notices import store_notice

__all__ = ["LEASE", "OVERLAP", "DrainReport", "Pipeline", "RunReport", "store_notice"]

log = logging.getLogger(__name__)

# Salesforce stamps SystemModstamp when a transaction starts; a long one commits later. Each
# poll reads this far back from the cursor, and drops what it already handled.
OVERLAP = dt.timedelta(minutes=5)
LEASE = dt.timedelta(minutes=10)
MAX_ATTEMPTS = 12
RECORD_KINDS = ("record", "writeback", "notice")  # outbox items that re-read CRM records


@dataclass
class RunReport:
    read: int = 0
    skipped: int = 0        # already handled at this version
    written: int = 0
    unchanged: int = 0
    parked: int = 0         # the CRM refused the write: waits in the outbox with the reason
    failed: int = 0         # the record cannot be computed: waits in the outbox with the reason
    actions: int = 0        # outbox items added by rising edges
    cursor: str | None = None
    stopped: str | None = None
    reasons: list[str] = field(default_factory=list)

    def note(self, reason: str) -> None:
        if len(self.reasons) < 50:
            self.reasons.append(reason)


@dataclass
class DrainReport:
    done: int = 0
    retrying: int = 0
    parked: int = 0
    stopped: str | None = None
    results: list[str] = field(default_factory=list)


class _Waiting(Exception):
    """The item ran and now waits for a person."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Pipeline:
    def __init__(self, rules: RuleSet, crm: Crm, state: StateStore,
                 actions: ActionRunner | None = None,
                 now: Callable[[], dt.datetime] = utcnow,
                 today: Callable[[], dt.date] | None = None, snapshots: bool = True) -> None:
        self.rules = rules
        self.mapping = rules.mapping
        self.crm = crm
        self.state = state
        self.actions = actions
        self.now = now
        # Today is the date of `now` in UTC: one clock for the cursor, the ledger and the rules.
        self.today = today or (lambda: self.now().astimezone(dt.UTC).date())
        self.evaluator = Evaluator(rules)
        self.cursor_name = f"{self.mapping.crm}:{self.mapping.object}"
        # Each record's values as read, kept when they changed (SPEC 8).
        self.snapshots = Snapshotter(rules.mapping, rules.closed) if snapshots else None

    # --- one batch ------------------------------------------------------------------------
    def process(self, records: list[Record], report: RunReport, dry_run: bool = False,
                force: bool = False) -> None:
        """Evaluate, write back and commit one batch (a query page, a webhook's records)."""
        today, now = self.today(), self.now()
        versioned = [(str(r.get(self.mapping.id_field)), self._version(r), r) for r in records]
        report.read += len(records)
        done = set() if force else self.state.handled(
            (rid, v) for rid, v, _ in versioned if v is not None)
        todo: list[tuple[str, str | None, Outcome | None, str | None]] = []
        taken: list[Snapshot | None] = []   # one a record in todo, kept if it changed
        for rid, version, raw in versioned:
            if version is not None and (rid, version) in done:
                report.skipped += 1
                continue
            taken.append(self.snapshots.take(raw, now) if self.snapshots and not dry_run
                         else None)
            try:
                todo.append((rid, version, self.evaluator.evaluate(self.mapping.read(raw),
                                                                    today), None))
            except RecordError as exc:
                todo.append((rid, version, None, str(exc)))
        updates = [(rid, {self.mapping.crm_field(k): json_value(v)
                          for k, v in outcome.changes.items()})
                   for rid, _, outcome, _ in todo if outcome is not None and outcome.changes]
        results = {} if dry_run or not updates else {r.id: r for r in self.crm.write(updates)}
        commits: list[Commit] = []
        for (rid, version, outcome, error), snapshot in zip(todo, taken, strict=True):
            commit = Commit(rid, version, snapshot=snapshot)
            commits.append(commit)
            if outcome is None:
                report.failed += 1
                report.note(f"{rid}: {error}")
                commit.outbox.append(OutboxItem(
                    f"record:{rid}:{version}", rid, "compute", "record", {"ids": [rid]},
                    status="parked", reason=error or ""))
                continue
            result = results.get(rid)
            if outcome.changes and result is not None and not result.ok:
                report.parked += 1
                reason = f"{result.code}: {result.message}"
                report.note(f"{rid}: {reason}")
                commit.outbox.append(OutboxItem(
                    f"writeback:{rid}:{version}", rid, "writeback", "writeback",
                    {"ids": [rid], "fields": list(outcome.changes)}, status="parked",
                    reason=reason))
                continue  # its actions wait until the write goes through
            if outcome.changes:
                report.written += 1
            else:
                report.unchanged += 1
            self._edges(rid, outcome, commit, report)
        if not dry_run:
            self.state.commit(commits, now)

    def _edges(self, rid: str, outcome: Outcome, commit: Commit, report: RunReport) -> None:
        ledger, fired = rising_edges(self.state.ledger(rid), outcome.due)
        commit.ledger.update(ledger)
        values = encode_values({k: v for k, v in outcome.values.items() if k != "today"})
        for edge in fired:
            action = self.rules.actions.get(edge.action)
            if action is None:
                continue
            key = idempotency_key(rid, edge.key, edge.episode)
            commit.outbox.append(OutboxItem(key, rid, edge.action, action.kind,
                                            {"values": values, "sources": list(edge.sources)}))
            report.actions += 1

    def _version(self, raw: Record) -> str | None:
        stamp = raw.get(self.mapping.modified_field)
        if stamp in (None, ""):
            return None
        try:
            parsed = parse_datetime(stamp, self.mapping.modified_field)
        except RecordError:
            return str(stamp)
        return parsed.astimezone(dt.UTC).isoformat() if parsed else None

    # --- a poll -----------------------------------------------------------------------------
    def poll(self, since: dt.datetime | None = None, dry_run: bool = False) -> RunReport:
        """Read what changed since the cursor (or `since`), process it page by page, and move
        the cursor after each committed page, never past the run's start."""
        report = RunReport()
        started = self.now()
        if since is None:
            cursor = self.state.get_cursor(self.cursor_name)
            since = dt.datetime.fromisoformat(cursor) - OVERLAP if cursor else None
        report.cursor = self.state.get_cursor(self.cursor_name)
        try:
            for page in self.crm.changed(since, started):
                self.process(page, report, dry_run=dry_run)
                stamps = [v for v in (self._version(r) for r in page) if v is not None]
                if stamps and not dry_run:
                    newest = min(max(stamps), started.astimezone(dt.UTC).isoformat())
                    if report.cursor is None or newest > report.cursor:
                        self.state.set_cursor(self.cursor_name, newest)
                        report.cursor = newest
        except (FatalError, RetriableError) as exc:
            report.stopped = str(exc)
            log.warning("poll stopped, cursor kept at %s: %s", report.cursor, exc)
        return report

    # --- the daily sweep ----------------------------------------------------------------------
    def sweep(self) -> RunReport:
        """Re-evaluate every open record: conditions that read `today` (escalations, overdue
        close dates) turn true with no edit in the CRM, so no poll or webhook would see them.
        Rising edges go through the same ledger, so what turned true yesterday does not fire
        again; only changed fields are written."""
        report = RunReport()
        closed = self.rules.closed
        field = self.mapping.crm_field(closed.field) if closed else self.mapping.id_field
        try:
            for page in self.crm.open_records(field, list(closed.labels) if closed else []):
                self.process(page, report, force=True)
        except (FatalError, RetriableError) as exc:
            report.stopped = str(exc)
        return report

    # --- webhooks ---------------------------------------------------------------------------
    def fetch_and_process(self, ids: list[str], report: RunReport, force: bool = False) -> None:
        for i in range(0, len(ids), 2000):
            self.process(self.crm.fetch(ids[i:i + 2000]), report, force=force)

    # --- the outbox -------------------------------------------------------------------------
    def drain(self, limit: int = 1000) -> DrainReport:
        """Run the outbox items that are due: each effect once per idempotency key."""
        report = DrainReport()
        due = self.state.due(self.now(), limit)
        together = self._drain_together(due, report)
        for item in due:
            if item.key in together:
                continue
            now = self.now()
            if not self.state.claim(item.key, now, LEASE):
                continue
            try:
                result = self._run(item)
            except _Waiting as waiting:
                self.state.wait(item.key, str(waiting), now)
                report.results.append(f"{item.key}: {waiting}")
                continue
            except FatalError as exc:
                self.state.retry_later(item.key, str(exc), now + dt.timedelta(minutes=15))
                report.stopped = str(exc)
                break
            except ConnectorError as exc:
                self._failed(item, exc, now, report)
                continue
            self.state.done(item.key, self.now())
            report.done += 1
            report.results.append(f"{item.key}: {result}")
        return report

    def _failed(self, item: OutboxItem, exc: ConnectorError, now: dt.datetime,
                report: DrainReport) -> None:
        """A retriable failure waits for its next try (parked after MAX_ATTEMPTS); any other
        is parked with its reason."""
        if isinstance(exc, RetriableError) and item.attempts + 1 < MAX_ATTEMPTS:
            self.state.retry_later(item.key, str(exc), now + backoff(item.attempts + 1,
                                                                     exc.retry_after))
            report.retrying += 1
        elif isinstance(exc, RetriableError):
            self.state.park(item.key, f"gave up after {MAX_ATTEMPTS} tries: {exc}", now)
            report.parked += 1
        else:
            self.state.park(item.key, str(exc), now)
            report.parked += 1

    def _drain_together(self, due: list[OutboxItem], report: DrainReport) -> set[str]:
        """The items of actions whose API takes many at once (Mailchimp: 500 members a call)
        run together, in as few calls as it allows; each still ends on its own. A crash
        after the call and before the items are marked done repeats it on the next run: these
        calls are upserts. Returns the keys handled here."""
        if self.actions is None:
            return set()
        groups: dict[str, list[OutboxItem]] = {}
        for item in due:
            if item.kind not in RECORD_KINDS and self.actions.batches(item.action):
                groups.setdefault(item.action, []).append(item)
        for action, items in groups.items():
            now = self.now()
            claimed = {i.key: i for i in items if self.state.claim(i.key, now, LEASE)}
            outcomes = self.actions.run_many(action, {
                key: decode_values(i.payload.get("values", {})) for key, i in claimed.items()})
            for key, item in claimed.items():
                outcome = outcomes[key]
                if isinstance(outcome, ConnectorError):
                    self._failed(item, outcome, now, report)
                else:
                    self.state.done(key, self.now())
                    report.done += 1
                    report.results.append(f"{key}: {outcome}")
        return {i.key for items in groups.values() for i in items}

    def _run(self, item: OutboxItem) -> str:
        if item.kind in RECORD_KINDS:
            inner = RunReport()
            self.fetch_and_process(list(item.payload.get("ids", [])), inner,
                                   force=item.kind != "notice")
            if inner.failed or inner.parked:
                raise RecordError("; ".join(inner.reasons) or "the record failed again")
            return (f"read {inner.read}, wrote {inner.written}, unchanged {inner.unchanged}, "
                    f"actions {inner.actions}")
        if self.actions is None:
            raise RetriableError("no action runner is configured")
        values = decode_values(item.payload.get("values", {}))
        if item.kind == "approval":
            return self._request_approval(item, values)
        if item.kind == "decision":
            return self._record_decision(item)
        return self.actions.run(item.action, item.key, values)

    # --- approvals --------------------------------------------------------------------------
    def _approval_field(self, action: str) -> str:
        return str(self.rules.actions[action].spec.field)

    def _request_approval(self, item: OutboxItem, values: dict[str, Any]) -> str:
        from connector.approvals import PENDING

        assert self.actions is not None
        to, expires = self.actions.request_approval(item.action, item.key, item.record_id,
                                                    values, self.now())
        self._write_field(item.record_id, self._approval_field(item.action), PENDING)
        # Not done: it waits, visible in `outbox list`, until the approver decides.
        raise _Waiting(f"awaiting the decision of {to} until {expires:%Y-%m-%d}")

    def _write_field(self, record_id: str, field_name: str, value: str) -> None:
        [result] = self.crm.write([(record_id, {self.mapping.crm_field(field_name): value})])
        if not result.ok:
            raise RecordError(f"{result.code}: {result.message}")

    def decide(self, key: str, decision: str, now: dt.datetime | None = None) -> str:
        """Record an approver's decision once (see connector.approvals.decide)."""
        from connector.approvals import decide

        return decide(self.state, self.rules, key, decision, now or self.now())

    def _record_decision(self, item: OutboxItem) -> str:
        self._write_field(item.record_id, item.payload["field"], item.payload["value"])
        return f"{item.payload['field']} = {item.payload['value']}"


def backoff(attempt: int, retry_after: float | None = None) -> dt.timedelta:
    """Exponential with full jitter, from 30 s to 6 h; the server's Retry-After wins."""
    if retry_after is not None:
        return dt.timedelta(seconds=retry_after)
    ceiling = min(6 * 3600, 30 * 2 ** min(attempt, 10))
    return dt.timedelta(seconds=random.uniform(ceiling / 2, ceiling))
