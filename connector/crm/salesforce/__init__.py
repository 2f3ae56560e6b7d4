"""Salesforce: the adapter (`client`), its SOQL (`query`), its logins (`auth`) and its change
deliveries (`webhooks`). Importing the package loads none of them: the webhook routes
read `webhooks` without loading simple-salesforce."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connector.core.mapping import Mapping
    from connector.core.ruleset import Closed
    from connector.crm.salesforce.client import SalesforceCrm
    from connector.settings import Settings


def from_settings(settings: Settings, mapping: Mapping, closed: Closed | None) -> SalesforceCrm:
    """The adapter for this mapping, from the settings (see connector.crm.open_crm)."""
    from connector.crm.salesforce.client import SalesforceCrm

    return SalesforceCrm(settings, mapping)


__all__ = ["from_settings"]
