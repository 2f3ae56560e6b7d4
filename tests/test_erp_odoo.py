"""The Odoo adapter against a fake Odoo on loopback, on both transports: one order per won
deal through an external id, customers found or created once, exact amounts, and Odoo's
errors sorted by what the caller should do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from fake_odoo import API_KEY, DATABASE, LOGIN, FakeOdoo

from connector.erp import Customer, ErpMapping, ErpUnavailable, SalesOrder, load_erp_mapping
from connector.erp.odoo import OdooErp, external_id
from connector.errors import ConfigurationError, RecordError, RetriableError
from connector.files import load_mapping_file
from tests.test_erp_tryton import ACCOUNTS, AMOUNTS

ROOT = Path(__file__).resolve().parents[1]
@pytest.fixture(scope="module")
def mapping() -> ErpMapping:
    findings: list[Any] = []
    crm = load_mapping_file(ROOT / "mappings" / "salesforce.yaml", findings)
    assert crm is not None, findings
    erp, problems = load_erp_mapping(ROOT / "tests" / "fixtures" / "odoo" / "erp.yaml",
                                     crm.canonical_names)
    assert erp is not None and not problems, problems
    return erp


@pytest.fixture(params=[19, 17], ids=["json2", "xmlrpc"])
def odoo(request: pytest.FixtureRequest) -> Iterator[FakeOdoo]:
    server = FakeOdoo(version=request.param)
    yield server
    server.close()


def erp_for(odoo: FakeOdoo, session: requests.Session | None = None, key: str = API_KEY
            ) -> OdooErp:
    return OdooErp(odoo.url, DATABASE, LOGIN, key, timeout=10, session=session)


def won_deals(n: int = 20) -> list[dict[str, Any]]:
    return [{"id": f"0065g00000ABC{i:03d}AAA", "name": f"Deal {i}", "amount": AMOUNTS[i],
             "account_name": ACCOUNTS[i % len(ACCOUNTS)]} for i in range(n)]


def push_all(erp: OdooErp, orders: list[SalesOrder]) -> list[str]:
    return [erp.push_order(order, idempotency_key=order.reference) for order in orders]


def test_the_transport_follows_the_servers_version(odoo: FakeOdoo, mapping: ErpMapping) -> None:
    order = mapping.order_for(won_deals(1)[0])
    erp_for(odoo).push_order(order, order.reference)
    assert erp_for(odoo).version() == odoo.version
    assert len(odoo.orders) == 1


def test_twenty_won_deals_make_twenty_orders_and_three_partners(odoo: FakeOdoo,
                                                                mapping: ErpMapping) -> None:
    orders = [mapping.order_for(deal) for deal in won_deals()]

    ids = push_all(erp_for(odoo), orders)

    assert len(set(ids)) == 20 == len(odoo.orders)
    assert sorted(p["name"] for p in odoo.partners.values()) == sorted(ACCOUNTS)
    by_ref = {o["client_order_ref"]: o for o in odoo.orders.values()}
    for deal, order_id in zip(won_deals(), ids, strict=True):
        order = by_ref[deal["id"]]
        assert str(order["id"]) == order_id
        assert order["amount_untaxed"] == deal["amount"]  # exact to the cent
        assert order["note"] == deal["name"]
        assert odoo.partners[order["partner_id"]]["name"] == deal["account_name"]
        assert odoo.xmlids[("crm_automation", external_id(deal["id"]))] == \
            ("sale.order", order["id"])


def test_pushing_again_finds_every_order_by_its_external_id(odoo: FakeOdoo,
                                                             mapping: ErpMapping) -> None:
    orders = [mapping.order_for(deal) for deal in won_deals()]
    first = push_all(erp_for(odoo), orders)
    odoo.calls.clear()

    for _ in range(3):
        assert push_all(erp_for(odoo), orders) == first

    assert len(odoo.orders) == 20 and len(odoo.partners) == 3
    assert set(odoo.calls) == {"ir.model.data.search_read"}  # a lookup each, nothing else


class LosesTheAnswerTo(requests.Session):
    """Odoo runs (and commits) the call, then the connection drops before the answer."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.lost = 0

    def request(self, method: str | bytes, url: str | bytes,  # type: ignore[override]
                *args: Any, **kwargs: Any) -> requests.Response:
        response = super().request(method, url, *args, **kwargs)
        body = kwargs.get("data") or ""
        text = body.decode() if isinstance(body, bytes) else body
        if not self.lost and (f"/{self.marker}" in str(url) or f">{self.marker}<" in text):
            self.lost += 1
            raise requests.ConnectionError("connection reset by peer")
        return response


def test_a_lost_answer_to_the_load_then_a_retry_makes_one_order(odoo: FakeOdoo,
                                                                mapping: ErpMapping) -> None:
    order = mapping.order_for(won_deals(1)[0])
    flaky = LosesTheAnswerTo("load")

    with pytest.raises(RetriableError):
        erp_for(odoo, session=flaky).push_order(order, order.reference)

    assert flaky.lost == 1 and len(odoo.orders) == 1  # the order was made
    again = erp_for(odoo).push_order(order, order.reference)
    assert len(odoo.orders) == 1 and again == str(next(iter(odoo.orders)))


def test_an_existing_partner_is_found_and_two_matching_are_refused(odoo: FakeOdoo,
                                                                   mapping: ErpMapping) -> None:
    odoo.partners[7] = {"id": 7, "name": "Acme Corp"}
    order = mapping.order_for(won_deals(1)[0])
    erp_for(odoo).push_order(order, order.reference)
    assert len(odoo.partners) == 1 and next(iter(odoo.orders.values()))["partner_id"] == 7

    odoo.partners[8] = {"id": 8, "name": "Acme Corp"}
    other = mapping.order_for(won_deals(4)[3])
    with pytest.raises(RecordError, match="several Odoo partners"):
        erp_for(odoo).push_order(other, other.reference)
    assert len(odoo.orders) == 1


def test_an_unknown_product_is_a_record_error_and_makes_nothing(odoo: FakeOdoo,
                                                                mapping: ErpMapping) -> None:
    order = mapping.order_for(won_deals(1)[0])
    bad = SalesOrder(order.reference, order.customer, order.header,
                     ({**order.lines[0], "product": "NOPE"},))

    with pytest.raises(RecordError, match="No matching record found for name 'NOPE'"):
        erp_for(odoo).push_order(bad, bad.reference)
    assert odoo.orders == {} and odoo.xmlids == {}


def test_a_user_error_is_a_record_error_with_odoos_words(odoo: FakeOdoo,
                                                         mapping: ErpMapping) -> None:
    order = mapping.order_for(won_deals(1)[0])
    nameless = SalesOrder("R1", Customer({"ref": "C1"}, {"ref": "C1"}),
                          order.header, order.lines)
    with pytest.raises(RecordError, match="Contacts require a name") as refused:
        erp_for(odoo).push_order(nameless, "R1")
    assert not isinstance(refused.value, RetriableError)


def test_a_wrong_key_is_a_configuration_error_without_the_key(odoo: FakeOdoo,
                                                              mapping: ErpMapping) -> None:
    secret = "0000-not-the-key-0000"
    erp = erp_for(odoo, key=secret)
    order = mapping.order_for(won_deals(1)[0])

    with pytest.raises(ConfigurationError, match="ERP_PASSWORD") as caught:
        erp.push_order(order, order.reference)
    assert secret not in str(caught.value) and secret not in repr(erp)
    assert odoo.orders == {}


@pytest.mark.parametrize(("fault", "error", "message"), [
    ((1, "Traceback (most recent call last):\n  ...\nKeyError: 'x_field'"), RecordError,
     "the Odoo server log"),
    ((2, "The order date cannot be in the past."), RecordError, "cannot be in the past"),
    ((3, "Access Denied"), ConfigurationError, "ERP_PASSWORD"),
    ((4, "You are not allowed to create 'Sales Order'"), ConfigurationError,
     "forbids .*not allowed to create"),
])
def test_odoos_failures_are_sorted_by_what_the_caller_should_do(
        odoo: FakeOdoo, fault: tuple[int, str], error: type[Exception], message: str) -> None:
    erp = erp_for(odoo)
    assert erp.find_order("R1") is None  # connected and logged in
    odoo.refuse = fault

    with pytest.raises(error, match=message) as caught:
        erp.find_order("R1")
    assert "Traceback" not in str(caught.value) and API_KEY not in str(caught.value)
    assert not isinstance(caught.value, RetriableError)


def test_a_down_or_unreachable_odoo_is_retriable(odoo: FakeOdoo, mapping: ErpMapping) -> None:
    order = mapping.order_for(won_deals(1)[0])
    erp = erp_for(odoo)
    assert erp.find_order(order.reference) is None
    odoo.down = True
    with pytest.raises(ErpUnavailable, match="503"):
        erp.push_order(order, order.reference)
    odoo.close()
    with pytest.raises(ErpUnavailable, match="cannot reach Odoo"):
        erp_for(odoo).push_order(order, order.reference)


def test_xmlrpc_needs_a_database_and_a_user() -> None:
    odoo = FakeOdoo(version=16)
    try:
        with pytest.raises(ConfigurationError, match="ERP_DATABASE and ERP_USERNAME"):
            OdooErp(odoo.url, None, None, API_KEY).find_order("R1")
    finally:
        odoo.close()


def test_external_ids_are_odoo_names_and_never_collide() -> None:
    assert external_id("0065g00000ABC001AAA") == "sale_order_0065g00000ABC001AAA"
    odd = {external_id(x) for x in ("a-b", "a_b", "a.b", "a b")}
    assert len(odd) == 4 and all(n.replace("_", "").isalnum() for n in odd)
