"""The Salesforce end-to-end scenario, on a fake HubSpot portal, with the bundled rules and
mappings/hubspot.yaml: only what changes is written, in ceil(N/200) searches and ceil(M/100)
batch updates; a second sync writes nothing; our own writes' echoes (polled or delivered as
webhooks) compute to no change; forged, stale and replayed webhooks are refused or ignored and a
valid one is processed once; a won deal becomes one ERP order through the REST ERP adapter;
faults park one deal, are retried, or stop the run with the cursor kept."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import math
import random
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from pydantic import SecretStr

from connector.actions import ActionRunner
from connector.crm.hubspot import HubSpotCrm
from connector.erp.rest import RestErp
from connector.files import load
from connector.handlers.webhook import route
from connector.pipeline import Pipeline, store_notice
from connector.retry import RetryPolicy
from connector.state import open_state
from tests.fake_hubspot import APP_ID, TOKEN, Clock, FakePortal, fixture

ROOT = Path(__file__).parent.parent
RULES, MAPPINGS = ROOT / "rules", ROOT / "mappings"
CLIENT_SECRET = "7c1f0e2d-hubspot-app-secret-93ab"
HOST = "hooks.acme.example"
ERP = "https://erp.example.com/api"
HOOK = "https://hooks.example.com/marketing/T0KEN"
OPEN_STAGES = ["1093720", "contractsent", "decisionmakerboughtin", "presentationscheduled",
               "qualifiedtobuy", "appointmentscheduled", "3419852", "3419853"]
CLOSED_STAGES = ["closedwon", "closedlost", "3419854", "3419855"]
COMPANIES = ["9101112", "9101113", "9101114"]
OWNERS = ["41629779", "41629780", "41629781"]


@pytest.fixture
def portal():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakePortal(rsps, Clock())


class World:
    """The connector as `sync` and the worker would build it, on the HubSpot adapter."""

    def __init__(self, tmp_path: Path, portal: FakePortal, app_id: int | None = APP_ID) -> None:
        self.portal = portal
        self.waits: list[float] = []
        self.sent: list[tuple[str, str]] = []       # (kind, key) of emails and HTTP pushes
        loaded = load(RULES, MAPPINGS, crm="hubspot")
        assert loaded.ok and loaded.rules is not None
        self.settings = SimpleNamespace(
            hubspot_access_token=SecretStr(TOKEN), hubspot_app_id=app_id,
            hubspot_client_secret=SecretStr(CLIENT_SECRET),
            secrets=lambda: [TOKEN, CLIENT_SECRET])
        self.crm = HubSpotCrm.from_settings(self.settings, loaded.rules.mapping,
                                            closed=loaded.rules.closed,
                                            retry=RetryPolicy(sleep=self.waits.append))
        self.setup_calls = 0
        types = self.crm.describe()
        self.setup_calls = portal.api_calls
        rules = dataclasses.replace(loaded.rules, mapping=loaded.rules.mapping.with_types(types))
        self.version = loaded.version
        self.state = open_state(f"sqlite:///{tmp_path / 'state.db'}")
        self.erp = RestErp(ERP)
        runner = ActionRunner(rules, RULES, MAPPINGS, senders={
            "email": lambda message, key: self._sent("email", key),
            "http": lambda request, key: self._sent("http", key),
            "erp": self.erp.push_order}, environ={"MARKETING_WEBHOOK_URL": HOOK})
        self.pipeline = Pipeline(rules, self.crm, self.state, runner, now=portal.clock,
                                 today=lambda: portal.clock().date())

    def _sent(self, kind: str, key: str) -> str:
        self.sent.append((kind, key))
        return "sent"

    def poll(self):
        self.portal.clock.advance(seconds=1)
        return self.pipeline.poll()

    def deliver(self, events: list[dict[str, Any]], *, secret: str = CLIENT_SECRET,
                age: float = 0.0, tamper: Any = None) -> dict[str, Any]:
        """POST a HubSpot webhook batch, signed (v3) as HubSpot signs it, to the route;
        `tamper` changes the body after it was signed."""
        raw = json.dumps(events).encode()
        ts = str(int((self.portal.clock().timestamp() - age) * 1000))
        uri = f"https://{HOST}/webhooks/hubspot"
        digest = hmac.new(secret.encode(), b"POST" + uri.encode() + raw + ts.encode(),
                          hashlib.sha256).digest()
        event = {"requestContext": {"http": {"method": "POST"}}, "rawPath": "/webhooks/hubspot",
                 "rawQueryString": "", "isBase64Encoded": False,
                 "body": (tamper(raw) if tamper else raw).decode(),
                 "headers": {"host": HOST, "content-type": "application/json",
                             "x-hubspot-signature-v3": base64.b64encode(digest).decode(),
                             "x-hubspot-request-timestamp": ts}}
        return route(event, settings=self.settings, version=self.version,
                     store=lambda key, ids: store_notice(self.state, key, ids,
                                                         self.portal.clock()),
                     now=lambda: self.portal.clock().timestamp())


def fill(portal: FakePortal, n: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    for _ in range(n):
        stage = rng.choice(OPEN_STAGES + CLOSED_STAGES)
        pipeline = "3419851" if stage.startswith("34198") else "default"
        portal.add(dealstage=stage, pipeline=pipeline,
                   amount=f"{rng.randint(1_000, 300_000)}.{rng.randint(0, 99):02d}",
                   proposal_type=rng.choice(["Firm", "Budgetary", None]),
                   relationship_level=rng.choice(["Strategic", "Trusted", "Known", "New"]),
                   closedate=f"2027-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T00:00:00Z",
                   homologated_probability=rng.choice(["10", "20", "50", "90", None]),
                   hubspot_owner_id=rng.choice(OWNERS),
                   hs_primary_associated_company=rng.choice(COMPANIES))


@pytest.fixture
def erp_orders(portal):
    """A REST ERP behind `responses`: orders by reference, created once per Idempotency-Key."""
    orders: dict[str, dict[str, Any]] = {}

    def get(request):
        reference = parse_qs(urlsplit(request.url).query)["reference"][0]
        return 200, {}, json.dumps([o for o in orders.values() if o["reference"] == reference])

    def post(request):
        body = json.loads(request.body)
        key = request.headers["Idempotency-Key"]
        orders.setdefault(key, {"id": f"SO-{len(orders) + 1}", **body})
        return 201, {}, json.dumps(orders[key])

    portal.rsps.add_callback(responses.GET, f"{ERP}/orders", callback=get)
    portal.rsps.add_callback(responses.POST, f"{ERP}/orders", callback=post)
    return orders


# --- sync -------------------------------------------------------------------------------------

def test_sync_writes_what_changes_in_the_floor_number_of_calls(tmp_path, portal):
    fill(portal, 2498)
    right = portal.add(dealstage="1093720", proposal_type="Firm", relationship_level="Strategic",
                       amount="120000", homologated_probability="90",
                       weighted_amount="108000.00", probability_rule="p90")
    half = portal.add(dealstage="1093720", proposal_type="Firm", relationship_level="Strategic",
                      amount="120000", homologated_probability="90", weighted_amount="1",
                      probability_rule="p90")
    world = World(tmp_path, portal)
    assert world.setup_calls == 4   # deal and company properties, pipelines, owners
    report = world.poll()
    assert report.read == 2500 and report.failed == 0 and report.stopped is None
    written = sum(portal.writes.values())
    assert report.written == written == len(portal.writes)   # each changed deal written once
    assert written > 1000 and portal.writes[right["hs_object_id"]] == 0
    # Only the properties that change are sent.
    assert [e["properties"] for e in portal.written if e["id"] == half["hs_object_id"]] == [
        {"weighted_amount": "108000"}]
    calls = portal.api_calls - world.setup_calls
    assert portal.calls["search"] == math.ceil(2500 / 200) == 13
    assert portal.calls["batch_update"] == math.ceil(written / 100)
    assert portal.calls["companies"] == 1   # three companies, read once for the whole run
    assert calls == 13 + math.ceil(written / 100) + 1
    assert world.crm.calls == portal.api_calls    # the adapter counts every call it makes
    # Only the writeback properties were sent, as strings; money exact.
    sent = {name for entry in portal.written for name in entry["properties"]}
    assert sent <= {"homologated_probability", "weighted_amount", "probability_rule"}
    assert all(isinstance(v, str) for e in portal.written for v in e["properties"].values())
    for entry in portal.written:
        deal = portal.deals[entry["id"]]
        amount, probability = Decimal(deal["amount"]), Decimal(deal["homologated_probability"])
        expected = (amount * probability / 100).quantize(Decimal("0.01"), ROUND_HALF_UP)
        assert Decimal(deal["weighted_amount"]) == expected

    # Every deal now holds what the rules give; a second sync reads our own echoes.
    before = dict(portal.writes)
    again = world.poll()
    assert again.written == 0 and again.failed == 0
    assert again.unchanged == written        # the echoes: our writes moved their timestamp
    assert again.read == again.unchanged + again.skipped
    assert dict(portal.writes) == before


def test_closed_stages_come_from_hubspot_metadata_and_open_ones_by_label(tmp_path, portal):
    won = portal.add(dealstage="3419854", pipeline="3419851", amount="5000")   # "Renewed"
    lost = portal.add(dealstage="3419855", pipeline="3419851", amount="5000")  # "Churned"
    open_ = portal.add(dealstage="1093720", proposal_type="Firm", relationship_level="Strategic",
                       amount="120000")
    renewal = portal.add(dealstage="3419853", pipeline="3419851", proposal_type="Firm",
                         relationship_level="Known", amount="120000")
    world = World(tmp_path, portal)
    assert world.poll().failed == 0
    deals = portal.deals
    assert (deals[won["hs_object_id"]]["homologated_probability"],
            deals[won["hs_object_id"]]["probability_rule"]) == ("100", "closed-won")
    assert (deals[lost["hs_object_id"]]["homologated_probability"],
            deals[lost["hs_object_id"]]["probability_rule"]) == ("0", "closed-lost")
    assert deals[open_["hs_object_id"]]["probability_rule"] == "p90"
    # The same label in another pipeline is the same factor value.
    assert deals[renewal["hs_object_id"]]["probability_rule"] == "p80"
    assert deals[open_["hs_object_id"]]["weighted_amount"] == "108000"
    # The stage itself is never written.
    assert all("dealstage" not in e["properties"] for e in portal.written)


def test_a_second_sync_with_nothing_new_reads_and_writes_nothing(tmp_path, portal):
    fill(portal, 50)
    world = World(tmp_path, portal)
    world.poll()
    world.poll()                              # the echoes
    portal.clock.advance(minutes=10)
    third = world.poll()
    assert third.written == 0
    # The overlap window re-reads the last 5 minutes; those versions are dropped unprocessed.
    assert third.read == third.skipped


def test_a_refused_value_parks_that_deal_and_the_others_go_on(tmp_path, portal):
    fill(portal, 300)
    victim = sorted(portal.deals)[7]
    portal.deals[victim]["homologated_probability"] = None      # so that it must be written
    portal.refuse[victim] = "probability changes need the amount approved first"
    world = World(tmp_path, portal)
    report = world.poll()
    assert report.parked == 1 and report.stopped is None
    assert portal.writes[victim] == 0
    assert report.written == len(portal.writes) > 100
    parked = world.state.items("parked")
    assert [(i.kind, i.record_id) for i in parked] == [("writeback", victim)]
    assert "VALIDATION_ERROR" in parked[0].reason and "amount approved" in parked[0].reason
    assert report.cursor is not None

    # The admin fixes it in HubSpot and retries: the deal goes through, once.
    del portal.refuse[victim]
    assert world.state.release(None, portal.clock()) == 1
    drained = world.pipeline.drain()
    assert [r for r in drained.results if r.startswith("writeback:")] == [
        f"writeback:{victim}:{parked[0].key.split(':', 2)[2]}: read 1, wrote 1, unchanged 0, "
        "actions 0"]
    assert portal.writes[victim] == 1 and sum(portal.writes.values()) == len(portal.writes)


def test_rate_limits_and_busy_servers_are_retried_honouring_retry_after(tmp_path, portal):
    fill(portal, 250)
    world = World(tmp_path, portal)
    portal.fail_on["search"] = [(503, {"status": "error", "message": "Service Unavailable",
                                       "category": "SERVICE_UNAVAILABLE"}, {})]
    portal.fail_on["batch_update"] = [
        (429, fixture("error_429_ten_secondly.json"), {"Retry-After": "3"}),
        (429, fixture("error_429_ten_secondly.json"), {})]
    report = world.poll()
    assert report.stopped is None and report.parked == 0
    assert all(n == 1 for n in portal.writes.values()) and portal.writes
    assert 3.0 in world.waits        # Retry-After honoured
    assert 10.0 in world.waits       # no Retry-After: the burst window of the headers (10 s)


def test_the_daily_limit_stops_the_run_cleanly_with_the_cursor_kept(tmp_path, portal):
    fill(portal, 2500)
    world = World(tmp_path, portal)
    # The third write of the run is refused: the portal's daily allowance is used up.
    portal.fail_at[("batch_update", 3)] = (429, fixture("error_429_daily.json"), {})
    report = world.poll()
    assert report.stopped and "daily" in report.stopped
    first_pages = report.cursor
    assert first_pages is not None                       # the first two pages were committed
    assert world.state.get_cursor(world.pipeline.cursor_name) == first_pages
    writes = dict(portal.writes)
    assert 0 < len(writes) <= 400
    # The next run (allowance back) resumes after the committed pages; nothing twice.
    again = world.poll()
    assert again.stopped is None
    assert all(n == 1 for n in portal.writes.values()) and set(writes) < set(portal.writes)
    assert all(d["probability_rule"] for d in portal.deals.values())


def test_a_sync_past_the_10000_results_ceiling_costs_ceil_n_200_plus_the_moves(tmp_path,
                                                                              portal):
    fill(portal, 10_401)
    world = World(tmp_path, portal)
    report = world.poll()
    assert report.stopped is None and report.failed == 0
    assert report.read - report.skipped == 10_401 and report.written == len(portal.writes)
    assert world.crm.window_moves == 1
    assert portal.calls["search"] == math.ceil(10_401 / 200) == 53   # 53 <= ceil + 1 move
    assert portal.calls["batch_update"] == math.ceil(report.written / 100)
    assert all(n == 1 for n in portal.writes.values())


def test_the_search_ceiling_moves_the_window_and_skips_nothing(tmp_path, portal):
    fill(portal, 2500)
    world = World(tmp_path, portal)
    portal.max_results = 1000        # a ceiling met sooner: the same code path, fewer deals
    report = world.poll()
    assert report.stopped is None and report.failed == 0
    assert world.crm.window_moves >= 2
    # Every deal was read and handled; the ones at each window's edge were read again and
    # dropped by the pipeline's dedupe; none was written twice.
    assert report.read - report.skipped == 2500
    assert all(n == 1 for n in portal.writes.values())
    assert all(d["probability_rule"] for d in portal.deals.values())


def test_the_daily_sweep_reevaluates_open_deals_only_and_writes_nothing_new(tmp_path, portal):
    fill(portal, 450)
    world = World(tmp_path, portal)
    world.poll()
    writes = dict(portal.writes)
    before = portal.calls["search"]
    report = world.pipeline.sweep()
    open_deals = [d for d in portal.deals.values() if d["dealstage"] not in CLOSED_STAGES]
    assert report.read == len(open_deals) and report.failed == 0 and report.written == 0
    assert portal.calls["search"] - before == math.ceil(len(open_deals) / 200)
    assert dict(portal.writes) == writes


# --- webhooks ---------------------------------------------------------------------------------

def test_webhooks_forged_stale_and_replayed_are_refused_or_ignored_valid_once(tmp_path, portal):
    deal = portal.add(dealstage="contractsent", proposal_type="Firm",
                      relationship_level="Strategic", amount="50000",
                      homologated_probability="70", weighted_amount="35000",
                      probability_rule="p70")
    world = World(tmp_path, portal)
    portal.take_events()
    portal.edit(deal["hs_object_id"], dealstage="1093720")          # moved to Negotiation
    events = portal.take_events()
    assert [e["changeSource"] for e in events] == ["CRM_UI"]

    forged = world.deliver(events, secret="not-the-app-secret")
    stale = world.deliver(events, age=6 * 60)
    tampered = world.deliver(events, tamper=lambda raw: raw.replace(
        deal["hs_object_id"].encode(), b"18230940001"))
    assert (forged["statusCode"], stale["statusCode"]) == (401, 401)
    assert world.state.items() == []                 # nothing stored from a refused request
    assert tampered["statusCode"] == 401

    first = world.deliver(events)
    replay = world.deliver(events)                   # HubSpot retries, or someone replays it
    assert first["statusCode"] == 202 and json.loads(first["body"]) == {"stored": 1}
    assert replay["statusCode"] == 204 and json.loads(replay["body"]) == {"stored": 0}
    assert portal.calls["batch_read"] == 0           # stored before any CRM call

    assert world.pipeline.drain().done == 1          # the notice: read, computed, written
    assert world.pipeline.drain().done == 2          # the actions its rising edges queued
    assert world.pipeline.drain().done == 0
    assert portal.calls["batch_read"] == 1 and portal.writes[deal["hs_object_id"]] == 1
    assert portal.deals[deal["hs_object_id"]]["homologated_probability"] == "90"
    assert sorted(key.split(":")[1] for _, key in world.sent) == ["notify-director",
                                                                   "push-marketing"]


def test_our_own_writes_delivered_as_webhooks_are_dropped_or_compute_to_no_change(tmp_path,
                                                                                  portal):
    fill(portal, 30)
    world = World(tmp_path, portal)
    world.poll()
    echoes = portal.take_events()
    ours = [e for e in echoes if e["changeSource"] == "INTEGRATION"]
    assert ours and all(e["sourceId"] == str(APP_ID) for e in ours)
    answer = world.deliver(ours)
    assert answer["statusCode"] == 204
    assert [i for i in world.state.items() if i.kind == "notice"] == []

    # Without HUBSPOT_APP_ID the connector cannot tell its own changes: they are read again
    # and compute to no change, so nothing is written and no loop starts.
    (tmp_path / "blind").mkdir()
    blind = World(tmp_path / "blind", portal, app_id=None)
    writes = dict(portal.writes)
    answer = blind.deliver(ours)
    stored = json.loads(answer["body"])["stored"]
    assert answer["statusCode"] == 202 and stored == len(ours)
    drained = blind.pipeline.drain()
    assert drained.done == stored and drained.parked == drained.retrying == 0
    assert all("wrote 0" in r for r in drained.results)
    assert dict(portal.writes) == writes and portal.take_events() == []


# --- the ERP ----------------------------------------------------------------------------------

def test_a_won_deal_becomes_one_erp_order_through_the_rest_adapter(tmp_path, portal,
                                                                   erp_orders):
    won = portal.add(dealname="Acme expansion", dealstage="closedwon", amount="120000.50",
                     closedate="2026-11-20T00:00:00Z", hs_primary_associated_company="9101112")
    renewed = portal.add(dealname="Globex renewal", dealstage="3419854", pipeline="3419851",
                         amount="45000", closedate="2026-11-21T00:00:00Z",
                         hs_primary_associated_company="9101113")
    portal.add(dealstage="closedlost", amount="9000", closedate="2026-11-20T00:00:00Z")
    portal.add(dealstage="qualifiedtobuy", amount="9000")
    portal.add(dealstage="closedwon", amount="7000", closedate="2026-10-01T00:00:00Z")  # older
    world = World(tmp_path, portal)
    world.poll()
    erp_items = [i for i in world.state.items() if i.kind == "erp"]
    assert sorted(i.record_id for i in erp_items) == sorted([won["hs_object_id"],
                                                            renewed["hs_object_id"]])
    world.pipeline.drain()
    by_reference = {o["reference"]: o for o in erp_orders.values()}
    assert set(by_reference) == {won["hs_object_id"], renewed["hs_object_id"]}
    order = by_reference[won["hs_object_id"]]
    assert order["customer"] == {"match": {"name": "Acme Corp"},
                                 "create": {"name": "Acme Corp"}}
    assert order["description"] == "Acme expansion"
    assert order["lines"] == [{"description": "Acme expansion", "quantity": "1",
                               "unit_price": "120000.50"}]
    assert by_reference[renewed["hs_object_id"]]["customer"]["match"] == {"name": "Globex"}
    # Three more syncs: still one order per won deal.
    for _ in range(3):
        world.poll()
        world.pipeline.drain()
    assert len(erp_orders) == 2
    assert [i for i in world.state.items() if i.kind == "erp" and i.status != "done"] == []
