"""A CRM mapping: canonical names to CRM fields, which fields the connector may write, and
their types. Reads a CRM record (API JSON with nested relationships, or a flat export row) into
canonical, typed values."""

from __future__ import annotations

from collections.abc import Callable, Collection
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field, replace
from typing import Any

from connector.core.values import (
    EXPORT,
    TEXT,
    Cells,
    FieldType,
    guess_value,
    parse_value,
)

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
    locale: str | None = None                    # how its exports write numbers and dates
    optional: frozenset[str] = frozenset()       # fields an export may lack (read as blank)
    labels: bool = False                         # fields are column labels: exports only

    @property
    def canonical_names(self) -> frozenset[str]:
        return frozenset(self.fields) | {ID}

    @property
    def crm_fields(self) -> list[str]:
        """The CRM fields read: the id, the modification stamp, then the mapped fields in the
        mapping's order, each once."""
        return list(dict.fromkeys((self.id_field, self.modified_field, *self.fields.values())))

    def crm_value(self, raw: MappingABC[str, Any], crm_field: str) -> Any:
        """One CRM field's raw value (a path allowed), found as `read` finds it."""
        return _lookup(raw, crm_field)

    def type_of(self, name: str) -> FieldType | None:
        return self.types.get(name)

    def crm_field(self, name: str) -> str:
        return self.id_field if name == ID else self.fields[name]

    def with_types(self, types: dict[str, FieldType]) -> Mapping:
        """A copy whose types come from the CRM (describe), the file's own as fallback."""
        merged = dict(self.types)
        merged.update(types)
        return replace(self, types=merged)

    def read(self, raw: MappingABC[str, Any], cells: Cells | None = None) -> dict[str, Any]:
        """Canonical typed values from one CRM record (from an export: its text cells read by
        `cells`). A bad value raises RecordError."""
        values: dict[str, Any] = {ID: _lookup(raw, self.id_field)}
        for name, crm_field in self.fields.items():
            value = _lookup(raw, crm_field)
            ftype = self.types.get(name)
            if ftype is None:
                values[name] = guess_value(value)
            elif cells is not None and isinstance(value, str):
                values[name] = cells.reader(ftype, name)(value)
            else:
                values[name] = parse_value(value, ftype, name)
        return values

    def columns(self, header: list[str]) -> dict[str, int | None]:
        """Canonical name -> the index of its column in an export's header, or None when the
        file lacks it. As in `read`: the exact name first, else the first name equal without
        regard to case (Data Loader writes names upper-case). The id comes first, then the
        fields in the mapping's order."""
        exact: dict[str, int] = {}
        folded: dict[str, int] = {}
        for i, h in enumerate(header):
            exact.setdefault(h, i)
            folded.setdefault(h.casefold(), i)

        def find(crm_field: str) -> int | None:
            found = exact.get(crm_field)
            return found if found is not None else folded.get(crm_field.casefold())

        out: dict[str, int | None] = {ID: find(self.id_field)}
        out.update({name: find(crm_field) for name, crm_field in self.fields.items()})
        return out

    def row_reader(self, header: list[str], names: Collection[str] | None = None,
                   cells: Cells = EXPORT) -> Callable[[list[str]], dict[str, Any]]:
        """A faster `read` for the rows of a CSV export, given as lists of cell texts that share
        one header: each column is found once, not once per row, and each field's values are
        parsed once per distinct text (ParseCache), not once per row. The reader is written
        out as one dict display, `{'id': cells[0], 'stage': _c1[cells[2]], ...}`, at half the
        cost of a loop over the fields; its entries are evaluated in the mapping's order, so a
        bad value raises from its cache, the first in that order, as in `read`. A column the
        file lacks reads as blank. With `names`, only those fields (and the id) are read;
        `cells` reads numbers and dates (without a locale, or in one)."""
        # the generated code lives with the rest of the fast path; tests/test_simulate.py
        # holds it equal to `read`
        from connector.core._fast import row_reader

        return row_reader(self, header, names, cells)


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
