"""The poll cursor's arithmetic, as plain functions. A cursor is a UTC instant in ISO 8601 as
the pipeline writes it (`+00:00`, from `datetime.isoformat`), so two compare as text as they do
as instants. The stores keep the `later` of the value they hold and the one set, whatever
order two runs finish in: a cursor never moves back, in either store."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable


def read_from(cursor: str | None, overlap: dt.timedelta) -> dt.datetime | None:
    """Where a poll starts reading: `overlap` before the cursor (a transaction stamped
    earlier may commit later); None, everything, when there is no cursor yet."""
    return dt.datetime.fromisoformat(cursor) - overlap if cursor else None


def after_batch(cursor: str | None, versions: Iterable[str | None],
                started: dt.datetime) -> str | None:
    """The cursor once a batch with these versions is committed: its newest version, never
    past the run's start (a record stamped later is read by the next run); None when the
    cursor stays where it is."""
    stamps = [v for v in versions if v is not None]
    if not stamps:
        return None
    newest = min(max(stamps), started.astimezone(dt.UTC).isoformat())
    return newest if cursor is None or newest > cursor else None


def later(stored: str | None, proposed: str) -> str:
    """What a store holds once `proposed` is set over `stored`."""
    return proposed if stored is None or proposed > stored else stored


__all__ = ["after_batch", "later", "read_from"]
