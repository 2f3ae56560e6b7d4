"""Field values (connector/core/values.py): reading raw CRM and export values into typed ones,
and deciding what a write would change."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.core.values import (
    TEXT,
    FieldType,
    as_text,
    for_write,
    guess_value,
    parse_boolean,
    parse_date,
    parse_datetime,
    parse_number,
    parse_value,
    round_to,
    same,
)
from connector.errors import RecordError

# --- numbers --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    ("1234.50", "1234.50"), ("1,234.50", "1234.50"), ("1,234,567", "1234567"),
    ("-1,234.5", "-1234.5"), ("+5", "5"), (" 12 ", "12"), ("12%", "12"), ("12 %", "12"),
    ("0", "0"), (5, "5"), (2.5, "2.5"), (0.1, "0.1"), (Decimal("1.0"), "1.0"),
])
def test_parse_number(raw: object, expected: str) -> None:
    value = parse_number(raw, "amount")
    assert isinstance(value, Decimal)
    assert value == Decimal(expected)
    assert str(value) == expected  # exactly: 0.1 stays 0.1, 1.0 keeps its place


@pytest.mark.parametrize("raw", ["", "   ", None])
def test_a_blank_number_is_none(raw: object) -> None:
    assert parse_number(raw, "amount") is None


@pytest.mark.parametrize("raw", [
    "abc", "1.2.3", "1,23", "12,3456", "1e5", "$5", "(5)", "1 000", "12abc", "--1", True, False,
])
def test_parse_number_refuses_what_is_not_a_number(raw: object) -> None:
    with pytest.raises(RecordError, match=r"amount: .* is not a number"):
        parse_number(raw, "amount")


@pytest.mark.parametrize("raw", [float("nan"), float("inf"), float("-inf")])
def test_parse_number_refuses_nan_and_infinity(raw: float) -> None:
    with pytest.raises(RecordError):
        parse_number(raw, "amount")


@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=-10**12, max_value=10**12,
                   places=2))
def test_a_number_with_thousands_separators_reads_back(value: Decimal) -> None:
    assert parse_number(f"{value:,.2f}", "amount") == value
    assert parse_number(format(value, "f"), "amount") == value


# --- dates and booleans ------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    ("2026-11-26", dt.date(2026, 11, 26)),
    (" 2026-11-26 ", dt.date(2026, 11, 26)),
    ("2026-11-26T10:00:00.000+0000", dt.date(2026, 11, 26)),  # Salesforce's datetimes
    ("2026-11-26T23:30:00Z", dt.date(2026, 11, 26)),
    (dt.date(2026, 11, 26), dt.date(2026, 11, 26)),
    (dt.datetime(2026, 11, 26, 5), dt.date(2026, 11, 26)),
    ("", None), (None, None),
])
def test_parse_date(raw: object, expected: dt.date | None) -> None:
    value = parse_date(raw, "close_date")
    assert value == expected
    assert value is None or type(value) is dt.date


@pytest.mark.parametrize("raw", ["26/11/2026", "2026-02-30", "2026-13-01", "tomorrow", "2026"])
def test_parse_date_refuses_what_is_not_a_date(raw: str) -> None:
    with pytest.raises(RecordError, match=r"close_date: .* is not a date \(expected YYYY-MM-DD\)"):
        parse_date(raw, "close_date")


def test_parse_datetime_reads_salesforce_offsets() -> None:
    value = parse_datetime("2026-11-26T10:00:00.000+0000", "modified")
    assert value == dt.datetime(2026, 11, 26, 10, tzinfo=dt.UTC)
    assert parse_datetime("2026-11-26T10:00:00Z", "modified") == value
    assert parse_datetime("2026-11-26T12:00:00+0200", "modified") == value
    assert parse_datetime("", "modified") is None
    with pytest.raises(RecordError, match="is not a date and time"):
        parse_datetime("soon", "modified")


@pytest.mark.parametrize(("raw", "expected"), [
    ("true", True), ("TRUE", True), (" yes ", True), ("1", True), (True, True), (1, True),
    ("false", False), ("No", False), ("0", False), (False, False), (0, False),
    ("", None), (None, None),
])
def test_parse_boolean(raw: object, expected: bool | None) -> None:
    assert parse_boolean(raw, "flag") is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "y", "t"])
def test_parse_boolean_refuses_the_rest(raw: str) -> None:
    with pytest.raises(RecordError, match="is not true or false"):
        parse_boolean(raw, "flag")


def test_parse_value_by_kind() -> None:
    assert parse_value("1,200", FieldType("money"), "amount") == Decimal(1200)
    assert parse_value("60", FieldType("percent"), "probability") == Decimal(60)
    assert parse_value("2026-11-26", FieldType("date"), "d") == dt.date(2026, 11, 26)
    assert parse_value("yes", FieldType("boolean"), "b") is True
    assert parse_value("  Negotiation  ", TEXT, "stage") == "Negotiation"
    assert parse_value("   ", TEXT, "stage") is None
    with pytest.raises(RecordError, match="amount"):
        parse_value("lots", FieldType("money"), "amount")


# --- values nobody typed --------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    ("12", Decimal(12)), ("12.50", Decimal("12.50")), ("-5", Decimal(-5)),
    ("2026-11-26", dt.date(2026, 11, 26)), ("2026-02-30", "2026-02-30"),
    ("1,234", "1,234"),  # a comma may be a list, not a thousands separator: left as text
    ("Negotiation/Review", "Negotiation/Review"), ("+1 555 0100", "+1 555 0100"),
    (" x ", "x"), ("", None), (None, None), (2.5, Decimal("2.5")), (5, 5),
])
def test_guess_value(raw: object, expected: object) -> None:
    assert guess_value(raw) == expected
    assert type(guess_value(raw)) is type(expected)


def test_guess_value_keeps_leading_zeros() -> None:
    assert guess_value("00123") == "00123"


# --- writing back ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "ftype", "expected"), [
    (Decimal("59.5"), FieldType("percent"), 60),
    (Decimal("59.4"), FieldType("percent"), 59),
    (Decimal("2.345"), FieldType("money"), Decimal("2.35")),
    (Decimal("2.344"), FieldType("money"), Decimal("2.34")),
    (Decimal("-2.345"), FieldType("money"), Decimal("-2.35")),
    (Decimal("2.5"), FieldType("integer"), 3),
    (Decimal("2.345"), FieldType("number"), Decimal("2.345")),  # no scale: as computed
    (Decimal("2.345"), FieldType("number", 1), Decimal("2.3")),
    (Decimal("2.35"), FieldType("money", 1), Decimal("2.4")),
    (5, FieldType("money"), Decimal("5.00")),
    (Decimal("1E+3"), FieldType("integer"), 1000),
    (True, FieldType("percent"), True),
    (None, FieldType("money"), None),
    ("p90", TEXT, "p90"),
])
def test_for_write_rounds_half_up_to_the_scale(value: Any, ftype: FieldType,
                                               expected: Any) -> None:
    written = for_write(value, ftype)
    assert written == expected
    assert type(written) is type(expected)
    if isinstance(expected, Decimal):
        assert written.as_tuple().exponent == expected.as_tuple().exponent


def test_for_write_rounds_a_float_as_decimal() -> None:
    assert for_write(2.675, FieldType("money")) == Decimal("2.68")


def test_round_to_is_half_up_not_bankers() -> None:
    assert round_to(Decimal("0.125"), 2) == Decimal("0.13")
    assert round_to(Decimal("0.5"), 0) == Decimal(1)
    assert round_to(Decimal("1.5"), 0) == Decimal(2)
    assert round_to(Decimal("2.5"), 0) == Decimal(3)


@pytest.mark.parametrize(("old", "new"), [
    (60, "60.0"), ("60", Decimal("60.00")), ("", None), (None, ""), (None, None),
    (True, "true"), ("1", True), ("false", False), (dt.date(2026, 1, 1), "2026-01-01"),
    ("2026-01-01", dt.date(2026, 1, 1)), ("2026-01-01T00:00:00.000+0000", dt.date(2026, 1, 1)),
    ("p90", "p90"), (Decimal("0.1"), 0.1), ("60%", Decimal(60)), ("1,000", Decimal(1000)),
])
def test_same_values_need_no_write(old: object, new: object) -> None:
    assert same(old, new)


@pytest.mark.parametrize(("old", "new"), [
    (None, 0), ("", Decimal(0)), (59, Decimal(60)), ("abc", Decimal(1)), ("P90", "p90"),
    (True, False), ("2026-01-02", dt.date(2026, 1, 1)), ("soon", dt.date(2026, 1, 1)),
    (Decimal("59.5"), Decimal(60)),
])
def test_different_values_need_a_write(old: object, new: object) -> None:
    assert not same(old, new)


@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=0, max_value=10**9,
                   places=2))
def test_what_was_written_reads_back_as_the_same(value: Decimal) -> None:
    """No loop: the connector's own write, read back from the CRM as text, changes nothing."""
    written = for_write(value, FieldType("money"))
    assert same(as_text(written), written)
    assert same(f"{written:,.2f}", written)


def test_as_text() -> None:
    assert as_text(Decimal("1E+3")) == "1000"
    assert as_text(Decimal("0.10")) == "0.10"
    assert as_text(None) == ""
    assert as_text(True) == "true"
    assert as_text(dt.date(2026, 1, 2)) == "2026-01-02"
    assert as_text(dt.datetime(2026, 1, 2, 3, 4)) == "2026-01-02T03:04:00"
