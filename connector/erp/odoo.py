"""The Odoo ERP adapter: a customer (`res.partner`) found or created, and one sales order
(`sale.order` with its lines) per won deal.

Exactly once through an external id: the order is made with `sale.order.load` (Odoo's import),
which creates the order, its lines and the external id `crm_automation.<name from the
opportunity id>` in one transaction. Before that the external id is looked up in
`ir.model.data`; a crash after Odoo committed the order but before the caller recorded it is
therefore safe: the retry finds the external id and returns the order. `client_order_ref`
carries the opportunity id for people.

Two transports, chosen from the server's version: JSON-2 (`POST /json/2/<model>/<method>`,
bearer API key, Odoo 19 and later) and XML-RPC (`/xmlrpc/2/common` then `/xmlrpc/2/object`
`execute_kw`, Odoo 16 to 18). ERP_PASSWORD is the user's API key (or password, on XML-RPC).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import xmlrpc.client
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Protocol

import requests

from connector.erp.port import Customer, ErpUnavailable, SalesOrder, shown_url
from connector.errors import ConfigurationError, RecordError, Text
from connector.retry import retry_after_seconds

log = logging.getLogger(__name__)

__all__ = ["OdooErp", "external_id"]

MODULE = "crm_automation"  # the external ids' module: ours, apart from every Odoo module's
JSON2_SINCE = 19            # the first major version with /json/2
# mappings/erp.yaml's line words, as Odoo's sale.order.line fields; others pass as written.
LINE_FIELDS = {"description": "name", "quantity": "product_uom_qty",
               "unit_price": "price_unit", "product": "product_id"}
BAD_URL = (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
           requests.exceptions.InvalidSchema)


def external_id(reference: str) -> str:
    """The order's external id name, deterministic from the opportunity id. Odoo names are
    word characters; an id with others gets a hash, so two ids never share a name."""
    safe = re.sub(r"\W", "_", reference)
    if safe != reference:
        safe += "_" + hashlib.sha256(reference.encode()).hexdigest()[:10]
    return f"sale_order_{safe}"


class _Transport(Protocol):
    def execute(self, model: str, method: str, **kwargs: Any) -> Any: ...


class OdooErp:
    """One Odoo database, reached as one user."""

    def __init__(self, url: str, database: str | None, username: str | None, api_key: str, *,
                 timeout: float = 30.0, session: requests.Session | None = None) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.username = username
        self._api_key = api_key
        self._timeout = timeout
        self._http = session or requests.Session()
        self._transport: _Transport | None = None

    def __repr__(self) -> str:  # never the key
        return f"OdooErp({shown_url(self.url)!r}, database={self.database!r})"

    # --- the port ---------------------------------------------------------------------------

    def find_order(self, reference: str) -> str | None:
        rows = self._execute("ir.model.data", "search_read",
                             domain=[["module", "=", MODULE], ["name", "=", external_id(reference)],
                                     ["model", "=", "sale.order"]],
                             fields=["res_id"], limit=1)
        return str(rows[0]["res_id"]) if rows else None

    def push_order(self, order: SalesOrder, idempotency_key: str) -> str:
        existing = self.find_order(order.reference)
        if existing is not None:
            log.info("Odoo order %s already exists for %s", existing, order.reference)
            return existing
        partner = self._partner(order.customer)
        columns = ["id", "partner_id/.id", "client_order_ref", *order.header]
        line_keys = list(dict.fromkeys(k for line in order.lines for k in line))
        columns += [f"order_line/{LINE_FIELDS.get(k, k)}" for k in line_keys]
        head = [f"{MODULE}.{external_id(order.reference)}", str(partner), order.reference,
                *(_text(v) for v in order.header.values())]
        rows = [(head if i == 0 else [""] * len(head)) + [_text(line.get(k)) for k in line_keys]
                for i, line in enumerate(order.lines)]
        result = self._execute("sale.order", "load", fields=columns, data=rows)
        errors = [m for m in result.get("messages") or [] if m.get("type") == "error"]
        if errors or not result.get("ids"):
            texts = "; ".join(str(m.get("message", "")).strip() for m in errors)
            raise RecordError(Text("Odoo refused the order for {reference}: {reason}",
                                   reference=order.reference,
                                   reason=texts or Text("no order was made")))
        created = str(result["ids"][0])
        log.info("Odoo order %s created for %s (key %s)", created, order.reference,
                 idempotency_key)
        return created

    def _partner(self, customer: Customer) -> int:
        domain = [[key, "=", _plain(value)] for key, value in sorted(customer.match.items())]
        rows = self._execute("res.partner", "search_read", domain=domain, fields=["id"],
                             limit=2)
        if len(rows) > 1:
            # Picking one would attach the order to a customer nobody chose.
            raise RecordError(Text("several Odoo partners match {match}: match on a field that "
                                   "is unique (ref, vat) in mappings/erp.yaml",
                                   match=repr(customer.match)))
        if rows:
            return int(rows[0]["id"])
        vals = {key: _plain(value) for key, value in customer.create.items()}
        created = self._execute("res.partner", "create", vals_list=[vals])
        return int(created[0])

    # --- the transport, picked once from the server's version ---------------------------------

    def _execute(self, model: str, method: str, **kwargs: Any) -> Any:
        if self._transport is None:
            self._transport = self._connect()
        return self._transport.execute(model, method, **kwargs)

    def _connect(self) -> _Transport:
        major = self.version()
        if major >= JSON2_SINCE:
            return _Json2(self.url, self.database, self._api_key, self._http, self._timeout)
        if not (self.database and self.username):
            raise ConfigurationError(Text("Odoo {version} speaks XML-RPC, which needs "
                                          "ERP_DATABASE and ERP_USERNAME besides ERP_URL and "
                                          "ERP_PASSWORD", version=major))
        return _XmlRpc(self.url, self.database, self.username, self._api_key, self._http,
                       self._timeout)

    def version(self) -> int:
        """The server's major version: `GET /web/version` (Odoo 18 and later), else XML-RPC
        `common.version()`."""
        response = _send(self._http, "GET", f"{self.url}/web/version", self._timeout)
        info: Any = None
        if response.status_code == 200:
            try:
                info = response.json().get("version_info")
            except (ValueError, AttributeError):
                info = None
        if info is None:
            info = _xmlrpc(self._http, f"{self.url}/xmlrpc/2/common", "version", (),
                           self._timeout).get("server_version_info")
        try:  # a SaaS release reads 'saas~18'
            return int(str(info[0]).rpartition("~")[2])
        except (TypeError, ValueError, IndexError):
            raise ConfigurationError(Text("{url} does not say which Odoo it is: check ERP_URL",
                                          url=shown_url(self.url))) from None


class _Json2:
    def __init__(self, url: str, database: str | None, api_key: str,
                 http: requests.Session, timeout: float) -> None:
        self.url = url
        self.headers = {"Authorization": f"bearer {api_key}",
                        "Content-Type": "application/json; charset=utf-8"}
        if database:
            self.headers["X-Odoo-Database"] = database
        self.http = http
        self.timeout = timeout

    def execute(self, model: str, method: str, **kwargs: Any) -> Any:
        response = _send(self.http, "POST", f"{self.url}/json/2/{model}/{method}", self.timeout,
                         data=json.dumps(kwargs), headers=self.headers)
        status = response.status_code
        if status == 200:
            return response.json()
        try:
            error = response.json()
            name, message = str(error.get("name", "")), str(error.get("message", ""))
        except (ValueError, AttributeError):
            name, message = "", response.text[:200]
        doing = f"{model}.{method}"
        if status == 429 or status > 500:
            raise ErpUnavailable(Text("Odoo answered {status} to {doing}: retry later",
                                      status=status, doing=doing),
                                 retry_after_seconds(response.headers.get("Retry-After")))
        if status == 500 and "Serialization" in name:
            raise _concurrent(doing)
        if status == 401:
            raise ConfigurationError(Text("Odoo refused the API key in ERP_PASSWORD (it may have "
                                          "expired): make a new one in Preferences > Security"))
        if status == 403:
            raise ConfigurationError(Text("Odoo forbids {doing} to this API key's user: "
                                          "{reason}", doing=doing, reason=message))
        if status == 404 and "werkzeug" in name:
            raise ConfigurationError(Text("Odoo has no {doing} here (is the Sales app "
                                          "installed, and ERP_DATABASE the right database?)",
                                          doing=doing))
        log.debug("Odoo %s failed: %s", doing, error if status != 500 else name)
        if status == 500:
            raise _could_not_run(doing, name or Text("server error"))
        raise RecordError(Text("Odoo refused {doing}: {reason}", doing=doing,
                               reason=message or name))


class _XmlRpc:
    def __init__(self, url: str, database: str, username: str, api_key: str,
                 http: requests.Session, timeout: float) -> None:
        self.url = url
        self.database = database
        self.username = username
        self._api_key = api_key
        self.http = http
        self.timeout = timeout
        self._uid: int | None = None

    def execute(self, model: str, method: str, **kwargs: Any) -> Any:
        if self._uid is None:
            uid = _xmlrpc(self.http, f"{self.url}/xmlrpc/2/common", "authenticate",
                          (self.database, self.username, self._api_key, {}), self.timeout)
            if not uid:
                raise ConfigurationError(Text("Odoo refused the login of {user} on database "
                                              "{database}: check ERP_USERNAME and ERP_PASSWORD "
                                              "(an API key)", user=repr(self.username),
                                              database=repr(self.database)))
            self._uid = int(uid)
        return _xmlrpc(self.http, f"{self.url}/xmlrpc/2/object", "execute_kw",
                       (self.database, self._uid, self._api_key, model, method, [], kwargs),
                       self.timeout, doing=f"{model}.{method}")


# Odoo's XML-RPC fault codes (odoo/addons/rpc/controllers/xmlrpc.py).
FAULT_APPLICATION, FAULT_WARNING, FAULT_ACCESS_DENIED, FAULT_ACCESS_ERROR = 1, 2, 3, 4


def _xmlrpc(http: requests.Session, endpoint: str, method: str, params: tuple[Any, ...],
            timeout: float, doing: str | None = None) -> Any:
    body = xmlrpc.client.dumps(params, method, allow_none=True)
    response = _send(http, "POST", endpoint, timeout, data=body.encode(),
                     headers={"Content-Type": "text/xml"})
    status = response.status_code
    doing = doing or method
    if status == 429 or status >= 500:
        raise ErpUnavailable(Text("Odoo answered {status} to {doing}: retry later",
                                  status=status, doing=doing),
                             retry_after_seconds(response.headers.get("Retry-After")))
    if status == 404:
        raise ConfigurationError(Text("{url} does not exist: check that ERP_URL is the Odoo "
                                      "server", url=shown_url(endpoint)))
    if status != 200:
        raise RecordError(Text("Odoo answered {status} to {doing}: {reason}", status=status,
                               doing=doing, reason=response.text[:200]))
    try:
        (result,), _ = xmlrpc.client.loads(response.content, use_builtin_types=True)
    except xmlrpc.client.Fault as fault:
        raise _fault(doing, fault) from None
    except (xmlrpc.client.ResponseError, ValueError):
        raise ConfigurationError(Text("{url} did not answer XML-RPC: check that ERP_URL is the "
                                      "Odoo server", url=shown_url(endpoint))) from None
    return result


def _fault(doing: str, fault: xmlrpc.client.Fault) -> Exception:
    text = str(fault.faultString).strip()
    if fault.faultCode == FAULT_ACCESS_DENIED:
        return ConfigurationError(Text("Odoo refused ERP_USERNAME / ERP_PASSWORD (AccessDenied):"
                                       " check them, or make a new API key"))
    if fault.faultCode == FAULT_ACCESS_ERROR:
        return ConfigurationError(Text("Odoo forbids {doing} to ERP_USERNAME: {reason}",
                                       doing=doing, reason=text))
    if fault.faultCode == FAULT_WARNING:  # UserError, ValidationError: this order's data
        return RecordError(Text("Odoo refused {doing}: {reason}", doing=doing, reason=text))
    if "could not serialize access" in text or "SerializationFailure" in text:
        return _concurrent(doing)
    log.debug("Odoo %s failed: %s", doing, text)  # the server's traceback, for a developer
    last = text.splitlines()[-1] if text else Text("server error")
    return _could_not_run(doing, last[:200])


def _concurrent(doing: str) -> ErpUnavailable:
    return ErpUnavailable(Text("Odoo reports a concurrent change during {doing}: retry",
                               doing=doing))


def _could_not_run(doing: str, error: str) -> RecordError:
    """Odoo failed on its side; its words (an exception's name or last line) are a value."""
    return RecordError(Text("Odoo could not run {doing}: {error} (the Odoo server log has the "
                            "details)", doing=doing, error=error))


def _send(http: requests.Session, method: str, url: str, timeout: float,
          **kwargs: Any) -> requests.Response:
    try:
        return http.request(method, url, timeout=timeout, **kwargs)
    except requests.Timeout:
        raise ErpUnavailable(Text("Odoo at {url} did not answer within {seconds}s; it may have "
                                  "done it: retry (the order is looked up first)",
                                  url=shown_url(url), seconds=format(timeout, "g"))) from None
    except requests.ConnectionError as exc:
        raise ErpUnavailable(Text("cannot reach Odoo at {url} ({error}): retry later, or check "
                                  "ERP_URL", url=shown_url(url), error=type(exc).__name__)
                             ) from None
    except BAD_URL:
        raise ConfigurationError(Text("ERP_URL {url} is not an http(s) URL",
                                      url=repr(shown_url(url)))) from None
    except requests.RequestException as exc:  # a broken answer: the next try may pass
        raise ErpUnavailable(Text("Odoo's answer broke off ({error}): retry later",
                                  error=type(exc).__name__)) from None


def _plain(value: Any) -> Any:
    """A value both transports carry as is: amounts and dates as text (XML-RPC has no
    Decimal, and Odoo reads its own text formats exactly)."""
    if isinstance(value, (Decimal, dt.date)):
        return _text(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _text(value: Any) -> str:
    """A cell of `load`'s table: Odoo's import reads text, the way a CSV import does."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:  # Odoo stores naive UTC
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)
