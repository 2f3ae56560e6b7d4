"""The state port: what the connector must remember between runs so that nothing is lost and
nothing happens twice. Adapters: `sqlite` (one machine, the default) and `dynamodb` (cloud).

- the poll cursor, per CRM object;
- the record versions already handled, `(id, modstamp)`, so a poll's overlap window and a
  redelivered webhook are dropped;
- the webhook notifications already stored, by the sender's id;
- the ledger: per record and action, whether its condition held at the last look and how many
  times it has risen (the episode), so an action fires on a rising edge only;
- the outbox: the actions to run, each with an idempotency key, retried or parked with a reason;
- the snapshots: each record's mapped CRM fields, appended when they differ from its last one
  (SPEC 8), for calibration, movement and accuracy.

`commit` writes a record's handled version, its ledger, its new outbox items and its snapshot in
one transaction: a crash leaves all of them or none.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol

from connector.core.edges import LedgerState

# pending: to run; parked: failed for a reason that will not pass alone, waits for an admin;
# waiting: ran, and waits for a person (an approver's decision); done: never runs again.
Status = Literal["pending", "parked", "waiting", "done"]


class Kind(StrEnum):
    """What an outbox item does (connector.outbox.RUNNERS runs each). The values are stored:
    never change one."""

    RECORD = "record"          # a record that could not be computed: read and process it again
    WRITEBACK = "writeback"    # a write-back the CRM refused: read and process it again
    NOTICE = "notice"          # a webhook's notice: read and process the records it names
    EMAIL = "email"            # the rules' actions, by their kind
    HTTP = "http"
    ERP = "erp"
    AUDIENCE = "audience"
    APPROVAL = "approval"      # email the approver, then wait for the verdict
    APPROVAL_FIELD = "decision"  # write the approval's field: Pending, then the verdict


# How long an outbox item is held by the run that claimed it (a run that dies on this host
# gives it back at once; see holder.py).
LEASE = dt.timedelta(minutes=10)


@dataclass
class OutboxItem:
    key: str                      # the idempotency key: one effect per key, ever
    record_id: str
    action: str                   # the action's name in the rules, or 'writeback'
    kind: str                     # a Kind's value
    payload: dict[str, Any]       # what the action needs (the record's values as of the edge)
    status: Status = "pending"
    attempts: int = 0
    next_at: dt.datetime | None = None
    reason: str = ""
    created: dt.datetime | None = None
    lease_until: dt.datetime | None = None  # in flight until then, unless its holder is gone
    holder: str = ""                        # who took it (connector.state.holder)


@dataclass(frozen=True)
class Snapshot:
    """A record's mapped CRM fields (`names`, and the `values` as the CRM gave them, as text)
    from `as_of` on (`utc_text`). `digest` identifies the values that count as a change (all
    but the modification stamp, which moves with edits to fields nobody mapped); `modified`
    (that stamp, as `utc_text`, or "") orders two snapshots at one instant, such as a deal's
    closing ones, all dated on its close date. Names and values apart: the pipeline takes one
    per record read, and the names are the same tuple for all."""

    record_id: str
    as_of: str
    names: tuple[str, ...]
    values: list[str]
    digest: str
    modified: str = ""

    @property
    def fields(self) -> dict[str, str]:
        return dict(zip(self.names, self.values, strict=True))

    @property
    def order(self) -> str:
        """Sorts as the snapshots of one record follow each other."""
        return f"{self.as_of}#{self.modified}"


def pack_values(values: Iterable[str]) -> str:
    """Texts as stored in one string: each after a NUL, which a CRM's text cannot hold, at a
    fifth of json.dumps's cost; a JSON list (which never starts with NUL) if one does."""
    items = list(values)
    packed = "\0" + "\0".join(items)
    if not items or packed.count("\0") != len(items):
        return json.dumps(items)
    return packed


def unpack_values(packed: str) -> list[str]:
    if packed.startswith("\0"):
        return packed[1:].split("\0")
    return [str(v) for v in json.loads(packed)]


def utc_text(value: dt.datetime) -> str:
    """Fixed width and UTC, so that strings sort as the instants do."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    elif value.utcoffset():
        value = value.astimezone(dt.UTC)
    # isoformat writes what strftime("%Y-%m-%dT%H:%M:%S.%f+00:00") would, at a third of the cost
    return value.isoformat(timespec="microseconds")


@dataclass
class Commit:
    """Everything one handled record changes in the state, applied together."""

    record_id: str
    version: str | None                                        # the modstamp handled
    ledger: dict[str, LedgerState] = field(default_factory=dict)  # by action
    outbox: list[OutboxItem] = field(default_factory=list)
    snapshot: Snapshot | None = None     # appended only if it differs from the last one


class StateStore(Protocol):
    def get_cursor(self, name: str) -> str | None: ...
    def set_cursor(self, name: str, value: str) -> None:
        """Keep the later of the value held and `value` (connector.state.cursor.later)."""
        ...

    def handled(self, versions: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (record id, modstamp) were handled already."""
        ...

    def remember_notification(self, key: str, now: dt.datetime) -> bool:
        """Store a webhook notification's key; False if it was stored before (a duplicate)."""
        ...

    def ledger(self, record_id: str) -> dict[str, LedgerState]: ...
    def commit(self, commits: Iterable[Commit], now: dt.datetime) -> None: ...

    def due(self, now: dt.datetime, limit: int = 100) -> list[OutboxItem]:
        """Pending items whose time has come, oldest first."""
        ...

    def claim(self, key: str, now: dt.datetime, lease: dt.timedelta, holder: str = "") -> bool:
        """Take an item for running, noting who holds it; False if another worker holds it."""
        ...

    def in_flight(self, now: dt.datetime) -> list[OutboxItem]:
        """Pending items whose lease has not ended: being run now, or by a worker that died."""
        ...

    def reclaim(self, key: str, holder: str, now: dt.datetime) -> bool:
        """End the lease on `key` if `holder` still holds it (a holder known to be gone)."""
        ...

    def record_verdict(self, request: str, items: list[OutboxItem], now: dt.datetime) -> bool:
        """In one transaction: unless `items[0]` (the decision) exists, add every item and
        mark the approval `request` done. False, with nothing changed, if it existed."""
        ...

    def done(self, key: str, now: dt.datetime) -> None: ...
    def retry_later(self, key: str, reason: str, at: dt.datetime) -> None: ...
    def park(self, key: str, reason: str, now: dt.datetime) -> None: ...
    def wait(self, key: str, reason: str, now: dt.datetime) -> None:
        """The item ran and now waits for a person (an approval); only `done` ends it."""
        ...

    def item(self, key: str) -> OutboxItem | None: ...
    def items(self, status: Status | None = None) -> list[OutboxItem]: ...
    def release(self, keys: Iterable[str] | None, now: dt.datetime) -> int:
        """The given items, or every parked one and every one waiting for its next try, due
        now (never a done one). Returns how many."""
        ...

    def drop(self, keys: Iterable[str]) -> int: ...

    def add_snapshots(self, snapshots: Iterable[Snapshot]) -> int:
        """Append snapshots made from the CRM's history; one already stored (same record,
        instants and values) is left out. Returns how many were added."""
        ...

    def read_snapshots(self) -> Iterator[dict[str, str]]:
        """Every snapshot as its CRM fields plus `as_of`, by record id, then `Snapshot.order`
        (as_of, then the record's modification stamp)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class StateUrl:
    """STATE_URL, read in this one place: `sqlite:///path/state.db` (`sqlite:///` alone: in
    memory) or `dynamodb://TABLE`."""

    backend: Literal["sqlite", "dynamodb"]
    where: str                      # the SQLite file, or the DynamoDB table

    @classmethod
    def parse(cls, url: str) -> StateUrl:
        from connector.errors import ConfigurationError, Text

        if url.startswith("sqlite:///"):
            return cls("sqlite", url.removeprefix("sqlite:///") or ":memory:")
        if url.startswith("dynamodb://"):
            return cls("dynamodb", url.removeprefix("dynamodb://"))
        raise ConfigurationError(Text("STATE_URL '{url}' is neither sqlite:///PATH nor "
                                      "dynamodb://TABLE", url=url))

    @property
    def folder(self) -> Path | None:
        """The folder of a SQLite state, where files that go with it are kept."""
        return Path(self.where).parent if self.backend == "sqlite" else None


def open_state(url: str, dynamodb: Callable[[], Any] | None = None) -> StateStore:
    """The store STATE_URL names; `dynamodb` makes the boto3 client (the Lambdas share
    theirs)."""
    where = StateUrl.parse(url)
    if where.backend == "sqlite":
        from connector.state.sqlite import SqliteState

        return SqliteState(where.where)
    from connector.state.dynamodb import DynamoState

    return DynamoState(where.where, client=dynamodb() if dynamodb is not None else None)
