"""The opportunities' past in Salesforce, as changes: one SOQL query on OpportunityHistory and
one on OpportunityFieldHistory, each paged by 2,000 rows through the adapter (`query_pages`).

- OpportunityHistory: a row at each change of stage, amount, probability, close date or forecast
  category, holding all five as they then were, with no old values
  (https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_opportunityhistory.htm);
- OpportunityFieldHistory: old and new value of each field an admin tracks (Setup > Object
  Manager > Opportunity > Fields & Relationships > Set History Tracking), up to 20 fields
  (https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_opportunityfieldhistory.htm).
Only the mapping's own fields are asked for. A path through a lookup (`Owner.Name`) has no
history of its own: it keeps the value read now.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from simple_salesforce import format_soql

from connector.core.mapping import Mapping
from connector.crm.salesforce.client import SalesforceCrm
from connector.errors import ConfigurationError, RetriableError, Text
from connector.history.asof import Change
from connector.history.snapshots import instant, text

# OpportunityHistory's columns, and the Opportunity fields they hold.
OPPORTUNITY_HISTORY = {"StageName": "StageName", "Amount": "Amount",
                       "Probability": "Probability", "CloseDate": "CloseDate",
                       "ForecastCategory": "ForecastCategoryName"}


def read_changes(crm: SalesforceCrm, mapping: Mapping,
                 since: dt.datetime | None) -> Iterator[tuple[str, Change]]:
    """(opportunity id, change) for every history row since `since` (all when None; an
    aware datetime)."""
    if mapping.object.casefold() != "opportunity":
        raise ConfigurationError(Text("{file}: Salesforce keeps this history for opportunities "
                                      "only, not '{object}'",
                                      file=mapping.source or Text("the mapping"),
                                      object=mapping.object))
    own = {name.casefold(): name for name in mapping.fields.values() if "." not in name}
    after = "" if since is None else "CreatedDate >= {since}"
    columns = {c: own[f.casefold()] for c, f in OPPORTUNITY_HISTORY.items()
               if f.casefold() in own}
    if columns:
        soql = format_soql("SELECT OpportunityId, CreatedDate, {columns:literal} FROM "
                           "OpportunityHistory" + (" WHERE " + after if after else "")
                           + " ORDER BY OpportunityId, CreatedDate",
                           columns=", ".join(columns), since=since)
        for page in crm.query_pages(Text("the opportunity history query"), soql):
            for row in page:
                at = _instant(row)
                for column, field in columns.items():
                    yield str(row["OpportunityId"]), Change(at, field, text(row.get(column)))
    if own:
        soql = format_soql("SELECT OpportunityId, CreatedDate, Field, OldValue, NewValue FROM "
                           "OpportunityFieldHistory WHERE Field IN {fields}"
                           + (" AND " + after if after else "")
                           + " ORDER BY OpportunityId, CreatedDate",
                           fields=sorted(own.values()), since=since)
        for page in crm.query_pages(Text("the opportunity field history query"), soql):
            for row in page:
                tracked = own.get(str(row.get("Field", "")).casefold())
                if tracked is not None:
                    yield str(row["OpportunityId"]), Change(
                        _instant(row), tracked, text(row.get("NewValue")),
                        text(row.get("OldValue")))


def _instant(row: dict[str, object]) -> dt.datetime:
    moment = instant(row.get("CreatedDate"))
    if moment is None:
        raise RetriableError(Text("Salesforce sent a history row without a usable CreatedDate "
                                  "({value})", value=repr(row.get("CreatedDate"))))
    return moment
