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


def snapshot_of(record: Record, mapping: Mapping, closed: Closed | None,
                read_at: dt.datetime) -> Snapshot:
    """The snapshot of one record as read; `read_at` dates it when the record has no usable
    modification stamp."""
    fields = {name: text(mapping.crm_value(record, name)) for name in mapping.crm_fields}
    modified = instant(mapping.crm_value(record, mapping.modified_field))
    as_of = _closed_on(record, mapping, closed) or modified or read_at
    counted = {k: v for k, v in fields.items() if k != mapping.modified_field}
    digest = hashlib.blake2b(json.dumps(counted, sort_keys=True).encode(),
                             digest_size=12).hexdigest()
    return Snapshot(fields[mapping.id_field], as_of, fields, digest,
                    utc_text(modified) if modified else "")


def text(value: Any) -> str:
    """A value as the CRM gave it, as text: numbers as written in its JSON, blanks as ""."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
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
    try:
        moment = parse_datetime(value, "modified")
    except RecordError:
        return None
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _closed_on(record: Record, mapping: Mapping, closed: Closed | None) -> dt.datetime | None:
    """Midnight UTC of a closed deal's close date; None for an open deal or no date."""
    close_field = mapping.fields.get(CLOSE_DATE)
    if closed is None or close_field is None or closed.field not in mapping.canonical_names:
        return None
    if closed.state(mapping.crm_value(record, mapping.crm_field(closed.field))) is None:
        return None
    try:
        day = parse_date(mapping.crm_value(record, close_field), CLOSE_DATE)
    except RecordError:
        return None
    return dt.datetime.combine(day, dt.time(), dt.UTC) if day else None


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
