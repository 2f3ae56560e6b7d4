"""The deals' past in HubSpot, as changes: `propertiesWithHistory` on the CRM v3 batch read
(https://developers.hubspot.com/docs/api-reference/crm-objects-v3/batch/post-crm-v3-objects-objectType-batch-read),
which answers each property's values newest first, `[{value, timestamp, sourceType, ...}]`;
each value replaced the one before it, and a property set after the deal's creation was blank
until then (HubSpot keeps no entry for a property without a value). Only the mapping's own
properties are asked for; a reference path (`hubspot_owner_id.email`) keeps the value read now.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

from connector.core.mapping import Mapping
from connector.crm.hubspot.client import HubSpotCrm
from connector.errors import Text
from connector.history.asof import Change
from connector.history.snapshots import instant, text

# Deals per batch read when asking for history: HubSpot's limit then is 50, not 100.
HISTORY_BATCH = 50


def read_changes(crm: HubSpotCrm, mapping: Mapping, ids: Sequence[str],
                 since: dt.datetime | None) -> Iterator[tuple[str, Change]]:
    """(deal id, change) for every value the deals' mapped properties held since `since`."""
    own = [p for p in dict.fromkeys(mapping.fields.values()) if "." not in p]
    if not own:
        return
    path = f"/crm/v3/objects/{mapping.object}/batch/read"
    for i in range(0, len(ids), HISTORY_BATCH):
        body = crm.post(Text("reading the deals' history"), path, {
            "properties": [mapping.id_field], "propertiesWithHistory": own,
            "inputs": [{"id": d} for d in ids[i:i + HISTORY_BATCH]]}, kind="batch_read")
        for result in body.get("results", []) if isinstance(body, dict) else []:
            deal = str(result.get("id", ""))
            history: dict[str, Any] = result.get("propertiesWithHistory") or {}
            created = instant(result.get("createdAt"))
            for name in own:
                # A property keeps no entry while it has no value: set after the deal was
                # created, it was blank before.
                before: str | None = None
                for entry in reversed(history.get(name) or []):   # oldest first
                    at = instant(entry.get("timestamp"))
                    if at is None:
                        continue
                    if before is None and created is not None and at > created:
                        before = ""
                    change = Change(at, name, text(crm.incoming(name, entry.get("value"))),
                                    before)
                    before = change.new
                    if since is None or at >= since:
                        yield deal, change

