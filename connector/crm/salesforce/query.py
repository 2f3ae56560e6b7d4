"""Salesforce's side of reading: the SOQL of a poll, a sweep and a fetch by id, the types of
describe's fields, the walk of a relationship path through describe, and records without
Salesforce's `attributes`. Every value goes through simple-salesforce's format_soql; names are
checked against `API_NAME` before they reach a query."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from simple_salesforce import format_soql

from connector.core.findings import did_you_mean
from connector.core.mapping import Mapping
from connector.core.values import TEXT, FieldType, Kind
from connector.crm._base import utc
from connector.errors import ConfigurationError, Text

# An API name, or a relationship path of them (Owner.Email, Account.Owner.Name).
API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*$")

# describe's field types -> our kinds; everything else (string, picklist, id, reference,
# textarea, email, phone, url ...) is text.
# https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_describesobjects_describesobjectresult.htm
_KINDS: dict[str, Kind] = {
    "currency": "money",
    "percent": "percent",
    "double": "number",
    "int": "number",
    "long": "number",
    "date": "date",
    "datetime": "datetime",
    "boolean": "boolean",
}


class Unresolved(ConfigurationError):
    """A mapped field that Salesforce does not have; the message says what is wrong. Caught
    by `describe`, which lists every such problem at once."""


def field_type(field: dict[str, Any]) -> FieldType:
    """Our type for one describe field: currency -> money at the field's scale, and so on."""
    kind = _KINDS.get(str(field.get("type", "")).lower())
    if kind is None:
        return TEXT
    scale = field.get("scale")
    if kind in ("money", "percent", "number"):
        return FieldType(kind, int(scale) if isinstance(scale, int) else None)
    return FieldType(kind)


def select(m: Mapping) -> str:
    """The fields a query asks for: the id, the cursor and each mapped field, once each."""
    names: dict[str, str] = {}
    for name in (m.id_field, m.modified_field, *m.fields.values()):
        names.setdefault(name.casefold(), name)
    return ", ".join(names.values())


def changed_soql(m: Mapping, since: datetime | None, until: datetime) -> str:
    """The poll's SOQL: records modified in [since, until], by modification time then id."""
    where = "{modified:literal} <= {until}"
    if since is not None:
        where = "{modified:literal} >= {since} AND " + where
    return format_soql(
        "SELECT {fields:literal} FROM {object:literal} WHERE " + where
        + " ORDER BY {modified:literal}, {id:literal}",
        fields=select(m), object=m.object, modified=m.modified_field,
        id=m.id_field, since=utc(since), until=utc(until))


def open_soql(m: Mapping, field: str, closed: list[str]) -> str:
    """The sweep's SOQL: records whose `field` is none of the `closed` values, by id."""
    where = " WHERE {field:literal} NOT IN {closed}" if closed else ""
    return format_soql("SELECT {fields:literal} FROM {object:literal}" + where
                       + " ORDER BY {id:literal}", fields=select(m), object=m.object,
                       field=field, closed=list(closed), id=m.id_field)


def fetch_soql(m: Mapping, ids: Sequence[str]) -> str:
    """The SOQL for some records by id, each id quoted by format_soql."""
    return format_soql("SELECT {fields:literal} FROM {object:literal} "
                       "WHERE {id:literal} IN {ids}", fields=select(m),
                       object=m.object, id=m.id_field, ids=list(ids))


def resolve(sobject: str, path: str, fields_of: Callable[[str], dict[str, dict[str, Any]]]
            ) -> dict[str, Any]:
    """The describe field at the end of `path` (Owner.Email: Opportunity.Owner -> User
    -> Email), or Unresolved saying what is wrong. `fields_of` gives an object's describe
    fields by folded name."""
    parts = path.split(".")
    for part in parts[:-1]:
        fields = fields_of(sobject)
        links = {str(f.get("relationshipName")).casefold(): f for f in fields.values()
                 if f.get("relationshipName")}
        link = links.get(part.casefold())
        if link is None:
            names = [str(f["relationshipName"]) for f in links.values()]
            raise Unresolved(Text("{object} has no relationship '{name}'{hint}", object=sobject,
                                  name=part, hint=did_you_mean(part, names)))
        if link["relationshipName"] != part:
            raise _spelled(str(link["relationshipName"]))
        targets = link.get("referenceTo") or []
        if not targets:
            raise Unresolved(Text("{object}.{name} points to no object", object=sobject,
                                  name=part))
        # A polymorphic link (several targets) is read through its first object type.
        sobject = str(targets[0])
    fields = fields_of(sobject)
    field = fields.get(parts[-1].casefold())
    if field is None:
        names = [str(f.get("name")) for f in fields.values()]
        raise Unresolved(Text("{object} has no field '{name}'{hint}", object=sobject,
                              name=parts[-1], hint=did_you_mean(parts[-1], names)))
    if field.get("name") != parts[-1]:
        # Records come back with Salesforce's spelling; the mapping must match it.
        raise _spelled(str(field.get("name")))
    return field


def _spelled(name: str) -> Unresolved:
    return Unresolved(Text("Salesforce spells it '{name}'", name=name))


def plain(value: Any) -> Any:
    """A record without Salesforce's `attributes` (type and URL), at every level."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if k != "attributes"}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


__all__ = ["API_NAME", "Unresolved", "changed_soql", "fetch_soql", "field_type", "open_soql",
           "plain", "resolve", "select"]
