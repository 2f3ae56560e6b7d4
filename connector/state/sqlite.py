"""The state store in one SQLite file: the default for one machine and for trying rules."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from connector.errors import restored, stored
from connector.state import (
    Commit,
    LedgerState,
    OutboxItem,
    Snapshot,
    Status,
    pack_values,
    unpack_values,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS cursor (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS handled (
  record_id TEXT NOT NULL, version TEXT NOT NULL, at TEXT NOT NULL,
  PRIMARY KEY (record_id, version));
CREATE TABLE IF NOT EXISTS notification (key TEXT PRIMARY KEY, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ledger (
  record_id TEXT NOT NULL, action TEXT NOT NULL,
  active INTEGER NOT NULL, episode INTEGER NOT NULL,
  PRIMARY KEY (record_id, action));
CREATE TABLE IF NOT EXISTS outbox (
  key TEXT PRIMARY KEY, record_id TEXT NOT NULL, action TEXT NOT NULL, kind TEXT NOT NULL,
  payload TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  next_at TEXT, lease_until TEXT, reason TEXT NOT NULL DEFAULT '', created TEXT NOT NULL,
  updated TEXT NOT NULL, holder TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_at);
"""

# Append-only, read in `Snapshot.order` through the unique index, which also makes a snapshot
# stored twice a no-op. The field names are kept once per mapping (`snapshot_columns`) and the
# values packed (pack_values): a snapshot is taken at every record read, and costs little.
SNAPSHOT_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshot_columns (id INTEGER PRIMARY KEY, names TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS snapshot (
  record_id TEXT NOT NULL, as_of TEXT NOT NULL, modified TEXT NOT NULL, digest TEXT NOT NULL,
  columns INTEGER NOT NULL, vals TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS snapshot_order ON snapshot (record_id, as_of, modified, digest);
"""


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


class SqliteState:
    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the threads of `serve`, serialised by a lock: SQLite
        # serialises writers anyway, and this keeps transactions whole.
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._db.executescript(SNAPSHOT_SCHEMA)
        self._columns: dict[tuple[str, ...], int] = {}   # field names -> snapshot_columns.id
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        if "holder" not in columns:  # a state file from before leases named their holder
            self._db.execute("ALTER TABLE outbox ADD COLUMN holder TEXT NOT NULL DEFAULT ''")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    # --- cursor -----------------------------------------------------------------------------
    def get_cursor(self, name: str) -> str | None:
        rows = self._query("SELECT value FROM cursor WHERE name = ?", (name,))
        return rows[0][0] if rows else None

    def set_cursor(self, name: str, value: str) -> None:
        with self._tx() as db:
            # Forward only (connector.state.cursor.later): a slower run never moves it back.
            db.execute("INSERT INTO cursor (name, value) VALUES (?, ?) ON CONFLICT (name) "
                       "DO UPDATE SET value = excluded.value WHERE excluded.value > value",
                       (name, value))

    # --- versions and notifications -----------------------------------------------------------
    def handled(self, versions: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        wanted = list(versions)
        found: set[tuple[str, str]] = set()
        for i in range(0, len(wanted), 400):
            chunk = wanted[i:i + 400]
            sql = ("SELECT record_id, version FROM handled WHERE (record_id, version) IN ("
                   + ",".join("(?, ?)" for _ in chunk) + ")")
            found.update((r, v) for r, v in self._query(sql, [x for p in chunk for x in p]))
        return found

    def remember_notification(self, key: str, now: dt.datetime) -> bool:
        with self._tx() as db:
            cur = db.execute("INSERT OR IGNORE INTO notification (key, at) VALUES (?, ?)",
                             (key, _iso(now)))
            return cur.rowcount == 1

    # --- ledger and commit --------------------------------------------------------------------
    def ledger(self, record_id: str) -> dict[str, LedgerState]:
        rows = self._query("SELECT action, active, episode FROM ledger WHERE record_id = ?",
                           (record_id,))
        return {a: LedgerState(bool(on), ep) for a, on, ep in rows}

    def commit(self, commits: Iterable[Commit], now: dt.datetime) -> None:
        columns = dict(self._columns)
        with self._tx() as db:
            self._commit(db, commits, now, columns)
        self._columns = columns

    def _commit(self, db: sqlite3.Connection, commits: Iterable[Commit], now: dt.datetime,
                columns: dict[tuple[str, ...], int]) -> None:
        """The commit's rows, inside the caller's transaction; new snapshot field lists go into
        `columns`, which the caller keeps only once the transaction committed."""
        stamp = _iso(now)
        commits = list(commits)
        changed: list[Snapshot] = []
        last = _last_digests(db, {c.record_id for c in commits if c.snapshot is not None})
        for c in commits:
            if c.version is not None:
                db.execute("INSERT OR IGNORE INTO handled (record_id, version, at) "
                           "VALUES (?, ?, ?)", (c.record_id, c.version, stamp))
            for action, entry in c.ledger.items():
                db.execute("INSERT INTO ledger (record_id, action, active, episode) "
                           "VALUES (?, ?, ?, ?) ON CONFLICT (record_id, action) "
                           "DO UPDATE SET active = excluded.active, "
                           "episode = excluded.episode",
                           (c.record_id, action, int(entry.active), entry.episode))
            for item in c.outbox:
                # OR IGNORE: an item already there (same idempotency key) stays as it is.
                db.execute("INSERT OR IGNORE INTO outbox (key, record_id, action, kind, "
                           "payload, status, attempts, next_at, reason, created, updated) "
                           "VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
                           (item.key, item.record_id, item.action, item.kind,
                            json.dumps(item.payload, default=str), item.status,
                            _iso(item.next_at or now), stored(item.reason), stamp, stamp))
            snapshot = c.snapshot
            if snapshot is not None and snapshot.digest != last.get(c.record_id):
                last[c.record_id] = snapshot.digest
                changed.append(snapshot)
        self._append(db, changed, columns)

    # --- outbox -------------------------------------------------------------------------------
    def _items(self, where: str, args: Iterable[Any]) -> list[OutboxItem]:
        rows = self._query("SELECT key, record_id, action, kind, payload, status, attempts, "
                           "next_at, reason, created, lease_until, holder FROM outbox " + where,
                           args)
        return [OutboxItem(k, r, a, kind, json.loads(p), s, n, _time(nx), restored(why), _time(c),
                           _time(lease) if s == "pending" else None, holder)
                for k, r, a, kind, p, s, n, nx, why, c, lease, holder in rows]

    def due(self, now: dt.datetime, limit: int = 100) -> list[OutboxItem]:
        return self._items("WHERE status = 'pending' AND next_at <= ? AND "
                           "(lease_until IS NULL OR lease_until <= ?) ORDER BY next_at, key "
                           "LIMIT ?", (_iso(now), _iso(now), limit))

    def claim(self, key: str, now: dt.datetime, lease: dt.timedelta, holder: str = "") -> bool:
        with self._tx() as db:
            cur = db.execute("UPDATE outbox SET lease_until = ?, holder = ?, "
                             "attempts = attempts + 1, updated = ? WHERE key = ? AND "
                             "status = 'pending' AND (lease_until IS NULL OR lease_until <= ?)",
                             (_iso(now + lease), holder, _iso(now), key, _iso(now)))
            return cur.rowcount == 1

    def in_flight(self, now: dt.datetime) -> list[OutboxItem]:
        return self._items("WHERE status = 'pending' AND lease_until > ? ORDER BY lease_until, "
                           "key", (_iso(now),))

    def reclaim(self, key: str, holder: str, now: dt.datetime) -> bool:
        with self._tx() as db:
            return db.execute("UPDATE outbox SET lease_until = NULL, updated = ? WHERE key = ? "
                              "AND status = 'pending' AND holder = ? AND lease_until > ?",
                              (_iso(now), key, holder, _iso(now))).rowcount == 1

    def record_verdict(self, request: str, items: list[OutboxItem], now: dt.datetime) -> bool:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM outbox WHERE key = ?", (items[0].key,)).fetchone():
                return False
            self._commit(db, [Commit(items[0].record_id, None, outbox=items)], now, {})
            db.execute("UPDATE outbox SET status = 'done', lease_until = NULL, reason = '', "
                       "updated = ? WHERE key = ?", (_iso(now), request))
            return True

    def done(self, key: str, now: dt.datetime) -> None:
        with self._tx() as db:
            db.execute("UPDATE outbox SET status = 'done', lease_until = NULL, reason = '', "
                       "updated = ? WHERE key = ?", (_iso(now), key))

    def retry_later(self, key: str, reason: str, at: dt.datetime) -> None:
        with self._tx() as db:
            db.execute("UPDATE outbox SET next_at = ?, lease_until = NULL, reason = ?, "
                       "updated = ? WHERE key = ? AND status = 'pending'",
                       (_iso(at), stored(reason), _iso(at), key))

    def park(self, key: str, reason: str, now: dt.datetime) -> None:
        with self._tx() as db:
            db.execute("UPDATE outbox SET status = 'parked', lease_until = NULL, reason = ?, "
                       "updated = ? WHERE key = ? AND status != 'done'",
                       (stored(reason), _iso(now), key))

    def wait(self, key: str, reason: str, now: dt.datetime) -> None:
        with self._tx() as db:
            db.execute("UPDATE outbox SET status = 'waiting', lease_until = NULL, reason = ?, "
                       "updated = ? WHERE key = ? AND status != 'done'",
                       (stored(reason), _iso(now), key))

    def item(self, key: str) -> OutboxItem | None:
        found = self._items("WHERE key = ?", (key,))
        return found[0] if found else None

    def items(self, status: Status | None = None) -> list[OutboxItem]:
        if status is None:
            return self._items("ORDER BY created, key", ())
        return self._items("WHERE status = ? ORDER BY created, key", (status,))

    def release(self, keys: Iterable[str] | None, now: dt.datetime) -> int:
        with self._tx() as db:
            if keys is None:  # the parked, and the pending that wait for their next try
                cur = db.execute("UPDATE outbox SET status = 'pending', next_at = ?, "
                                 "lease_until = NULL, updated = ? WHERE status = 'parked' OR "
                                 "(status = 'pending' AND next_at > ? AND "
                                 "(lease_until IS NULL OR lease_until <= ?))",
                                 (_iso(now), _iso(now), _iso(now), _iso(now)))
                return cur.rowcount
            count = 0
            for key in keys:
                count += db.execute("UPDATE outbox SET status = 'pending', next_at = ?, "
                                    "lease_until = NULL, updated = ? WHERE key = ? AND "
                                    "status != 'done'", (_iso(now), _iso(now), key)).rowcount
            return count

    def drop(self, keys: Iterable[str]) -> int:
        with self._tx() as db:
            return sum(db.execute("DELETE FROM outbox WHERE key = ? AND status != 'done'",
                                  (k,)).rowcount for k in keys)

    # --- snapshots ----------------------------------------------------------------------------
    def add_snapshots(self, snapshots: Iterable[Snapshot]) -> int:
        columns = dict(self._columns)
        with self._tx() as db:
            added = self._append(db, list(snapshots), columns)
        self._columns = columns
        return added

    def read_snapshots(self) -> Iterator[dict[str, str]]:
        with self._lock:
            names = {i: unpack_values(n) for i, n in self._db.execute(
                "SELECT id, names FROM snapshot_columns")}
            rows = self._db.execute("SELECT columns, vals, as_of FROM snapshot "
                                    "ORDER BY record_id, as_of, modified, digest")
            for columns, vals, as_of in rows:
                yield {**dict(zip(names[columns], unpack_values(vals), strict=True)),
                       "as_of": as_of}

    def _append(self, db: sqlite3.Connection, snapshots: list[Snapshot],
                columns: dict[tuple[str, ...], int]) -> int:
        """Append these snapshots (one already there is left out); returns how many. New
        field-name lists go into `columns`, which the caller keeps only once committed."""
        rows = []
        for s in snapshots:
            found = columns.get(s.names)
            if found is None:
                found = columns[s.names] = self._column_id(db, s.names)
            rows.append((s.record_id, s.as_of, s.modified, s.digest, found,
                         pack_values(s.values)))
        before = db.total_changes
        db.executemany("INSERT OR IGNORE INTO snapshot (record_id, as_of, modified, digest, "
                       "columns, vals) VALUES (?, ?, ?, ?, ?, ?)", rows)
        return db.total_changes - before

    @staticmethod
    def _column_id(db: sqlite3.Connection, names: tuple[str, ...]) -> int:
        packed = pack_values(names)
        db.execute("INSERT OR IGNORE INTO snapshot_columns (names) VALUES (?)", (packed,))
        [(found,)] = db.execute("SELECT id FROM snapshot_columns WHERE names = ?",
                                (packed,)).fetchall()
        return int(found)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _last_digests(db: sqlite3.Connection, record_ids: set[str]) -> dict[str, str]:
    """Each record's last snapshot digest, 500 records a query (SQLite takes a bare column
    from the row that gives the MAX)."""
    wanted = sorted(record_ids)
    found: dict[str, str] = {}
    for i in range(0, len(wanted), 500):
        chunk = wanted[i:i + 500]
        found.update((r, d) for r, d, _ in db.execute(
            "SELECT record_id, digest, MAX(as_of || '#' || modified) FROM snapshot WHERE "
            "record_id IN (" + ",".join("?" * len(chunk)) + ") GROUP BY record_id", chunk))
    return found

