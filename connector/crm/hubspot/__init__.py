"""HubSpot: the adapter (`client`), its search paging (`search`), its metadata and values
(`metadata`), the owners and companies records reference (`references`) and its webhooks
(`webhooks`). Importing the package loads none of them: the webhook
routes read `webhooks` without loading the adapter."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connector.core.mapping import Mapping
    from connector.core.ruleset import Closed
    from connector.crm.hubspot.client import HubSpotCrm
    from connector.settings import Settings


def from_settings(settings: Settings, mapping: Mapping, closed: Closed | None) -> HubSpotCrm:
    """The adapter for this mapping, from the settings (see connector.crm.open_crm)."""
    from connector.crm.hubspot.client import HubSpotCrm

    return HubSpotCrm.from_settings(settings, mapping, closed=closed)


__all__ = ["from_settings"]
