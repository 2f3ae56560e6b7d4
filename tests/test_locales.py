"""Numbers and dates as a locale writes them (connector/locales.py), held equal to Babel's strict
parsers; and without a locale (connector/core/values.py `Cells`), no cell read two ways."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from babel import Locale
from babel import dates as babel_dates
from babel import numbers as babel_numbers
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connector.core.values import EXPORT
from connector.errors import ConfigurationError, RecordError
from connector.locales import known_locale, locale_cells

LOCALES = ["en_US", "es_CO", "es_MX", "es_ES", "es_AR", "es_CL", "pt_BR", "de_DE", "fr_FR",
           "en_IN"]
FUZZ = settings(max_examples=400, deadline=None)

amounts = st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=2,
                      allow_nan=False, allow_infinity=False)


def _babel_strict(text: str, locale: str) -> Decimal | None:
    try:
        return babel_numbers.parse_decimal(text, locale, strict=True)
    except babel_numbers.NumberFormatError:
        return None


def _ours_strict(text: str, locale: str) -> Decimal | None:
    cells = locale_cells(locale)
    return cells._strict(text) if cells.strict.fullmatch(text) else None


@st.composite
def number_like(draw: st.DrawFn) -> tuple[str, str]:
    """A locale and a string of digits, its grouping and decimal signs and signs: the
    strings where Babel's strict parse is the reference."""
    locale = draw(st.sampled_from(LOCALES))
    alphabet = ["0", "1", "2", "5", "9", babel_numbers.get_group_symbol(locale),
                babel_numbers.get_decimal_symbol(locale), "-", "+"]
    text = draw(st.text(st.sampled_from(alphabet), min_size=1, max_size=14))
    return locale, text


@FUZZ
@given(number_like())
@example(("es_CO", "1.500")).via("the issue's cell")
@example(("es_CO", "1.234,50")).via("trailing zero")
@example(("es_CO", "01.500")).via("leading zero")
@example(("es_CO", "1.5000")).via("a group of four")
@example(("en_IN", "10,00,000")).via("Indian grouping")
@example(("es_CO", "5,")).via("a decimal sign with no digits")
def test_the_strict_pattern_accepts_what_babel_strict_accepts(case: tuple[str, str]) -> None:
    locale, text = case
    assert _ours_strict(text, locale) == _babel_strict(text, locale)


@FUZZ
@given(st.sampled_from(LOCALES), amounts)
def test_a_number_babel_formats_reads_back_the_same(locale: str, value: Decimal) -> None:
    cells = locale_cells(locale)
    text = babel_numbers.format_decimal(value, locale=locale, decimal_quantization=False)
    assert cells.number(text, "amount") == value
    assert babel_numbers.parse_decimal(text, locale, strict=True) == value


@FUZZ
@given(st.sampled_from(LOCALES), amounts, st.sampled_from(["USD", "EUR", "COP", "BRL"]),
       st.sampled_from(["symbol", "name"]))
def test_money_babel_formats_reads_back_the_same(locale: str, value: Decimal, currency: str,
                                                  how: str) -> None:
    cells = locale_cells(locale)
    if how == "symbol":
        text = babel_numbers.format_currency(value, currency, locale=locale,
                                             currency_digits=False, decimal_quantization=False)
    else:  # the ISO code instead of the sign: USD 1,234.50
        plain = babel_numbers.format_decimal(value, locale=locale, decimal_quantization=False)
        text = f"{currency} {plain}"
    assert cells.number(text, "amount") == value


@FUZZ
@given(st.sampled_from(LOCALES), amounts.map(abs), st.sampled_from(["", "symbol", "code"]))
@example("es_CO", Decimal(1500), "").via("'+1.500' read plainly was 1.5")
@example("es_CO", Decimal(1500), "symbol").via("'US$+1.500'")
def test_a_sign_never_changes_how_the_digits_are_read(locale: str, value: Decimal,
                                                      how: str) -> None:
    """'+1.500' is what '1.500' is (1500 in es_CO), never a plain 1.5; '-1.500' its negative,
    whatever minus sign the locale writes."""
    cells = locale_cells(locale)
    text = babel_numbers.format_decimal(value, locale=locale, decimal_quantization=False)
    currency = {"": "", "symbol": babel_numbers.get_currency_symbol("USD", locale),
                "code": "USD "}[how]
    assert cells.number(f"{currency}+{text}", "amount") == value
    assert cells.number(f"{currency}-{text}", "amount") == -value
    assert cells.number(f"-{currency}{text}", "amount") == -value


@FUZZ
@given(st.sampled_from(LOCALES), st.integers(min_value=0, max_value=100))
def test_a_percent_babel_formats_reads_back_as_points(locale: str, points: int) -> None:
    text = babel_numbers.format_percent(Decimal(points) / 100, locale=locale)
    assert locale_cells(locale).number(text, "probability") == points


@FUZZ
@given(amounts.filter(lambda v: abs(v) >= 1000))
def test_without_a_locale_no_number_reads_two_ways(value: Decimal) -> None:
    """Formatted by en_US or es_CO, a number is read right, or refused; never misread. And a
    text the two locales read as two different values is always refused, naming both."""
    for locale in ("en_US", "es_CO", "de_DE"):
        for places in (0, 2):
            shown = value.quantize(Decimal(1).scaleb(-places))
            text = babel_numbers.format_decimal(shown, locale=locale,
                                                format="#,##0" + ("." + "0" * places if places
                                                                  else ""))
            readings = {r for r in (_babel_strict(text, "en_US"), _babel_strict(text, "es_CO"))
                        if r is not None}
            try:
                read = EXPORT.number(text, "amount")
            except RecordError as exc:
                if len(readings) > 1:
                    assert "reads two ways" in str(exc) and "--locale" in str(exc)
                continue
            assert read == shown and len(readings) <= 1


@pytest.mark.parametrize(("text", "readings"), [
    ("1.500", ("1.500", "1500")), ("1,500", ("1.500", "1500")), ("-250.000", ("-250.000",
                                                                             "-250000")),
    ("12,500 %", ("12.500", "12500")),
])
def test_a_number_read_two_ways_names_both_and_the_locale(text: str,
                                                          readings: tuple[str, str]) -> None:
    with pytest.raises(RecordError) as caught:
        EXPORT.number(text, "amount")
    message = str(caught.value)
    assert message.startswith(f"amount: {text!r} reads two ways: ")
    assert all(r in message for r in readings) and "--locale" in message


@pytest.mark.parametrize(("text", "readings"), [
    ("+1.500", "1.500 ('.' as the decimal sign) or 1500 ('.' grouping"),
    ("-1,500", "-1.500 (',' as the decimal sign) or -1500 (',' grouping"),
])
def test_the_two_readings_keep_the_cells_sign(text: str, readings: str) -> None:
    with pytest.raises(RecordError, match=re.escape(f"reads two ways: {readings}")):
        EXPORT.number(text, "amount")


@pytest.mark.parametrize(("text", "expected"), [
    ("2500.00", "2500.00"), ("1,234.50", "1234.50"), ("1,234,567", "1234567"), ("0.500", "0.5"),
    ("1.50", "1.5"), ("1234.567", "1234.567"), ("45%", "45"), ("", None),
])
def test_without_a_locale_unambiguous_numbers_are_read(text: str, expected: str | None) -> None:
    assert EXPORT.number(text, "amount") == (None if expected is None else Decimal(expected))


@pytest.mark.parametrize("text", ["1.234,50", "$1,200", "12,5", "1 234"])
def test_without_a_locale_a_locales_number_is_refused_with_the_hint(text: str) -> None:
    with pytest.raises(RecordError, match="--locale"):
        EXPORT.number(text, "amount")


@pytest.mark.parametrize(("locale", "text", "expected"), [
    ("es_CO", "1.500", "1500"), ("es_CO", "$ 1.234,50", "1234.50"), ("es_CO", "2500.00", "2500.00"),
    ("es_CO", "1.234,50 EUR", "1234.50"), ("es_CO", "45 %", "45"), ("es_CO", "-$ 1.500", "-1500"),
    ("en_US", "$1,200", "1200"), ("en_US", "USD 1,234.50", "1234.50"), ("en_US", "1.500", "1.5"),
    ("es_ES", "1.234,50 €", "1234.50"), ("pt_BR", "R$ 1.234,50", "1234.50"),
    ("es_MX", "$1,234.50", "1234.50"), ("es_CO", "+1.50", "1.50"), ("es_CO", "-1,5", "-1.5"),
])
def test_a_locales_numbers(locale: str, text: str, expected: str) -> None:
    assert locale_cells(locale).number(text, "amount") == Decimal(expected)


@pytest.mark.parametrize(("locale", "text"), [
    ("es_CO", "1,234.50"), ("es_CO", "12.34.567"), ("en_US", "1.234,50"), ("es_CO", "abc"),
    ("es_CO", "$"), ("es_CO", "--1.500"), ("es_CO", "-$-1.500"), ("es_CO", "+-1.500"),
])
def test_a_locale_refuses_what_it_does_not_write(locale: str, text: str) -> None:
    with pytest.raises(RecordError, match=f"not a number as {locale} writes them"):
        locale_cells(locale).number(text, "amount")


# --- dates ---------------------------------------------------------------------------------------

dates = st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2090, 12, 31))


@FUZZ
@given(st.sampled_from(LOCALES), dates)
def test_a_date_babel_formats_reads_back_the_same(locale: str, day: dt.date) -> None:
    """The locale's numeric short date, with the year in full, as Babel writes and reads it."""
    pattern = babel_dates.get_date_format("short", locale).pattern
    in_full = pattern.replace("yy", "y").replace("y", "yyyy")
    text = babel_dates.format_date(day, in_full, locale=locale)
    assert locale_cells(locale).date(text, "close_date") == day
    assert babel_dates.parse_date(text, locale, format="short") == day
    assert locale_cells(locale).date(day.isoformat(), "close_date") == day


@FUZZ
@given(dates.filter(lambda d: d.day <= 12 and d.day != d.month))
def test_without_a_locale_a_day_and_month_that_swap_are_refused(day: dt.date) -> None:
    text = babel_dates.format_date(day, "dd/MM/yyyy", locale="es_CO")
    with pytest.raises(RecordError) as caught:
        EXPORT.date(text, "close_date")
    swapped = dt.date(day.year, day.day, day.month)
    assert "reads two ways" in str(caught.value)
    assert day.isoformat() in str(caught.value) and swapped.isoformat() in str(caught.value)


@pytest.mark.parametrize(("locale", "text"), [
    ("en_US", "31/12/2026"), ("es_CO", "12/31/2026"), ("es_CO", "31/12/26"),
    ("es_CO", "2026/12/31"),
])
def test_a_date_not_in_the_locales_order_is_refused(locale: str, text: str) -> None:
    """Babel's parse_date would swap day and month (and guess the century): never here."""
    with pytest.raises(RecordError, match="not a date"):
        locale_cells(locale).date(text, "close_date")


def test_an_unknown_locale_is_a_configuration_error_with_a_hint() -> None:
    assert known_locale("es_CO") is None
    assert "es_CO" in (known_locale("es_XX_bogus") or "")
    with pytest.raises(ConfigurationError, match="not a locale"):
        locale_cells("zz_ZZ_nope")


def test_every_fact_comes_from_cldr() -> None:
    """es_CO's signs, grouping and date order are Babel's, not a table of ours."""
    cells = locale_cells("es_CO")
    locale = Locale.parse("es_CO")
    assert cells.example == babel_numbers.format_decimal(Decimal("1234.5"), locale=locale)
    assert cells.date_example == "31/12/2026"
