"""Numbers and dates as one locale writes them (`locale: es_CO`, `--locale es_CO`), read strictly.

Every fact comes from Babel's CLDR data: the grouping and decimal signs, the group sizes, the
minus and percent signs, the currency symbols and the numeric short date's order. Babel's own
strict parsers cost 20 to 50 us a cell, several times a whole row's budget, so each locale's
data is compiled once into regular expressions that accept exactly what `babel.numbers.
parse_decimal(strict=True)` accepts (tests/test_locales.py holds them equal with Hypothesis),
plus what an export puts around a number: a currency symbol or ISO code, a percent sign.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from functools import cache

from babel import Locale, UnknownLocaleError
from babel import dates as babel_dates
from babel import numbers as babel_numbers

from connector.core.values import Cells, parse_iso_date
from connector.errors import ConfigurationError, RecordError, Text

_PLAIN = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")  # as Data Loader writes numbers: 2500.00


def known_locale(name: str) -> Text | None:
    """None when `name` is a CLDR locale Babel knows, else why not."""
    try:
        Locale.parse(name)
    except (UnknownLocaleError, ValueError, TypeError) as exc:
        return Text("'{name}' is not a locale Babel knows ({reason}); use a CLDR id such as "
                    "es_CO", name=name, reason=str(exc))
    return None


@cache
def locale_cells(name: str) -> LocaleCells:
    """The cell reader for one locale, built once per process."""
    problem = known_locale(name)
    if problem:
        raise ConfigurationError(problem)
    return LocaleCells(name)


def strict_number_pattern(locale: Locale) -> re.Pattern[str]:
    """What Babel's `parse_decimal(text, locale, strict=True)` accepts, written in the digits,
    signs and separators it accepts them in: without a grouping sign, whatever Decimal reads
    once the decimal sign is a point; with one, only the number as Babel would format it
    (groups of the pattern's sizes, no leading zero, no grouping below the locale's minimum),
    with any fraction."""
    group = re.escape(babel_numbers.get_group_symbol(locale))
    point = re.escape(babel_numbers.get_decimal_symbol(locale))
    minus = re.escape(babel_numbers.get_minus_sign_symbol(locale))
    primary, secondary = locale.decimal_formats[None].grouping
    ungrouped = rf"[+-]?(?:[0-9]+(?:{point}[0-9]*)?|{point}[0-9]+)"
    # the lowest number Babel writes with a grouping sign: 1000, or 10000 (minimum grouping)
    least = next(n for n in range(primary + 1, primary + 4)
                 if babel_numbers.get_group_symbol(locale)
                 in babel_numbers.format_decimal(10 ** (n - 1), locale=locale))
    head = least - primary  # the digits before the first grouping sign, at the least
    one_group = rf"[1-9][0-9]{{{head - 1},{secondary - 1}}}{group}[0-9]{{{primary}}}"
    more = (rf"[1-9][0-9]{{0,{secondary - 1}}}(?:{group}[0-9]{{{secondary}}})+"
            rf"{group}[0-9]{{{primary}}}")
    grouped = rf"{minus}?(?:{one_group}|{more})(?:{point}[0-9]+)?"
    return re.compile(rf"(?:{ungrouped})|(?:{grouped})")


class LocaleCells(Cells):
    """Cells as one locale writes them: numbers strictly in its convention, with a currency
    symbol or ISO code and a percent sign allowed around them; a number written plainly
    (2500.00) that the locale cannot read is read plainly; dates in ISO or the locale's
    numeric short date, with the year in full."""

    def __init__(self, name: str) -> None:
        locale = Locale.parse(name)
        self.name = name
        self._group = babel_numbers.get_group_symbol(locale)
        self._point = babel_numbers.get_decimal_symbol(locale)
        self._minus = babel_numbers.get_minus_sign_symbol(locale)
        self.example = babel_numbers.format_decimal(Decimal("1234.5"), locale=locale,
                                                    decimal_quantization=False)
        self.strict = strict_number_pattern(locale)
        signs = {*locale.currency_symbols.values(), *babel_numbers.list_currencies(),
                 babel_numbers.get_currency_symbol("USD", locale)}
        currency = "|".join(re.escape(s) for s in sorted(signs, key=len, reverse=True))
        percent = re.escape(locale.number_symbols["latn"]["percentSign"])
        self._dressed = re.compile(
            rf"(?P<lead>-)?\s*(?:(?:{currency})\s*)?(?P<number>\S(?:.*?\S)??)\s*(?:{currency})?"
            rf"\s*(?:{percent}|%)?")
        self._date, self._order, self.date_example = _short_date(locale)

    def number(self, text: str, field: str) -> Decimal | None:
        cell = text.strip()
        if not cell:
            return None
        if cell.isdecimal() and cell.isascii():
            return Decimal(cell)
        value = self._read(cell)
        if value is not None:
            return value
        dressed = self._dressed.fullmatch(cell)
        # (a sign before the currency and another after it, '--1.500', is no number)
        if (dressed is not None and dressed["number"] != cell
                and not (dressed["lead"] and dressed["number"][:1] in ("+", "-"))):
            value = self._read(dressed["number"])
            if value is not None:
                return -value if dressed["lead"] and value > 0 else value
        raise RecordError(Text("{field}: {value} is not a number as {locale} writes them "
                               "({example})", field=field, value=repr(text), locale=self.name,
                               example=self.example))

    def _read(self, text: str) -> Decimal | None:
        """A number strictly as the locale writes it, else written plainly (2500.00, as Data
        Loader writes it). A sign is no reason to read the digits another way: Babel's strict
        parser takes no '+' before a grouped number (nor '-' where the locale's minus is
        another sign), and '+1.500' read plainly would be 1.5 where '1.500' is 1500 in es_CO."""
        value = self._strict(text)
        if value is None and text[:1] in ("+", "-") and text[1:2] not in ("+", "-"):
            unsigned = self._strict(text[1:])
            if unsigned is not None:
                value = -unsigned if text[0] == "-" else unsigned
        if value is None and _PLAIN.fullmatch(text):
            value = Decimal(text)
        return value

    def _strict(self, text: str) -> Decimal | None:
        if not self.strict.fullmatch(text):
            return None
        try:
            return Decimal(text.replace(self._group, "").replace(self._point, ".")
                           .replace(self._minus, "-"))
        except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
            return None

    def date(self, text: str, field: str) -> dt.date | None:
        cell = text.strip()
        if not cell:
            return None
        found = self._date.fullmatch(cell)
        if found is None:
            return parse_iso_date(cell, field, f"{self.date_example} ({self.name})")
        parts = dict(zip(self._order, (int(p) for p in found.groups())))
        try:
            return dt.date(parts["y"], parts["m"], parts["d"])
        except ValueError:
            raise RecordError(Text("{field}: {value} is not a date as {locale} writes them "
                                   "({example})", field=field, value=repr(text),
                                   locale=self.name, example=self.date_example)) from None

    def __repr__(self) -> str:
        return f"LocaleCells({self.name!r})"


def _short_date(locale: Locale) -> tuple[re.Pattern[str], tuple[str, ...], str]:
    """The locale's numeric short date (d/MM/yy in es_CO, M/d/yy in en_US) as a pattern of
    day, month and a four-digit year in its order and with its separators, that order, and
    an example (31/12/2026)."""
    pattern = babel_dates.get_date_format("short", locale).pattern
    order: list[str] = []
    regex = ""
    for token in re.findall(r"d+|M+|L+|y+|'[^']*'|.", pattern):
        letter = token[0].lower()
        if letter in "dmly" and token[0] not in "'":
            key = "m" if letter in "ml" else letter
            order.append(key)
            regex += "([0-9]{4})" if key == "y" else "([0-9]{1,2})"
        else:
            regex += re.escape(token.strip("'"))
    year_in_full = re.sub(r"y+", "yyyy", pattern)
    example = babel_dates.format_date(dt.date(2026, 12, 31), year_in_full, locale=locale)
    return re.compile(regex), tuple(order), example


__all__ = ["LocaleCells", "known_locale", "locale_cells", "strict_number_pattern"]
