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

from connector.errors import RecordError, Text

Kind = Literal["text", "number", "money", "percent", "integer", "date", "datetime", "boolean"]
KINDS: tuple[str, ...] = ("text", "number", "money", "percent", "integer", "date", "datetime",
                          "boolean")
Value = object  # str | Decimal | int | bool | date | datetime | None

# A plain number, optionally with comma thousands separators ("1,234,567.50"; not "0,500").
_NUMBER = re.compile(r"^[+-]?(\d+|[1-9]\d{0,2}(,\d{3})+)(\.\d+)?$")
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
        raise RecordError(not_a_number(field, repr(raw)))
    if isinstance(raw, Decimal):
        if not raw.is_finite():
            raise RecordError(not_a_number(field, str(raw)))
        return raw
    if isinstance(raw, int):
        return Decimal(raw)
    if isinstance(raw, float):
        if raw != raw or raw in (float("inf"), float("-inf")):  # JSON's NaN and Infinity
            raise RecordError(not_a_number(field, str(raw)))
        return Decimal(repr(raw))
    text = str(raw).strip()
    if not text:
        return None
    if text.endswith("%"):
        text = text[:-1].strip()
    if not _NUMBER.match(text):
        raise RecordError(not_a_number(field, repr(str(raw))))
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:  # pragma: no cover - the pattern above already refuses these
        raise RecordError(not_a_number(field, repr(str(raw)))) from None


def not_a_number(field: str, shown: str) -> Text:
    return Text("{field}: {value} is not a number", field=field, value=shown)


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
    return parse_iso_date(text, field)


def parse_iso_date(text: str, field: str, also: str = "") -> dt.date:
    """An ISO date, or a date-time or offset whose date is taken; `also` names the other
    form the caller accepts, for the message."""
    try:
        if _DATE.match(text):
            return dt.date.fromisoformat(text)
        return parse_datetime(text, field).date()  # type: ignore[union-attr]
    except (ValueError, RecordError):
        if not also:
            raise RecordError(Text("{field}: {value} is not a date (expected YYYY-MM-DD)",
                                   field=field, value=repr(text))) from None
        raise RecordError(Text("{field}: {value} is not a date (expected YYYY-MM-DD or "
                               "{other})", field=field, value=repr(text), other=also)
                          ) from None


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
        raise RecordError(Text("{field}: {value} is not a date and time (ISO 8601)",
                               field=field, value=repr(text))) from None


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
    raise RecordError(Text("{field}: {value} is not true or false", field=field,
                           value=repr(str(raw))))


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


LOCALE_HINT = Text("give the export's locale (--locale, or 'locale:' in the mapping)")
# A number a locale could have grouped, read two ways without one: 1.500, 1,500, -250.000
_TWO_WAYS = re.compile(r"^[+-]?[1-9]\d{0,2}[.,]\d{3}$")
_DAY_MONTH = re.compile(r"^(\d{1,2})([/.-])(\d{1,2})\2(\d{4})$")


class Cells:
    """How an export's text cells are read as numbers and dates, when no locale is given: ISO
    dates (a date-time or offset allowed), numbers with a point for decimals and a grouping
    comma only where it cannot be read two ways (1,234.50). A cell that reads as two values
    is an error naming both and how to say which (connector.locales reads a locale's way).
    An API's values are not cells: `parse_number` reads them as the machine writes them."""

    def number(self, text: str, field: str) -> Decimal | None:
        cell = text.strip()
        body = cell[:-1].rstrip() if cell.endswith("%") else cell
        if _TWO_WAYS.match(body):
            sign, digits = (body[0], body[1:]) if body[0] in "+-" else ("", body)
            head, mark, tail = digits[:-4], digits[-4], digits[-3:]
            grouped = Decimal(sign + head + tail)
            pointed = Decimal(f"{sign}{head}.{tail}")
            raise RecordError(Text(
                "{field}: {value} reads two ways: {pointed} ('{mark}' as the decimal sign) or "
                "{grouped} ('{mark}' grouping thousands); {hint}", field=field,
                value=repr(text), pointed=pointed, grouped=grouped, mark=mark, hint=LOCALE_HINT))
        try:
            return parse_number(cell, field)
        except RecordError:
            raise RecordError(Text("{field}: {value} is not a number (expected 1234.50); if the "
                                   "export writes numbers another way, {hint}", field=field,
                                   value=repr(text), hint=LOCALE_HINT)) from None

    def date(self, text: str, field: str) -> dt.date | None:
        cell = text.strip()
        if not cell:
            return None
        found = _DAY_MONTH.match(cell)
        if found is None:
            return parse_iso_date(cell, field)
        first, second, year = int(found[1]), int(found[3]), int(found[4])
        try:
            month_first, day_first = dt.date(year, first, second), dt.date(year, second, first)
        except ValueError:
            pass
        else:
            if first != second:
                raise RecordError(Text(
                    "{field}: {value} reads two ways: {month_first} (month first, as en_US "
                    "writes it) or {day_first} (day first, as es_CO writes it); {hint}",
                    field=field, value=repr(text), month_first=month_first,
                    day_first=day_first, hint=LOCALE_HINT))
        raise RecordError(Text("{field}: {value} is not a date (expected YYYY-MM-DD); for dates "
                               "written the locale's way, {hint}", field=field, value=repr(text),
                               hint=LOCALE_HINT))

    def reader(self, ftype: FieldType, field: str) -> Callable[[object], Value]:
        """One field's parser for its cells: text through this reader, other values (a JSON
        export's numbers) as `parse_value` reads them."""
        kind = ftype.kind
        if kind in ("number", "money", "percent", "integer"):
            number = self.number
            return lambda raw: (number(raw, field) if isinstance(raw, str)
                                else parse_number(raw, field))
        if kind == "date":
            date = self.date
            return lambda raw: date(raw, field) if isinstance(raw, str) else parse_date(raw, field)
        return parser_for(ftype, field)


EXPORT = Cells()  # an export read without a locale


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

    def __init__(self, parse: Callable[[object], Value], limit: int) -> None:
        super().__init__()
        self.parse = parse
        self.limit = limit

    def __missing__(self, raw: str) -> Value:
        value = self.parse(raw)
        if len(self) < self.limit:
            self[raw] = value
        return value


class _NumberCache(ParseCache):
    """A number column read without a locale: amounts are often all different, so the miss
    is made cheap too."""

    __slots__ = ()

    def __missing__(self, raw: str) -> Value:
        whole, dot, fraction = raw.partition(".")
        if whole.isdecimal() and (not dot or (fraction.isdecimal() and (
                len(fraction) != 3 or not 0 < len(whole) < 4 or whole[0] == "0"))):
            # '392000', '1234.50': what _NUMBER says, without it; not '1.500' (_TWO_WAYS)
            value: Value = Decimal(raw)
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


def parse_cache(ftype: FieldType | None, field: str, limit: int = 16384,
                cells: Cells = EXPORT) -> ParseCache:
    """The ParseCache for one field's column of an export whose cells `cells` reads. The
    limit holds a column of amounts whole: 100,000 deals may have some 9,000 distinct ones,
    and a 4,096 limit missed half of them; 16,384 values cost at most about 3 MB a column."""
    if ftype is None:
        return _GuessCache(guess_value, limit)
    parse = cells.reader(ftype, field)
    if ftype.kind in ("number", "money", "percent", "integer") and cells is EXPORT:
        return _NumberCache(parse, limit)
    return ParseCache(parse, limit)


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
