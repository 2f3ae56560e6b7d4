"""The Tryton ERP adapter: sales orders over Tryton's JSON-RPC (`party.party`, `sale.sale`).

Tryton has no idempotency header, so the sale's `reference` (the opportunity id) is the key:
it is searched before every create, and the sale is created with its lines in one call (one
transaction), so a sale never exists half made. A crash after Tryton committed the sale but
before the caller recorded it is therefore safe: the retry finds the sale and returns its id.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import requests

from connector.crm import scrub
from connector.erp.port import Customer, ErpUnavailable, SalesOrder, not_a_url, shown_url
from connector.errors import ConfigurationError, RecordError, Text

log = logging.getLogger(__name__)

# An ERP_URL that can never work: an admin's mistake, not a passing failure.
BAD_URL = (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
           requests.exceptions.InvalidSchema)

__all__ = ["TrytonErp"]


class _SessionRefused(Exception):
    """HTTP 401 on a call: the session expired or was revoked (internal; never escapes)."""


class TrytonErp:
    """One Tryton database, reached as one user. Not thread-safe: one per worker."""

    def __init__(self, url: str, database: str, username: str, password: str, *,
                 timeout: float = 30.0, session: requests.Session | None = None) -> None:
        self.url = url.rstrip("/")
        self._shown = shown_url(self.url)
        self.database = database
        self.username = username
        self._password = password
        self._endpoint = f"{self.url}/{quote(database, safe='')}/rpc/"
        self._timeout = timeout
        self._http = session or requests.Session()
        self._authorization: str | None = None
        self._context: dict[str, Any] = {}

    def __repr__(self) -> str:  # never the password
        return f"TrytonErp({self._shown!r}, database={self.database!r}, user={self.username!r})"

    # --- the port ---------------------------------------------------------------------------

    def find_order(self, reference: str) -> str | None:
        ids = self._call("model.sale.sale.search", [["reference", "=", reference]], 0, None,
                         [["id", "ASC"]])
        return str(ids[0]) if ids else None

    def push_order(self, order: SalesOrder, idempotency_key: str) -> str:
        existing = self.find_order(order.reference)
        if existing is not None:
            log.info("Tryton sale %s already exists for %s", existing, order.reference)
            return existing
        party = self._party(order.customer)
        values: dict[str, Any] = dict(order.header)
        values.update(reference=order.reference, party=party)
        values.setdefault("company", self._company())
        address = self._first_address(party)
        if address is not None:
            # What the Tryton client's on_change_party would set: quoting needs them.
            values.setdefault("invoice_address", address)
            values.setdefault("shipment_address", address)
        values["lines"] = [["create", [dict(line) for line in order.lines]]]
        ids = self._call("model.sale.sale.create", [values])
        log.info("Tryton sale %s created for %s (key %s)", ids[0], order.reference,
                 idempotency_key)
        return str(ids[0])

    # --- customers --------------------------------------------------------------------------

    def _party(self, customer: Customer) -> int:
        domain = [[key, "=", value] for key, value in sorted(customer.match.items())]
        ids = self._call("model.party.party.search", domain, 0, 2, [["id", "ASC"]])
        if len(ids) > 1:
            # Picking one would attach the order to a customer nobody chose.
            raise RecordError(Text("several Tryton parties match {match}: match on a field that "
                                   "is unique (a code) in mappings/erp.yaml",
                                   match=repr(customer.match)))
        if ids:
            return int(ids[0])
        values = dict(customer.create)
        # A party made over RPC has no address, and a sale without an invoice address
        # cannot be quoted: give the new customer an (empty) one.
        values.setdefault("addresses", [["create", [{}]]])
        created = self._call("model.party.party.create", [values])
        return int(created[0])

    def _first_address(self, party: int) -> int | None:
        ids = self._call("model.party.address.search", [["party", "=", party]], 0, 1,
                         [["sequence", "ASC"], ["id", "ASC"]])
        return int(ids[0]) if ids else None

    def _company(self) -> int:
        if self._authorization is None:
            self._login()
        company = self._context.get("company")
        if not company:
            raise ConfigurationError(Text("the Tryton user {user} has no current company: set "
                                          "one in the user's preferences",
                                          user=repr(self.username)))
        return int(company)

    # --- JSON-RPC -----------------------------------------------------------------------------

    def _call(self, method: str, *params: Any) -> Any:
        """A model call with the session and the user's context; an expired session is
        renewed once (a 401 means Tryton did not run the call, so repeating it is safe)."""
        if self._authorization is None:
            self._login()
        try:
            return self._rpc(method, [*params, self._context])
        except _SessionRefused:
            log.info("Tryton session refused; logging in again")
            self._login()
        try:
            return self._rpc(method, [*params, self._context])
        except _SessionRefused:
            raise ConfigurationError(Text("Tryton refused {method} right after a fresh login as "
                                          "{user}: check the user's access", method=method,
                                          user=repr(self.username))) from None

    def _login(self) -> None:
        self._authorization = None
        try:
            result = self._rpc("common.db.login", [self.username, {"password": self._password}],
                               authorize=False)
        except _SessionRefused:
            raise ConfigurationError(Text(
                "Tryton refused the login of {user} on database {database}: check ERP_USERNAME "
                "and ERP_PASSWORD", user=repr(self.username), database=repr(self.database))
            ) from None
        if not (isinstance(result, list) and len(result) >= 2):
            raise ConfigurationError(Text("Tryton answered the login of {user} with no session: "
                                          "check that ERP_URL is the Tryton server",
                                          user=repr(self.username)))
        user_id, session = result[0], result[1]
        token = base64.b64encode(f"{self.username}:{user_id}:{session}".encode()).decode()
        self._authorization = f"Session {token}"
        try:
            self._context = self._rpc("model.res.user.get_preferences", [True, {}])
        except _SessionRefused:
            self._authorization = None
            raise ConfigurationError(Text("Tryton refused the session it just gave {user}: "
                                          "check the server's session settings",
                                          user=repr(self.username))) from None

    def _rpc(self, method: str, params: list[Any], authorize: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if authorize and self._authorization:
            headers["Authorization"] = self._authorization
        try:
            body = json.dumps({"id": 1, "method": method, "params": params}, default=_encode)
        except (TypeError, ValueError) as exc:  # a rendered value Tryton cannot take
            raise RecordError(Text("cannot send {method} to Tryton: {reason}", method=method,
                                   reason=str(exc))) from None
        try:
            response = self._http.post(self._endpoint, data=body, headers=headers,
                                       timeout=self._timeout)
        except requests.Timeout:
            raise ErpUnavailable(Text("Tryton at {url} did not answer {method} within "
                                      "{seconds}s; it may have done it: retry (the order is "
                                      "looked up first)", url=self._shown, method=method,
                                      seconds=format(self._timeout, "g"))) from None
        except requests.ConnectionError as exc:
            raise ErpUnavailable(Text("cannot reach Tryton at {url} ({error}): retry later, or "
                                      "check ERP_URL", url=self._shown,
                                      error=type(exc).__name__)) from None
        except BAD_URL as exc:
            raise not_a_url(exc) from None
        except requests.RequestException as exc:  # a broken answer: the next try may pass
            raise ErpUnavailable(Text("Tryton's answer to {method} broke off ({error}): retry "
                                      "later", method=method, error=type(exc).__name__)
                                 ) from None
        status = response.status_code
        if status == 401:
            raise _SessionRefused()
        if status == 429 or status >= 500:
            raise ErpUnavailable(Text("Tryton answered {status} to {method}: retry later",
                                      status=status, method=method),
                                 _retry_after(response))
        if status == 404:
            raise ConfigurationError(Text("Tryton at {url} has no database {database}: check "
                                          "ERP_URL and ERP_DATABASE", url=self._shown,
                                          database=repr(self.database)))
        if status == 403:
            raise ConfigurationError(Text("Tryton forbids {method} to {user}: check the user's "
                                          "access rights", method=method,
                                          user=repr(self.username)))
        if status != 200:
            answer = scrub(response.text[:200], [self._password] if self._password else [])
            raise RecordError(Text("Tryton answered {status} to {method}: {answer}",
                                   status=status, method=method, answer=answer))
        try:
            payload = json.loads(response.text, object_hook=_decode)
        except (ValueError, LookupError, TypeError, ArithmeticError):  # not JSON, or odd types
            payload = None
        if not isinstance(payload, dict):
            raise ConfigurationError(Text("{url} did not answer JSON-RPC on database {database}: "
                                          "check that ERP_URL is the Tryton server",
                                          url=self._shown, database=repr(self.database)))
        if payload.get("error") is not None:
            raise _translate(method, payload["error"])
        return payload.get("result")


def _translate(method: str, error: Any) -> Exception:
    """A JSON-RPC error as one of ours. Tryton sends [kind, args] for its own exceptions,
    [text, traceback] for anything else."""
    kind = error[0] if isinstance(error, list) and error else str(error)
    args = error[1] if isinstance(error, list) and len(error) > 1 else None
    if kind in ("UserError", "UserWarning") and isinstance(args, list):
        # UserError: (message, description, domain); UserWarning: (name, message, description)
        texts = args[:2] if kind == "UserError" else args[1:3]
        message = " ".join(str(t).strip() for t in texts if t)
        return RecordError(Text("Tryton refused {method}: {reason}", method=method,
                                reason=message))
    if kind == "ConcurrencyException":
        return ErpUnavailable(Text("Tryton reports a concurrent change during {method}: retry",
                                   method=method))
    if kind == "LoginException":
        return ConfigurationError(Text("Tryton asks for more than a password ({asks}) to log "
                                       "in: use a user that logs in with a password only",
                                       asks=repr(args)))
    log.debug("Tryton %s failed: %s", method, args)  # the server's traceback, for a developer
    return RecordError(Text("Tryton could not run {method}: {error} (the Tryton server log has "
                            "the details)", method=method, error=kind))


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _encode(obj: Any) -> Any:
    """Tryton's JSON-RPC types: a Decimal travels as its exact text, dates as their parts."""
    if isinstance(obj, Decimal):
        return {"__class__": "Decimal", "decimal": str(obj)}
    if isinstance(obj, dt.datetime):
        if obj.tzinfo is not None:  # Tryton stores naive UTC
            obj = obj.astimezone(dt.UTC).replace(tzinfo=None)
        return {"__class__": "datetime", "year": obj.year, "month": obj.month, "day": obj.day,
                "hour": obj.hour, "minute": obj.minute, "second": obj.second,
                "microsecond": obj.microsecond}
    if isinstance(obj, dt.date):
        return {"__class__": "date", "year": obj.year, "month": obj.month, "day": obj.day}
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"cannot send {type(obj).__name__} to Tryton")


def _decode(obj: dict[str, Any]) -> Any:
    kind = obj.get("__class__")
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    if kind == "date":
        return dt.date(obj["year"], obj["month"], obj["day"])
    if kind == "datetime":
        return dt.datetime(obj["year"], obj["month"], obj["day"], obj["hour"], obj["minute"],
                           obj["second"], obj["microsecond"])
    return obj
