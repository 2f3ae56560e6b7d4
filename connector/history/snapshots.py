"""Snapshots: a record's mapped CRM fields as the CRM gave them, from an instant on (SPEC 8).

The pipeline takes one of every record it reads and the state store keeps it when its values
differ from the record's last one; `history pull` makes them from the CRM's own history; and
`history export` writes them as the snapshot CSV that `calibrate`, `movement` and `accuracy`
read back (`--input`).

A snapshot's instant is the record's modification stamp, except for a closed deal's: those are
dated on its close date, which is when the deal is counted as won or lost.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

from connector.core.mapping import Mapping
from connector.core.ruleset import Closed
from connector.core.values import parse_date, parse_datetime
from connector.crm import Record
from connector.errors import RecordError
from connector.state import Snapshot, utc_text

AS_OF = "as_of"
CLOSE_DATE = "close_date"   # the canonical name of the close date, as in every mapping


class Snapshotter:
    """Takes the snapshot of a record as read, for one mapping and the rules' closed states.
    The pipeline takes one per record read: what can be worked out once per mapping is."""

    def __init__(self, mapping: Mapping, closed: Closed | None) -> None:
        self.mapping = mapping
        self.closed = closed
        self.fields = tuple(mapping.crm_fields)
        self.paths = [(i, f.split(".")) for i, f in enumerate(self.fields) if "." in f]
        index = {f: i for i, f in enumerate(self.fields)}
        self.modified = index[mapping.modified_field]
        has_state = closed is not None and closed.field in mapping.canonical_names
        self.state_at = index[mapping.crm_field(closed.field)] if closed and has_state else None
        close_date = mapping.fields.get(CLOSE_DATE)
        self.close_date_at = index[close_date] if close_date else None

    def take(self, record: Record, read_at: dt.datetime) -> Snapshot:
        """`read_at` dates it when the record has no usable modification stamp."""
        raw = [record.get(f, _MISSING) for f in self.fields]
        for i, (head, *rest) in self.paths:   # the API's nested records (Owner.Name)
            node = record.get(head)
            for part in rest:
                node = node.get(part) if type(node) is dict else None
            if node is not None:
                raw[i] = node
        values = [v if type(v) is str else "" if v is None else self._text(record, i, v)
                  for i, v in enumerate(raw)]
        modified = instant(values[self.modified])
        stamp = utc_text(modified) if modified else ""
        closed_on = self._closed_on(values)
        as_of = utc_text(closed_on) if closed_on else stamp or utc_text(read_at)
        # NUL cannot be in a CRM's text: the joined values are read one way only.
        counted = values[:self.modified] + values[self.modified + 1:]
        digest = hashlib.blake2b("\0".join(counted).encode(), digest_size=12).hexdigest()
        return Snapshot(values[0], as_of, self.fields, values, digest, stamp)

    def _text(self, record: Record, i: int, value: Any) -> str:
        if value is _MISSING:   # an export's flat path, or a name in another case
            value = self.mapping.crm_value(record, self.fields[i])
        return text(value)

    def _closed_on(self, values: list[str]) -> dt.datetime | None:
        """Midnight UTC of a closed deal's close date; None for an open deal or no date."""
        if self.closed is None or self.state_at is None or self.close_date_at is None:
            return None
        if self.closed.state(values[self.state_at]) is None:
            return None
        try:
            day = parse_date(values[self.close_date_at], CLOSE_DATE)
        except RecordError:
            return None
        return dt.datetime.combine(day, dt.time(), dt.UTC) if day else None


_MISSING = object()   # a field not found under its own name in the record


def text(value: Any) -> str:
    """A value as the CRM gave it, as text: numbers as written in its JSON, blanks as ""."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return json.dumps(value, default=str, sort_keys=True)


def instant(value: Any) -> dt.datetime | None:
    """A CRM's date-time (ISO 8601, Salesforce's +0000), naive taken as UTC; None if unusable."""
    if isinstance(value, str):
        try:   # the common case, at a tenth of parse_datetime's cost
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is not None:
            return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    try:
        moment = parse_datetime(value, "modified")
    except RecordError:
        return None
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def write_snapshot_csv(rows: Iterable[dict[str, str]], path: str | Path,
                       mapping: Mapping) -> int:
    """Write snapshots (as `StateStore.read_snapshots` yields them) as the snapshot CSV: the
    mapping's CRM fields, then `as_of`. The file appears whole or not at all. Returns the
    number of rows."""
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    count = 0
    with partial.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, [*mapping.crm_fields, AS_OF], restval="",
                                extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            count += 1
    os.replace(partial, target)
    return count
