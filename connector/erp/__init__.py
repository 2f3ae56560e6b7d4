"""The ERP side of the connector: closed-won deals become sales orders, exactly once.

The port (`Erp`, `SalesOrder`, `Customer`), the `mappings/erp.yaml` reader, and `connect_erp`,
which picks the adapter: `tryton` (JSON-RPC), `rest` (a JSON API with an Idempotency-Key) or
`odoo` (JSON-2 or XML-RPC, from the server's version)."""

from __future__ import annotations

from connector.erp.mapping import ErpKind, ErpMapping, load_erp_mapping
from connector.erp.port import Customer, Erp, ErpUnavailable, SalesOrder
from connector.errors import ConfigurationError, Text

__all__ = [
    "Customer",
    "Erp",
    "ErpKind",
    "ErpMapping",
    "ErpUnavailable",
    "SalesOrder",
    "connect_erp",
    "load_erp_mapping",
]


def connect_erp(kind: ErpKind, url: str, database: str | None, username: str | None,
                password: str | None, timeout: float = 30.0) -> Erp:
    """The adapter for `erp:` in mappings/erp.yaml, from the ERP_* settings."""
    # Imported here so that reading the mapping never needs an adapter's dependencies.
    if kind == "tryton":
        from connector.erp.tryton import TrytonErp

        if not (database and username and password):
            raise ConfigurationError(Text("the Tryton ERP needs ERP_DATABASE, ERP_USERNAME and "
                                          "ERP_PASSWORD besides ERP_URL"))
        return TrytonErp(url, database, username, password, timeout=timeout)
    if kind == "rest":
        from connector.erp.rest import RestErp

        return RestErp(url, username=username, password=password, timeout=timeout)
    if kind == "odoo":
        from connector.erp.odoo import OdooErp

        if not password:
            raise ConfigurationError(Text("the Odoo ERP needs ERP_PASSWORD (an API key) besides "
                                          "ERP_URL; ERP_DATABASE and ERP_USERNAME too before "
                                          "Odoo 19"))
        return OdooErp(url, database, username, password, timeout=timeout)
    raise ConfigurationError(Text("unknown ERP kind {kind}: use 'tryton', 'rest' or 'odoo'",
                                  kind=repr(kind)))
