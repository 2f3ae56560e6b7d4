"""What HubSpot's metadata says, and how its values read and write: property types, the
pipelines' stages, owners' and companies' attributes, and property values (HubSpot sends and
takes strings).

Values: dates come as ISO 8601 or as epoch milliseconds and are given to the rules as ISO 8601;
numbers stay decimal strings (never float) for the mapping to read as Decimal; a blank ("") is
None. Writes send strings the same way.

Stages: `dealstage` holds a stage id; records carry the stage's label instead. Closed-won and
closed-lost come from each stage's own metadata (`isClosed`, `probability` 1.0 or 0.0), read
by the closed-state rule of connector.crm._base.StageNames.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from connector.core.values import TEXT, FieldType
from connector.errors import RecordError, Text

BATCH_SIZE = 100           # inputs per batch read or batch update, HubSpot's maximum
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MS = dt.timedelta(milliseconds=1)
_MILLIS = re.compile(r"^-?\d{1,15}$")
STAGE_PROPERTY = "dealstage"
PIPELINE_PROPERTY = "pipeline"
OWNER_ATTRIBUTES = ("id", "email", "firstName", "lastName", "name", "userId")
# References HubSpot defines even when describe has not run (the properties say it too:
# referencedObjectType OWNER / COMPANY).
KNOWN_REFERENCES = {"hubspot_owner_id": "OWNER", "hs_primary_associated_company": "COMPANY"}


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: its id, its label, its pipeline, and whether it closes the deal."""

    id: str
    label: str
    pipeline: str
    closed: bool
    won: bool


def stages_of(pipelines: list[dict[str, Any]]) -> dict[str, Stage]:
    """Every stage of the pipelines that are not archived, by stage id."""
    stages: dict[str, Stage] = {}
    for pipeline in pipelines:
        if pipeline.get("archived"):
            continue
        for s in pipeline.get("stages") or []:
            meta = s.get("metadata") or {}
            closed = str(meta.get("isClosed", "false")).lower() == "true"
            try:
                probability = Decimal(str(meta.get("probability", "0")))
            except InvalidOperation:
                probability = Decimal(0)
            stages[str(s.get("id"))] = Stage(
                str(s.get("id")), str(s.get("label") or s.get("id")),
                str(pipeline.get("id")), closed, closed and probability >= 1)
    return stages


def field_type(prop: Mapping[str, Any], declared: FieldType | None = None) -> FieldType:
    """Our type for one HubSpot property. HubSpot says `number` for every number: a currency
    one is money; for the others the mapping file's `types:` says money, percent or integer."""
    kind = str(prop.get("type") or "").lower()
    if kind == "number":
        if prop.get("showCurrencySymbol") or prop.get("numberDisplayHint") == "currency":
            return FieldType("money", declared.scale if declared else None)
        if declared is not None and declared.kind in ("money", "percent", "integer", "number"):
            return declared
        return FieldType("number")
    if kind == "date":
        return FieldType("date")
    if kind == "datetime":
        # A datetime shown as a date picker (closedate) is a date unless the file says not.
        if declared is not None and declared.kind in ("date", "datetime"):
            return declared
        return FieldType("date" if prop.get("fieldType") == "date" else "datetime")
    if kind == "bool":
        return FieldType("boolean")
    return TEXT   # string, enumeration, phone_number ...


def hubspot_value(value: Any, prop_type: str = "") -> str:
    """A value as HubSpot takes it: a string. Numbers exactly (a float that the pipeline made
    of a Decimal goes back through its shortest repr), dates ISO, blank as ""."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return _plain_number(value)
    if isinstance(value, float):
        return _plain_number(Decimal(repr(value)))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z")
    if isinstance(value, dt.date):
        # A date property takes YYYY-MM-DD; a datetime one, midnight UTC of that day.
        if prop_type == "datetime":
            return f"{value.isoformat()}T00:00:00.000Z"
        return value.isoformat()
    return str(value)


def _plain_number(value: Decimal) -> str:
    if not value.is_finite():
        raise RecordError(Text("{value} cannot be written to HubSpot", value=value))
    text = format(value, "f")
    return text


def incoming(value: Any, prop_type: str | None) -> Any:
    """A property value as HubSpot sent it -> what the mapping reads: "" -> None, epoch
    milliseconds of a date or datetime property -> ISO 8601."""
    if value is None:
        return None
    if isinstance(value, str):
        if value == "":
            return None
        if prop_type in ("date", "datetime") and _MILLIS.match(value.strip()):
            moment = EPOCH + int(value.strip()) * MS
            if prop_type == "date":
                return moment.date().isoformat()
            return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


def parse_instant(value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    text = str(value).strip()
    if _MILLIS.match(text):
        return EPOCH + int(text) * MS
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def millis(value: dt.datetime) -> int:
    return (value - EPOCH) // MS


def object_id(value: Any) -> str:
    """A reference property's value as an id ('1234', also when HubSpot writes '1234.0')."""
    if value is None or value == "":
        return ""
    text = str(value).strip()
    try:
        number = Decimal(text)
    except InvalidOperation:
        return text
    return str(int(number)) if number == number.to_integral_value() else text


def owner_attribute(owner: Mapping[str, Any] | None, attribute: str) -> Any:
    if not owner:
        return None
    if attribute == "name":
        name = " ".join(str(owner.get(k) or "").strip() for k in ("firstName", "lastName"))
        return name.strip() or owner.get("email") or None
    value = owner.get(attribute)
    return None if value in (None, "") else str(value)


def reference(prop: Mapping[str, Any], name: str | None = None) -> str | None:
    """OWNER or COMPANY when the property holds such an id."""
    target = prop.get("referencedObjectType") if prop else None
    if isinstance(target, str) and target:
        return target.upper()
    return KNOWN_REFERENCES.get(name or str(prop.get("name") if prop else ""))



__all__ = ["BATCH_SIZE", "OWNER_ATTRIBUTES", "PIPELINE_PROPERTY", "STAGE_PROPERTY", "Stage",
           "field_type", "hubspot_value", "stages_of"]
