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

A batch is not a query page: evaluated records wait, uncommitted, until their changes fill the
CRM's write calls (`write_size`), so sparse changes over many pages cost the fewest writes. A
batch is always a prefix of what was read, so the cursor, moved after its commit to the
batch's newest version, never passes a record that waits.

The first poll of a deployment (no cursor yet) is a backfill: it records each record's true
conditions in the ledger as already true and queues nothing, so turning rules on never mails
about the past. A backfill interrupted (a crash, a stop) is resumed as a backfill by the next
poll: its marker says "running" until the poll that reads everything ends.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from connector.actions import ActionRunner, decode_values, encode_values, idempotency_key
from connector.core.edges import rising_edges
from connector.core.evaluate import Evaluator, Outcome
from connector.core.ruleset import RuleSet
from connector.core.values import parse_datetime
from connector.crm import Crm, Record, json_value, scrub
from connector.errors import (
    ConfigurationError,
    ConnectorError,
    FatalError,
    RecordError,
    RetriableError,
    Text,
)
from connector.history.snapshots import Snapshotter
from connector.outbox import RECORD_KINDS, RUNNERS, Failed, Ran, Waits, record_verdict
from connector.state import (
    LEASE,
    Commit,
    Kind,
    OutboxItem,
    Snapshot,
    StateStore,
    cursor,
    holder,
)
from connector.state.notices import store_notice

__all__ = ["LEASE", "OVERLAP", "DrainReport", "Pipeline", "RunReport", "store_notice"]

log = logging.getLogger(__name__)

# Salesforce stamps SystemModstamp when a transaction starts; a long one commits later. Each
# poll reads this far back from the cursor, and drops what it already handled.
OVERLAP = dt.timedelta(minutes=5)
MAX_ATTEMPTS = 12
# The backfill marker is kept as a cursor, so its values rise (a cursor only moves forward).
BACKFILL_RUNNING = "1 running"
BACKFILL_DONE = "2 done"


@dataclass
class RunReport:
    read: int = 0
    skipped: int = 0        # already handled at this version
    written: int = 0
    unchanged: int = 0
    parked: int = 0         # the CRM refused the write: waits in the outbox with the reason
    failed: int = 0         # the record cannot be computed: waits in the outbox with the reason
    actions: int = 0        # outbox items added by rising edges
    backfilled: int = 0     # rising edges a backfill recorded as already true, not fired
    cursor: str | None = None
    stopped: str | None = None
    backfill: bool = False  # this poll was the deployment's first: it reads everything
    reasons: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)  # the keys of the outbox items it added

    def note(self, reason: str) -> None:
        if len(self.reasons) < 50:
            self.reasons.append(reason)


@dataclass
class DrainReport:
    done: int = 0
    retrying: int = 0
    parked: int = 0
    in_flight: int = 0                  # leased by another run now; retried when leases end
    in_flight_until: str | None = None  # the last of those leases ends then (ISO, UTC)
    stopped: str | None = None
    results: list[str] = field(default_factory=list)
    # The outbox items the runs added and did not run themselves: the items to run next.
    added: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Evaluated:
    """A record read and evaluated, not yet written nor committed; `outcome` None: it could
    not be computed, `error` says why."""

    record_id: str
    version: str | None
    outcome: Outcome | None
    error: str | None = None
    snapshot: Snapshot | None = None  # its values as read, stored with its commit if they changed

    @property
    def changed(self) -> bool:
        return self.outcome is not None and bool(self.outcome.changes)


def full_calls(changed: list[bool], write_size: int) -> int:
    """How many of the records waiting (`changed`: whether each has a change to write) to
    commit now: the longest prefix whose changes fill whole write calls of `write_size`, with
    the unchanged records that follow it; 0 while not one call is full."""
    at = [i for i, c in enumerate(changed) if c]
    full = len(at) // write_size * write_size
    if full == 0:
        return 0
    return at[full] if full < len(at) else len(changed)


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
        # "running" while the first poll reads everything, then "done" and when
        self.backfill_name = f"backfill:{self.cursor_name}"
        # Each record's values as read, kept when they changed (SPEC 8).
        self.snapshots = Snapshotter(rules.mapping, rules.closed) if snapshots else None

    # --- one batch ------------------------------------------------------------------------
    def _evaluate(self, records: list[Record], report: RunReport, reprocess: bool,
                  dry_run: bool) -> list[_Evaluated]:
        """The records not handled yet at their version (all of them with `reprocess`),
        evaluated, each with its snapshot (none in a dry run)."""
        today, now = self.today(), self.now()
        versioned = [(str(r.get(self.mapping.id_field)), self._version(r), r) for r in records]
        report.read += len(records)
        done = set() if reprocess else self.state.handled(
            (rid, v) for rid, v, _ in versioned if v is not None)
        evaluated: list[_Evaluated] = []
        for rid, version, raw in versioned:
            if version is not None and (rid, version) in done:
                report.skipped += 1
                continue
            snapshot = self.snapshots.take(raw, now) if self.snapshots and not dry_run else None
            try:
                outcome = self.evaluator.evaluate(self.mapping.read(raw), today)
            except RecordError as exc:
                evaluated.append(_Evaluated(rid, version, None, exc.text, snapshot))
                continue
            evaluated.append(_Evaluated(rid, version, outcome, snapshot=snapshot))
        return evaluated

    def _commit(self, batch: list[_Evaluated], report: RunReport, dry_run: bool,
                backfill: bool = False) -> None:
        """Write back what changed in the batch, then commit it in one transaction. A
        `backfill` records the rising edges in the ledger and fires none of them."""
        now = self.now()
        updates = [(e.record_id, {self.mapping.crm_field(k): json_value(v)
                                  for k, v in e.outcome.changes.items()})
                   for e in batch if e.outcome is not None and e.changed]
        results = {} if dry_run or not updates else {r.id: r for r in self.crm.write(updates)}
        commits: list[Commit] = []
        for e in batch:
            rid, version, outcome = e.record_id, e.version, e.outcome
            commit = Commit(rid, version, snapshot=e.snapshot)
            commits.append(commit)
            if outcome is None:
                report.failed += 1
                report.note(Text("{record}: {reason}", record=rid, reason=e.error))
                commit.outbox.append(OutboxItem(
                    f"record:{rid}:{version}", rid, "compute", Kind.RECORD, {"ids": [rid]},
                    status="parked", reason=e.error or ""))
                continue
            result = results.get(rid)
            if outcome.changes and result is not None and not result.ok:
                report.parked += 1
                reason = Text("{code}: {reason}", code=result.code, reason=result.message)
                report.note(Text("{record}: {reason}", record=rid, reason=reason))
                commit.outbox.append(OutboxItem(
                    f"writeback:{rid}:{version}", rid, "writeback", Kind.WRITEBACK,
                    {"ids": [rid], "fields": list(outcome.changes)}, status="parked",
                    reason=reason))
                if backfill:  # what is true now stays the past when the write goes through
                    self._edges(rid, outcome, commit, report, backfill)
                continue  # its actions wait until the write goes through
            if outcome.changes:
                report.written += 1
            else:
                report.unchanged += 1
            self._edges(rid, outcome, commit, report, backfill)
        if not dry_run and commits:
            self.state.commit(commits, now)
            report.added += [i.key for c in commits for i in c.outbox if i.status == "pending"]

    def process(self, records: list[Record], dry_run: bool = False,
                reprocess: bool = False) -> RunReport:
        """Evaluate, write back and commit records already read (a webhook's, a test's)."""
        report = RunReport()
        self._process_pages([records], report, dry_run=dry_run, reprocess=reprocess)
        return report

    def _process_pages(self, pages: Iterable[list[Record]], report: RunReport, *,
                       dry_run: bool = False, reprocess: bool = False,
                       backfill: bool = False,
                       committed: Callable[[list[_Evaluated]], None] = lambda batch: None
                       ) -> None:
        """Process pages as one stream, committing in batches that fill the write calls (see
        the module's docstring); `committed` is told each batch once it is committed."""
        held: list[_Evaluated] = []
        for page in pages:
            waiting = {(e.record_id, e.version) for e in held}
            fresh = [r for r in page if (str(r.get(self.mapping.id_field)),
                                         self._version(r)) not in waiting]
            report.read += len(page) - len(fresh)
            report.skipped += len(page) - len(fresh)   # read again while it waits: handled
            if {str(r.get(self.mapping.id_field)) for r in fresh} & {e.record_id for e in held}:
                # A newer version of a waiting record: the older one is committed first, so
                # that each version is handled once and in order.
                self._commit(held, report, dry_run, backfill)
                committed(held)
                held = []
            held += self._evaluate(fresh, report, reprocess, dry_run)
            cut = len(held) if dry_run else full_calls([e.changed for e in held],
                                                          self.crm.write_size)
            if cut:
                self._commit(held[:cut], report, dry_run, backfill)
                committed(held[:cut])
                held = held[cut:]
        if held:
            self._commit(held, report, dry_run, backfill)
            committed(held)

    def _edges(self, rid: str, outcome: Outcome, commit: Commit, report: RunReport,
               backfill: bool) -> None:
        ledger, fired = rising_edges(self.state.ledger(rid), outcome.due)
        commit.ledger.update(ledger)
        if backfill:
            report.backfilled += sum(1 for edge in fired if edge.action in self.rules.actions)
            return
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
    def poll(self, since: dt.datetime | None = None, dry_run: bool = False,
             fire_backfill: bool = False) -> RunReport:
        """Read what changed since the cursor (or `since`), process it page by page, and move
        the cursor after each committed batch, never past the run's start. The first poll of
        a deployment is a backfill (see the top of this module) unless `fire_backfill`."""
        report = RunReport()
        started = self.now()
        report.cursor = self.state.get_cursor(self.cursor_name)
        if since is None:
            since = cursor.read_from(report.cursor, OVERLAP)
        marker = self.state.get_cursor(self.backfill_name)
        report.backfill = marker == BACKFILL_RUNNING or (report.cursor is None and
                                                         marker is None)
        backfill = report.backfill and not fire_backfill
        if report.backfill and not dry_run and marker is None:
            self.state.set_cursor(self.backfill_name, BACKFILL_RUNNING)

        def move_cursor(batch: list[_Evaluated]) -> None:
            moved = cursor.after_batch(report.cursor, (e.version for e in batch), started)
            if moved is not None and not dry_run:
                self.state.set_cursor(self.cursor_name, moved)
                report.cursor = moved

        try:
            self._process_pages(self.crm.changed(since, started), report, dry_run=dry_run,
                                backfill=backfill, committed=move_cursor)
        except (FatalError, RetriableError) as exc:
            report.stopped = exc.text
            log.warning("poll stopped, cursor kept at %s: %s", report.cursor, exc)
            return report
        if report.backfill and not dry_run:
            self.state.set_cursor(self.backfill_name,
                                  f"{BACKFILL_DONE} {started.astimezone(dt.UTC).isoformat()}")
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
            self._process_pages(self.crm.open_records(field, list(closed.labels) if closed
                                                      else []), report, reprocess=True)
        except (FatalError, RetriableError) as exc:
            report.stopped = exc.text
        return report

    # --- webhooks ---------------------------------------------------------------------------
    def fetch_and_process(self, ids: list[str], reprocess: bool = False) -> RunReport:
        """Read the records with these ids, a CRM page at a time, and process them; with
        `reprocess`, the versions handled already too."""
        report = RunReport()
        size = self.crm.page_size
        pages = (self.crm.fetch(ids[i:i + size]) for i in range(0, len(ids), size))
        self._process_pages(pages, report, reprocess=reprocess)
        return report

    # --- the outbox -------------------------------------------------------------------------
    def drain(self, limit: int = 1000, lease: dt.timedelta = LEASE) -> DrainReport:
        """Run the outbox items that are due: each effect once per idempotency key. An item
        is leased while it runs (in Lambda, pass the invocation's time left, so no lease
        outlives the function); the leases of a run that died on this host are taken back
        first. One item's failure, whatever it is, parks or delays that item alone."""
        self._reclaim_dead_leases()
        report = self._run_items(self.state.due(self.now(), limit), lease)
        # what other runs hold, for the summary a person reads (a worker's message needs not)
        others = self.state.in_flight(self.now())
        report.in_flight = len(others)
        ends = [i.lease_until for i in others if i.lease_until is not None]
        if ends:
            report.in_flight_until = max(ends).isoformat(timespec="seconds")
        return report

    def run_items(self, keys: Iterable[str], lease: dt.timedelta = LEASE) -> DrainReport:
        """Run these outbox items, those of them that are due, and no others (a worker's
        message names them), as `drain` runs its items. The report's `added` are the items
        their runs added: the ones to run next."""
        self._reclaim_dead_leases()
        now = self.now()
        found = [self.state.item(k) for k in sorted(set(keys))]
        return self._run_items([i for i in found if i is not None and i.status == "pending"
                                and (i.next_at is None or i.next_at <= now)], lease)

    def _reclaim_dead_leases(self) -> None:
        me = holder.this_process()
        for item in self.state.in_flight(self.now()):
            if item.holder != me and holder.is_gone(item.holder):
                self.state.reclaim(item.key, item.holder, self.now())

    def _run_items(self, due: list[OutboxItem], lease: dt.timedelta) -> DrainReport:
        report = DrainReport()
        me = holder.this_process()
        ran = self._drain_together(due, report, lease, me)
        for item in due:
            if item.key in ran:
                continue
            ran |= self._drain_one(item, report, lease, me)
            if report.stopped is not None:
                break
        report.added = [k for k in dict.fromkeys(report.added) if k not in ran]
        return report

    def _drain_one(self, item: OutboxItem, report: DrainReport, lease: dt.timedelta,
                   me: str) -> set[str]:
        """Claim and run one item (and the item it says to run next); returns the keys run."""
        now = self.now()
        if not self.state.claim(item.key, now, lease, me):
            return set()
        try:
            ran = self._run(item)
        except FatalError as exc:
            self.state.retry_later(item.key, exc.text, now + dt.timedelta(minutes=15))
            report.stopped = exc.text
            return {item.key}
        except ConnectorError as exc:
            self._failed(item, exc, now, report)
            return {item.key}
        except Exception as exc:  # a bug or a library's surprise: this item alone waits
            self._park_unexpected(item, exc, now, report)
            return {item.key}
        if isinstance(ran, Failed):
            report.added += ran.added
            self._failed(item, ran.error, now, report)
            return {item.key}
        if isinstance(ran, Waits):
            self.state.wait(item.key, ran.reason, now)
            report.results.append(f"{item.key}: {ran.reason}")
            then = self.state.item(ran.then) if ran.then else None
            if then is None or then.status != "pending":
                return {item.key}
            report.added.append(then.key)   # queued next, unless it runs here
            return {item.key} | self._drain_one(then, report, lease, me)
        self.state.done(item.key, self.now())
        report.done += 1
        report.results.append(f"{item.key}: {ran.text}")
        report.added += ran.added
        return {item.key}

    def _run(self, item: OutboxItem) -> Ran:
        runner = RUNNERS.get(item.kind)
        if runner is None:
            raise ConfigurationError(Text("no runner for outbox items of kind '{kind}'",
                                          kind=item.kind))
        return runner(self, item)

    def _failed(self, item: OutboxItem, exc: ConnectorError, now: dt.datetime,
                report: DrainReport) -> None:
        """A retriable failure waits for its next try (parked after MAX_ATTEMPTS); any other
        is parked with its reason."""
        if isinstance(exc, RetriableError) and item.attempts + 1 < MAX_ATTEMPTS:
            self.state.retry_later(item.key, exc.text, now + backoff(item.attempts + 1,
                                                                     exc.retry_after))
            report.retrying += 1
        elif isinstance(exc, RetriableError):
            self.state.park(item.key, Text("gave up after {n} tries: {reason}", n=MAX_ATTEMPTS,
                                           reason=exc.text), now)
            report.parked += 1
        else:
            self.state.park(item.key, exc.text, now)
            report.parked += 1

    def _park_unexpected(self, item: OutboxItem, exc: Exception, now: dt.datetime,
                         report: DrainReport) -> None:
        reason = self._unexpected(exc)
        log.error("outbox item %s parked: %s", item.key, reason)
        self.state.park(item.key, reason, now)
        report.parked += 1

    def _drain_together(self, due: list[OutboxItem], report: DrainReport,
                        lease: dt.timedelta, me: str) -> set[str]:
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
            claimed = {i.key: i for i in items if self.state.claim(i.key, now, lease, me)}
            try:
                outcomes = self.actions.run_many(action, {
                    key: decode_values(i.payload.get("values", {}))
                    for key, i in claimed.items()})
            except Exception as exc:  # the whole call failed in a way no sender foresaw
                for item in claimed.values():
                    self._park_unexpected(item, exc, now, report)
                continue
            for key, item in claimed.items():
                outcome = outcomes[key]
                if isinstance(outcome, ConnectorError):
                    self._failed(item, outcome, now, report)
                else:
                    self.state.done(key, self.now())
                    report.done += 1
                    report.results.append(f"{key}: {outcome}")
        return {i.key for items in groups.values() for i in items}

    def _unexpected(self, exc: Exception) -> str:
        """The reason parked on an item that failed in a way no sender foresaw. The message
        may quote a URL or a header: every secret this process knows is masked in it."""
        from pydantic import SecretStr

        settings = self.actions.settings if self.actions is not None else None
        secrets = [value.get_secret_value() for value in
                   (vars(settings).values() if settings is not None else ())
                   if isinstance(value, SecretStr)]
        secrets += [v for v in os.environ.values() if len(v) >= 8]
        message = scrub(str(exc), sorted(filter(None, secrets), key=len, reverse=True))
        return Text("unexpected {kind}: {message}", kind=type(exc).__name__,
                    message=message[:300])

    # --- approvals --------------------------------------------------------------------------
    def record_verdict(self, key: str, verdict: str, now: dt.datetime | None = None) -> str:
        """Record an approver's verdict once (see connector.outbox.record_verdict)."""
        return record_verdict(self.state, self.rules, key, verdict, now or self.now()).outcome


def backoff(attempt: int, retry_after: float | None = None) -> dt.timedelta:
    """Exponential with full jitter, from 30 s to 6 h; the server's Retry-After wins."""
    if retry_after is not None:
        return dt.timedelta(seconds=retry_after)
    ceiling = min(6 * 3600, 30 * 2 ** min(attempt, 10))
    return dt.timedelta(seconds=random.uniform(ceiling / 2, ceiling))
