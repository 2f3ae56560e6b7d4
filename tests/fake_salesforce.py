"""A fake Salesforce org on `responses`: the REST endpoints the connector uses, answering with
payloads shaped like Salesforce's documented ones, over records kept in memory.

- GET  /services/data/vXX.X/query/?q=SOQL        query, pages of 2,000, relative nextRecordsUrl
- GET  /services/data/vXX.X/query/<locator>     the next page
- GET  /services/data/vXX.X/sobjects/<S>/describe
- POST /services/data/vXX.X/composite           GET query subrequests, PATCH composite/sobjects

Writes move the record's SystemModstamp, as Salesforce does, so the connector's own writes come
back in the next poll (its echoes). Faults can be planted: a validation rule refusing some ids,
rows locked for a number of attempts, whole calls answered 503 / 429 / REQUEST_LIMIT_EXCEEDED.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import responses

INSTANCE = "https://acme.my.salesforce.com"
VERSION = "62.0"  # matched loosely below: any vNN.N

OPPORTUNITY_FIELDS = [
    ("Id", "id", False, None), ("Name", "string", True, None),
    ("StageName", "picklist", True, None), ("Amount", "currency", True, 2),
    ("CloseDate", "date", True, None), ("Proposal_Type__c", "picklist", True, None),
    ("Relationship_Level__c", "picklist", True, None), ("Probability", "percent", True, 0),
    ("Weighted_Amount__c", "currency", True, 2), ("Probability_Rule__c", "string", True, None),
    ("Approval_Status__c", "picklist", True, None),
    ("LastStageChangeDate", "datetime", False, None),
    ("SystemModstamp", "datetime", False, None),
]
RELATIONS = {"OwnerId": ("Owner", "User"), "AccountId": ("Account", "Account")}
RELATED_FIELDS = {"User": [("Id", "id"), ("Name", "string"), ("Email", "email")],
                  "Account": [("Id", "id"), ("Name", "string")]}


def stamp(value: dt.datetime) -> str:
    """Salesforce's datetime format: 2026-11-26T10:00:00.000+0000."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{value.microsecond // 1000:03d}+0000"


def _parse_stamp(text: str) -> dt.datetime:
    text = text.replace("Z", "+00:00")
    text = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", text)
    return dt.datetime.fromisoformat(text)


class Clock:
    """The time both the fake CRM (org or portal) and the connector see; tests move it."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = start or dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


class FakeOrg:
    def __init__(self, rsps: responses.RequestsMock, clock: Clock | None = None,
                 client_name: str = "crm-automation") -> None:
        self.rsps = rsps
        self.clock = clock or Clock()
        self.client_name = client_name
        self.records: dict[str, dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()   # by kind: query, query_more, composite, describe
        self.writes: Counter[str] = Counter()  # record id -> times written
        self.written_by: Counter[str] = Counter()  # Sforce-Call-Options client -> records
        self.invalid: dict[str, str] = {}      # record id -> validation message
        self.locked: Counter[str] = Counter()  # record id -> attempts that find it locked
        self.fail_next: list[tuple[int, Any, dict[str, str]]] = []  # (status, body, headers)
        self.fail_on: dict[str, list[tuple[int, Any, dict[str, str]]]] = {}  # by call kind
        self.api_limit = (1000, 15000)
        self.after_write: Callable[[], None] | None = None  # a hook, e.g. to crash there
        self._pages: dict[str, list[dict[str, Any]]] = {}
        self._seq = 0
        pattern = re.escape(INSTANCE) + r"/services/data/v\d+\.\d+/"
        rsps.add_callback(responses.GET, re.compile(pattern + r"query/?\?.*"), self._query)
        rsps.add_callback(responses.GET, re.compile(pattern + r"query/[^?]+$"), self._more)
        rsps.add_callback(responses.GET, re.compile(pattern + r"sobjects/\w+/describe/?$"),
                          self._describe)
        rsps.add_callback(responses.POST, re.compile(pattern + r"composite/?$"), self._composite)

    # --- records ------------------------------------------------------------------------------
    def add(self, record_id: str, **fields: Any) -> dict[str, Any]:
        self.clock.advance(milliseconds=1)
        owner = fields.pop("Owner", {"Name": "Ann Owner", "Email": "ann@example.com"})
        account = fields.pop("Account", {"Name": "Acme Corp"})
        record = {"Id": record_id, "Name": f"Deal {record_id}", "StageName": "Prospecting",
                  "Amount": 1000, "CloseDate": "2027-01-15", "Proposal_Type__c": None,
                  "Relationship_Level__c": None, "Probability": None,
                  "Weighted_Amount__c": None, "Probability_Rule__c": None,
                  "SystemModstamp": stamp(self.clock()),
                  "Owner": {"attributes": {"type": "User"}, **owner},
                  "Account": {"attributes": {"type": "Account"}, **account}}
        record.update(fields)
        self.records[record_id] = record
        return record

    def edit(self, record_id: str, **fields: Any) -> None:
        """A person's edit in the Salesforce UI."""
        self.clock.advance(milliseconds=1)
        self.records[record_id].update(fields)
        self.records[record_id]["SystemModstamp"] = stamp(self.clock())

    @property
    def api_calls(self) -> int:
        return sum(self.calls.values())

    # --- answers ------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        used, allowed = self.api_limit
        return {"Sforce-Limit-Info": f"api-usage={used + self.api_calls}/{allowed}",
                "Content-Type": "application/json"}

    def _fault(self, kind: str) -> tuple[int, dict[str, str], str] | None:
        queue = self.fail_on.get(kind) or self.fail_next
        if queue:
            status, body, headers = queue.pop(0)
            return status, {**self._headers(), **headers}, json.dumps(body)
        return None

    def _query(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.calls["query"] += 1
        fault = self._fault("query")
        if fault:
            return fault
        soql = parse_qs(urlsplit(request.url).query)["q"][0]
        return 200, self._headers(), json.dumps(self._run_soql(soql))

    def _run_soql(self, soql: str) -> dict[str, Any]:
        match = re.match(r"SELECT (.+?) FROM (\w+)(?: WHERE (.+?))?(?: ORDER BY (.+))?$", soql,
                         re.S)
        assert match, f"unexpected SOQL: {soql}"
        fields = [f.strip() for f in match.group(1).split(",")]
        where = match.group(3) or ""
        rows = list(self.records.values())
        excluded = re.search(r"(\w+) NOT IN \((.*?)\)", where)
        if excluded:
            closed = set(re.findall(r"'([^']*)'", excluded.group(2)))
            rows = [r for r in rows if r.get(excluded.group(1)) not in closed]
            where = where.replace(excluded.group(0), "")
        ids = re.search(r"Id IN \((.*)\)", where)
        if ids:
            wanted = set(re.findall(r"'([^']*)'", ids.group(1)))
            rows = [r for r in rows if r["Id"] in wanted]
        for op, value in re.findall(r"SystemModstamp (>=|<=) (\S+)", where):
            bound = _parse_stamp(value)
            rows = [r for r in rows if (_parse_stamp(r["SystemModstamp"]) >= bound
                                        if op == ">=" else
                                        _parse_stamp(r["SystemModstamp"]) <= bound)]
        if match.group(4) == "Id":
            rows.sort(key=lambda r: r["Id"])
        elif match.group(4):
            rows.sort(key=lambda r: (r["SystemModstamp"], r["Id"]))
        shaped = [self._shape(r, fields) for r in rows]
        return self._page(shaped)

    def _page(self, rows: list[dict[str, Any]], offset: int = 0) -> dict[str, Any]:
        self._seq += 1
        chunk = rows[offset:offset + 2000]
        body: dict[str, Any] = {"totalSize": len(rows), "done": offset + 2000 >= len(rows),
                                "records": chunk}
        if not body["done"]:
            locator = f"01gD0000002HU6KIAW-{offset + 2000}-{self._seq}"
            self._pages[locator] = rows
            body["nextRecordsUrl"] = f"/services/data/v{VERSION}/query/{locator}"
        return body

    def _more(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.calls["query_more"] += 1
        fault = self._fault("query_more")
        if fault:
            return fault
        locator = urlsplit(request.url).path.rsplit("/", 1)[1]
        rows = self._pages.pop(locator)
        offset = int(locator.split("-")[1])
        return 200, self._headers(), json.dumps(self._page(rows, offset))

    def _shape(self, record: dict[str, Any], fields: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"attributes": {
            "type": "Opportunity",
            "url": f"/services/data/v{VERSION}/sobjects/Opportunity/{record['Id']}"}}
        for f in fields:
            if "." in f:
                rel, name = f.split(".", 1)
                out.setdefault(rel, {"attributes": {"type": rel}})[name] = record[rel].get(name)
            else:
                out[f] = record.get(f)
        return out

    def _describe(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.calls["describe"] += 1
        sobject = urlsplit(request.url).path.split("/")[-2]
        if sobject == "Opportunity":
            fields = [{"name": n, "type": t, "updateable": u, "scale": s or 0,
                       "relationshipName": None, "referenceTo": []}
                      for n, t, u, s in OPPORTUNITY_FIELDS]
            fields += [{"name": ref, "type": "reference", "updateable": True, "scale": 0,
                        "relationshipName": rel, "referenceTo": [target]}
                       for ref, (rel, target) in RELATIONS.items()]
        else:
            fields = [{"name": n, "type": t, "updateable": False, "scale": 0,
                       "relationshipName": None, "referenceTo": []}
                      for n, t in RELATED_FIELDS[sobject]]
        return 200, self._headers(), json.dumps({"name": sobject, "fields": fields})

    def _composite(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.calls["composite"] += 1
        fault = self._fault("composite")
        if fault:
            return fault
        client = request.headers.get("Sforce-Call-Options", "")
        payload = json.loads(request.body)
        answers = []
        for sub in payload["compositeRequest"]:
            if sub["method"] == "GET":
                soql = parse_qs(urlsplit(sub["url"]).query)["q"][0]
                answers.append({"body": self._run_soql(soql), "httpHeaders": {},
                                "httpStatusCode": 200, "referenceId": sub["referenceId"]})
            else:
                answers.append({"body": [self._save(r, client) for r in sub["body"]["records"]],
                                "httpHeaders": {}, "httpStatusCode": 200,
                                "referenceId": sub["referenceId"]})
        if self.after_write is not None:
            self.after_write()
        return 200, self._headers(), json.dumps({"compositeResponse": answers})

    def _save(self, update: dict[str, Any], client: str) -> dict[str, Any]:
        rid = update["id"]
        if rid not in self.records:
            return {"success": False, "errors": [{"statusCode": "ENTITY_IS_DELETED",
                                                  "message": "entity is deleted", "fields": []}]}
        if self.locked[rid] > 0:
            self.locked[rid] -= 1
            return {"id": rid, "success": False, "errors": [{
                "statusCode": "UNABLE_TO_LOCK_ROW",
                "message": "unable to obtain exclusive access to this record", "fields": []}]}
        if rid in self.invalid:
            return {"id": rid, "success": False, "errors": [{
                "statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                "message": self.invalid[rid], "fields": []}]}
        self.clock.advance(milliseconds=1)
        for name, value in update.items():
            if name not in ("attributes", "id"):
                self.records[rid][name] = value
        self.records[rid]["SystemModstamp"] = stamp(self.clock())
        self.writes[rid] += 1
        self.written_by[client] += 1
        return {"id": rid, "success": True, "errors": []}


def opportunity_values(record: dict[str, Any]) -> dict[str, Any]:
    return {k: (Decimal(str(v)) if isinstance(v, float) else v) for k, v in record.items()}
