"""The CRMs' history on top of the fake org and portal, shaped as their REST APIs answer it.

- Salesforce: every edit or write that changes stage, amount, probability, close date or
  forecast category adds an OpportunityHistory row holding all five; every change of a tracked
  field adds an OpportunityFieldHistory row (Field, OldValue, NewValue); creation adds both (the
  field history's row says Field 'created'). SOQL on them: WHERE CreatedDate >= and Field IN,
  ORDER BY OpportunityId, CreatedDate, pages of 2,000 with a relative nextRecordsUrl.
- HubSpot: every property keeps its values, and a batch read with `propertiesWithHistory` answers
  them newest first as `[{value, timestamp, sourceType, sourceId, updatedByUserId}]`, at most
  50 deals a call.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.fake_hubspot import FakePortal, iso
from tests.fake_salesforce import VERSION, FakeOrg, _parse_stamp, stamp

OPPORTUNITY_HISTORY = {"StageName": "StageName", "Amount": "Amount",
                       "Probability": "Probability", "CloseDate": "CloseDate",
                       "ForecastCategory": "ForecastCategoryName"}


class HistoryOrg(FakeOrg):
    def __init__(self, *args: Any, tracked: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tracked = set(tracked)
        self.history: list[dict[str, Any]] = []        # OpportunityHistory rows
        self.field_history: list[dict[str, Any]] = []  # OpportunityFieldHistory rows

    def add(self, record_id: str, **fields: Any) -> dict[str, Any]:
        fields.setdefault("ForecastCategoryName", "Pipeline")
        record = super().add(record_id, **fields)
        self._history_row(record)
        self._field_row(record, "created", None, None)
        return record

    def edit(self, record_id: str, **fields: Any) -> None:
        before = dict(self.records[record_id])
        super().edit(record_id, **fields)
        self._changed(before, self.records[record_id])

    def _save(self, update: dict[str, Any], client: str) -> dict[str, Any]:
        before = dict(self.records.get(update["id"], {}))
        answer = super()._save(update, client)
        if answer.get("success"):
            self._changed(before, self.records[update["id"]])
        return answer

    def _changed(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        if any(before.get(f) != after.get(f) for f in OPPORTUNITY_HISTORY.values()):
            self._history_row(after)
        for name in sorted(self.tracked):
            if before.get(name) != after.get(name):
                self._field_row(after, name, before.get(name), after.get(name))

    def _history_row(self, record: dict[str, Any]) -> None:
        self.history.append({
            "attributes": {"type": "OpportunityHistory", "url": f"/services/data/v{VERSION}/"
                           f"sobjects/OpportunityHistory/008{len(self.history):015d}"},
            "OpportunityId": record["Id"], "CreatedDate": stamp(self.clock()),
            **{column: record.get(name) for column, name in OPPORTUNITY_HISTORY.items()}})

    def _field_row(self, record: dict[str, Any], field: str, old: Any, new: Any) -> None:
        self.field_history.append({
            "attributes": {"type": "OpportunityFieldHistory", "url": f"/services/data/"
                           f"v{VERSION}/sobjects/OpportunityFieldHistory/"
                           f"017{len(self.field_history):015d}"},
            "OpportunityId": record["Id"], "CreatedDate": stamp(self.clock()), "Field": field,
            "OldValue": old, "NewValue": new})

    def _run_soql(self, soql: str) -> dict[str, Any]:
        match = re.match(r"SELECT (.+?) FROM (OpportunityHistory|OpportunityFieldHistory)"
                         r"(?: WHERE (.+?))? ORDER BY OpportunityId, CreatedDate$", soql, re.S)
        if not match:
            assert "History" not in soql, f"unexpected SOQL: {soql}"
            return super()._run_soql(soql)
        columns = [c.strip() for c in match.group(1).split(",")]
        rows = self.history if match.group(2) == "OpportunityHistory" else self.field_history
        where = match.group(3) or ""
        since = re.search(r"CreatedDate >= (\S+)", where)
        if since:
            rows = [r for r in rows if _parse_stamp(r["CreatedDate"]) >= _parse_stamp(
                since.group(1))]
        fields = re.search(r"Field IN \((.*?)\)", where)
        if fields:
            wanted = set(re.findall(r"'([^']*)'", fields.group(1)))
            rows = [r for r in rows if r["Field"] in wanted]
        rows = sorted(rows, key=lambda r: (r["OpportunityId"], r["CreatedDate"]))
        return self._page([{"attributes": r["attributes"], **{c: r.get(c) for c in columns}}
                           for r in rows])


class HistoryPortal(FakePortal):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.history: dict[str, dict[str, list[dict[str, Any]]]] = {}  # deal -> prop -> values
        self.history_reads = 0

    def add(self, deal_id: str | None = None, **props: Any) -> dict[str, Any]:
        deal = super().add(deal_id, **props)
        for name, value in deal.items():
            self._keep(deal["hs_object_id"], name, value)
        return deal

    def edit(self, deal_id: str, **props: Any) -> None:
        super().edit(deal_id, **props)
        for name in props:
            self._keep(deal_id, name, self.deals[deal_id][name])

    def _keep(self, deal_id: str, name: str, value: Any) -> None:
        if value is None:
            return  # HubSpot keeps no history entry for a property never set
        self.history.setdefault(deal_id, {}).setdefault(name, []).insert(0, {
            "value": value, "timestamp": iso(self.clock()), "sourceType": "CRM_UI",
            "sourceId": "userId:51286613", "updatedByUserId": 51286613})

    def _batch_read(self, request: Any) -> tuple[int, dict[str, str], str]:
        query = json.loads(request.body)
        with_history = query.get("propertiesWithHistory")
        if not with_history or "/companies/" in request.url:
            return super()._batch_read(request)
        if len(query.get("inputs", [])) > 50:
            return 400, {}, json.dumps({
                "status": "error", "category": "VALIDATION_ERROR",
                "message": "Batch input limit exceeded: 50 when propertiesWithHistory is set"})
        self.history_reads += 1
        status, headers, body = super()._batch_read(request)
        answer = json.loads(body)
        for result in answer.get("results", []):
            kept = self.history.get(result["id"], {})
            result["propertiesWithHistory"] = {name: kept.get(name, []) for name in with_history}
        return status, headers, json.dumps(answer)
