"""The formula language (connector/core/expressions.py): what it refuses when the rules load,
and what it computes: Decimal arithmetic, blanks that propagate, errors that fail one record."""

from __future__ import annotations

import ast
import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.core.expressions import ExpressionError, Formula, parse_formula
from connector.errors import RecordError

KNOWN = ("amount", "probability", "stage", "close_date", "today", "name", "zero", "x", "y", "c",
         "a", "b", "won")


def formula(source: str, known: tuple[str, ...] = KNOWN) -> Formula:
    return parse_formula(source, known)


def ev(source: str, **names: Any) -> Any:
    return formula(source).evaluate(names)


def refused(source: str) -> str:
    with pytest.raises(ExpressionError) as info:
        formula(source)
    return str(info.value)


# --- refused when the rules load -------------------------------------------------------------

@pytest.mark.parametrize(("source", "why"), [
    ("__import__('os')", "unknown function '__import__'"),
    ("__import__('os').system('true')", "attribute access ('.') is not allowed"),
    ("amount.__class__", "attribute access ('.') is not allowed"),
    ("amount.__class__.__mro__", "attribute access ('.') is not allowed"),
    ("date('2026-01-01').year", "attribute access ('.') is not allowed"),
    ("'x'.join(['a'])", "attribute access ('.') is not allowed"),
    ("amount[0]", "subscripts ('[...]') are not allowed"),
    ("[1, 2][0]", "subscripts ('[...]') are not allowed"),
    ("lambda: amount", "lambda is not allowed"),
    ("(lambda: amount)()", "lambda is not allowed"),
    ("(lambda x: x)(amount)", "lambda is not allowed"),
    ("[x for x in [1, 2]]", "'ListComp' is not part of the formula language"),
    ("{'a': 1}", "'Dict' is not part of the formula language"),
    ("{1, 2}", "'Set' is not part of the formula language"),
    ("f'{amount}'", "'JoinedStr' is not part of the formula language"),
    ("amount ** 2", "'**' is not allowed; multiply instead"),
    ("9 ** 9 ** 9", "'**' is not allowed"),
    ("amount // 2", "'//' is not allowed"),
    ("stage is None", "'is' is not allowed; use '=='"),
    ("stage is not None", "'is not' is not allowed; use '!='"),
    ("(x := 1)", "':=' is not allowed"),
    ("_secret", "unknown name '_secret'"),
    ("__builtins__", "unknown name '__builtins__'"),
    ("open('/etc/passwd')", "unknown function 'open'"),
    ("eval('1')", "unknown function 'eval'"),
    ("getattr(amount, 'real')", "unknown function 'getattr'"),
    ("type(amount)", "unknown function 'type'"),
    ("sqrt(amount)", "unknown function 'sqrt'; the functions are abs, "),
    ("rnd(amount)", "unknown function 'rnd' (did you mean 'round'?)"),
    ("round(amount, ndigits=2)", "round() takes no named arguments"),
    ("min(*[1, 2])", "'*' arguments are not allowed"),
    ("round()", "round() takes 1 to 2 arguments, got 0"),
    ("round(1, 2, 3)", "round() takes 1 to 2 arguments, got 3"),
    ("days_between(today)", "days_between() takes 2 arguments, got 1"),
    ("min()", "min() takes 1 or more arguments, got 0"),
    ("b'bytes'", "literal b'bytes' is not allowed"),
    ("...", "literal Ellipsis is not allowed"),
    ("1j", "literal 1j is not allowed"),
    ("1e400", "too large"),
    ("await amount", "'Await' is not part of the formula language"),
    ("amount if stage", "does not parse"),
    ("amount >= 1 and", "does not parse"),
    ("amount +", "does not parse"),
    ("", "the formula is empty"),
    ("=  ", "the formula is empty"),
    ("probabilty * 2", "unknown name 'probabilty' (did you mean 'probability'?)"),
    ("date", "unknown name 'date'"),  # a function, but not called: not a value
])
def test_refused(source: str, why: str) -> None:
    assert why in refused(source)


def test_a_refusal_quotes_the_formula() -> None:
    assert "formula 'amount.__class__'" in refused("amount.__class__")


def test_a_syntax_error_gives_the_column() -> None:
    assert "at column" in refused("amount >= 100000 and and probability >= 70")


def test_nothing_is_evaluated_while_checking(tmp_path: Any) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(ExpressionError):
        formula(f"__import__('os').system('touch {marker}')")
    assert not marker.exists()


def test_only_known_names_are_readable() -> None:
    f = parse_formula("amount * probability / 100", ["amount", "probability"])
    assert f.names == frozenset({"amount", "probability"})
    assert not f.uses_today
    assert parse_formula("days_between(today, d)", ["today", "d"]).uses_today
    with pytest.raises(ExpressionError, match="unknown name 'stage'"):
        parse_formula("stage == 'x'", ["amount"])


def test_a_leading_equals_sign_is_the_formula_marker() -> None:
    assert formula("= amount * 2").evaluate({"amount": Decimal(3)}) == Decimal(6)


# --- Decimal, never float ---------------------------------------------------------------------

def test_literals_become_decimal_in_the_tree() -> None:
    f = formula("amount * 0.1 + 3")
    constants = [n.value for n in ast.walk(f._tree) if isinstance(n, ast.Constant)]
    assert constants and all(isinstance(v, Decimal) for v in constants)
    assert Decimal("0.1") in constants


def test_decimal_arithmetic() -> None:
    assert ev("0.1 + 0.2") == Decimal("0.3")
    assert ev("1.10 + 0") == Decimal("1.10")
    result = ev("amount * probability / 100", amount=Decimal("1234.56"), probability=60)
    assert result == Decimal("740.736") and isinstance(result, Decimal)
    assert ev("amount / 3", amount=Decimal(10)) == Decimal(10) / Decimal(3)
    assert ev("x % 3", x=Decimal(10)) == Decimal(1)


def test_python_numbers_from_a_record_are_read_as_decimal() -> None:
    """A JSON record may carry an int or a float; neither may bring float error into money."""
    result = ev("x + 0.2", x=0.1)
    assert result == Decimal("0.3") and isinstance(result, Decimal)
    assert isinstance(ev("x * 3", x=7), Decimal)
    assert isinstance(ev("-x", x=7), Decimal)
    assert ev("abs(x)", x=-2.5) == Decimal("2.5")


@settings(max_examples=200, deadline=None)
@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=-10**9, max_value=10**9,
                   places=4),
       st.decimals(allow_nan=False, allow_infinity=False, min_value=-10**9, max_value=10**9,
                   places=4))
def test_arithmetic_equals_decimal_arithmetic(a: Decimal, b: Decimal) -> None:
    f = formula("a + b * 2 - a / 4")
    result = f.evaluate({"a": a, "b": b})
    assert isinstance(result, Decimal)
    assert result == a + b * 2 - a / 4


def test_text_never_multiplies_into_a_huge_string() -> None:
    """`'ab' * 10**9` would be a string repetition in Python; here it is a wrong type."""
    with pytest.raises(RecordError, match="wrong type"):
        ev("name * amount", name="ab", amount=10**9)
    with pytest.raises(RecordError):
        ev("[1, 2] * amount", amount=10**9)
    with pytest.raises(RecordError):
        ev("'%999999999s' % amount", amount=1)


def test_a_wrong_type_fails_the_record_with_a_plain_message() -> None:
    with pytest.raises(RecordError, match="wrong type"):
        ev("amount + 1", amount="12")
    with pytest.raises(RecordError, match="wrong type"):
        ev("amount > 'x'", amount=Decimal(1))


# --- blanks -------------------------------------------------------------------------------------

@pytest.mark.parametrize("source", [
    "x + 1", "1 + x", "x - 1", "x * 2", "x / 2", "x % 2", "-x", "+x", "x > 1", "x >= 1",
    "x < 1", "x <= 1", "1 < x", "not x", "x in ['a']", "x not in ['a']", "x * probability / 100",
    "round(x)", "round(x, 2)", "abs(x)", "min(x)", "max(x)", "coalesce(x)",
])
def test_a_blank_propagates(source: str) -> None:
    assert formula(source).evaluate({"x": None, "probability": Decimal(50)}) is None


def test_a_blank_compares_equal_only_to_none() -> None:
    """'is' is refused with the hint "use '=='": so `== None` must test for a blank."""
    assert ev("x == None", x=None) is True
    assert ev("x != None", x=None) is False
    assert ev("x == none", x=Decimal(0)) is False
    assert ev("x == 0", x=None) is False


def test_a_blank_condition_is_not_true() -> None:
    assert not ev("amount >= 100000 and probability >= 70", amount=None, probability=Decimal(90))
    assert ev("1 if x > 5 else 2", x=None) == Decimal(2)


def test_a_name_the_record_lacks_is_blank() -> None:
    """A field only another workflow sets: known to the rules, absent from this record."""
    f = parse_formula("next_step", ["next_step"])
    assert f.evaluate({}) is None
    assert parse_formula("coalesce(next_step, 'none yet')", ["next_step"]).evaluate(
        {}) == "none yet"


# --- conditions -----------------------------------------------------------------------------------

def test_in_a_literal_list() -> None:
    assert ev("stage in ['Negotiation', 'Proposal']", stage="Proposal") is True
    assert ev("stage in ('Negotiation', 'Proposal')", stage="Closed") is False
    assert ev("stage not in ['Negotiation', 'Proposal']", stage="Closed") is True
    assert ev("amount in [1, 2.5]", amount=Decimal("2.50")) is True


def test_if_else() -> None:
    f = formula("amount * 2 if stage == 'Negotiation' else amount")
    assert f.evaluate({"amount": Decimal(5), "stage": "Negotiation"}) == Decimal(10)
    assert f.evaluate({"amount": Decimal(5), "stage": "Proposal"}) == Decimal(5)


def test_and_or_not_and_constants() -> None:
    assert ev("won and not (amount < 10)", won=True, amount=Decimal(10)) is True
    assert ev("x or y", x=False, y=True) is True
    assert ev("true and True and not false") is True
    assert ev("1 < x < 3", x=Decimal(2)) is True
    assert ev("1 < x < 3", x=Decimal(3)) is False


# --- functions ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "expected"), [
    ("round(2.5)", "3"), ("round(3.5)", "4"), ("round(-2.5)", "-3"), ("round(2.4)", "2"),
    ("round(0.125, 2)", "0.13"), ("round(2.675, 2)", "2.68"), ("round(1.005, 2)", "1.01"),
    ("round(1234, -2)", "1200"), ("round(1250, -2)", "1300"),
])
def test_round_half_up(source: str, expected: str) -> None:
    result = ev(source)
    assert isinstance(result, Decimal)
    assert result == Decimal(expected)


def test_round_keeps_the_places() -> None:
    assert str(ev("round(x, 2)", x=Decimal("2"))) == "2.00"


@pytest.mark.parametrize(("source", "names", "why"), [
    ("round(x)", {"x": "abc"}, "round() needs a number and got 'abc'"),
    ("round(x, 2.5)", {"x": Decimal(1)}, "places must be a whole number"),
    ("round(x, 400)", {"x": Decimal(1)}, "cannot keep 400 decimal places"),
])
def test_round_refuses_what_it_cannot_round(source: str, names: dict[str, Any], why: str) -> None:
    with pytest.raises(RecordError, match=why.replace("(", r"\(").replace(")", r"\)")):
        formula(source).evaluate(names)


def test_min_max_coalesce_abs() -> None:
    assert ev("min(3, x, 1)", x=None) == Decimal(1)
    assert ev("max(3, x, 1)", x=None) == Decimal(3)
    assert ev("max(x, y)", x=None, y=None) is None
    assert ev("min(a, b)", a=dt.date(2026, 1, 2), b=dt.date(2026, 1, 1)) == dt.date(2026, 1, 1)
    assert ev("coalesce(x, '', y, 5)", x=None, y=None) == Decimal(5)
    assert ev("coalesce(x, 0)", x=None) == Decimal(0)
    assert ev("coalesce(x, y)", x=None, y=None) is None
    assert ev("abs(x)", x=Decimal("-3.5")) == Decimal("3.5")
    with pytest.raises(RecordError):
        ev("min('a', 1)")


# --- dates ----------------------------------------------------------------------------------------

def test_date_helpers() -> None:
    today = dt.date(2026, 11, 26)
    assert ev("days_between(today, close_date)", today=today,
              close_date=dt.date(2026, 12, 31)) == 35
    assert ev("days_between(today, close_date)", today=today,
              close_date=dt.date(2026, 11, 1)) == -25
    assert ev("month(close_date)", close_date=dt.date(2026, 2, 3)) == "2026-02"
    assert ev("month(close_date)", close_date=dt.datetime(2026, 2, 3, 23, 59)) == "2026-02"
    assert ev("date('2026-12-01')") == dt.date(2026, 12, 1)
    assert ev("close_date >= date('2026-12-01')", close_date=dt.date(2026, 12, 1)) is True
    assert ev("today + 30", today=today) == dt.date(2026, 12, 26)
    assert ev("today - 26", today=today) == dt.date(2026, 10, 31)
    assert ev("close_date - today", today=today, close_date=dt.date(2026, 12, 1)) == 5


@pytest.mark.parametrize("source", [
    "days_between(today, close_date)", "days_between(close_date, today)", "month(close_date)",
    "business_days_between(today, close_date)", "business_days_between(close_date, today)",
])
def test_a_date_helper_fails_the_record_on_a_blank_date(source: str) -> None:
    with pytest.raises(RecordError, match="needs a date and got an empty value"):
        ev(source, today=dt.date(2026, 11, 26), close_date=None)


def test_a_date_helper_fails_the_record_on_text() -> None:
    with pytest.raises(RecordError, match="needs a date and got '2026-11-26'"):
        ev("month(close_date)", close_date="2026-11-26")


def test_coalesce_chooses_a_default_date() -> None:
    today = dt.date(2026, 11, 26)
    assert ev("days_between(today, coalesce(close_date, today))", today=today,
              close_date=None) == 0


@pytest.mark.parametrize("text", ["2026-13-01", "26/11/2026", "", "tomorrow"])
def test_date_refuses_what_is_not_an_iso_date(text: str) -> None:
    with pytest.raises(RecordError, match="expected 'YYYY-MM-DD'"):
        ev(f"date('{text}')")


def test_date_of_a_blank_fails_the_record() -> None:
    with pytest.raises(RecordError):
        ev("date(x)", x=None)


@pytest.mark.parametrize(("a", "b", "expected"), [
    ((2026, 11, 27), (2026, 11, 30), 1),   # Friday to Monday: the Friday
    ((2026, 11, 28), (2026, 11, 30), 0),   # Saturday to Monday: nothing
    ((2026, 11, 30), (2026, 12, 7), 5),    # a week
    ((2026, 11, 30), (2026, 11, 30), 0),
    ((2026, 11, 30), (2026, 11, 27), -1),  # backwards
    ((2026, 11, 23), (2026, 12, 7), 10),
])
def test_business_days_between(a: tuple[int, int, int], b: tuple[int, int, int],
                               expected: int) -> None:
    assert ev("business_days_between(a, b)", a=dt.date(*a), b=dt.date(*b)) == expected


def _weekdays(a: dt.date, b: dt.date) -> int:
    """The slow, obvious count: Monday-to-Friday days in [a, b), negative backwards."""
    lo, hi, sign = (a, b, 1) if a <= b else (b, a, -1)
    days = (lo + dt.timedelta(days=i) for i in range((hi - lo).days))
    return sign * sum(1 for d in days if d.weekday() < 5)


@settings(max_examples=300, deadline=None)
@given(st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2040, 12, 31)),
       st.integers(min_value=-800, max_value=800))
def test_business_days_between_counts_weekdays(a: dt.date, days: int) -> None:
    b = a + dt.timedelta(days=days)
    assert ev("business_days_between(a, b)", a=a, b=b) == _weekdays(a, b)


# --- errors for one record ------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "names"), [
    ("amount / 0", {"amount": Decimal(5)}),
    ("amount / zero", {"amount": Decimal(5), "zero": Decimal(0)}),
    ("0 / 0", {}),
    ("amount / zero", {"amount": Decimal(0), "zero": 0}),
    ("amount % 0", {"amount": Decimal(5)}),
])
def test_division_by_zero_fails_the_record(source: str, names: dict[str, Any]) -> None:
    with pytest.raises(RecordError, match="division by zero"):
        formula(source).evaluate(names)


def test_a_date_out_of_range_fails_the_record() -> None:
    with pytest.raises(RecordError):
        ev("today + 99999999", today=dt.date(2026, 1, 1))


# --- one evaluator per thread --------------------------------------------------------------------

def test_formulas_evaluate_independently_across_threads() -> None:
    f = formula("amount * 2 + x")
    barrier = threading.Barrier(8)

    def run(i: int) -> list[Decimal]:
        barrier.wait()
        return [f.evaluate({"amount": Decimal(i), "x": Decimal(n)}) for n in range(200)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, range(8)))
    for i, values in enumerate(results):
        assert values == [Decimal(i * 2 + n) for n in range(200)]


def test_one_formula_does_not_see_another_s_names() -> None:
    formula("x + 1").evaluate({"x": Decimal(1)})
    assert formula("x == None").evaluate({}) is True
