"""A CRM mapping: canonical names to CRM fields, which fields the connector may write, and
their types. Reads a CRM record (API JSON with nested relationships, or a flat export row) into
canonical, typed values."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from typing import Any

from connector.core.values import TEXT, FieldType, guess_value, parse_value

ID = "id"  # the canonical name of the record id, whatever the CRM calls it


@dataclass(frozen=True)
class Mapping:
    crm: str
    object: str
    id_field: str
    modified_field: str
    fields: dict[str, str]                       # canonical -> CRM field (paths allowed)
    writeback: tuple[str, ...]
    types: dict[str, FieldType] = field(default_factory=dict)
    source: str | None = None                    # the file it came from

    @property
    def canonical_names(self) -> frozenset[str]:
        return frozenset(self.fields) | {ID}

    def type_of(self, name: str) -> FieldType | None:
        return self.types.get(name)

    def crm_field(self, name: str) -> str:
        return self.id_field if name == ID else self.fields[name]

    def with_types(self, types: dict[str, FieldType]) -> Mapping:
        """A copy whose types come from the CRM (describe), the file's own as fallback."""
        merged = dict(self.types)
        merged.update(types)
        return Mapping(self.crm, self.object, self.id_field, self.modified_field, self.fields,
                       self.writeback, merged, self.source)

    def read(self, raw: MappingABC[str, Any]) -> dict[str, Any]:
        """Canonical typed values from one CRM record. A bad value raises RecordError."""
        values: dict[str, Any] = {ID: _lookup(raw, self.id_field)}
        for name, crm_field in self.fields.items():
            value = _lookup(raw, crm_field)
            ftype = self.types.get(name)
            values[name] = parse_value(value, ftype, name) if ftype else guess_value(value)
        return values

    def reader(self, header: list[str]) -> Callable[[MappingABC[str, Any]], dict[str, Any]]:
        """A faster `read` for flat rows that all share one header (an export): each column is
        found once, not once per row."""
        folded = {h.casefold(): h for h in header}
        columns: list[tuple[str, str | None, FieldType | None]] = [
            (ID, folded.get(self.id_field.casefold()), None)]
        columns += [(name, folded.get(crm_field.casefold()), self.types.get(name))
                    for name, crm_field in self.fields.items()]

        def read(raw: MappingABC[str, Any]) -> dict[str, Any]:
            values: dict[str, Any] = {}
            for name, column, ftype in columns:
                value = raw.get(column) if column is not None else None
                if ftype is not None:
                    values[name] = parse_value(value, ftype, name)
                elif name == ID:
                    values[name] = value
                else:
                    values[name] = guess_value(value)
            return values

        return read


def _lookup(raw: MappingABC[str, Any], path: str) -> Any:
    """`Owner.Email` from {'Owner': {'Email': ...}} (API) or {'Owner.Email': ...} (export);
    export headers are matched without regard to case (Data Loader writes them upper-case)."""
    if path in raw:
        return raw[path]
    if "." in path:
        node: Any = raw
        for part in path.split("."):
            if not isinstance(node, MappingABC):
                node = None
                break
            node = node.get(part)
        if node is not None:
            return node
    folded = path.casefold()
    for key, value in raw.items():
        if isinstance(key, str) and key.casefold() == folded:
            return value
    return None


__all__ = ["ID", "TEXT", "Mapping"]
