"""The generic REST ERP adapter, against `responses`: lookup before create, the
Idempotency-Key, exact amounts, and HTTP failures sorted into retry, record and config errors."""

from __future__ import annotations

import base64
import email.utils
import json
import time
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from responses import matchers

from connector.erp import Customer, ErpUnavailable, SalesOrder
from connector.erp.rest import RestErp
from connector.errors import ConfigurationError, RecordError, RetriableError

BASE = "https://erp.example.com/api"
ORDERS = f"{BASE}/orders"


def order(reference: str = "0065g00000ABC001AAA", amount: str = "1234.10") -> SalesOrder:
    return SalesOrder(reference, Customer({"name": "Acme Corp"}, {"name": "Acme Corp"}),
                      {"description": "Deal 1"},
                      ({"description": "Deal 1", "quantity": Decimal(1),
                        "unit_price": Decimal(amount)},))


class FakeErp:
    """A REST ERP that keeps its orders and honours idempotency keys, as a real one would."""

    def __init__(self, mock: responses.RequestsMock) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, str] = {}
        self.lose_next_answer = False
        self.posts = 0
        mock.add_callback(responses.GET, ORDERS, callback=self.get)
        mock.add_callback(responses.POST, ORDERS, callback=self.post)

    def get(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        reference = parse_qs(urlsplit(request.url or "").query)["reference"][0]
        found = [o for o in self.orders.values() if o["reference"] == reference]
        return 200, {}, json.dumps(found)

    def post(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        self.posts += 1
        key = request.headers["Idempotency-Key"]
        if key not in self.keys:
            body = json.loads(request.body or "{}")
            order_id = str(len(self.orders) + 1)
            self.orders[order_id] = {"id": order_id, **body}
            self.keys[key] = order_id
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise requests.ConnectionError("connection reset by peer")
        return 201, {}, json.dumps(self.orders[self.keys[key]])


@responses.activate
def test_find_order_asks_by_reference() -> None:
    responses.get(ORDERS, json=[{"id": 42, "reference": "R1"}],
                  match=[matchers.query_param_matcher({"reference": "R1"})])
    responses.get(ORDERS, json=[], match=[matchers.query_param_matcher({"reference": "R2"})])

    assert RestErp(BASE).find_order("R1") == "42"
    assert RestErp(BASE).find_order("R2") is None


@responses.activate
def test_a_404_lookup_means_no_order() -> None:
    responses.get(ORDERS, status=404)
    assert RestErp(BASE).find_order("R1") is None


@responses.activate
def test_push_looks_up_first_and_never_posts_an_existing_order() -> None:
    responses.get(ORDERS, json={"orders": [{"id": "SO-7", "reference": "R1"}]})
    post = responses.post(ORDERS, json={"id": "SO-8"})

    assert RestErp(BASE).push_order(order("R1"), "R1") == "SO-7"
    assert post.call_count == 0


@responses.activate
def test_push_posts_the_order_with_its_key_and_exact_amounts() -> None:
    responses.get(ORDERS, json=[])
    post = responses.post(ORDERS, status=201, json={"id": "SO-1"},
                          match=[matchers.header_matcher({"Idempotency-Key": "key-1"})])

    assert RestErp(BASE).push_order(order("R1", "1234.10"), "key-1") == "SO-1"

    body = json.loads(post.calls[0].request.body)
    assert body == {
        "reference": "R1", "description": "Deal 1",
        "customer": {"match": {"name": "Acme Corp"}, "create": {"name": "Acme Corp"}},
        "lines": [{"description": "Deal 1", "quantity": "1", "unit_price": "1234.10"}],
    }


@responses.activate
def test_the_same_order_pushed_again_and_after_a_lost_answer_is_created_once() -> None:
    erp = FakeErp(responses.mock)
    rest = RestErp(BASE)
    erp.lose_next_answer = True

    with pytest.raises(RetriableError):
        rest.push_order(order("R1"), "R1")  # created, but the answer never came back
    ids = {rest.push_order(order("R1"), "R1") for _ in range(3)}

    assert len(erp.orders) == 1
    assert ids == {"1"}
    assert erp.posts == 1  # the retries found it by reference, not by the key


@responses.activate
def test_a_conflict_returns_the_order_that_exists() -> None:
    lookups = iter([[], [{"id": "SO-3"}]])  # none at first; the conflicting one after the 409
    responses.add_callback(responses.GET, ORDERS,
                           callback=lambda _req: (200, {}, json.dumps(next(lookups))))
    responses.post(ORDERS, status=409, json={"error": "duplicate reference"})

    assert RestErp(BASE).push_order(order("R1"), "R1") == "SO-3"


@responses.activate
def test_a_created_answer_without_id_is_completed_by_a_lookup() -> None:
    lookups = iter([[], [{"id": "SO-4"}]])
    responses.add_callback(responses.GET, ORDERS,
                           callback=lambda _req: (200, {}, json.dumps(next(lookups))))
    responses.post(ORDERS, status=202, body="")

    assert RestErp(BASE).push_order(order("R1"), "R1") == "SO-4"


@responses.activate
def test_429_is_retriable_and_keeps_retry_after_in_seconds() -> None:
    responses.get(ORDERS, status=429, headers={"Retry-After": "7"})

    with pytest.raises(ErpUnavailable) as caught:
        RestErp(BASE).push_order(order(), "k")
    assert isinstance(caught.value, RetriableError)
    assert caught.value.retry_after == 7
    assert "7s" in str(caught.value)


@responses.activate
def test_retry_after_as_an_http_date() -> None:
    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    responses.get(ORDERS, json=[])
    responses.post(ORDERS, status=503, headers={"Retry-After": later})

    with pytest.raises(ErpUnavailable) as caught:
        RestErp(BASE).push_order(order(), "k")
    assert caught.value.retry_after is not None
    assert 100 < caught.value.retry_after <= 120


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
@responses.activate
def test_server_errors_are_retriable(status: int) -> None:
    responses.get(ORDERS, json=[])
    responses.post(ORDERS, status=status)

    with pytest.raises(ErpUnavailable) as caught:
        RestErp(BASE).push_order(order(), "k")
    assert caught.value.retry_after is None


@pytest.mark.parametrize("status", [400, 404, 422])
@responses.activate
def test_other_client_errors_are_record_errors_with_the_erps_words(status: int) -> None:
    responses.get(ORDERS, json=[])
    responses.post(ORDERS, status=status, json={"error": "unknown product code X-1"})

    with pytest.raises(RecordError, match="unknown product code X-1") as caught:
        RestErp(BASE).push_order(order(), "k")
    assert not isinstance(caught.value, RetriableError)


@pytest.mark.parametrize("status", [401, 403])
@responses.activate
def test_refused_credentials_are_a_configuration_error_without_the_password(status: int
                                                                            ) -> None:
    responses.get(ORDERS, status=status)
    rest = RestErp(BASE, username="sync", password="s3cret-pw")

    with pytest.raises(ConfigurationError) as caught:
        rest.find_order("R1")
    assert "s3cret-pw" not in str(caught.value) and "s3cret-pw" not in repr(rest)


@pytest.mark.parametrize("failure", [requests.ConnectionError("refused"),
                                     requests.ReadTimeout("slow")])
@responses.activate
def test_an_unreachable_erp_is_retriable(failure: Exception) -> None:
    responses.get(ORDERS, body=failure)

    with pytest.raises(ErpUnavailable):
        RestErp(BASE).find_order("R1")


@responses.activate
def test_credentials_go_as_basic_auth_or_bearer_token() -> None:
    call = responses.get(ORDERS, json=[])

    RestErp(BASE, username="sync", password="pw").find_order("R1")
    RestErp(BASE, password="tok").find_order("R1")

    basic = base64.b64encode(b"sync:pw").decode()
    assert call.calls[0].request.headers["Authorization"] == f"Basic {basic}"
    assert call.calls[1].request.headers["Authorization"] == "Bearer tok"


def test_a_url_that_is_not_http_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="ERP_URL"):
        RestErp("erp.example.com/api").find_order("R1")
