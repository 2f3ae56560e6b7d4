"""Money, percents and dates as a person reads them, in the mapping's locale: the report, the
text outputs and the templates' `money`, `percent` and `date` filters all format here, so a
number looks the same everywhere. Every fact (grouping, decimal sign, currency sign, date
order) comes from CLDR through Babel; nothing here knows a locale by heart.

Without a locale the output is plain and unambiguous (`1234567.89`, ISO dates), as the rest of
the product writes numbers for machines. Money is shown with its currency only when the
currency is known: a sign guessed from the locale (`$` for an amount that may be in USD or
COP) would be a misread waiting to happen."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from connector.core.forecast import OVERDUE
from connector.errors import ConfigurationError, Text
from connector.i18n import gettext as _

if TYPE_CHECKING:
    from babel import Locale

# Babel is imported where a value is formatted, not here: every template environment imports
# this module, and the Lambda worker's cold start should not pay for CLDR's data unused.

__all__ = ["DATE_STYLES", "format_day", "format_money", "format_percent_value", "listed",
           "locale_of"]

DATE_STYLES = ("short", "medium", "long", "full")
_CENT = Decimal("0.01")


def row_label(key: str) -> str:
    """A forecast row's name as a person reads it: the overdue row in their language; a
    month, an owner or a stage as it is (JSON and CSV keep `overdue`)."""
    return _("overdue") if key == OVERDUE else key


def listed(parts: Sequence[str], separator: str = ", ") -> str:
    """Messages one after the other (a Text joined as str would be English only): each is
    still said in the person's language. Joined in halves, so that saying a list of a
    thousand findings nests ten deep, not a thousand."""
    if not parts:
        return ""
    if len(parts) == 1:
        return parts[0]
    half = len(parts) // 2
    return Text("{first}{separator}{rest}", first=listed(parts[:half], separator),
                separator=separator, rest=listed(parts[half:], separator))


@lru_cache(maxsize=64)
def locale_of(name: str) -> Locale:
    """A CLDR locale by its id (`es_CO`, `es-CO`, `pt_BR`); a configuration error otherwise."""
    from babel import Locale, UnknownLocaleError

    try:
        return Locale.parse(name.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        raise ConfigurationError(Text("unknown locale '{name}': use a CLDR id such as es_CO, "
                                      "es_MX, es_ES, pt_BR or en_US", name=name)) from None


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None or value == "":
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


def format_money(value: Any, locale: str | None, currency: str | None = None) -> str:
    """An amount to the cent: `$1.234.567,89` (es_CO, COP), `1.234.567,89` with no currency,
    `1234567.89` with no locale. A value that is not a number is shown as it is."""
    number = _decimal(value)
    if number is None:
        return "" if value is None else str(value)
    number = number.quantize(_CENT, rounding=ROUND_HALF_UP)
    if locale is None:
        return f"{number} {currency}" if currency else str(number)
    from babel.numbers import format_currency, format_decimal

    where = locale_of(locale)
    if currency:
        # currency_digits=False: CLDR gives COP no decimals for cash; an amount keeps its cents
        return format_currency(number, currency, locale=where, currency_digits=False)
    return format_decimal(number, "#,##0.00", locale=where)


def format_percent_value(value: Any, locale: str | None) -> str:
    """A probability as the product keeps it (0..100): `60 %`-style in the locale."""
    number = _decimal(value)
    if number is None:
        return "" if value is None else str(value)
    if locale is None:
        return f"{number.normalize():f} %"
    from babel.numbers import format_percent

    # the locale's own pattern (es_ES: "62,5 %"), with the decimals the value has
    return format_percent(number / 100, locale=locale_of(locale), decimal_quantization=False)


def format_day(value: Any, locale: str | None, style: str = "medium") -> str:
    """A date in one of CLDR's styles (short, medium, long, full); ISO without a locale."""
    if style not in DATE_STYLES:
        raise ValueError(Text("date style '{style}': use one of {styles}", style=style,
                              styles=", ".join(DATE_STYLES)))
    if isinstance(value, dt.datetime):
        value = value.date()
    if not isinstance(value, dt.date):
        return "" if value is None else str(value)
    if locale is None:
        return value.isoformat()
    from babel.dates import format_date

    return format_date(value, style, locale=locale_of(locale))
