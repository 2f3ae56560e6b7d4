"""The ERP port: what a closed-won deal becomes (a sales order for a customer) and what every
ERP adapter must do with it (find it by reference, push it exactly once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from connector.errors import ConfigurationError, RetriableError, Text


@dataclass(frozen=True)
class Customer:
    """The ERP customer: found by `match`, else created with `create` (rendered values)."""

    match: dict[str, Any]
    create: dict[str, Any]


@dataclass(frozen=True)
class SalesOrder:
    """One order, rendered from one opportunity. `reference` identifies it in the ERP (the
    opportunity id); `header` holds the other order fields; each line's `quantity` and
    `unit_price` are Decimal, never float."""

    reference: str
    customer: Customer
    header: dict[str, Any] = field(default_factory=dict)
    lines: tuple[dict[str, Any], ...] = ()


class Erp(Protocol):
    """An ERP that takes sales orders.

    `push_order` looks the reference up first and returns the existing order's id when there
    is one: a crash after the ERP created the order but before the caller recorded it, then a
    retry, must never make a second order. Errors are connector.errors: RetriableError (the ERP
    is down or busy), RecordError (the ERP refused this order), ConfigurationError (the
    credentials or the URL are wrong)."""

    def find_order(self, reference: str) -> str | None:
        """The ERP's id of the order with this reference, or None."""
        ...

    def push_order(self, order: SalesOrder, idempotency_key: str) -> str:
        """Create the order unless it exists; the ERP's order id either way."""
        ...


class ErpUnavailable(RetriableError):
    """The ERP is down, overloaded or rate-limiting; `retry_after` is the delay it asked for,
    in seconds, when it said one (HTTP Retry-After)."""


def not_a_url(exc: Exception) -> ConfigurationError:
    """ERP_URL cannot be sent to (requests' reason, never the URL: it may carry a password)."""
    return ConfigurationError(Text("ERP_URL is not an http(s) URL ({error})",
                                   error=type(exc).__name__))


def shown_url(url: str) -> str:
    """ERP_URL as messages show it: never the user, password or query it may carry."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
