"""Reading through HubSpot's CRM search API, as plain functions over a `Search` call: the
poll's windows by modification time, and keyset paging by id.

The search API pages by offset (`after`) and stops at 10,000 results: past that the window
moves forward to start at the last modification time seen, so the deals sharing that time are
read again (the pipeline drops them), never skipped. Each window is read whole before its pages
are handed out: the pipeline's write-back moves the deals it writes out of the window, and an
offset taken over a window that shrinks while it is paged would skip as many deals as left it.
For the same reason a window whose `total` changes between two pages (someone edited a deal
meanwhile) is read again from the last page that was read before the change. Keyset paging by
id (each page a search for the ids after the last one read) can skip nothing: neither the
ceiling nor concurrent writes move a deal's id.

https://developers.hubspot.com/docs/guides/api/crm/search#limitations
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from typing import Any

from connector.crm import Record
from connector.crm.hubspot.metadata import EPOCH, millis
from connector.errors import ConfigurationError

log = logging.getLogger(__name__)

PAGE_SIZE = 200            # results per search page, the search API's maximum
MAX_RESULTS = 10_000       # results one search can page through; `after` beyond is a 400

Filter = dict[str, Any]
# (filters, after, sort property) -> the search's answer; sort None: by modification time.
Search = Callable[[list[Filter], str | None, str | None], dict[str, Any]]


def results(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, dict) and isinstance(body.get("results"), list):
        return [r for r in body["results"] if isinstance(r, dict)]
    return []


def next_after(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    after = ((body.get("paging") or {}).get("next") or {}).get("after")
    return str(after) if after not in (None, "") else None


def window_filters(modified: str, low: dt.datetime | None, high: dt.datetime) -> list[Filter]:
    # Millisecond epochs, both bounds floored: HubSpot stamps whole milliseconds.
    filters = [{"propertyName": modified, "operator": "LTE", "value": str(millis(high))}]
    if low is not None:
        filters.insert(0, {"propertyName": modified, "operator": "GTE",
                           "value": str(millis(low))})
    return filters


class Window:
    """The poll's reading of [low, high] by modification time: `read` gives (the deals once
    each, oldest first, the last modification time read, whether the ceiling cut it short)."""

    def __init__(self, search: Search, record: Callable[[Any], Record], modified: str,
                 id_field: str, stamp: Callable[[Record], dt.datetime | None]) -> None:
        self._search = search
        self._record = record
        self._modified = modified
        self._id = id_field
        self._stamp = stamp

    def read(self, low: dt.datetime | None, high: dt.datetime
             ) -> tuple[list[Record], dt.datetime | None, bool]:
        pages: list[list[Record]] = []
        totals: list[int | None] = []
        after: str | None = None
        while True:
            try:
                body = self._search(window_filters(self._modified, low, high), after, None)
            except ConfigurationError:
                if after is None:
                    raise
                # A 400 on a later page: HubSpot's ceiling came sooner than documented.
                log.warning("HubSpot refused the search page after %s; moving the window",
                            after)
                return self._once_each(pages), self._last(pages), True
            total = body.get("total") if isinstance(body.get("total"), int) else None
            if totals and total != totals[-1] and pages:
                # The window changed under the paging: what the offset now points at moved.
                log.info("HubSpot: the search total went from %s to %s while paging; reading "
                         "again from the last page before the change", totals[-1], total)
                return self._once_each(pages), self._last(pages), True
            totals.append(total)
            pages.append([self._record(r) for r in results(body)])
            after = next_after(body)
            if after is None:
                return self._once_each(pages), self._last(pages), False
            if not after.isdigit() or int(after) + PAGE_SIZE > MAX_RESULTS:
                return self._once_each(pages), self._last(pages), True

    def instant(self, stamp: dt.datetime) -> list[Record]:
        """Every deal modified at exactly `stamp`, by ascending id."""
        same = [{"propertyName": self._modified, "operator": "EQ", "value": str(millis(stamp))}]
        return [r for page in by_id(self._search, self._record, self._id, same) for r in page]

    def _once_each(self, pages: list[list[Record]]) -> list[Record]:
        """The window's deals once each (a later read wins), by modification time then id."""
        found: dict[str, Record] = {}
        for page in pages:
            for record in page:
                found[str(record[self._id])] = record
        return sorted(found.values(), key=self._order)

    def _last(self, pages: list[list[Record]]) -> dt.datetime | None:
        stamps = [s for page in pages for s in map(self._stamp, page) if s is not None]
        return max(stamps) if stamps else None

    def _order(self, record: Record) -> tuple[dt.datetime, int, str]:
        rid = str(record.get(self._id) or "")
        return (self._stamp(record) or EPOCH, int(rid) if rid.isdigit() else 0, rid)


def by_id(search: Search, record: Callable[[Any], Record], id_field: str,
          filters: list[Filter]) -> Iterator[list[Record]]:
    """Pages of the deals matching `filters`, by ascending id (keyset paging)."""
    last_id: str | None = None
    while True:
        page_filters = list(filters)
        if last_id is not None:
            page_filters.append({"propertyName": id_field, "operator": "GT", "value": last_id})
        body = search(page_filters, None, id_field)
        page = [record(r) for r in results(body)]
        if page:
            yield page
        if not page or next_after(body) is None:
            return
        last_id = str(page[-1][id_field])


__all__ = ["MAX_RESULTS", "PAGE_SIZE", "Search", "Window", "by_id", "next_after", "results",
           "window_filters"]
