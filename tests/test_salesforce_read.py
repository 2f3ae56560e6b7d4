"""Reading from Salesforce: the field check against describe, the poll's SOQL and pagination,
fetching by id, the faults on the way, and what it all costs in API calls."""

import json
import math
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from connector.core.mapping import Mapping
from connector.core.values import FieldType
from connector.crm.salesforce.client import SalesforceCrm
from connector.crm.salesforce.query import changed_soql, fetch_soql
from connector.errors import ConfigurationError, FatalError, RetriableError
from connector.retry import RetryPolicy
from connector.settings import Settings
from tests import salesforce_fixtures as fx

V = "59.0"
INSTANCE = "https://acme.my.salesforce.com"
DATA = f"{INSTANCE}/services/data/v{V}"
QUERY = f"{DATA}/query/"
COMPOSITE = f"{DATA}/composite"
TOKEN = "00DRO000000abcd!AQ4AQFakeSessionToken.cccccccccccccccc"

MAPPING = Mapping(
    crm="salesforce", object="Opportunity", id_field="Id", modified_field="SystemModstamp",
    fields={"name": "Name", "stage": "StageName", "amount": "Amount", "close_date": "CloseDate",
            "proposal_type": "Proposal_Type__c", "owner_email": "Owner.Email",
            "account_name": "Account.Name", "probability": "Probability",
            "weighted_amount": "Weighted_Amount__c", "rule": "Probability_Rule__c"},
    writeback=("probability", "weighted_amount", "rule"), source="mappings/salesforce.yaml")

SELECT = ("SELECT Id, SystemModstamp, Name, StageName, Amount, CloseDate, Proposal_Type__c, "
          "Owner.Email, Account.Name, Probability, Weighted_Amount__c, Probability_Rule__c "
          "FROM Opportunity")


api, clean_environment, sleeps = fx.api, fx.clean_environment, fx.sleeps  # shared fixtures


def crm(sleeps: list[float], mapping: Mapping = MAPPING, retry: RetryPolicy | None = None,
        **values) -> SalesforceCrm:
    settings = Settings(_env_file=None, salesforce_instance_url=INSTANCE,
                        salesforce_access_token=TOKEN, **values)
    return SalesforceCrm(settings, mapping, retry=retry or RetryPolicy(sleep=sleeps.append))


# --- Salesforce-shaped payloads -----------------------------------------------------------

def field(name: str, type_: str, *, scale: int = 0, updateable: bool = True,
          relationship: str | None = None, to: tuple[str, ...] = ()) -> dict:
    """One entry of describe's `fields`, with the keys Salesforce sends that we read."""
    # https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_describesobjects_describesobjectresult.htm
    return {"name": name, "label": name.replace("__c", "").replace("_", " "), "type": type_,
            "scale": scale, "precision": 18 if type_ in ("currency", "double", "percent") else 0,
            "length": 255 if type_ in ("string", "picklist", "textarea") else 0,
            "updateable": updateable, "createable": updateable, "nillable": True,
            "calculated": not updateable and name.endswith("__c"),
            "relationshipName": relationship, "referenceTo": list(to)}


def describe(name: str, fields: list[dict]) -> dict:
    return {"name": name, "label": name, "queryable": True, "updateable": True,
            "custom": False, "keyPrefix": {"Opportunity": "006", "User": "005"}.get(name, "001"),
            "fields": fields, "childRelationships": [], "recordTypeInfos": [],
            "urls": {"describe": f"/services/data/v{V}/sobjects/{name}/describe"}}


def opportunity_fields(**changes: dict) -> list[dict]:
    fields = [
        field("Id", "id", updateable=False),
        field("SystemModstamp", "datetime", updateable=False),
        field("Name", "string"),
        field("StageName", "picklist"),
        field("Amount", "currency", scale=2),
        field("CloseDate", "date"),
        field("Proposal_Type__c", "picklist"),
        field("OwnerId", "reference", relationship="Owner", to=("User",)),
        field("AccountId", "reference", relationship="Account", to=("Account",)),
        field("Probability", "percent", scale=0),
        field("Weighted_Amount__c", "currency", scale=2),
        field("Probability_Rule__c", "string"),
        field("TotalOpportunityQuantity", "double", scale=2),
        field("IsWon", "boolean", updateable=False),
    ]
    return [changes.get(f["name"], f) for f in fields]


def add_describes(api, opportunity: list[dict] | None = None) -> None:
    api.add(responses.GET, f"{DATA}/sobjects/Opportunity/describe",
            json=describe("Opportunity", opportunity or opportunity_fields()))
    api.add(responses.GET, f"{DATA}/sobjects/User/describe",
            json=describe("User", [field("Id", "id", updateable=False), field("Email", "email"),
                                   field("Name", "string")]))
    api.add(responses.GET, f"{DATA}/sobjects/Account/describe",
            json=describe("Account", [field("Id", "id", updateable=False),
                                      field("Name", "string")]))


def record(n: int) -> dict:
    """One Opportunity as the REST query resource returns it."""
    rid = f"006RO{n:013d}"
    return {
        "attributes": {"type": "Opportunity", "url": f"/services/data/v{V}/sobjects/"
                                                     f"Opportunity/{rid}"},
        "Id": rid, "SystemModstamp": "2026-11-20T10:15:30.000+0000", "Name": f"Deal {n}",
        "StageName": "Negotiation", "Amount": 125000.5, "CloseDate": "2026-12-15",
        "Proposal_Type__c": "Firm",
        "Owner": {"attributes": {"type": "User", "url": f"/services/data/v{V}/sobjects/User/"
                                                        "005RO000000xyzAYAQ"},
                  "Email": "ana@acme.example"},
        "Account": None, "Probability": 60.0, "Weighted_Amount__c": 75000.3,
        "Probability_Rule__c": "p60",
    }


def add_pages(api, total: int, page_size: int = 2000, headers: dict | None = None) -> None:
    """The poll query's pages: relative nextRecordsUrl, done false until the last."""
    # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_query.htm
    locator = "01gRO00000ZmQvRYAV"
    pages = max(1, math.ceil(total / page_size))
    for p in range(pages):
        rows = [record(n) for n in range(p * page_size, min(total, (p + 1) * page_size))]
        body: dict = {"totalSize": total, "done": p == pages - 1, "records": rows}
        if p < pages - 1:
            body["nextRecordsUrl"] = f"/services/data/v{V}/query/{locator}-{(p + 1) * page_size}"
        url = QUERY if p == 0 else f"{DATA}/query/{locator}-{p * page_size}"
        api.add(responses.GET, url, json=body, headers=headers or {})


def soql_of(call) -> str:
    return parse_qs(urlsplit(call.request.url).query)["q"][0]


# --- describe -------------------------------------------------------------------------------

def test_describe_types_the_mapping_from_salesforce(api, sleeps):
    add_describes(api)
    c = crm(sleeps)
    types = c.describe()
    assert types["amount"] == FieldType("money", 2)
    assert types["weighted_amount"] == FieldType("money", 2)
    assert types["probability"] == FieldType("percent", 0)
    assert types["close_date"] == FieldType("date")
    assert types["name"] == types["stage"] == types["owner_email"] == FieldType("text")
    assert set(types) == set(MAPPING.fields)
    assert c.calls == 3          # Opportunity, then User and Account for the paths


def test_describe_maps_every_numeric_kind():
    from connector.crm.salesforce.query import field_type

    assert field_type(field("Q", "double", scale=3)) == FieldType("number", 3)
    assert field_type(field("N", "int")) == FieldType("number", 0)
    assert field_type(field("D", "datetime")) == FieldType("datetime")
    assert field_type(field("B", "boolean")) == FieldType("boolean")
    assert field_type(field("E", "email")) == FieldType("text")


def test_a_missing_field_is_named_with_a_suggestion(api, sleeps):
    add_describes(api)
    mapping = Mapping(**{**MAPPING.__dict__, "fields": {**MAPPING.fields,
                                                        "proposal_type": "Proposal_Typ__c",
                                                        "owner_email": "Owner.Emial"}})
    with pytest.raises(ConfigurationError) as caught:
        crm(sleeps, mapping=mapping).describe()
    message = str(caught.value)
    assert "mappings/salesforce.yaml: 'proposal_type' (Proposal_Typ__c)" in message
    assert "did you mean 'Proposal_Type__c'" in message
    assert "'owner_email' (Owner.Emial): User has no field 'Emial'" in message  # all at once


def test_a_writeback_field_salesforce_will_not_update_is_named(api, sleeps):
    formula = field("Weighted_Amount__c", "currency", scale=2, updateable=False)
    add_describes(api, opportunity_fields(Weighted_Amount__c=formula))
    with pytest.raises(ConfigurationError) as caught:
        crm(sleeps).describe()
    message = str(caught.value)
    assert "writeback 'weighted_amount' (Weighted_Amount__c) is not updateable" in message
    assert "probability" not in message


def test_a_field_spelled_in_another_case_is_refused(api, sleeps):
    add_describes(api)
    mapping = Mapping(**{**MAPPING.__dict__, "fields": {**MAPPING.fields, "amount": "amount"}})
    with pytest.raises(ConfigurationError, match="Salesforce spells it 'Amount'"):
        crm(sleeps, mapping=mapping).describe()


def test_a_mapping_name_that_is_not_an_api_name_is_refused_before_any_call(api, sleeps):
    mapping = Mapping(**{**MAPPING.__dict__,
                         "fields": {**MAPPING.fields, "name": "Name FROM User --"}})
    with pytest.raises(ConfigurationError, match="not Salesforce API names"):
        crm(sleeps, mapping=mapping)
    assert len(api.calls) == 0


# --- the poll -------------------------------------------------------------------------------

def test_the_poll_query_is_built_from_the_mapping():
    since = datetime(2026, 11, 1, tzinfo=UTC)
    until = datetime(2026, 11, 26, 9, 30, 15, 500000, tzinfo=UTC)
    assert changed_soql(MAPPING, since, until) == (
        f"{SELECT} WHERE SystemModstamp >= 2026-11-01T00:00:00+00:00 AND "
        "SystemModstamp <= 2026-11-26T09:30:15+00:00 ORDER BY SystemModstamp, Id")
    assert changed_soql(MAPPING, None, until) == (
        f"{SELECT} WHERE SystemModstamp <= 2026-11-26T09:30:15+00:00 "
        "ORDER BY SystemModstamp, Id")
    # Another zone is converted to UTC.
    paris = datetime(2026, 11, 26, 10, 30, 15, tzinfo=timezone(timedelta(hours=1)))
    assert "SystemModstamp <= 2026-11-26T09:30:15+00:00" in changed_soql(MAPPING, None, paris)


def test_a_naive_datetime_is_utc_whatever_the_machine_zone(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        soql = changed_soql(MAPPING, None, datetime(2026, 11, 26, 9, 30, 15))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert "SystemModstamp <= 2026-11-26T09:30:15+00:00" in soql


def test_reading_10000_records_costs_5_query_calls(api, sleeps):
    add_pages(api, 10_000)
    c = crm(sleeps)
    pages = list(c.changed(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 26, tzinfo=UTC)))
    assert [len(p) for p in pages] == [2000] * 5
    assert c.calls == len(api.calls) == 5 == math.ceil(10_000 / 2000)
    assert c.auth_calls == 0
    first = api.calls[0]
    assert soql_of(first).startswith(SELECT + " WHERE SystemModstamp >= ")
    assert first.request.headers["Sforce-Query-Options"] == "batchSize=2000"
    assert first.request.headers["Sforce-Call-Options"] == "client=crm-automation"
    # The relative nextRecordsUrl is followed on the instance, in order.
    assert [urlsplit(c_.request.url).path.rsplit("-", 1)[-1] for c_ in api.calls[1:]] == \
        ["2000", "4000", "6000", "8000"]
    ids = [r["Id"] for page in pages for r in page]
    assert len(set(ids)) == 10_000


def test_raw_records_keep_relationships_and_drop_attributes(api, sleeps):
    add_pages(api, 1)
    (page,) = list(crm(sleeps).changed(None, datetime(2026, 11, 26, tzinfo=UTC)))
    raw = page[0]
    assert "attributes" not in raw
    assert raw["Owner"] == {"Email": "ana@acme.example"}
    assert raw["Account"] is None
    assert raw["Amount"] == Decimal("125000.5") and isinstance(raw["Amount"], Decimal)
    assert MAPPING.read(raw)["owner_email"] == "ana@acme.example"


def test_no_change_yields_no_page(api, sleeps):
    api.add(responses.GET, QUERY, json={"totalSize": 0, "done": True, "records": []})
    c = crm(sleeps)
    assert list(c.changed(None, datetime(2026, 11, 26, tzinfo=UTC))) == []
    assert c.calls == 1


# --- fetch by id ----------------------------------------------------------------------------

def fetch_callback(request):
    """Answer each query subrequest with the records its `Id IN (...)` names."""
    body = json.loads(request.body)
    answers = []
    for sub in body["compositeRequest"]:
        soql = parse_qs(urlsplit(sub["url"]).query)["q"][0]
        ids = re.findall(r"'(006RO\d{13})'", soql)
        rows = [record(int(i[5:])) for i in ids]
        answers.append({"body": {"totalSize": len(rows), "done": True, "records": rows},
                        "httpHeaders": {}, "httpStatusCode": 200,
                        "referenceId": sub["referenceId"]})
    return 200, {}, json.dumps({"compositeResponse": answers})


@pytest.mark.parametrize(("count", "calls"), [(1, 1), (4500, 1), (10_000, 1), (12_000, 2)])
def test_fetch_sends_2000_ids_a_query_five_queries_a_call(api, sleeps, count, calls):
    api.add_callback(responses.POST, COMPOSITE, callback=fetch_callback)
    c = crm(sleeps)
    ids = [f"006RO{n:013d}" for n in range(count)]
    records = c.fetch(ids + ids[:10])                       # repeated ids are asked once
    assert sorted(r["Id"] for r in records) == sorted(ids)
    assert c.calls == calls
    queries = [json.loads(call.request.body)["compositeRequest"] for call in api.calls]
    assert [len(q) for q in queries] == [min(5, math.ceil(count / 2000) - 5 * k)
                                         for k in range(calls)]
    for sub in (s for q in queries for s in q):
        assert sub["method"] == "GET"
        assert sub["url"].startswith(f"/services/data/v{V}/query/?q=")
        assert soql_of_sub(sub).count("'006RO") <= 2000


def soql_of_sub(sub: dict) -> str:
    return parse_qs(urlsplit(sub["url"]).query)["q"][0]


def test_fetch_quotes_every_id_with_format_soql():
    soql = fetch_soql(MAPPING, ["006RO0000000000001", "x' OR Name != '"])
    assert soql == (f"{SELECT} WHERE Id IN ('006RO0000000000001','x\\' OR Name != \\'')")


def test_fetch_of_nothing_costs_nothing(api, sleeps):
    c = crm(sleeps)
    assert c.fetch([]) == [] and c.calls == 0


def test_a_failed_fetch_query_is_an_error(api, sleeps):
    api.add(responses.POST, COMPOSITE, json={"compositeResponse": [{
        "body": [{"errorCode": "INVALID_FIELD", "message": "No such column 'Proposal_Type__c'"}],
        "httpHeaders": {}, "httpStatusCode": 400, "referenceId": "ids0"}]})
    with pytest.raises(ConfigurationError, match="INVALID_FIELD"):
        crm(sleeps).fetch(["006RO0000000000001"])


# --- faults while reading -------------------------------------------------------------------

UNTIL = datetime(2026, 11, 26, tzinfo=UTC)


def test_429_waits_as_long_as_retry_after_says(api, sleeps):
    api.add(responses.GET, QUERY, status=429, headers={"Retry-After": "7"},
            json=[{"errorCode": "REQUEST_LIMIT_EXCEEDED_RATE", "message": "Too many requests"}])
    add_pages(api, 3)
    c = crm(sleeps)
    assert [len(p) for p in c.changed(None, UNTIL)] == [3]
    assert sleeps == [7.0]
    assert c.calls == 2


def test_503_then_success_backs_off_with_jitter(api, sleeps):
    api.add(responses.GET, QUERY, status=503,
            json=[{"errorCode": "SERVER_UNAVAILABLE", "message": "Server unavailable"}])
    add_pages(api, 3)
    assert [len(p) for p in crm(sleeps).changed(None, UNTIL)] == [3]
    assert len(sleeps) == 1 and 1.0 <= sleeps[0] <= 2.0      # base 1 s + up to 1 s of jitter


def test_a_timeout_is_retried(api, sleeps):
    api.add(responses.GET, QUERY, body=requests.exceptions.ReadTimeout("read timed out"))
    add_pages(api, 3)
    c = crm(sleeps)
    assert [len(p) for p in c.changed(None, UNTIL)] == [3]
    assert len(sleeps) == 1 and c.calls == 2


def test_a_page_that_fails_midway_is_asked_again(api, sleeps):
    add_pages(api, 4000)
    api.replace(responses.GET, f"{DATA}/query/01gRO00000ZmQvRYAV-2000", status=502,
                body="<html>Bad gateway</html>")
    api.add(responses.GET, f"{DATA}/query/01gRO00000ZmQvRYAV-2000",
            json={"totalSize": 4000, "done": True, "records": [record(n) for n in range(2000)]})
    c = crm(sleeps)
    assert [len(p) for p in c.changed(None, UNTIL)] == [2000, 2000]
    assert c.calls == 3 and len(sleeps) == 1


def test_a_server_that_stays_down_gives_up_after_the_policy(api, sleeps):
    api.add(responses.GET, QUERY, status=503,
            json=[{"errorCode": "SERVER_UNAVAILABLE", "message": "Server unavailable"}])
    c = crm(sleeps)
    with pytest.raises(RetriableError, match="SERVER_UNAVAILABLE"):
        list(c.changed(None, UNTIL))
    assert c.calls == 5 and len(sleeps) == 4


def test_a_retry_after_past_the_deadline_gives_up_at_once(api, sleeps):
    api.add(responses.GET, QUERY, status=429, headers={"Retry-After": "120"}, json=[])
    c = crm(sleeps, retry=RetryPolicy(sleep=sleeps.append, time_left=lambda: 30.0))
    with pytest.raises(RetriableError):
        list(c.changed(None, UNTIL))
    assert sleeps == [] and c.calls == 1


def test_request_limit_exceeded_stops_the_run_without_retrying(api, sleeps):
    api.add(responses.GET, QUERY, status=403, json=[
        {"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}])
    c = crm(sleeps)
    with pytest.raises(FatalError) as caught:
        list(c.changed(None, UNTIL))
    assert "REQUEST_LIMIT_EXCEEDED" in str(caught.value)
    assert "API request limit is used up" in str(caught.value)
    assert "cursor is kept" in str(caught.value)
    assert sleeps == [] and c.calls == 1


def test_the_quota_guard_stops_at_80_percent_of_the_org_allowance(api, sleeps):
    add_pages(api, 6000, headers={"Sforce-Limit-Info": "api-usage=4100/5000"})
    c = crm(sleeps)
    pages = c.changed(None, UNTIL)
    assert len(next(pages)) == 2000
    with pytest.raises(FatalError) as caught:
        next(pages)
    assert "4,100 of its 5,000" in str(caught.value)
    assert "SALESFORCE_QUOTA_TOTAL_PERCENT" in str(caught.value)
    assert c.calls == 1                                  # stopped before the next call


def test_the_quota_guard_stops_a_run_at_its_share(api, sleeps):
    # 40 calls a day and 25 % for this run: the 11th call is not made.
    add_pages(api, 12 * 200, page_size=200, headers={"Sforce-Limit-Info": "api-usage=12/40"})
    c = crm(sleeps)
    with pytest.raises(FatalError, match="SALESFORCE_QUOTA_RUN_PERCENT"):
        list(c.changed(None, UNTIL))
    assert c.calls == 10


def test_the_quota_shares_are_settings(api, sleeps):
    add_pages(api, 3 * 200, page_size=200, headers={"Sforce-Limit-Info": "api-usage=10/1000"})
    c = crm(sleeps, salesforce_quota_total_percent=1)
    with pytest.raises(FatalError, match="stops at 1%"):
        list(c.changed(None, UNTIL))
    assert c.calls == 1
