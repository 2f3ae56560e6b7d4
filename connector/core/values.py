"""Field values: reading raw CRM or export values into typed ones, and writing them back.

Money is `Decimal`, never float. Dates are `datetime.date`. A blank value is `None`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Literal

from connector.errors import RecordError

Kind = Literal["text", "number", "money", "percent", "integer", "date", "datetime", "boolean"]
KINDS: tuple[str, ...] = ("text", "number", "money", "percent", "integer", "date", "datetime",
                          "boolean")
Value = object  # str | Decimal | int | bool | date | datetime | None

# A plain number, optionally with comma thousands separators ("1,234,567.50").
_NUMBER = re.compile(r"^[+-]?(\d+|\d{1,3}(,\d{3})+)(\.\d+)?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class FieldType:
    kind: Kind = "text"
    scale: int | None = None  # decimal places kept on write; None = as computed

    @property
    def write_scale(self) -> int | None:
        if self.scale is not None:
            return self.scale
        return {"money": 2, "percent": 0, "integer": 0}.get(self.kind)


TEXT = FieldType("text")


def parse_number(raw: object, field: str) -> Decimal | None:
    """'1,234.50' -> Decimal('1234.50'); '' -> None; 'abc' -> RecordError."""
    if raw is None or isinstance(raw, bool):
        if raw is None:
            return None
        raise RecordError(f"{field}: {raw!r} is not a number")
    if isinstance(raw, Decimal):
        if not raw.is_finite():
            raise RecordError(f"{field}: {raw} is not a number")
        return raw
    if isinstance(raw, int):
        return Decimal(raw)
    if isinstance(raw, float):
        if raw != raw or raw in (float("inf"), float("-inf")):  # JSON's NaN and Infinity
            raise RecordError(f"{field}: {raw} is not a number")
        return Decimal(repr(raw))
    text = str(raw).strip()
    if not text:
        return None
    if text.endswith("%"):
        text = text[:-1].strip()
    if not _NUMBER.match(text):
        raise RecordError(f"{field}: {str(raw)!r} is not a number")
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:  # pragma: no cover - the pattern above already refuses these
        raise RecordError(f"{field}: {str(raw)!r} is not a number") from None


def parse_date(raw: object, field: str) -> dt.date | None:
    if raw is None:
        return None
    if isinstance(raw, dt.datetime):
        return raw.date()
    if isinstance(raw, dt.date):
        return raw
    text = str(raw).strip()
    if not text:
        return None
    try:
        if _DATE.match(text):
            return dt.date.fromisoformat(text)
        return parse_datetime(text, field).date()  # type: ignore[union-attr]
    except (ValueError, RecordError):
        raise RecordError(f"{field}: {text!r} is not a date (expected YYYY-MM-DD)") from None


def parse_datetime(raw: object, field: str) -> dt.datetime | None:
    if raw is None:
        return None
    if isinstance(raw, dt.datetime):
        return raw
    text = str(raw).strip()
    if not text:
        return None
    # Salesforce writes 2026-11-26T10:00:00.000+0000; fromisoformat wants +00:00.
    fixed = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", text.replace("Z", "+00:00"))
    try:
        return dt.datetime.fromisoformat(fixed)
    except ValueError:
        raise RecordError(f"{field}: {text!r} is not a date and time (ISO 8601)") from None


def parse_boolean(raw: object, field: str) -> bool | None:
    if raw is None or isinstance(raw, bool):
        return raw
    text = str(raw).strip().casefold()
    if not text:
        return None
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise RecordError(f"{field}: {str(raw)!r} is not true or false")


def parse_value(raw: object, ftype: FieldType, field: str) -> Value:
    """Read one raw value as its field's type; a bad value fails the record."""
    kind = ftype.kind
    if kind in ("number", "money", "percent", "integer"):
        return parse_number(raw, field)
    if kind == "date":
        return parse_date(raw, field)
    if kind == "datetime":
        return parse_datetime(raw, field)
    if kind == "boolean":
        return parse_boolean(raw, field)
    if raw is None:
        return None
    if isinstance(raw, str):
        text = raw.strip()
        return text or None
    return raw


def parser_for(ftype: FieldType | None, field: str) -> Callable[[object], Value]:
    """`parse_value` for one field (or `guess_value` when its type is unknown), with the choice
    by kind made once instead of once per value."""
    if ftype is None:
        return guess_value
    kind = ftype.kind
    if kind in ("number", "money", "percent", "integer"):
        return lambda raw: parse_number(raw, field)
    if kind == "date":
        return lambda raw: parse_date(raw, field)
    if kind == "datetime":
        return lambda raw: parse_datetime(raw, field)
    if kind == "boolean":
        return lambda raw: parse_boolean(raw, field)
    return lambda raw: parse_value(raw, ftype, field)


class ParseCache(dict):  # type: ignore[type-arg]
    """One column's cell text -> its typed value, remembered. Exports repeat the same few
    picklist values, dates and amounts from row to row, and a lookup costs a tenth of parsing.

    For text cells only: as dict keys, 1, 1.0, True and Decimal(1) are one key, but they are
    not one value. A bad value is not remembered (it raises each time). At most `limit` values
    are kept, so memory stays bounded whatever the number of rows; past that, new values are
    parsed each time (a column of ids or names gains nothing from the cache anyway)."""

    __slots__ = ("limit", "parse")

    def __init__(self, parse: Callable[[object], Value], limit: int = 4096) -> None:
        super().__init__()
        self.parse = parse
        self.limit = limit

    def __missing__(self, raw: str) -> Value:
        value = self.parse(raw)
        if len(self) < self.limit:
            self[raw] = value
        return value


class _NumberCache(ParseCache):
    """A number column: amounts are often all different, so the miss is made cheap too."""

    __slots__ = ()

    def __missing__(self, raw: str) -> Value:
        whole, dot, fraction = raw.partition(".")
        if whole.isdecimal() and (fraction.isdecimal() if dot else True):
            value: Value = Decimal(raw)  # '392000', '1234.50': what _NUMBER says, without it
        else:
            value = self.parse(raw)
        if len(self) < self.limit:
            self[raw] = value
        return value


class _GuessCache(ParseCache):
    """A column of unknown type: names and picklists are text, seen at a glance."""

    __slots__ = ()

    def __missing__(self, raw: str) -> Value:
        # a first letter and no space at either end: guess_value would give the text itself
        value = raw if raw[:1].isalpha() and not raw[-1].isspace() else guess_value(raw)
        if len(self) < self.limit:
            self[raw] = value
        return value


def parse_cache(ftype: FieldType | None, field: str, limit: int = 4096) -> ParseCache:
    """The ParseCache for one field's column."""
    if ftype is None:
        return _GuessCache(guess_value, limit)
    if ftype.kind in ("number", "money", "percent", "integer"):
        return _NumberCache(parser_for(ftype, field), limit)
    return ParseCache(parser_for(ftype, field), limit)


def guess_value(raw: object) -> Value:
    """For fields whose type nobody told us: numbers and ISO dates by their looks."""
    if not isinstance(raw, str):
        if isinstance(raw, float):
            return Decimal(repr(raw))
        return raw
    text = raw.strip()
    if not text:
        return None
    if not (text[0].isdigit() or text[0] in "+-."):
        return text  # the common case, names and picklists: no pattern to try
    if _DATE.match(text):
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            return text
    if _NUMBER.match(text) and "," not in text:
        digits = text.lstrip("+-")
        if len(digits) > 1 and digits[0] == "0" and digits[1] != ".":
            return text  # a code ('00123'): its leading zeros are part of it
        return Decimal(text)
    return text


def round_to(value: Decimal, places: int) -> Decimal:
    """Round half up, as Salesforce does for currency and percent fields."""
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def writer_for(ftype: FieldType) -> Callable[[Value], Value]:
    """`for_write` for one field type, with its rounding step computed once."""
    scale = ftype.write_scale
    if scale is None:
        return lambda value: value
    step = Decimal(1).scaleb(-scale)

    def write(value: Value) -> Value:
        if type(value) is not Decimal:  # the common case is a Decimal: tested first
            if isinstance(value, float):
                value = Decimal(repr(value))
            elif isinstance(value, bool) or not isinstance(value, (int, Decimal)):
                return value
            else:
                value = Decimal(value)  # type: ignore[arg-type]
        rounded = value.quantize(step, ROUND_HALF_UP)  # type: ignore[attr-defined]
        return int(rounded) if scale == 0 else rounded

    return write


def for_write(value: Value, ftype: FieldType) -> Value:
    """The value as it would be stored: numbers rounded to the field's scale."""
    scale = ftype.write_scale
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and scale is not None:  # money is never float: read it back
        value = Decimal(repr(value))                    # as its shortest text, then round
    if isinstance(value, (int, Decimal)) and scale is not None:
        rounded = round_to(Decimal(value), scale)
        return int(rounded) if scale == 0 else rounded
    return value


def same(old: Value, new: Value) -> bool:
    """Whether writing `new` over `old` would change nothing (60 == '60.0', '' == None)."""
    if old == "":
        old = None
    if new == "":
        new = None
    if old is None or new is None:
        return old is None and new is None
    if isinstance(new, bool) or isinstance(old, bool):
        try:
            return parse_boolean(old, "") == parse_boolean(new, "")
        except RecordError:
            return False
    if isinstance(new, (int, Decimal)) or isinstance(old, (int, Decimal)):
        try:
            a, b = parse_number(old, ""), parse_number(new, "")
        except RecordError:
            return False
        return a == b
    if isinstance(new, dt.date) and not isinstance(old, dt.date):
        try:
            return parse_date(old, "") == new
        except RecordError:
            return False
    return str(old) == str(new)


def as_text(value: Value) -> str:
    """A value as an export or a report shows it."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[return-value]
    if kind is Decimal:
        # str() is the plain notation, and 3x cheaper than format 'f', except where it would
        # write an exponent (1E+3, 1E-7): only then is the format needed.
        text = str(value)
        return format(value, "f") if "E" in text else text
    if kind is int:
        return str(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)
