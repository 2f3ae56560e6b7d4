"""The records' references: a mapped path `hubspot_owner_id.email` reads an attribute of the
owner whose id the property holds (owners API), and `hs_primary_associated_company.name` a
property of that company. Owners come from a table read once (one owner at a time for an owner
added since); companies in batch reads of 100, each company read once in the process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connector.crm import Record
from connector.crm._base import chunks
from connector.crm.hubspot import search
from connector.crm.hubspot.metadata import (
    BATCH_SIZE,
    incoming,
    object_id,
    owner_attribute,
    reference,
)
from connector.errors import Text

OWNERS_PAGE = 500          # owners per page, the owners API's maximum

# The adapter's call: (what, method, path, *, kind, params, json_body, accept) -> an answer
# with `status` and `body`.
Request = Callable[..., Any]


class References:
    """The owners and companies the mapped `paths` read, for one adapter's `request`."""

    def __init__(self, request: Request, paths: list[str]) -> None:
        self._request = request
        self._paths = [p for p in paths if "." in p]
        self._owners: dict[str, dict[str, Any] | None] | None = None  # by owner id
        self._companies: dict[str, dict[str, Any] | None] = {}       # by company id

    def fill(self, records: list[Record], properties: dict[str, dict[str, Any]]
             ) -> list[Record]:
        """The records with each mapped reference path filled in (`properties`: the deal
        properties, which say what each property references)."""
        if not self._paths:
            return records
        company_ids: set[str] = set()
        company_attributes: set[str] = set()
        for path in self._paths:
            head, _, attribute = path.partition(".")
            if reference(properties.get(head, {}), head) == "COMPANY":
                company_attributes.add(attribute)
                company_ids |= {object_id(r.get(head)) for r in records} - {""}
        missing = sorted(i for i in company_ids if i not in self._companies)
        if missing:
            self._read_companies(missing, sorted(company_attributes))
        for record in records:
            for path in self._paths:
                head, _, attribute = path.partition(".")
                target = reference(properties.get(head, {}), head)
                ref = object_id(record.get(head))
                value: Any = None
                if ref and target == "OWNER":
                    value = owner_attribute(self._owner(ref), attribute)
                elif ref and target == "COMPANY":
                    company = self._companies.get(ref) or {}
                    value = incoming(company.get(attribute), None)
                record[path] = value
        return records

    def owners(self) -> dict[str, dict[str, Any] | None]:
        """Every owner, by id (read once)."""
        if self._owners is None:
            owners: dict[str, dict[str, Any] | None] = {}
            after: str | None = None
            while True:
                params = {"limit": str(OWNERS_PAGE), "archived": "false"}
                if after:
                    params["after"] = after
                answer = self._request(Text("reading the owners"), "GET", "/crm/v3/owners",
                                       kind="owners", params=params)
                for owner in search.results(answer.body):
                    owners[str(owner.get("id"))] = owner
                after = search.next_after(answer.body)
                if after is None:
                    break
            self._owners = owners
        return self._owners

    def _owner(self, owner_id: str) -> dict[str, Any] | None:
        table = self.owners()
        if owner_id not in table:
            # An owner added since the table was read, or deactivated: ask for that one.
            answer = self._request(Text("reading a deal owner"), "GET",
                                   f"/crm/v3/owners/{owner_id}", kind="owners",
                                   params={"idProperty": "id"}, accept=(200, 404))
            table[owner_id] = answer.body if answer.status == 200 and \
                isinstance(answer.body, dict) else None
        return table[owner_id]

    def _read_companies(self, ids: list[str], attributes: list[str]) -> None:
        for chunk in chunks(ids, BATCH_SIZE):
            answer = self._request(Text("reading the deals' companies"), "POST",
                                   "/crm/v3/objects/companies/batch/read", kind="companies",
                                   params={"archived": "false"},
                                   json_body={"properties": attributes,
                                              "inputs": [{"id": i} for i in chunk]},
                                   accept=(200, 207))
            for result in search.results(answer.body):
                self._companies[str(result.get("id"))] = result.get("properties") or {}
            for i in chunk:
                self._companies.setdefault(i, None)   # deleted or unknown: read once only


__all__ = ["References"]
