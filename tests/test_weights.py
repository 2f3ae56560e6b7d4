"""The table generated from weights (`probability: {min, max, step, weights}`) against a
reference written straight from the SPEC's formula with `fractions.Fraction`:

    score(i of n) = (n - 1 - i) / (n - 1), or 1 for a one-value factor
    p = min + (max - min) * sum(w * score) / sum(w)
    rounded to the nearest multiple of step, ties going up; clamped to [min, max]
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from helpers_core import build, combos, factor_name, make_mapping, value_name
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from connector import files
from connector.core import proof
from connector.core.evaluate import Evaluator
from connector.core.table import DecisionTable

TODAY = dt.date(2031, 5, 17)
SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# --- the reference ------------------------------------------------------------------------------

def ref_score(i: int, n: int) -> Fraction:
    if n == 1:
        return Fraction(1)
    return Fraction(n - 1 - i, n - 1)


def ref_round(x: Fraction, step: Fraction) -> Fraction:
    """The nearest multiple of step; exactly halfway goes up."""
    q = x / step
    below = math.floor(q)
    return (below + 1 if q - below >= Fraction(1, 2) else below) * step


def ref_probability(combo: Sequence[int], sizes: Sequence[int], weights: Sequence[Fraction],
                    lo: Fraction, hi: Fraction, step: Fraction) -> Fraction:
    total = sum(weights, Fraction(0))
    weighted = sum((w * ref_score(i, n) for w, i, n in zip(weights, combo, sizes)), Fraction(0))
    raw = lo + (hi - lo) * weighted / total
    return min(hi, max(lo, ref_round(raw, step)))


def ref_name(value: Fraction) -> str:
    """'p' and the value in plain decimal notation, no trailing zeros: p70, p62.5, p0."""
    if value.denominator == 1:
        return f"p{value.numerator}"
    places = 0
    while (value * 10 ** places).denominator != 1:
        places += 1
    digits = str(abs((value * 10 ** places).numerator)).rjust(places + 1, "0")
    sign = "-" if value < 0 else ""
    return f"p{sign}{digits[:-places]}.{digits[-places:]}"


def test_reference_names() -> None:
    assert [ref_name(Fraction(x)) for x in ("70", "62.5", "0", "100", "0.25", "12.05")] == [
        "p70", "p62.5", "p0", "p100", "p0.25", "p12.05"]


# --- building ----------------------------------------------------------------------------------

def weights_data(sizes: Sequence[int], weights: Sequence[Decimal], lo: Decimal, hi: Decimal,
                 step: Decimal) -> dict[str, object]:
    return {
        "factors": {factor_name(d): {"field": factor_name(d),
                                     "values": [value_name(d, i) for i in range(n)]}
                    for d, n in enumerate(sizes)},
        "probability": {"min": lo, "max": hi, "step": step,
                        "weights": {factor_name(d): w for d, w in enumerate(weights)}},
    }


def weights_mapping(n: int):
    # probability untyped: the evaluator keeps it as computed (a percent field rounds to 0 places)
    return make_mapping([factor_name(d) for d in range(n)] + ["probability", "rule"],
                        writeback=["probability", "rule"])


WEIGHTS = st.one_of(
    st.integers(0, 10).map(Decimal),
    st.sampled_from(["0", "0.5", "2.5", "1.25", "0.1", "3.3", "7"]).map(Decimal),
)
STEPS = st.sampled_from(["1", "2.5", "5", "10", "0.5", "3", "7.5", "20", "0.25", "33", "100"]
                        ).map(Decimal)
BOUNDS = st.one_of(st.integers(0, 100).map(Decimal),
                   st.sampled_from(["12.5", "0.5", "33.3", "99.9", "2.25"]).map(Decimal))


@st.composite
def weight_tables(draw: st.DrawFn):
    sizes = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    weights = draw(st.lists(WEIGHTS, min_size=len(sizes), max_size=len(sizes)))
    assume(sum(weights) > 0)  # all zero: the formula divides by zero (see the test below)
    lo, hi = sorted(draw(st.lists(BOUNDS, min_size=2, max_size=2)))
    return sizes, weights, lo, hi, draw(STEPS)


# --- the properties ----------------------------------------------------------------------------

@SETTINGS
@given(weight_tables())
def test_every_combination_gets_the_reference_probability(table) -> None:
    sizes, weights, lo, hi, step = table
    rules = build(weights_data(sizes, weights, lo, hi, step), weights_mapping(len(sizes)))
    fw = [Fraction(w) for w in weights]
    dtable = DecisionTable(rules)
    evaluator = Evaluator(rules)
    reached = set()
    for combo in combos(sizes):
        expected = ref_probability(combo, sizes, fw, Fraction(lo), Fraction(hi), Fraction(step))
        reached.add(expected)
        (workflow,) = dtable.workflows_of(combo)
        assert Fraction(workflow.probability) == expected, (combo, workflow.name)
        assert workflow.name == ref_name(expected)
        record = {factor_name(d): value_name(d, i) for d, i in enumerate(combo)}
        out = evaluator.evaluate(record, TODAY)
        assert out.rule == ref_name(expected)
        assert Fraction(out.values["probability"]) == expected
    assert {w.name for w in rules.workflows} == {ref_name(v) for v in reached}
    assert len(rules.workflows) == len(reached), "one workflow per value"
    assert all(w.generated for w in rules.workflows)


@SETTINGS
@given(weight_tables())
def test_generated_tables_prove_clean(table) -> None:
    """Non-negative weights: nothing to report, not even a monotonicity warning."""
    sizes, weights, lo, hi, step = table
    rules = build(weights_data(sizes, weights, lo, hi, step), weights_mapping(len(sizes)))
    assert proof.prove(rules) == []


@SETTINGS
@given(weight_tables(), st.data())
def test_a_negative_weight_that_breaks_monotonicity_is_warned(table, data) -> None:
    sizes, weights, lo, hi, step = table
    d = data.draw(st.integers(0, len(sizes) - 1))
    weights = list(weights)
    weights[d] = -data.draw(st.sampled_from([Decimal(1), Decimal("0.5"), Decimal(4)]))
    assume(sum(weights) > 0)
    rules = build(weights_data(sizes, weights, lo, hi, step), weights_mapping(len(sizes)))
    fw = [Fraction(w) for w in weights]

    def p(c: tuple[int, ...]) -> Fraction:
        return ref_probability(c, sizes, fw, Fraction(lo), Fraction(hi), Fraction(step))

    broken = {e for c in combos(sizes) for e in range(len(sizes))
              if c[e] + 1 < sizes[e] and p(c) < p(c[:e] + (c[e] + 1,) + c[e + 1:])}
    warned = {f.message.split("'")[1] for f in proof.prove(rules) if f.kind == "monotonicity"}
    assert {factor_name(e) for e in broken} <= warned


@pytest.mark.parametrize("sizes, lo, hi", [([1, 3], 10, 90), ([2, 3], 50, 50)])
def test_no_monotonicity_warning_without_a_break(sizes, lo, hi) -> None:
    weights = [Decimal(-1), Decimal(5)]
    rules = build(weights_data(sizes, weights, Decimal(lo), Decimal(hi), Decimal(10)),
                  weights_mapping(len(sizes)))
    table = DecisionTable(rules)
    for c in combos(sizes):
        for e in range(len(sizes)):
            if c[e] + 1 < sizes[e]:
                worse = c[:e] + (c[e] + 1,) + c[e + 1:]
                assert (table.workflows_of(c)[0].probability
                        >= table.workflows_of(worse)[0].probability)
    assert [f for f in proof.prove(rules) if f.kind == "monotonicity"] == []


def test_all_zero_weights_still_give_one_workflow_per_combination() -> None:
    """The SPEC's formula divides by sum(w) = 0 here; whatever the answer, the table must stay
    exclusive and complete and inside [min, max]."""
    sizes = [2, 3]
    rules = build(weights_data(sizes, [Decimal(0), Decimal(0)], Decimal(20), Decimal(80),
                               Decimal(10)), weights_mapping(2))
    table = DecisionTable(rules)
    for c in combos(sizes):
        (w,) = table.workflows_of(c)
        assert Decimal(20) <= w.probability <= Decimal(80)


# --- explicit cases ----------------------------------------------------------------------------

def probabilities_of(sizes, weights, lo, hi, step) -> dict[tuple[int, ...], Decimal]:
    rules = build(weights_data(sizes, [Decimal(w) for w in weights], Decimal(lo), Decimal(hi),
                               Decimal(step)), weights_mapping(len(sizes)))
    table = DecisionTable(rules)
    return {c: table.workflows_of(c)[0].probability for c in combos(sizes)}


@pytest.mark.parametrize("sizes, weights, lo, hi, step, combo, expected", [
    # one factor of 3 values: the middle scores 1/2, raw 50, exactly between 0 and 100 -> 100
    ([3], [1], 0, 100, 100, (1,), "100"),
    # two factors of 2 values, equal weights: raw 25 with step 10 -> 30 (not 20)
    ([2, 2], [1, 1], 0, 50, 10, (0, 1), "30"),
    ([2, 2], [1, 1], 0, 50, 10, (1, 0), "30"),
    # raw 11.25 with step 2.5 (q = 4.5) -> 12.5
    ([2], [1], 0, "22.5", "2.5", (0,), "22.5"),
    ([3], [1], 0, "22.5", "2.5", (1,), "12.5"),
    # raw 35 = 7 * 5 with step 10 -> 40; raw 45 with step 10 -> 50
    ([3], [2], 10, 60, 10, (1,), "40"),
    ([3], [1], 20, 70, 10, (1,), "50"),
    # away from halfway: raw 10 + 80 * 1/3 = 36.67 -> 40; raw 100 * 5/6 = 83.33 -> 80
    ([4], [1], 10, 90, 10, (2,), "40"),
    ([7], [1], 0, 100, 10, (1,), "80"),
    # non-integer weights: 0.5 * 1 + 2.5 * 1/2 = 1.75 of 3 -> 10 + 80 * 7/12 = 56.67 -> 60
    ([2, 3], ["0.5", "2.5"], 10, 90, 10, (0, 1), "60"),
])
def test_ties_and_rounding(sizes, weights, lo, hi, step, combo, expected) -> None:
    assert probabilities_of(sizes, weights, lo, hi, step)[combo] == Decimal(expected)


def test_rounding_then_clamping() -> None:
    """min 12 and max 88 are not multiples of 5: the best and worst values round outside the
    range and are clamped back to it."""
    p = probabilities_of([3], [1], 12, 88, 5)
    assert p == {(0,): Decimal(88), (1,): Decimal(50), (2,): Decimal(12)}


def test_one_value_factor_scores_one() -> None:
    # f0 (one value, weight 3) always scores 1; f1 (2 values, weight 1) scores 1 or 0
    p = probabilities_of([1, 2], [3, 1], 0, 100, 1)
    assert p == {(0, 0): Decimal(100), (0, 1): Decimal(75)}


def test_generated_names() -> None:
    sizes = [3]
    rules = build(weights_data(sizes, [Decimal(1)], Decimal(0), Decimal(5), Decimal("2.5")),
                  weights_mapping(1))
    assert sorted(w.name for w in rules.workflows) == ["p0", "p2.5", "p5"]


SPEC_RULES = """\
factors:
  stage:
    field: stage
    values: [Negotiation, Proposal, Qualification, Prospecting]   # best first
  proposal:
    field: proposal_type
    values: [Firm, Budgetary]
  size:
    field: amount
    bands: {large: 100000, medium: 20000, small: 0}
closed:
  field: stage
  won: [Closed Won]
  lost: [Closed Lost, Cancelled]
probability:
  min: 10
  max: 90
  step: 10
  weights: {stage: 5, proposal: 2, size: 3}
"""

SPEC_MAPPING = """\
crm: salesforce
object: Opportunity
id: Id
modified: SystemModstamp
fields:
  stage: StageName
  amount: Amount
  proposal_type: Proposal_Type__c
  probability: Probability
  rule: Probability_Rule__c
writeback: [probability, rule]
types: {amount: money, probability: percent}
"""


@pytest.fixture
def spec_rules(tmp_path: Path):
    (tmp_path / "rules").mkdir()
    (tmp_path / "mappings").mkdir()
    (tmp_path / "rules" / "probability.yaml").write_text(SPEC_RULES)
    (tmp_path / "mappings" / "salesforce.yaml").write_text(SPEC_MAPPING)
    loaded = files.load(tmp_path / "rules", tmp_path / "mappings")
    assert loaded.ok, [str(f) for f in loaded.findings]
    return loaded.rules


@pytest.mark.parametrize("stage, proposal, amount, expected", [
    ("Negotiation", "Firm", 250000, 90),     # everything best: 10 + 80 = 90
    ("Prospecting", "Budgetary", 10, 10),    # everything worst
    # 5*2/3 + 2 + 3 = 25/3 of 10 -> 10 + 80 * 5/6 = 76.67 -> 80
    ("Proposal", "Firm", 100000, 80),
    # 5*1/3 + 0 + 3*1/2 = 19/6 of 10 -> 10 + 80 * 19/60 = 35.33 -> 40 (above the halfway 35)
    ("Qualification", "Budgetary", 20000, 40),
    # 5 + 0 + 0 = 5 of 10 -> 10 + 40 = 50
    ("Negotiation", "Budgetary", 19999, 50),
    # 0 + 2 + 3 = 5 of 10 -> 50
    ("Prospecting", "Firm", 100000, 50),
])
def test_spec_example(spec_rules, stage, proposal, amount, expected) -> None:
    stages = ["Negotiation", "Proposal", "Qualification", "Prospecting"]
    combo = (stages.index(stage), ["Firm", "Budgetary"].index(proposal),
             0 if amount >= 100000 else 1 if amount >= 20000 else 2)
    reference = ref_probability(combo, (4, 2, 3), [Fraction(5), Fraction(2), Fraction(3)],
                                Fraction(10), Fraction(90), Fraction(10))
    assert reference == expected
    out = Evaluator(spec_rules).evaluate(
        {"id": "006A", "stage": stage, "proposal_type": proposal, "amount": Decimal(amount),
         "probability": None, "rule": None}, TODAY)
    assert out.values["probability"] == expected
    assert out.rule == f"p{expected}"
    assert out.changes == {"probability": expected, "rule": f"p{expected}"}
    assert proof.prove(spec_rules) == []


def test_spec_example_closed_deals_are_outside_the_weights(spec_rules) -> None:
    ev = Evaluator(spec_rules)
    won = ev.evaluate({"stage": "Closed Won", "amount": Decimal(5)}, TODAY)
    lost = ev.evaluate({"stage": "cancelled", "amount": None}, TODAY)
    assert (won.rule, won.values["probability"]) == ("closed-won", 100)
    assert (lost.rule, lost.values["probability"]) == ("closed-lost", 0)
