"""Money, percents and dates in the admin's locale, and the template filters that use them."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

import pytest
from babel.numbers import get_currency_symbol, parse_decimal
from hypothesis import given
from hypothesis import strategies as st

from connector.errors import ConfigurationError
from connector.formatting import format_day, format_money, format_percent_value
from connector.templates import render_value

LOCALES = ["es_CO", "es_MX", "es_ES", "es_AR", "es_CL", "pt_BR", "en_US"]
amounts = st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=4,
                      allow_nan=False, allow_infinity=False)


@given(amounts, st.sampled_from(LOCALES))
def test_money_reads_back_to_the_cent_in_its_locale(amount: Decimal, locale: str) -> None:
    shown = format_money(amount, locale)
    assert parse_decimal(shown, locale=locale, strict=True) == amount.quantize(
        Decimal("0.01"), ROUND_HALF_UP)


@given(amounts, st.sampled_from(LOCALES), st.sampled_from(["COP", "USD", "EUR", "BRL"]))
def test_money_with_a_currency_keeps_the_cents_and_shows_the_sign(
        amount: Decimal, locale: str, currency: str) -> None:
    shown = format_money(amount, locale, currency)
    symbol = get_currency_symbol(currency, locale)
    assert symbol in shown
    number = shown.replace(symbol, "").replace("\xa0", "").strip()
    assert parse_decimal(number, locale=locale, strict=True) == amount.quantize(
        Decimal("0.01"), ROUND_HALF_UP)


def test_colombian_pesos_as_an_admin_in_bogota_reads_them() -> None:
    assert format_money(Decimal("1234567.891"), "es_CO", "COP") == "$1.234.567,89"
    assert format_money(Decimal("1234567.891"), "es_CO") == "1.234.567,89"
    assert format_money(Decimal("1234567.891"), "en_US", "USD") == "$1,234,567.89"
    assert format_money(Decimal("1234567.891"), None) == "1234567.89"


def test_percent_and_date() -> None:
    assert format_percent_value(60, "es_CO") == "60%"
    assert format_percent_value(Decimal("62.5"), "es_ES") == "62,5\xa0%"
    assert format_percent_value(Decimal("62.5"), None) == "62.5 %"
    day = dt.date(2026, 12, 31)
    assert format_day(day, "es_CO", "short") == "31/12/26"
    assert format_day(day, "es_CO", "long") == "31 de diciembre de 2026"
    assert format_day(day, None) == "2026-12-31"


def test_template_filters_use_the_locale_and_the_records_currency() -> None:
    values = {"amount": Decimal("1234567.891"), "probability": Decimal(60),
              "close_date": dt.date(2026, 12, 31), "currency": "COP"}
    text = ("{{ amount | money }} / {{ amount | money('USD') }} / {{ probability | percent }}"
            " / {{ close_date | date('long') }}")
    assert render_value(text, values, locale="es_CO") == (
        "$1.234.567,89 / US$1.234.567,89 / 60% / 31 de diciembre de 2026")
    assert render_value(text, values) == ("1234567.89 COP / 1234567.89 USD / 60 % / 2026-12-31")


def test_an_unknown_locale_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown locale 'xx_YY'"):
        format_money(Decimal(1), "xx_YY")
