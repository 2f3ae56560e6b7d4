"""The Tryton adapter against a real Tryton server: one sale per won deal however often the
sync runs or crashes, exact amounts, and errors sorted by what the caller should do."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from tryton_server import TrytonServer

from connector.erp import ErpMapping, ErpUnavailable, SalesOrder, load_erp_mapping
from connector.erp.tryton import TrytonErp
from connector.errors import ConfigurationError, RecordError, RetriableError
from connector.files import load_mapping_file

ROOT = Path(__file__).resolve().parents[1]
ACCOUNTS = ("Acme Corp", "Globex", "Initech")
# Amounts that float arithmetic gets wrong, tiny and large ones.
AMOUNTS = [Decimal(x) for x in (
    "0.01", "0.10", "0.20", "0.30", "1.10", "2.67", "19.99", "100.05", "1234.56",
    "99999.99", "1000000.01", "33333.33", "4.35", "8.01", "12345678.90", "0.07", "1.15",
    "250000.00", "7.77", "64.10")]


@pytest.fixture(scope="module")
def mapping() -> ErpMapping:
    """The shipped mappings/erp.yaml, checked against the shipped Salesforce mapping."""
    findings: list[Any] = []
    crm = load_mapping_file(ROOT / "mappings" / "salesforce.yaml", findings)
    assert crm is not None, findings
    erp, problems = load_erp_mapping(ROOT / "mappings" / "erp.yaml", crm.canonical_names)
    assert erp is not None and not problems, problems
    return erp


def won_deals(n: int = 20) -> list[dict[str, Any]]:
    return [{"id": f"0065g00000ABC{i:03d}AAA", "name": f"Deal {i}", "amount": AMOUNTS[i],
             "account_name": ACCOUNTS[i % len(ACCOUNTS)], "stage": "Closed Won"}
            for i in range(n)]


def erp_for(server: TrytonServer, session: requests.Session | None = None) -> TrytonErp:
    url, database, username, password = server
    return TrytonErp(url, database, username, password, timeout=10, session=session)


def push_all(erp: TrytonErp, orders: list[SalesOrder]) -> list[str]:
    return [erp.push_order(order, idempotency_key=order.reference) for order in orders]


def sales_by_reference(server: TrytonServer) -> dict[str, dict[str, Any]]:
    rows = server.rpc("model.sale.sale.search_read", [], 0, None, None,
                      ["reference", "party", "total_amount", "untaxed_amount", "lines",
                       "invoice_address", "state", "description"])
    return {row["reference"]: row for row in rows}


def test_twenty_won_deals_make_twenty_sales_and_three_parties(tryton: TrytonServer,
                                                              mapping: ErpMapping) -> None:
    parties_before = tryton.count("party.party")  # the company's own party
    orders = [mapping.order_for(deal) for deal in won_deals()]

    ids = push_all(erp_for(tryton), orders)

    assert len(set(ids)) == 20
    assert tryton.count("sale.sale") == 20
    assert tryton.count("sale.line") == 20
    assert tryton.count("party.party") == parties_before + 3
    assert tryton.count("party.party", [["name", "in", list(ACCOUNTS)]]) == 3
    sales = sales_by_reference(tryton)
    assert {str(sales[o.reference]["id"]) for o in orders} == set(ids)
    assert sales[orders[4].reference]["description"] == "Deal 4"


def test_pushing_the_same_orders_again_changes_nothing(tryton: TrytonServer,
                                                       mapping: ErpMapping) -> None:
    orders = [mapping.order_for(deal) for deal in won_deals()]
    erp = erp_for(tryton)
    first = push_all(erp, orders)
    before = (tryton.count("sale.sale"), tryton.count("sale.line"), tryton.count("party.party"),
              tryton.count("party.address"))

    for _ in range(3):
        # A new adapter each time, as a new sync run (or another worker) would have.
        assert push_all(erp_for(tryton), orders) == first

    after = (tryton.count("sale.sale"), tryton.count("sale.line"), tryton.count("party.party"),
             tryton.count("party.address"))
    assert after == before
    assert before[0] == 20


def test_a_retry_after_the_caller_crashed_never_makes_a_second_order(
        tryton: TrytonServer, mapping: ErpMapping) -> None:
    order = mapping.order_for(won_deals(1)[0])
    created = erp_for(tryton).push_order(order, order.reference)
    # The caller died before recording `created`: the next run pushes the same deal again.
    assert erp_for(tryton).push_order(order, order.reference) == created
    assert tryton.count("sale.sale") == 1


class LosesTheAnswerTo(requests.Session):
    """Tryton runs (and commits) the call, then the connection drops before the answer."""

    def __init__(self, method: str) -> None:
        super().__init__()
        self.method = method
        self.lost = 0

    def post(self, url: str | bytes, data: Any = None, json: Any = None,  # type: ignore[override]
             **kwargs: Any) -> requests.Response:
        response = super().post(url, data=data, json=json, **kwargs)
        if isinstance(data, str) and _method(data) == self.method and not self.lost:
            self.lost += 1
            raise requests.ConnectionError("connection reset by peer")
        return response


def _method(body: str) -> str:
    return str(json.loads(body)["method"])


def test_a_lost_answer_to_the_create_then_a_retry_makes_one_order(
        tryton: TrytonServer, mapping: ErpMapping) -> None:
    order = mapping.order_for(won_deals(1)[0])
    flaky = LosesTheAnswerTo("model.sale.sale.create")

    with pytest.raises(RetriableError):
        erp_for(tryton, session=flaky).push_order(order, order.reference)

    assert flaky.lost == 1
    assert tryton.count("sale.sale") == 1  # the create did happen
    again = erp_for(tryton).push_order(order, order.reference)
    assert tryton.count("sale.sale") == 1
    assert again == str(sales_by_reference(tryton)[order.reference]["id"])


def test_amounts_are_exact_to_the_cent(tryton: TrytonServer, mapping: ErpMapping) -> None:
    deals = won_deals()
    push_all(erp_for(tryton), [mapping.order_for(deal) for deal in deals])

    sales = sales_by_reference(tryton)
    lines = {row["sale"]: row for row in tryton.rpc(
        "model.sale.line.search_read", [], 0, None, None, ["sale", "unit_price", "quantity"])}
    for deal in deals:
        sale = sales[deal["id"]]
        assert lines[sale["id"]]["unit_price"] == deal["amount"], deal
        assert sale["untaxed_amount"] == deal["amount"], deal
        assert sale["total_amount"] == deal["amount"], deal
    assert sum(s["total_amount"] for s in sales.values()) == sum(d["amount"] for d in deals)


def test_a_new_customer_gets_an_address_and_the_sale_can_be_quoted(
        tryton: TrytonServer, mapping: ErpMapping) -> None:
    order = mapping.order_for(won_deals(1)[0])
    sale_id = int(erp_for(tryton).push_order(order, order.reference))

    sale = sales_by_reference(tryton)[order.reference]
    assert sale["invoice_address"] is not None
    tryton.rpc("model.sale.sale.quote", [sale_id])
    assert sales_by_reference(tryton)[order.reference]["state"] == "quotation"


def test_an_existing_customer_is_found_not_created_again(tryton: TrytonServer,
                                                         mapping: ErpMapping) -> None:
    [party] = tryton.rpc("model.party.party.create", [{"name": "Acme Corp"}])
    parties = tryton.count("party.party")
    order = mapping.order_for(won_deals(1)[0])
    assert order.customer.match == {"name": "Acme Corp"}

    erp_for(tryton).push_order(order, order.reference)

    assert tryton.count("party.party") == parties
    assert sales_by_reference(tryton)[order.reference]["party"] == party


def test_two_customers_matching_is_a_record_error(tryton: TrytonServer,
                                                  mapping: ErpMapping) -> None:
    tryton.rpc("model.party.party.create", [{"name": "Acme Corp"}, {"name": "Acme Corp"}])
    order = mapping.order_for(won_deals(1)[0])

    with pytest.raises(RecordError, match="several Tryton parties"):
        erp_for(tryton).push_order(order, order.reference)
    assert tryton.count("sale.sale") == 0


def test_a_tryton_validation_error_is_a_record_error_with_its_message(
        tryton: TrytonServer, mapping: ErpMapping) -> None:
    deal = won_deals(1)[0] | {"amount": Decimal("10.123456")}  # Tryton keeps 4 places
    order = mapping.order_for(deal)

    with pytest.raises(RecordError, match="exceeds the limit") as caught:
        erp_for(tryton).push_order(order, order.reference)
    assert not isinstance(caught.value, RetriableError)
    assert tryton.count("sale.sale") == 0 and tryton.count("sale.line") == 0


def test_an_expired_session_is_renewed_once(tryton: TrytonServer, mapping: ErpMapping) -> None:
    class CountsLogins(requests.Session):
        logins = 0

        def post(self, url: str | bytes, data: Any = None, json: Any = None,  # type: ignore[override]
                 **kwargs: Any) -> requests.Response:
            if isinstance(data, str) and _method(data) == "common.db.login":
                self.logins += 1
            return super().post(url, data=data, json=json, **kwargs)

    http = CountsLogins()
    erp = erp_for(tryton, session=http)
    first, second = (mapping.order_for(d) for d in won_deals(2))
    erp.push_order(first, first.reference)
    with contextlib.closing(sqlite3.connect(tryton.path)) as db, db:
        # What Tryton's session timeout does: the session row is gone.
        assert db.execute("DELETE FROM ir_session").rowcount >= 1

    erp.push_order(second, second.reference)

    assert http.logins == 2
    assert tryton.count("sale.sale") == 2


def test_a_wrong_password_is_a_configuration_error_without_the_password(
        tryton: TrytonServer, mapping: ErpMapping) -> None:
    url, database, username, _ = tryton
    secret = "n0t-the-Passw0rd"
    erp = TrytonErp(url, database, username, secret, timeout=10)
    order = mapping.order_for(won_deals(1)[0])

    with pytest.raises(ConfigurationError, match="ERP_PASSWORD") as caught:
        erp.push_order(order, order.reference)
    assert secret not in str(caught.value) and secret not in repr(erp)


def test_a_stopped_server_is_retriable(tryton: TrytonServer, mapping: ErpMapping) -> None:
    erp = erp_for(tryton)
    order = mapping.order_for(won_deals(1)[0])
    assert erp.find_order(order.reference) is None  # logged in while it ran
    tryton.stop()

    with pytest.raises(ErpUnavailable, match="cannot reach Tryton") as caught:
        erp.push_order(order, order.reference)
    assert tryton.password not in str(caught.value)
    with pytest.raises(RetriableError):
        erp_for(tryton).find_order(order.reference)  # and a fresh adapter cannot log in


# --- answers a healthy test server never gives, played by `responses` ---------------------------

RPC = "http://tryton.invalid:8000/crm/rpc/"


def fake_tryton(answer: Any) -> TrytonErp:
    """A Tryton whose login works and whose every model call gets `answer`: (status, body)
    or an exception to raise."""

    def reply(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        method = _method(str(request.body))
        if method == "common.db.login":
            return 200, {}, json.dumps({"id": 1, "result": [1, "s3ss10n", None]})
        if method == "model.res.user.get_preferences":
            return 200, {}, json.dumps({"id": 1, "result": {"company": 1}})
        if isinstance(answer, Exception):
            raise answer
        status, body = answer
        return status, {"Retry-After": "3"}, json.dumps(body)

    responses.add_callback(responses.POST, RPC, callback=reply)
    return TrytonErp("http://tryton.invalid:8000", "crm", "admin", "pw", timeout=1)


@pytest.mark.parametrize(("answer", "error", "message"), [
    ((503, {}), ErpUnavailable, "answered 503"),
    ((429, {}), ErpUnavailable, "answered 429"),
    (requests.ReadTimeout("slow"), ErpUnavailable, "may have done it"),
    ((200, {"id": 1, "error": ["ConcurrencyException", "Records were modified"]}),
     ErpUnavailable, "concurrent change"),
    ((200, {"id": 1, "error": ["UserWarning", ["w1", "Party has no tax id", "Confirm?"]]}),
     RecordError, "Party has no tax id Confirm"),
    ((200, {"id": 1, "error": ["'nosuchfield'", "Traceback (most recent call last): ..."]}),
     RecordError, "'nosuchfield' \\(the Tryton server log"),
    ((404, {}), ConfigurationError, "ERP_DATABASE"),
    ((403, {}), ConfigurationError, "access rights"),
    ((401, {}), ConfigurationError, "right after a fresh login"),
])
@responses.activate
def test_tryton_failures_are_sorted_by_what_the_caller_should_do(
        answer: Any, error: type[Exception], message: str) -> None:
    erp = fake_tryton(answer)

    with pytest.raises(error, match=message) as caught:
        erp.find_order("R1")
    assert "Traceback" not in str(caught.value)
    if isinstance(caught.value, ErpUnavailable) and answer == (429, {}):
        assert caught.value.retry_after == 3
