"""The HubSpot adapter against HubSpot's documented payloads (tests/fixtures/hubspot/) and a fake
portal: describe, pipelines and stage labels, search paging and its 10,000-results ceiling,
batch read, batch update with 207 partial errors and whole-batch refusals, rate limits, tokens,
and the values HubSpot sends as strings."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from decimal import Decimal
from pathlib import Path

import pytest
import responses

from connector.core.mapping import Mapping
from connector.core.values import FieldType
from connector.crm import Crm, WriteResult, json_value
from connector.crm.hubspot.client import API_BASE, HubSpotCrm
from connector.crm.hubspot.metadata import field_type, hubspot_value
from connector.errors import ConfigurationError, FatalError, RecordError, RetriableError
from connector.files import load
from connector.retry import RetryPolicy
from tests.fake_hubspot import TOKEN, Clock, FakePortal, fixture

ROOT = Path(__file__).parent.parent
UNTIL = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def mapping() -> Mapping:
    loaded = load(ROOT / "rules", ROOT / "mappings", crm="hubspot")
    assert loaded.ok and loaded.rules is not None
    return loaded.rules.mapping


@pytest.fixture
def portal():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakePortal(rsps, Clock())


class Ticks:
    """A monotonic clock that moves only when the policy sleeps: waits are exact."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(round(seconds, 6))
        self.now += seconds


def adapter(mapping: Mapping, ticks: Ticks | None = None, **kwargs) -> HubSpotCrm:
    ticks = ticks or Ticks()
    return HubSpotCrm(mapping, kwargs.pop("token", TOKEN),
                      retry=RetryPolicy(sleep=ticks.sleep, clock=ticks.clock), **kwargs)


def ids(pages) -> list[str]:
    return [r["hs_object_id"] for page in pages for r in page]


# --- describe ---------------------------------------------------------------------------------

def test_the_adapter_is_a_crm_port(mapping):
    assert isinstance(adapter(mapping), Crm)


def test_describe_types_the_canonical_fields_and_reads_the_metadata_once(mapping, portal):
    crm = adapter(mapping)
    types = crm.describe()
    assert types["amount"] == FieldType("money")            # currency: HubSpot says so
    assert types["weighted_amount"] == FieldType("money")
    assert types["probability"] == FieldType("percent")     # number: the file says percent
    assert types["close_date"] == FieldType("date")         # datetime shown as a date
    assert types["stage"] == types["proposal_type"] == types["owner_email"] == FieldType()
    assert set(types) == set(mapping.fields)
    assert dict(portal.calls) == {"properties": 2, "pipelines": 1, "owners": 1}
    list(crm.changed(None, UNTIL))
    assert portal.calls["properties"] == 2 and portal.calls["pipelines"] == 1


def test_describe_refuses_every_wrong_mapping_at_once(mapping, portal):
    fields = dict(mapping.fields, name="dealnme", probability="hs_deal_stage_probability",
                  weighted_amount="hs_projected_amount", owner_email="hubspot_owner_id.mail",
                  account_name="hs_primary_associated_company.nme", stage="dealname.label")
    bad = dataclasses.replace(mapping, fields=fields)
    with pytest.raises(ConfigurationError) as caught:
        adapter(bad).describe()
    text = str(caught.value)
    assert "no property 'dealnme' (did you mean 'dealname'?)" in text
    assert "writeback 'probability' (hs_deal_stage_probability) is calculated" in text
    assert "writeback 'weighted_amount' (hs_projected_amount) is calculated" in text
    assert "an owner has no 'mail' (did you mean 'email'?)" in text
    assert "companies have no property 'nme' (did you mean 'name'?)" in text
    assert "'dealname' does not reference an owner or a company" in text
    assert text.count("mappings/hubspot.yaml:") == 6


def test_describe_refuses_read_only_and_fraction_properties_as_writeback(mapping, portal):
    portal.properties["homologated_probability"]["modificationMetadata"]["readOnlyValue"] = True
    with pytest.raises(ConfigurationError, match=r"homologated_probability.*read-only"):
        adapter(mapping).describe()
    portal.properties["homologated_probability"]["modificationMetadata"]["readOnlyValue"] = False
    portal.properties["homologated_probability"]["numberDisplayHint"] = "probability"
    with pytest.raises(ConfigurationError, match=r"fraction 0\.\.1"):
        adapter(mapping).describe()


def test_a_mapping_for_another_crm_or_with_bad_names_is_refused(mapping):
    with pytest.raises(ConfigurationError, match="not 'hubspot'"):
        adapter(dataclasses.replace(mapping, crm="salesforce"))
    with pytest.raises(ConfigurationError, match="not HubSpot property names"):
        adapter(dataclasses.replace(mapping, fields={"name": "Deal Name"}))


@pytest.mark.parametrize(("prop", "declared", "expected"), [
    ({"type": "number", "showCurrencySymbol": True}, None, FieldType("money")),
    ({"type": "number", "numberDisplayHint": "currency"}, None, FieldType("money")),
    ({"type": "number"}, FieldType("percent"), FieldType("percent")),
    ({"type": "number"}, FieldType("text"), FieldType("number")),
    ({"type": "number"}, None, FieldType("number")),
    ({"type": "date", "fieldType": "date"}, None, FieldType("date")),
    ({"type": "datetime", "fieldType": "date"}, None, FieldType("date")),
    ({"type": "datetime", "fieldType": "date"}, FieldType("datetime"), FieldType("datetime")),
    ({"type": "datetime", "fieldType": "text"}, None, FieldType("datetime")),
    ({"type": "bool", "fieldType": "booleancheckbox"}, None, FieldType("boolean")),
    ({"type": "enumeration", "fieldType": "booleancheckbox"}, None, FieldType("text")),
    ({"type": "enumeration", "fieldType": "select"}, None, FieldType("text")),
    ({"type": "string", "fieldType": "text"}, None, FieldType("text")),
])
def test_field_types(prop, declared, expected):
    assert field_type(prop, declared) == expected


# --- pipelines --------------------------------------------------------------------------------

def test_stage_ids_read_as_labels_and_closed_states_come_from_stage_metadata(mapping, portal):
    crm = adapter(mapping)
    assert crm.stage_label("1093720") == "Negotiation/Review"        # a custom stage's id
    assert crm.stage_label("appointmentscheduled") == "Prospecting"  # a renamed default stage
    assert crm.stage_label("3419852") == "Prospecting"               # same label, other pipeline
    assert crm.stage_label("closedwon") == "Closed Won"
    assert crm.stage_label("3419854") == "Closed Won"    # "Renewed": isClosed, probability 1.0
    assert crm.stage_label("3419855") == "Closed Lost"   # "Churned": isClosed, probability 0.0
    assert crm.stage_label("") is None and crm.stage_label(None) is None
    stages = crm.stages()
    assert (stages["3419854"].label, stages["3419854"].closed, stages["3419854"].won) == (
        "Renewed", True, True)
    assert (stages["closedlost"].closed, stages["closedlost"].won) == (True, False)
    assert portal.calls["pipelines"] == 1


def test_a_closed_stage_keeps_its_label_when_the_rules_list_it(mapping, portal):
    crm = adapter(mapping, won=["Closed Won", "Renewed"], lost=["Closed Lost"])
    assert crm.stage_label("3419854") == "Renewed"
    assert crm.stage_label("3419855") == "Closed Lost"
    # A portal flag says closed-won whatever the label: an open label cannot hide a win.
    portal.pipelines["results"][0]["stages"][5]["metadata"] = {"isClosed": "true",
                                                               "probability": "1.0"}
    assert adapter(mapping).stage_label("1093720") == "Closed Won"


def test_labels_back_to_ids_only_when_unambiguous(mapping, portal):
    crm = adapter(mapping)
    assert crm.stage_id("Negotiation/Review", "default") == "1093720"
    assert crm.stage_id("Negotiation/Review", "3419851") == "3419853"
    assert crm.stage_id("Qualification") == "qualifiedtobuy"
    with pytest.raises(RecordError, match="2 stages"):
        crm.stage_id("Negotiation/Review")
    with pytest.raises(RecordError, match="no stage"):
        crm.stage_id("Imaginary")


def test_stage_labels_rename_stages_and_an_unknown_stage_rereads_the_pipelines_once(mapping,
                                                                                   portal):
    crm = adapter(mapping, stage_labels={"Value Proposition": "Needs Analysis",
                                         "qualifiedtobuy": "Prospecting"})
    assert crm.stage_label("decisionmakerboughtin") == "Needs Analysis"
    assert crm.stage_label("qualifiedtobuy") == "Prospecting"
    assert crm.stage_label("999999") == "999999"
    assert crm.stage_label("999999") == "999999"
    assert portal.calls["pipelines"] == 2       # read again once for the new id, not twice


# --- search -----------------------------------------------------------------------------------

def metadata_mock(rsps: responses.RequestsMock) -> None:
    rsps.add(responses.GET, f"{API_BASE}/crm/v3/properties/deals",
             json=fixture("deal_properties.json"))
    rsps.add(responses.GET, f"{API_BASE}/crm/v3/properties/companies",
             json=fixture("company_properties.json"))
    rsps.add(responses.GET, f"{API_BASE}/crm/v3/pipelines/deals",
             json=fixture("deal_pipelines.json"))
    rsps.add(responses.GET, f"{API_BASE}/crm/v3/owners", json=fixture("owners.json"))
    rsps.add(responses.POST, f"{API_BASE}/crm/v3/objects/companies/batch/read",
             json={"status": "COMPLETE", "results": [
                 {"id": "9101112", "properties": {"name": "Acme Corp", "hs_object_id": "9101112"},
                  "createdAt": "2024-01-01T00:00:00Z", "updatedAt": "2024-01-01T00:00:00Z",
                  "archived": False}]})


@responses.activate
def test_a_documented_search_page_becomes_records_the_mapping_reads(mapping):
    metadata_mock(responses.mock)
    search = f"{API_BASE}/crm/v3/objects/deals/search"
    first = responses.post(search, json=fixture("search_page.json"))
    last = dict(fixture("search_page.json"), results=[], paging=None)
    second = responses.post(search, json=last)
    since = dt.datetime(2026, 11, 26, 8, 0, tzinfo=dt.UTC)
    until = dt.datetime(2026, 11, 26, 9, 0, 0, 500999, tzinfo=dt.UTC)
    pages = list(adapter(mapping).changed(since, until))
    assert len(pages) == 1 and len(pages[0]) == 2
    acme, globex = pages[0]
    assert acme["dealstage"] == "Negotiation/Review"
    assert acme["amount"] == "120000.50"                   # decimal text, never a float
    assert acme["probability_rule"] is None                # "" is blank
    assert acme["hubspot_owner_id.email"] == "ann@example.com"
    assert acme["hubspot_owner_id.name"] == "Ann Owner"
    assert acme["hs_primary_associated_company.name"] == "Acme Corp"
    assert globex["dealstage"] == "Closed Won"             # "Renewed", closed by metadata
    assert globex["closedate"] == "2026-10-03T14:05:09.412Z"   # epoch milliseconds -> ISO
    assert globex["hubspot_owner_id.email"] is None
    values = mapping.with_types(adapter(mapping).describe()).read(acme)
    assert values["amount"] == Decimal("120000.50") and values["probability"] == 50
    assert values["close_date"] == dt.date(2027, 1, 15) and values["id"] == "18230945517"

    body = json.loads(first.calls[0].request.body)
    assert body["filterGroups"] == [{"filters": [
        {"propertyName": "hs_lastmodifieddate", "operator": "GTE",
         "value": str(int(since.timestamp() * 1000))},
        {"propertyName": "hs_lastmodifieddate", "operator": "LTE",
         "value": str(int(until.timestamp() * 1000))}]}]   # whole milliseconds, floored
    assert body["sorts"] == [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}]
    assert body["limit"] == 200 and "after" not in body
    assert {"dealstage", "pipeline", "hubspot_owner_id", "hs_primary_associated_company",
            "homologated_probability", "hs_object_id"} <= set(body["properties"])
    assert json.loads(second.calls[0].request.body)["after"] == "2"
    assert first.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_search_pages_follow_paging_next_after(mapping, portal):
    for _ in range(450):
        portal.add()
    crm = adapter(mapping)
    crm.describe()
    pages = list(crm.changed(None, portal.clock()))
    assert [len(p) for p in pages] == [200, 200, 50]
    assert sorted(ids(pages)) == sorted(portal.deals)
    assert [b.get("after") for b in portal.search_bodies] == [None, "200", "400"]
    assert portal.calls["search"] == math.ceil(450 / 200)
    stamps = [r["hs_lastmodifieddate"] for p in pages for r in p]
    assert stamps == sorted(stamps)                      # oldest first
    assert "GTE" not in json.dumps(portal.search_bodies[0])   # the first run reads everything


def test_the_10000_ceiling_moves_the_window_from_the_last_time_seen(mapping, portal):
    for _ in range(10_401):
        portal.add()
    crm = adapter(mapping)
    crm.describe()
    pages = crm.changed(None, portal.clock())
    first = next(pages)
    # The whole window (50 pages of 200) is read before its first page is handed out.
    assert portal.calls["search"] == 50 and len(first) == 200
    rest = list(pages)
    read = ids([first, *rest])
    assert set(read) == set(portal.deals)
    assert len(read) == 10_402          # the deal at the window's edge, read twice, not skipped
    assert crm.window_moves == 1
    # ceil(N/200) pages plus the window moves, and no `after` past the ceiling was asked.
    assert portal.calls["search"] == 53 <= math.ceil(10_401 / 200) + crm.window_moves
    assert max(int(b.get("after") or 0) for b in portal.search_bodies) == 9_800
    boundary = portal.search_bodies[50]["filterGroups"][0]["filters"][0]
    ten_thousandth = sorted(portal.deals.values(),
                            key=lambda d: d["hs_lastmodifieddate"])[9_999]
    assert boundary["operator"] == "GTE" and boundary["value"] == str(
        int(dt.datetime.fromisoformat(ten_thousandth["hs_lastmodifieddate"].replace(
            "Z", "+00:00")).timestamp() * 1000))


def test_a_ceiling_met_sooner_is_a_400_and_moves_the_window(mapping, portal):
    for _ in range(1000):
        portal.add()
    portal.max_results = 400   # HubSpot refuses `after` past it, with its documented 400
    crm = adapter(mapping)
    crm.describe()
    read = ids(crm.changed(None, portal.clock()))
    assert set(read) == set(portal.deals)
    assert crm.window_moves >= 2


def test_more_deals_at_one_instant_than_the_ceiling_are_read_by_id(mapping, portal):
    for _ in range(1000):
        portal.add()
    portal.stamp_all(portal.clock())        # a bulk update stamps them all alike
    portal.max_results = 400
    crm = adapter(mapping)
    crm.describe()
    read = ids(crm.changed(None, portal.clock()))
    assert set(read) == set(portal.deals)
    by_id = [b for b in portal.search_bodies
             if b["sorts"][0]["propertyName"] == "hs_object_id"]
    assert len(by_id) == math.ceil(1000 / 200)
    assert by_id[0]["filterGroups"][0]["filters"][0]["operator"] == "EQ"
    assert by_id[1]["filterGroups"][0]["filters"][1]["operator"] == "GT"


def test_an_edit_while_paging_restarts_the_window_instead_of_skipping(mapping, portal):
    for _ in range(500):
        portal.add()
    first_deal = min(portal.deals, key=int)
    until = portal.clock()

    def someone_edits(call: int) -> None:
        if call == 1:   # between the first and second page: the set shifts down by one
            portal.edit(first_deal, dealname="Renamed")

    portal.after_search = someone_edits
    crm = adapter(mapping)
    crm.describe()
    read = ids(crm.changed(None, until))
    assert set(read) == set(portal.deals)     # with offsets alone, one deal would be skipped
    assert crm.window_moves == 1


def test_searches_are_spaced_for_the_search_api_limit(mapping, portal):
    for _ in range(600):
        portal.add()
    ticks = Ticks()
    crm = adapter(mapping, ticks)
    crm.describe()
    list(crm.changed(None, portal.clock()))
    assert ticks.waits == [0.25, 0.25]        # three searches: two waits of 1/4 s


# --- the sweep's open records -----------------------------------------------------------------

def test_open_records_leave_out_every_closed_stage_and_page_by_id(mapping, portal):
    stages = ["1093720", "contractsent", "3419852", "closedwon", "closedlost", "3419854",
              "3419855"]
    for i in range(700):
        portal.add(dealstage=stages[i % len(stages)],
                   pipeline="3419851" if stages[i % len(stages)].startswith("34") else "default")
    crm = adapter(mapping)
    crm.describe()
    pages = list(crm.open_records("dealstage", ["Closed Won", "Closed Lost", "Cancelled"]))
    open_ids = {d["hs_object_id"] for d in portal.deals.values()
                if d["dealstage"] in ("1093720", "contractsent", "3419852")}
    assert sorted(ids(pages)) == sorted(open_ids) and len(open_ids) == 300
    assert portal.calls["search"] == math.ceil(300 / 200)
    first = portal.search_bodies[0]["filterGroups"][0]["filters"][0]
    assert first["operator"] == "NOT_IN"
    # "Renewed" and "Churned" are closed by HubSpot's metadata, whatever the rules call them.
    assert set(first["values"]) == {"closedwon", "closedlost", "3419854", "3419855"}
    assert portal.search_bodies[1]["filterGroups"][0]["filters"][1]["operator"] == "GT"
    assert all(r["dealstage"] in ("Negotiation/Review", "Proposal/Price Quote", "Prospecting")
               for p in pages for r in p)


# --- fetch ------------------------------------------------------------------------------------

def test_fetch_reads_100_ids_a_call_and_leaves_unknown_ids_out(mapping, portal):
    for _ in range(230):
        portal.add()
    crm = adapter(mapping)
    crm.describe()
    wanted = sorted(portal.deals) + ["404404404", "not-an-id", ""]
    records = crm.fetch(wanted + wanted[:5])
    assert sorted(r["hs_object_id"] for r in records) == sorted(portal.deals)
    assert portal.calls["batch_read"] == math.ceil(231 / 100)
    assert all(r["dealstage"] == "Prospecting" for r in records)


@responses.activate
def test_a_documented_207_batch_read_keeps_the_records_found(mapping):
    metadata_mock(responses.mock)
    responses.post(f"{API_BASE}/crm/v3/objects/deals/batch/read", status=207,
                   json=fixture("batch_read_207.json"))
    records = adapter(mapping).fetch(["18230945517", "404404404"])
    assert [(r["hs_object_id"], r["dealstage"]) for r in records] == [
        ("18230945517", "Closed Won")]


# --- write ------------------------------------------------------------------------------------

def test_writes_go_100_a_call_as_strings_and_207_errors_fail_those_deals(mapping, portal):
    for _ in range(248):
        portal.add()
    crm = adapter(mapping)
    crm.describe()
    deals = sorted(portal.deals)
    updates = [(rid, {"homologated_probability": json_value(Decimal(60)),
                      "weighted_amount": json_value(Decimal("12345.67")),
                      "probability_rule": "p60"}) for rid in deals]
    updates.insert(17, ("404404404", {"probability_rule": "p60"}))
    updates.insert(150, ("404404405", {"probability_rule": "p60"}))
    results = crm.write(updates)
    assert portal.calls["batch_update"] == math.ceil(250 / 100)
    assert [r.id for r in results] == [u[0] for u in updates]
    failed = [r for r in results if not r.ok]
    assert [(r.id, r.code) for r in failed] == [("404404404", "OBJECT_NOT_FOUND"),
                                               ("404404405", "OBJECT_NOT_FOUND")]
    assert "deleted or not exist" in (failed[0].message or "")
    assert all(portal.writes[rid] == 1 for rid in deals)
    assert portal.written[0]["properties"] == {"homologated_probability": "60",
                                               "weighted_amount": "12345.67",
                                               "probability_rule": "p60"}


@responses.activate
def test_a_documented_207_batch_update(mapping):
    metadata_mock(responses.mock)
    responses.post(f"{API_BASE}/crm/v3/objects/deals/batch/update", status=207,
                   json=fixture("batch_update_207.json"))
    results = adapter(mapping).write([("18230945517", {"homologated_probability": 90}),
                                      ("404404404", {"homologated_probability": 90})])
    assert results == [WriteResult("18230945517", True),
                       WriteResult("404404404", False, "OBJECT_NOT_FOUND", results[1].message)]


def test_a_batch_refused_for_one_deal_is_split_until_that_deal_fails_alone(mapping, portal):
    for _ in range(100):
        portal.add()
    victim = sorted(portal.deals)[37]
    portal.refuse[victim] = "Amount must be approved first"
    crm = adapter(mapping)
    crm.describe()
    results = crm.write([(rid, {"probability_rule": "p10"}) for rid in sorted(portal.deals)])
    bad = [r for r in results if not r.ok]
    assert [(r.id, r.code) for r in bad] == [(victim, "VALIDATION_ERROR")]
    assert "Amount must be approved first" in (bad[0].message or "")
    assert portal.writes[victim] == 0 and sum(portal.writes.values()) == 99
    assert portal.calls["batch_update"] <= 1 + 2 * math.ceil(math.log2(100))


def test_a_writeback_property_gone_from_hubspot_stops_the_run_without_splitting(mapping,
                                                                                portal):
    for _ in range(100):
        portal.add()
    crm = adapter(mapping)
    crm.describe()
    del portal.properties["probability_rule"]      # an admin deleted it since describe
    with pytest.raises(FatalError, match="no longer exists or is read-only"):
        crm.write([(rid, {"probability_rule": "p10"}) for rid in sorted(portal.deals)])
    assert portal.calls["batch_update"] == 1 and not portal.writes


def test_write_refuses_properties_that_are_not_writeback(mapping, portal):
    with pytest.raises(ConfigurationError, match="dealstage"):
        adapter(mapping).write([("1", {"dealstage": "closedwon"})])
    assert portal.api_calls == 0


def test_writeback_names_match_in_any_case_and_go_out_as_the_mapping_spells_them(mapping,
                                                                                portal):
    deal = portal.add()["hs_object_id"]
    crm = adapter(mapping)
    crm.describe()
    [result] = crm.write([(deal, {"Probability_Rule": "p10"})])
    assert result.ok and portal.written[-1]["properties"] == {"probability_rule": "p10"}
    with pytest.raises(ConfigurationError, match="did you mean 'probability_rule'"):
        crm.write([(deal, {"probability_rul": "p10"})])


def test_a_stage_hubspot_cannot_take_fails_that_deal_alone(mapping, portal):
    first, second = portal.add()["hs_object_id"], portal.add()["hs_object_id"]
    crm = adapter(dataclasses.replace(mapping, writeback=(*mapping.writeback, "stage")))
    crm.describe()
    refused, written = crm.write([(first, {"dealstage": "Imaginary"}),
                                  (second, {"dealstage": "Qualification"})])
    assert not refused.ok and refused.code == "INVALID_VALUE" and "no stage" in refused.message
    assert written.ok and portal.deals[second]["dealstage"] == "qualifiedtobuy"
    assert portal.calls["batch_update"] == 1 and portal.writes[first] == 0


def test_a_deal_with_nothing_to_write_costs_no_call(mapping, portal):
    assert adapter(mapping).write([("1", {})]) == [WriteResult("1", True)]
    assert portal.api_calls == 0


@pytest.mark.parametrize(("value", "prop_type", "text"), [
    (Decimal("12345.60"), "number", "12345.60"),
    (12345.67, "number", "12345.67"),          # a float the pipeline made of a Decimal
    (0.1 + 0.2, "number", "0.30000000000000004"),
    (Decimal("1E+2"), "number", "100"),
    (90, "number", "90"),
    (None, "number", ""),
    (True, "bool", "true"),
    (dt.date(2027, 1, 15), "date", "2027-01-15"),
    (dt.date(2027, 1, 15), "datetime", "2027-01-15T00:00:00.000Z"),
    (dt.datetime(2027, 1, 15, 10, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))), "datetime",
     "2027-01-15T08:30:00.000Z"),
    ("p60", "string", "p60"),
])
def test_values_are_written_as_hubspot_strings(value, prop_type, text):
    assert hubspot_value(value, prop_type) == text


# --- limits, faults and secrets ---------------------------------------------------------------

def test_a_429_is_retried_after_retry_after_or_the_burst_window(mapping, portal):
    portal.add()
    ticks = Ticks()
    crm = adapter(mapping, ticks)
    crm.describe()
    portal.fail_on["batch_update"] = [
        (429, fixture("error_429_ten_secondly.json"), {"Retry-After": "3"}),
        (429, fixture("error_429_ten_secondly.json"), {})]
    [result] = crm.write([(next(iter(portal.deals)), {"probability_rule": "p10"})])
    assert result.ok and ticks.waits == [3.0, 10.0]
    assert portal.calls["batch_update"] == 3 and sum(portal.writes.values()) == 1


def test_the_daily_limit_is_fatal(mapping, portal):
    portal.fail_on["properties"] = [(429, fixture("error_429_daily.json"), {})]
    with pytest.raises(FatalError, match="daily API limit is used up"):
        adapter(mapping).describe()
    assert portal.calls["properties"] == 1      # not retried


def test_the_daily_headers_stop_the_run_before_the_portal_share_is_passed(mapping, portal):
    portal.daily = (1000, 798)                 # 80% reached after two more calls
    ticks = Ticks()
    crm = adapter(mapping, ticks)
    with pytest.raises(FatalError, match="used 800 of its 1,000 daily API calls"):
        crm.describe()
    assert portal.api_calls == 2
    with pytest.raises(FatalError):
        crm.describe()
    assert portal.api_calls == 2               # not one call more while it stands
    # A process kept warm past the reset asks again after an hour, and goes on.
    portal.daily, portal.calls = (1000, 0), type(portal.calls)()
    ticks.now += 3601
    assert crm.describe()["amount"] == FieldType("money")
    assert portal.calls["pipelines"] == 1


def test_a_run_stops_past_its_share_of_the_daily_calls(mapping, portal):
    portal.daily = (1000, 0)
    crm = adapter(mapping, quota_run_percent=0.3)   # 3 of the portal's 1,000 calls a day
    with pytest.raises(FatalError, match="HUBSPOT_QUOTA_RUN_PERCENT"):
        for _ in range(5):
            crm.fetch(["1"])
    assert portal.api_calls == crm.calls == 3


def test_an_exhausted_burst_window_is_waited_out_before_the_next_call(mapping, portal):
    portal.burst_left = [0]
    ticks = Ticks()
    adapter(mapping, ticks).describe()
    assert ticks.waits == [10.0]


def test_server_errors_are_retried_then_given_up(mapping, portal):
    portal.fail_on["pipelines"] = [(502, {"status": "error", "message": "Bad gateway"}, {})] * 9
    ticks = Ticks()
    with pytest.raises(RetriableError, match="HTTP 502"):
        adapter(mapping, ticks).describe()
    assert portal.calls["pipelines"] == 5 and len(ticks.waits) == 4


def test_a_refused_token_is_fatal_and_never_shown(mapping, portal):
    wrong = "pat-na1-00000000-dead-beef-0000-000000000000"
    with pytest.raises(FatalError) as caught:
        adapter(mapping, token=wrong).describe()
    assert "HUBSPOT_ACCESS_TOKEN" in str(caught.value) and wrong not in str(caught.value)


def test_a_token_source_is_asked_again_once_on_401(mapping, portal):
    tokens = iter(["expired-oauth-token", TOKEN])
    crm = adapter(mapping, token=lambda: next(tokens))
    crm.describe()
    assert crm.auth_calls == 2 and portal.calls["properties"] == 3   # 1 refused, then 2


def test_secrets_echoed_by_hubspot_are_scrubbed(mapping, portal):
    portal.fail_on["properties"] = [(400, {"status": "error", "category": "VALIDATION_ERROR",
                                           "message": f"bad request with {TOKEN} inside"}, {})]
    with pytest.raises(ConfigurationError) as caught:
        adapter(mapping).describe()
    assert TOKEN not in str(caught.value) and "***" in str(caught.value)


def test_from_settings_needs_the_token_and_takes_the_rules_closed_values(mapping):
    from types import SimpleNamespace

    from pydantic import SecretStr

    loaded = load(ROOT / "rules", ROOT / "mappings", crm="hubspot")
    with pytest.raises(ConfigurationError, match="HUBSPOT_ACCESS_TOKEN is not set"):
        HubSpotCrm.from_settings(SimpleNamespace(), mapping)
    crm = HubSpotCrm.from_settings(
        SimpleNamespace(hubspot_access_token=SecretStr(TOKEN), secrets=lambda: ["s3cr3t-x"]),
        mapping, closed=loaded.rules.closed)
    assert crm._names.won == ("Closed Won",) and crm._names.lost == ("Closed Lost", "Cancelled")
    assert "s3cr3t-x" in crm._secrets and TOKEN in crm._secrets

