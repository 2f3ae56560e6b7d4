"""A fake HubSpot portal on `responses`: the CRM v3 endpoints the connector uses, answering with
payloads shaped like HubSpot's documented ones (tests/fixtures/hubspot/), over deals kept in
memory. Every property value is a string, as HubSpot sends it.

- GET  /crm/v3/properties/{deals,companies}      the property definitions (fixtures)
- GET  /crm/v3/pipelines/deals                   two pipelines (fixture), stage ids, metadata
- GET  /crm/v3/owners[/{id}]                     owners, pages of `limit`
- POST /crm/v3/objects/deals/search              filters GTE/LTE/EQ/GT/LT, one sort, limit
                                                 <= 200, offset `after`; an `after` whose page
                                                 would pass 10,000 results is a 400, as HubSpot
- POST /crm/v3/objects/{deals,companies}/batch/read     <= 100 ids; 207 with unknown ids
- POST /crm/v3/objects/deals/batch/update        <= 100 inputs; 207 for unknown ids; a 400 for
                                                 the whole batch when one deal's value is refused
                                                 (HubSpot names no id then)

Writes move the deal's hs_lastmodifieddate, as HubSpot does, so the connector's own writes come
back in the next poll, and they make webhook events with changeSource INTEGRATION and the app's
id. Edits "in the UI" make events with changeSource CRM_UI. Faults can be planted: a value
refused for some ids, whole calls answered 429 / 5xx, the burst window used up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import responses

from tests.fake_salesforce import Clock  # one clock for both fake CRMs: tests move it

BASE = "https://api.hubapi.com"
FIXTURES = Path(__file__).parent / "fixtures" / "hubspot"
TOKEN = "pat-na1-5f2c9e1a-0b7d-4c3e-8a9f-112233445566"
APP_ID = 2931120
PORTAL_ID = 24918305
MAX_RESULTS = 10_000
DEFAULT_PROPERTIES = ("dealname", "amount", "closedate", "pipeline", "dealstage", "createdate",
                      "hs_lastmodifieddate", "hs_object_id")


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def iso(moment: dt.datetime) -> str:
    """HubSpot's datetime format: 2026-11-26T09:00:00.123Z."""
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def millis(moment: dt.datetime) -> int:
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)


def parse_instant(text: str) -> dt.datetime:
    if re.fullmatch(r"-?\d+", text):
        return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=int(text))
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _error(status: int, message: str, category: str, **extra: Any) -> tuple[int, dict, str]:
    body = {"status": "error", "message": message, "correlationId": "fake-" + category.lower(),
            "category": category, **extra}
    return status, {"Content-Type": "application/json"}, json.dumps(body)


class FakePortal:
    def __init__(self, rsps: responses.RequestsMock, clock: Clock | None = None,
                 token: str = TOKEN, app_id: int = APP_ID) -> None:
        self.rsps = rsps
        self.clock = clock or Clock()
        self.token = token
        self.app_id = app_id
        self.properties = {p["name"]: p for p in fixture("deal_properties.json")["results"]}
        self.pipelines = fixture("deal_pipelines.json")
        self.owners = fixture("owners.json")["results"]
        self.deals: dict[str, dict[str, Any]] = {}
        self.companies: dict[str, dict[str, str]] = {
            "9101112": {"name": "Acme Corp", "domain": "acme.example"},
            "9101113": {"name": "Globex", "domain": "globex.example"},
            "9101114": {"name": "Initech", "domain": "initech.example"}}
        self.calls: Counter[str] = Counter()   # by kind, as the adapter names them
        self.writes: Counter[str] = Counter()  # deal id -> times written
        self.written: list[dict[str, Any]] = []  # every batch update input, in order
        self.refuse: dict[str, str] = {}       # deal id -> validation message (whole batch 400)
        self.fail_on: dict[str, list[tuple[int, Any, dict[str, str]]]] = {}  # by call kind
        self.fail_at: dict[tuple[str, int], tuple[int, Any, dict[str, str]]] = {}  # n-th call
        self.events: list[dict[str, Any]] = []  # webhook events, as HubSpot would send them
        self.daily = (500_000, 1_000)          # (allowed, used before this test)
        self.burst_left: list[int] = []        # planted X-HubSpot-RateLimit-Remaining values
        self.after_search: Callable[[int], None] | None = None  # called with the call's number
        self.search_bodies: list[dict[str, Any]] = []
        self.max_results = MAX_RESULTS         # HubSpot's ceiling; a test may lower it
        self._next_id = 18230945000
        self._event_id = 3816279000
        obj = re.escape(BASE) + r"/crm/v3/objects/"
        rsps.add_callback(responses.GET, re.compile(re.escape(BASE) + r"/crm/v3/properties/\w+"),
                          self._properties)
        rsps.add_callback(responses.GET, re.compile(re.escape(BASE) + r"/crm/v3/pipelines/deals"),
                          self._pipelines)
        rsps.add_callback(responses.GET, re.compile(re.escape(BASE) + r"/crm/v3/owners(/\d+)?"),
                          self._owners)
        rsps.add_callback(responses.POST, re.compile(obj + r"deals/search"), self._search)
        rsps.add_callback(responses.POST, re.compile(obj + r"(deals|companies)/batch/read"),
                          self._batch_read)
        rsps.add_callback(responses.POST, re.compile(obj + r"deals/batch/update"),
                          self._batch_update)

    # --- deals --------------------------------------------------------------------------------
    def add(self, deal_id: str | None = None, **props: Any) -> dict[str, Any]:
        """A deal created in the HubSpot UI; values are given as HubSpot keeps them."""
        self.clock.advance(milliseconds=1)
        if deal_id is None:
            self._next_id += 1
            deal_id = str(self._next_id)
        now = iso(self.clock())
        deal: dict[str, Any] = {
            "hs_object_id": deal_id, "dealname": f"Deal {deal_id}", "pipeline": "default",
            "dealstage": "appointmentscheduled", "amount": "1000",
            "closedate": "2027-01-15T00:00:00Z", "createdate": now, "hs_lastmodifieddate": now,
            "hubspot_owner_id": "41629779", "hs_primary_associated_company": "9101112",
            "proposal_type": None, "relationship_level": None, "homologated_probability": None,
            "weighted_amount": None, "probability_rule": None,
            "hs_deal_stage_probability": None}
        deal.update({k: _text(v) for k, v in props.items()})
        self.deals[deal_id] = deal
        self._event("deal.creation", deal_id, None, None, "CRM_UI", "userId:51286613")
        return deal

    def edit(self, deal_id: str, **props: Any) -> None:
        """A person's edit in the HubSpot UI."""
        self.clock.advance(milliseconds=1)
        deal = self.deals[deal_id]
        for name, value in props.items():
            deal[name] = _text(value)
            self._event("deal.propertyChange", deal_id, name, deal[name], "CRM_UI",
                        "userId:51286613")
        deal["hs_lastmodifieddate"] = iso(self.clock())

    def stamp_all(self, moment: dt.datetime) -> None:
        """Give every deal the same modification time (a bulk update)."""
        for deal in self.deals.values():
            deal["hs_lastmodifieddate"] = iso(moment)

    @property
    def api_calls(self) -> int:
        return sum(self.calls.values())

    # --- answers ------------------------------------------------------------------------------
    def _headers(self, kind: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json;charset=utf-8"}
        if kind == "search":
            return headers   # the search API sends no X-HubSpot-RateLimit-* headers
        allowed, used = self.daily
        left = self.burst_left.pop(0) if self.burst_left else 150
        headers.update({
            "X-HubSpot-RateLimit-Daily": str(allowed),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, allowed - used - self.api_calls)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            "X-HubSpot-RateLimit-Max": "190",
            "X-HubSpot-RateLimit-Remaining": str(left),
        })
        return headers

    def _begin(self, kind: str, request: Any) -> tuple[int, dict[str, str], str] | None:
        self.calls[kind] += 1
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return 401, self._headers(kind), json.dumps(fixture("error_401.json"))
        queue = self.fail_on.get(kind)
        planted = self.fail_at.pop((kind, self.calls[kind]), None)
        if planted is None and queue:
            planted = queue.pop(0)
        if planted is not None:
            status, payload, headers = planted
            return status, {**self._headers(kind), **headers}, json.dumps(payload)
        return None

    def _properties(self, request: Any) -> tuple[int, dict[str, str], str]:
        fault = self._begin("properties", request)
        if fault:
            return fault
        object_type = urlsplit(request.url).path.rsplit("/", 1)[1]
        if object_type == "deals":
            body = {"results": list(self.properties.values())}
        elif object_type == "companies":
            body = fixture("company_properties.json")
        else:
            return _error(404, f"Unable to infer object type from: {object_type}",
                          "OBJECT_NOT_FOUND")
        return 200, self._headers("properties"), json.dumps(body)

    def _pipelines(self, request: Any) -> tuple[int, dict[str, str], str]:
        return self._begin("pipelines", request) or (
            200, self._headers("pipelines"), json.dumps(self.pipelines))

    def _owners(self, request: Any) -> tuple[int, dict[str, str], str]:
        fault = self._begin("owners", request)
        if fault:
            return fault
        path = urlsplit(request.url).path
        query = parse_qs(urlsplit(request.url).query)
        if path.rstrip("/").split("/")[-1].isdigit():
            owner_id = path.rstrip("/").split("/")[-1]
            found = [o for o in self.owners if o["id"] == owner_id]
            if not found:
                return _error(404, f"Owner {owner_id} not found", "OBJECT_NOT_FOUND")
            return 200, self._headers("owners"), json.dumps(found[0])
        limit = int(query.get("limit", ["100"])[0])
        offset = int(query.get("after", ["0"])[0])
        body: dict[str, Any] = {"results": self.owners[offset:offset + limit]}
        if offset + limit < len(self.owners):
            body["paging"] = {"next": {"after": str(offset + limit),
                                       "link": f"{BASE}/crm/v3/owners?after={offset + limit}"}}
        return 200, self._headers("owners"), json.dumps(body)

    def _search(self, request: Any) -> tuple[int, dict[str, str], str]:
        fault = self._begin("search", request)
        if fault:
            return fault
        query = json.loads(request.body)
        self.search_bodies.append(query)
        limit = int(query.get("limit", 10))
        offset = int(query.get("after") or 0)
        if limit > 200:
            return _error(400, "limit must be at most 200", "VALIDATION_ERROR")
        if offset + limit > self.max_results:
            status, headers, text = _error(
                400, fixture("error_400_search_ceiling.json")["message"], "VALIDATION_ERROR")
            return status, headers, text
        groups = query.get("filterGroups") or [{"filters": []}]
        rows = [d for d in self.deals.values()
                if any(all(_matches(d, f) for f in g["filters"]) for g in groups)]
        sorts = query.get("sorts") or [{"propertyName": "hs_object_id",
                                        "direction": "ASCENDING"}]
        if len(sorts) > 1:
            return _error(400, "only one sort is supported", "VALIDATION_ERROR")
        key = sorts[0]["propertyName"]
        # Ties come back in no promised order: an arbitrary, stable one here.
        rows.sort(key=lambda d: (_sort_key(d, key), hashlib.md5(
            d["hs_object_id"].encode()).hexdigest()),
            reverse=sorts[0].get("direction") == "DESCENDING")
        wanted = query.get("properties") or list(DEFAULT_PROPERTIES)
        page = rows[offset:offset + limit]
        body: dict[str, Any] = {"total": len(rows), "results": [self._shape(d, wanted)
                                                               for d in page]}
        if offset + limit < len(rows):
            body["paging"] = {"next": {"after": str(offset + limit),
                                       "link": f"?after={offset + limit}"}}
        if self.after_search is not None:
            self.after_search(self.calls["search"])
        return 200, self._headers("search"), json.dumps(body)

    def _batch_answer(self, kind: str, results: list[Any], missing: list[str]
                      ) -> tuple[int, dict[str, str], str]:
        """A batch endpoint's answer: 200, or 207 with HubSpot's error for the ids not found."""
        body: dict[str, Any] = {"status": "COMPLETE", "results": results,
                                "startedAt": iso(self.clock()), "completedAt": iso(self.clock())}
        if not missing:
            return 200, self._headers(kind), json.dumps(body)
        body["numErrors"] = 1
        body["errors"] = [{"status": "error", "category": "OBJECT_NOT_FOUND",
                           "message": "Could not get some DEAL objects, they may be deleted "
                                      "or not exist. Check that ids are valid.",
                           "context": {"ids": missing}}]
        return 207, self._headers(kind), json.dumps(body)

    def _shape(self, deal: dict[str, Any], wanted: list[str]) -> dict[str, Any]:
        props = {name: deal.get(name) for name in
                 dict.fromkeys([*wanted, "hs_object_id", "createdate", "hs_lastmodifieddate"])}
        return {"id": deal["hs_object_id"], "properties": props,
                "createdAt": deal["createdate"], "updatedAt": deal["hs_lastmodifieddate"],
                "archived": False}

    def _batch_read(self, request: Any) -> tuple[int, dict[str, str], str]:
        companies = "/companies/" in request.url
        kind = "companies" if companies else "batch_read"
        fault = self._begin(kind, request)
        if fault:
            return fault
        query = json.loads(request.body)
        inputs = [str(i["id"]) for i in query.get("inputs", [])]
        if len(inputs) > 100:
            return _error(400, "Batch input limit exceeded: 100", "VALIDATION_ERROR")
        store = self.companies if companies else self.deals
        wanted = query.get("properties") or []
        results = []
        for i in inputs:
            if i in store:
                if companies:
                    results.append({"id": i, "properties": {
                        **{k: store[i].get(k) for k in wanted}, "hs_object_id": i},
                        "createdAt": "2024-01-01T00:00:00Z",
                        "updatedAt": "2024-01-01T00:00:00Z", "archived": False})
                else:
                    results.append(self._shape(store[i], wanted))
        missing = [i for i in inputs if i not in store]
        return self._batch_answer(kind, results, missing)

    def _batch_update(self, request: Any) -> tuple[int, dict[str, str], str]:
        fault = self._begin("batch_update", request)
        if fault:
            return fault
        inputs = json.loads(request.body).get("inputs", [])
        if len(inputs) > 100:
            return _error(400, "Batch input limit exceeded: 100", "VALIDATION_ERROR")
        for entry in inputs:
            for name, value in entry["properties"].items():
                prop = self.properties.get(name)
                if prop is None:
                    return _error(400, f'Property "{name}" does not exist', "VALIDATION_ERROR")
                if prop["modificationMetadata"]["readOnlyValue"]:
                    return _error(400, f'"{name}" is a read only property; its value cannot be '
                                  "set.", "VALIDATION_ERROR")
                if not isinstance(value, str):
                    return _error(400, f"{name}: values are sent as strings", "VALIDATION_ERROR")
                if prop["type"] == "number" and value != "":
                    try:
                        Decimal(value)
                    except ArithmeticError:
                        return _error(400, f"{value} was not a valid number.",
                                      "VALIDATION_ERROR")
            if str(entry["id"]) in self.refuse:
                # One deal's value refused: HubSpot refuses the whole batch, naming no id.
                return 400, self._headers("batch_update"), json.dumps(
                    fixture("error_400_validation.json") | {
                        "message": "Property values were not valid: "
                                   + self.refuse[str(entry["id"])]})
        results, missing = [], []
        for entry in inputs:
            rid = str(entry["id"])
            if rid not in self.deals:
                missing.append(rid)
                continue
            self.clock.advance(milliseconds=1)
            deal = self.deals[rid]
            for name, value in entry["properties"].items():
                deal[name] = _stored(value, self.properties[name]["type"])
                self._event("deal.propertyChange", rid, name, deal[name], "INTEGRATION",
                            str(self.app_id))
            deal["hs_lastmodifieddate"] = iso(self.clock())
            self.writes[rid] += 1
            self.written.append(entry)
            results.append(self._shape(deal, list(entry["properties"])))
        return self._batch_answer("batch_update", results, missing)

    # --- webhooks -----------------------------------------------------------------------------
    def _event(self, subscription: str, deal_id: str, prop: str | None, value: Any,
               source: str, source_id: str) -> None:
        self._event_id += 1
        event: dict[str, Any] = {
            "eventId": self._event_id, "subscriptionId": 2538662 if prop else 2538670,
            "portalId": PORTAL_ID, "appId": self.app_id, "occurredAt": millis(self.clock()),
            "subscriptionType": subscription, "attemptNumber": 0, "objectId": int(deal_id),
            "changeSource": source, "sourceId": source_id}
        if prop is not None:
            event.update({"propertyName": prop, "propertyValue": value or ""})
        else:
            event["changeFlag"] = "CREATED"
        self.events.append(event)

    def take_events(self) -> list[dict[str, Any]]:
        taken, self.events = self.events, []
        return taken


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _stored(value: str, prop_type: str) -> str:
    """How HubSpot keeps a written value: numbers without trailing zeros ("60000.5")."""
    if prop_type == "number" and value != "":
        number = Decimal(value).normalize()
        return format(number, "f")
    return value


def _sort_key(deal: dict[str, Any], name: str) -> Any:
    value = str(deal.get(name) or "")
    if name == "hs_lastmodifieddate":
        return parse_instant(value)
    if name == "hs_object_id":
        return int(value)
    return value


def _matches(deal: dict[str, Any], f: dict[str, Any]) -> bool:
    name, op, raw = f["propertyName"], f["operator"], f.get("value")
    value = deal.get(name)
    if op in ("IN", "NOT_IN"):
        inside = value is not None and value in [str(v) for v in f.get("values") or []]
        return inside if op == "IN" else not inside
    if value is None:
        return False
    left: Any
    right: Any
    if name == "hs_lastmodifieddate":
        moment = parse_instant(str(value))
        # HubSpot compares whole milliseconds.
        left = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        right = parse_instant(str(raw))
    elif name == "hs_object_id":
        left, right = int(value), int(str(raw))
    else:
        left, right = value, raw
    return {"EQ": left == right, "GT": left > right, "GTE": left >= right,
            "LT": left < right, "LTE": left <= right, "NEQ": left != right}[op]
