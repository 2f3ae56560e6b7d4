"""Storing a webhook's notice: the record ids it names, queued in the outbox to be read and
processed. Kept apart from the pipeline so that the webhook function imports only this."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from connector.state import Commit, Kind, OutboxItem, StateStore


def store_notice(state: StateStore, key: str, ids: Iterable[str], now: dt.datetime) -> bool:
    """Queue the ids to be read and processed; False for a duplicate (the same notification
    delivered again). The outbox item goes in first, by its own key: a crash before the
    notification is remembered leaves a redelivery that finds the item already there, so
    nothing is lost and nothing is queued twice."""
    wanted = sorted(set(ids))
    state.commit([Commit(f"notice:{key}", None, outbox=[OutboxItem(
        f"notice:{key}", ",".join(wanted)[:200], "fetch", Kind.NOTICE, {"ids": wanted})])], now)
    return state.remember_notification(key, now)
