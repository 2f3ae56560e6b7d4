"""A generic REST ERP adapter: sales orders as JSON, created once thanks to a lookup by
reference and an `Idempotency-Key` header.

The contract the ERP (or the middleware in front of it) implements:

- `GET {base}/orders?reference=REF` answers 200 with a JSON list of orders (or one order
  object), each with an `id`; an empty list or a 404 means there is none;
- `POST {base}/orders` with `Idempotency-Key: KEY` and the body
  `{"reference", <header fields>, "customer": {"match", "create"}, "lines": [...]}` answers
  2xx with the order (`{"id": ...}`); 409 means an order with this reference exists already.

Amounts travel as decimal strings ("1234.50"): a JSON number would pass through floats in
most clients. Dates are ISO strings.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import re
from decimal import Decimal
from typing import Any

import requests

from connector.crm import scrub
from connector.erp.port import ErpUnavailable, SalesOrder, not_a_url, shown_url
from connector.errors import ConfigurationError, RecordError, Text

log = logging.getLogger(__name__)

# An ERP_URL that can never work: an admin's mistake, not a passing failure.
BAD_URL = (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
           requests.exceptions.InvalidSchema)

__all__ = ["RestErp"]


class RestErp:
    """A JSON API at `base_url`. With a username the password goes as HTTP Basic auth;
    with a password alone, as a Bearer token."""

    def __init__(self, base_url: str, *, username: str | None = None,
                 password: str | None = None, timeout: float = 30.0,
                 session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._shown = shown_url(self.base_url)
        self._secrets = [password] if password else []
        self._http = session or requests.Session()
        self._timeout = timeout
        if username and password:
            self._http.auth = (username, password)
        elif password:
            if re.search(r"[\x00-\x1f\x7f]|[^\x00-\xff]", password):
                raise ConfigurationError(Text("ERP_PASSWORD holds a line break or a character an "
                                              "HTTP header cannot carry; it goes as a Bearer "
                                              "token"))
            self._http.headers["Authorization"] = f"Bearer {password}"

    def __repr__(self) -> str:  # never the credentials
        return f"RestErp({self._shown!r})"

    def find_order(self, reference: str) -> str | None:
        response = self._send("GET", "/orders", params={"reference": reference})
        if response.status_code == 404:
            return None
        self._raise_for(response, Text("looking up order {reference}",
                                       reference=repr(reference)))
        return _order_id(_json(response, self._secrets), reference)

    def push_order(self, order: SalesOrder, idempotency_key: str) -> str:
        existing = self.find_order(order.reference)
        if existing is not None:
            return existing
        body = {"reference": order.reference, **order.header,
                "customer": {"match": order.customer.match, "create": order.customer.create},
                "lines": list(order.lines)}
        try:
            data = json.dumps(body, default=_encode)
        except (TypeError, ValueError) as exc:  # a rendered value JSON cannot carry
            raise RecordError(Text("order {reference} cannot be sent as JSON: {reason}",
                                   reference=repr(order.reference), reason=str(exc))) from None
        response = self._send("POST", "/orders", data=data,
                              headers={"Content-Type": "application/json",
                                       "Idempotency-Key": idempotency_key})
        if response.status_code == 409:
            # Someone (an earlier attempt whose answer was lost) created it: return that one.
            found = self.find_order(order.reference)
            if found is None:
                raise RecordError(Text("the ERP reports a conflict for order {reference} but has "
                                       "no order with that reference: {answer}",
                                       reference=repr(order.reference),
                                       answer=_excerpt(response, self._secrets)))
            return found
        self._raise_for(response, Text("creating order {reference}",
                                       reference=repr(order.reference)))
        created = _order_id(_json(response, self._secrets), order.reference)
        if created is None:
            # Created, but the answer does not say its id: the lookup does.
            created = self.find_order(order.reference)
        if created is None:
            raise RecordError(Text("the ERP accepted order {reference} but cannot find it",
                                   reference=repr(order.reference)))
        log.info("ERP order %s created for %s", created, order.reference)
        return created

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self._http.request(method, self.base_url + path, timeout=self._timeout,
                                      **kwargs)
        except requests.Timeout:
            raise ErpUnavailable(Text("the ERP at {url} did not answer {method} {path} within "
                                      "{seconds}s: retry later", url=self._shown, method=method,
                                      path=path, seconds=format(self._timeout, "g"))) from None
        except requests.ConnectionError as exc:
            raise ErpUnavailable(Text("cannot reach the ERP at {url} ({error}): retry later, or "
                                      "check ERP_URL", url=self._shown,
                                      error=type(exc).__name__)) from None
        except BAD_URL as exc:
            raise not_a_url(exc) from None
        except requests.RequestException as exc:  # a broken answer: the next try may pass
            raise ErpUnavailable(Text("the ERP's answer to {method} {path} broke off ({error}): "
                                      "retry later", method=method, path=path,
                                      error=type(exc).__name__)) from None

    def _raise_for(self, response: requests.Response, doing: Text) -> None:
        status = response.status_code
        if status < 400:
            return
        if status in (408, 429) or status >= 500:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            if retry_after is None:
                raise ErpUnavailable(Text("the ERP answered {status} {doing}: retry later",
                                          status=status, doing=doing))
            raise ErpUnavailable(Text("the ERP answered {status} {doing} (it asks to wait "
                                      "{seconds}s): retry later", status=status, doing=doing,
                                      seconds=format(retry_after, "g")), retry_after)
        if status in (401, 403):
            # Every order would fail the same way: an admin must fix the credentials.
            raise ConfigurationError(Text("the ERP refused the credentials ({status}) {doing}: "
                                          "check ERP_USERNAME and ERP_PASSWORD", status=status,
                                          doing=doing))
        raise RecordError(Text("the ERP refused {doing} ({status}): {answer}", doing=doing,
                               status=status, answer=_excerpt(response, self._secrets)))


def _json(response: requests.Response, secrets: list[str]) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise RecordError(Text("the ERP answered {status} with something that is not JSON: "
                               "{answer}", status=response.status_code,
                               answer=_excerpt(response, secrets))) from None


def _order_id(data: Any, reference: str) -> str | None:
    """The order id in a lookup or create answer: a list of orders, or one order."""
    if isinstance(data, dict) and "id" not in data:
        data = next((data[k] for k in ("orders", "items", "data", "results")
                     if isinstance(data.get(k), list)), data)
    if isinstance(data, list):
        if len(data) > 1:
            log.warning("the ERP has %d orders with reference %s", len(data), reference)
        data = data[0] if data else None
    if isinstance(data, dict) and data.get("id") not in (None, ""):
        return str(data["id"])
    return None


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either delay-seconds or an HTTP date (RFC 9110, 10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _excerpt(response: requests.Response, secrets: list[str], limit: int = 300) -> str:
    """The start of an answer, for a message; an answer may echo the credentials."""
    text = scrub(response.text.strip(), secrets)
    return text if len(text) <= limit else text[:limit] + "..."


def _encode(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, (dt.date, dt.datetime)):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot send {type(obj).__name__} to the ERP as JSON")
