"""Writing back to Salesforce: only the changed fields, 1,000 records a call (five sObject
Collections of 200 in one Composite request), tagged with our client name, and each record's
fate: saved, refused (it fails alone), or locked (sent again)."""

import datetime as dt
import json
import math
from collections.abc import Callable
from decimal import Decimal

import pytest
import responses

from connector.core.mapping import Mapping
from connector.crm import WriteResult, json_value
from connector.crm.salesforce.client import SalesforceCrm
from connector.errors import ConfigurationError, FatalError
from connector.retry import RetryPolicy
from connector.settings import Settings
from tests import salesforce_fixtures as fx

V = "59.0"
INSTANCE = "https://acme.my.salesforce.com"
COMPOSITE = f"{INSTANCE}/services/data/v{V}/composite"
TOKEN = "00DRO000000abcd!AQ4AQFakeSessionToken.dddddddddddddddd"

MAPPING = Mapping(
    crm="salesforce", object="Opportunity", id_field="Id", modified_field="SystemModstamp",
    fields={"name": "Name", "amount": "Amount", "probability": "Probability",
            "weighted_amount": "Weighted_Amount__c", "rule": "Probability_Rule__c"},
    writeback=("probability", "weighted_amount", "rule"), source="mappings/salesforce.yaml")

SaveResult = dict


api, clean_environment, sleeps = fx.api, fx.clean_environment, fx.sleeps  # shared fixtures


def crm(sleeps: list[float], **values) -> SalesforceCrm:
    settings = Settings(_env_file=None, salesforce_instance_url=INSTANCE,
                        salesforce_access_token=TOKEN, **values)
    return SalesforceCrm(settings, MAPPING, retry=RetryPolicy(sleep=sleeps.append))


def rid(n: int) -> str:
    return f"006RO{n:013d}"


def saved(record: dict) -> SaveResult:
    # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_update.htm
    return {"id": record["id"], "success": True, "errors": []}


def refused(code: str, message: str, fields: list[str]) -> Callable[[dict], SaveResult]:
    def result(record: dict) -> SaveResult:
        return {"id": record["id"], "success": False,
                "errors": [{"statusCode": code, "message": message, "fields": fields}]}
    return result


def composite(answer: Callable[[dict], SaveResult]):
    """A Composite endpoint answering each collection subrequest with one SaveResult per
    record, in the records' order, as Salesforce does."""
    def callback(request):
        body = json.loads(request.body)
        results = [{"body": [answer(r) for r in sub["body"]["records"]], "httpHeaders": {},
                    "httpStatusCode": 200, "referenceId": sub["referenceId"]}
                   for sub in body["compositeRequest"]]
        return 200, {"Sforce-Limit-Info": "api-usage=25/5000"}, \
            json.dumps({"compositeResponse": results})
    return callback


def sent(call) -> dict:
    return json.loads(call.request.body)


def records_sent(call) -> list[dict]:
    return [r for sub in sent(call)["compositeRequest"] for r in sub["body"]["records"]]


# --- batching and cost ------------------------------------------------------------------------

def test_writing_1500_records_costs_2_calls(api, sleeps):
    api.add_callback(responses.POST, COMPOSITE, callback=composite(saved))
    c = crm(sleeps)
    updates = [(rid(n), {"Probability": 60, "Probability_Rule__c": "p60"}) for n in range(1500)]
    results = c.write(updates)
    assert c.calls == len(api.calls) == 2 == math.ceil(1500 / 1000)
    assert results == [WriteResult(rid(n), True) for n in range(1500)]
    first, second = (sent(call) for call in api.calls)
    assert [len(s["body"]["records"]) for s in first["compositeRequest"]] == [200] * 5
    assert [len(s["body"]["records"]) for s in second["compositeRequest"]] == [200, 200, 100]
    for body in (first, second):
        assert body["allOrNone"] is False
        for sub in body["compositeRequest"]:
            assert sub["method"] == "PATCH"
            assert sub["url"] == f"/services/data/v{V}/composite/sobjects"
            assert sub["body"]["allOrNone"] is False
    assert [r["id"] for call in api.calls for r in records_sent(call)] == \
        [rid(n) for n in range(1500)]


def test_every_write_is_tagged_with_the_client_name(api, sleeps):
    api.add_callback(responses.POST, COMPOSITE, callback=composite(saved))
    c = crm(sleeps, salesforce_client_name="acme-probability")
    c.write([(rid(n), {"Probability": 40}) for n in range(2500)])
    assert len(api.calls) == 3
    for call in api.calls:
        assert call.request.headers["Sforce-Call-Options"] == "client=acme-probability"


def test_only_the_given_fields_are_sent_as_json(api, sleeps):
    api.add_callback(responses.POST, COMPOSITE, callback=composite(saved))
    crm(sleeps).write([
        (rid(1), {"Weighted_Amount__c": Decimal("75000.25")}),
        (rid(2), {"Probability": Decimal("90"), "Probability_Rule__c": "p90"}),
        (rid(3), {"Probability_Rule__c": None}),
    ])
    assert records_sent(api.calls[0]) == [
        {"attributes": {"type": "Opportunity"}, "id": rid(1), "Weighted_Amount__c": 75000.25},
        {"attributes": {"type": "Opportunity"}, "id": rid(2), "Probability": 90,
         "Probability_Rule__c": "p90"},
        {"attributes": {"type": "Opportunity"}, "id": rid(3), "Probability_Rule__c": None},
    ]


def test_json_value_converts_money_and_dates():
    assert json_value(Decimal("60")) == 60 and isinstance(json_value(Decimal("60")), int)
    assert json_value(Decimal("1234.50")) == 1234.5
    assert json_value(dt.date(2026, 12, 15)) == "2026-12-15"
    assert json_value(dt.datetime(2026, 12, 15, 8, 0, tzinfo=dt.UTC)) == \
        "2026-12-15T08:00:00+00:00"
    assert json_value("p60") == "p60"


def test_a_field_outside_writeback_is_never_sent(api, sleeps):
    c = crm(sleeps)
    with pytest.raises(ConfigurationError, match="Amount"):
        c.write([(rid(1), {"Probability": 60}), (rid(2), {"Amount": 1})])
    assert c.calls == 0 and len(api.calls) == 0


def test_nothing_to_write_costs_nothing(api, sleeps):
    c = crm(sleeps)
    assert c.write([]) == []
    assert c.write([(rid(1), {})]) == [WriteResult(rid(1), True)]
    assert c.calls == 0


def test_one_record_twice_is_written_once(api, sleeps):
    api.add_callback(responses.POST, COMPOSITE, callback=composite(saved))
    results = crm(sleeps).write([(rid(1), {"Probability": 60}),
                                 (rid(1), {"Probability_Rule__c": "p60"})])
    assert results == [WriteResult(rid(1), True)] * 2
    assert records_sent(api.calls[0]) == [{"attributes": {"type": "Opportunity"}, "id": rid(1),
                                           "Probability": 60, "Probability_Rule__c": "p60"}]


# --- each record's fate ---------------------------------------------------------------------

def test_a_validation_error_fails_that_record_alone(api, sleeps):
    bad = rid(417)
    rule = refused("FIELD_CUSTOM_VALIDATION_EXCEPTION",
                   "Close Date must be in the future for open opportunities", ["CloseDate"])
    api.add_callback(responses.POST, COMPOSITE,
                     callback=composite(lambda r: rule(r) if r["id"] == bad else saved(r)))
    c = crm(sleeps)
    results = c.write([(rid(n), {"Probability": 60}) for n in range(600)])
    failed = [r for r in results if not r.ok]
    assert failed == [WriteResult(bad, False, "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                                  "Close Date must be in the future for open opportunities "
                                  "(CloseDate)")]
    assert sum(r.ok for r in results) == 599
    assert c.calls == 1 and sleeps == []          # a refusal is final: not sent again


def test_a_failed_save_result_without_id_is_matched_by_position(api, sleeps):
    def answer(r):
        if r["id"] == rid(1):   # Salesforce leaves the id out of some failures
            return {"success": False, "errors": [
                {"statusCode": "INVALID_FIELD_FOR_INSERT_UPDATE",
                 "message": "Unable to create/update fields: Probability.", "fields": [
                     "Probability"]}]}
        return saved(r)
    api.add_callback(responses.POST, COMPOSITE, callback=composite(answer))
    results = crm(sleeps).write([(rid(n), {"Probability": 10}) for n in range(3)])
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].id == rid(1) and results[1].code == "INVALID_FIELD_FOR_INSERT_UPDATE"


def test_a_locked_row_is_sent_again_alone(api, sleeps):
    locked = rid(250)
    attempts: list[list[str]] = []
    lock = refused("UNABLE_TO_LOCK_ROW",
                   f"unable to obtain exclusive access to this record or 1 records: {locked}", [])

    def answer(r):
        return lock(r) if r["id"] == locked and len(attempts) == 1 else saved(r)

    callback = composite(answer)

    def tracking(request):
        attempts.append([r["id"] for s in json.loads(request.body)["compositeRequest"]
                         for r in s["body"]["records"]])
        return callback(request)

    api.add_callback(responses.POST, COMPOSITE, callback=tracking)
    c = crm(sleeps)
    results = c.write([(rid(n), {"Probability": 60}) for n in range(300)])
    assert all(r.ok for r in results)
    assert len(attempts) == 2 and attempts[1] == [locked]
    assert c.calls == 2 and len(sleeps) == 1


def test_a_row_that_stays_locked_fails_after_the_policy(api, sleeps):
    lock = refused("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record", [])
    api.add_callback(responses.POST, COMPOSITE,
                     callback=composite(lambda r: lock(r) if r["id"] == rid(0) else saved(r)))
    c = crm(sleeps)
    results = c.write([(rid(n), {"Probability": 60}) for n in range(2)])
    assert results[0] == WriteResult(rid(0), False, "UNABLE_TO_LOCK_ROW",
                                     "unable to obtain exclusive access to this record")
    assert results[1].ok
    assert c.calls == 5 and len(sleeps) == 4


def test_a_collection_that_fails_whole_fails_its_records_only(api, sleeps):
    def callback(request):
        subs = json.loads(request.body)["compositeRequest"]
        answers = [{"body": [saved(r) for r in subs[0]["body"]["records"]], "httpHeaders": {},
                    "httpStatusCode": 200, "referenceId": subs[0]["referenceId"]},
                   {"body": [{"errorCode": "JSON_PARSER_ERROR",
                              "message": "Cannot deserialize instance of double"}],
                    "httpHeaders": {}, "httpStatusCode": 400,
                    "referenceId": subs[1]["referenceId"]}]
        return 200, {}, json.dumps({"compositeResponse": answers})

    api.add_callback(responses.POST, COMPOSITE, callback=callback)
    results = crm(sleeps).write([(rid(n), {"Probability": 60}) for n in range(250)])
    assert all(r.ok for r in results[:200])
    assert {(r.ok, r.code) for r in results[200:]} == {(False, "JSON_PARSER_ERROR")}
    assert [r.id for r in results] == [rid(n) for n in range(250)]


def test_a_busy_composite_is_retried(api, sleeps):
    api.add(responses.POST, COMPOSITE, status=503, headers={"Retry-After": "3"},
            json=[{"errorCode": "SERVER_UNAVAILABLE", "message": "Server unavailable"}])
    api.add_callback(responses.POST, COMPOSITE, callback=composite(saved))
    c = crm(sleeps)
    assert all(r.ok for r in c.write([(rid(n), {"Probability": 60}) for n in range(10)]))
    assert sleeps == [3.0] and c.calls == 2


def test_request_limit_exceeded_stops_the_write(api, sleeps):
    api.add(responses.POST, COMPOSITE, status=403, json=[
        {"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}])
    c = crm(sleeps)
    with pytest.raises(FatalError, match=r"REQUEST_LIMIT_EXCEEDED.*cursor is kept"):
        c.write([(rid(n), {"Probability": 60}) for n in range(10)])
    assert sleeps == [] and c.calls == 1


def test_request_limit_exceeded_in_a_collection_stops_the_write(api, sleeps):
    api.add(responses.POST, COMPOSITE, json={"compositeResponse": [{
        "body": [{"errorCode": "REQUEST_LIMIT_EXCEEDED",
                  "message": "TotalRequests Limit exceeded."}],
        "httpHeaders": {}, "httpStatusCode": 403, "referenceId": "update0"}]})
    c = crm(sleeps)
    with pytest.raises(FatalError, match=r"REQUEST_LIMIT_EXCEEDED.*cursor is kept"):
        c.write([(rid(n), {"Probability": 60}) for n in range(10)])
    assert sleeps == [] and c.calls == 1


def test_the_quota_guard_stops_before_the_next_write(api, sleeps):
    api.add(responses.POST, COMPOSITE, headers={"Sforce-Limit-Info": "api-usage=4000/5000"},
            json={"compositeResponse": [{
                "body": [saved({"id": rid(n)}) for n in range(200)], "httpHeaders": {},
                "httpStatusCode": 200, "referenceId": f"update{k}"} for k in range(5)]})
    c = crm(sleeps)
    with pytest.raises(FatalError, match="4,000 of its 5,000"):
        c.write([(rid(n), {"Probability": 60}) for n in range(1200)])
    assert c.calls == 1
