"""Unit tests of `Evaluator.evaluate`: one record in, one Outcome out."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from helpers_core import build, make_mapping
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connector.core.evaluate import ActionDue, Evaluator, evaluate
from connector.errors import RecordError

TODAY = dt.date(2031, 5, 17)

FIELDS = ["name", "stage", "amount", "close_date", "proposal_type", "owner_email",
          "probability", "weighted_amount", "rule", "next_step", "status", "label"]
MAPPING = make_mapping(
    FIELDS, writeback=["probability", "weighted_amount", "rule", "next_step"],
    types={"amount": "money", "close_date": "date", "probability": "percent",
           "weighted_amount": "money"})

ACTIONS = {
    "notify-director": {"email": {"to": ["{{ owner_email }}"], "subject": "Approve {{ name }}",
                                  "body": "Please approve."}},
    "push": {"http": {"url": "https://example.com/hook"}},
    "erp-order": {"erp": "sales_order"},
}

# Exclusive and complete: Negotiation x Firm -> p90, Negotiation x Budgetary -> p60,
# Proposal x large/medium -> p60, Proposal x small -> p40, Prospecting -> p10.
RULES = {
    "factors": {
        "stage": {"field": "stage", "values": ["Negotiation", "Proposal", "Prospecting"]},
        "proposal": {"field": "proposal_type", "values": ["Firm", "Budgetary"],
                     "empty": "Budgetary"},
        # best first, but not listed by bound
        "size": {"field": "amount", "bands": {"large": 100000, "small": 1000, "medium": 20000}},
    },
    "closed": {"field": "stage", "won": ["Closed Won"], "lost": ["Closed Lost", "Cancelled"]},
    "workflows": [
        {"name": "p90", "when": {"stage": "Negotiation", "proposal": "Firm"},
         "set": {"probability": 90, "next_step": "Send the contract"},
         "actions": ["notify-director"]},
        {"name": "p60", "when": {"any": [{"stage": "Negotiation", "proposal": "Budgetary"},
                                         {"stage": "Proposal", "size": ["large", "medium"]}]},
         "set": {"probability": 60}},
        {"name": "p40", "when": {"stage": "Proposal", "size": "small"},
         "set": {"probability": "= 30 + 10", "next_step": "= 'Call ' + name"}},
        {"name": "p10", "when": {"stage": "Prospecting"}, "set": {"probability": 10}},
    ],
    # declared in reverse dependency order: label reads status, status reads won and lost
    "computed": {
        "label": "rule + ':' + status",
        "status": "'won' if won else ('lost' if lost else 'open')",
        "weighted_amount": "amount * probability / 100",
        "days_to_close": "days_between(today, close_date)",
    },
    "actions": ACTIONS,
    "triggers": [
        {"name": "big", "when": "amount >= 100000 and probability >= 60", "do": ["push"]},
        {"when": "won", "do": ["erp-order"]},
        {"name": "lost-rule", "when": "rule == 'closed-lost'", "do": ["push"]},
    ],
}


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    return Evaluator(build(RULES, MAPPING))


def record(**values: object) -> dict[str, object]:
    """A record as `Mapping.read` gives it: every canonical field, blank when not given."""
    out: dict[str, object] = {"id": "006XYZ", **{f: None for f in FIELDS}}
    out.update({"name": "Acme", "stage": "Negotiation", "amount": Decimal(50000),
                "close_date": dt.date(2031, 6, 30), "proposal_type": "Firm"})
    out.update(values)
    return out


# --- closed deals -------------------------------------------------------------------------------

@pytest.mark.parametrize("stage", ["Closed Won", "closed won", "  CLOSED WON "])
def test_closed_won_is_100_whatever_the_workflows_say(evaluator, stage) -> None:
    # Its other values would fit p90 (or nothing: amount is below every band)
    for amount in (Decimal(500000), Decimal(5)):
        out = evaluator.evaluate(record(stage=stage, amount=amount, probability=90), TODAY)
        assert out.rule == "closed-won"
        assert out.values["probability"] == 100
        assert out.won and not out.lost
        assert out.factors == {}
        assert out.changes["probability"] == 100
        assert out.changes["rule"] == "closed-won"
        assert ActionDue("notify-director", "workflow:p90") not in out.due
        assert ActionDue("erp-order", "trigger:trigger-2") in out.due


@pytest.mark.parametrize("stage", ["Closed Lost", "Cancelled", "cancelled"])
def test_closed_lost_is_0(evaluator, stage) -> None:
    out = evaluator.evaluate(record(stage=stage, proposal_type="Nonsense", probability=60),
                             TODAY)
    assert out.rule == "closed-lost"
    assert out.values["probability"] == 0
    assert out.lost and not out.won
    assert out.changes["probability"] == 0
    assert out.values["weighted_amount"] == Decimal(0)
    assert out.due == (ActionDue("push", "trigger:lost-rule"),)


def test_closed_deal_already_written_changes_nothing(evaluator) -> None:
    out = evaluator.evaluate(record(stage="Closed Won", amount=Decimal("1234.50"),
                                    probability="100", weighted_amount="1234.5",
                                    rule="closed-won"), TODAY)
    assert out.changes == {}


# --- bands ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("amount, band", [
    (Decimal(100000), "large"),            # lower bound inclusive
    (Decimal("99999.99"), "medium"),
    (Decimal(20000), "medium"),
    (Decimal("19999.99"), "small"),
    (Decimal(1000), "small"),
    (Decimal(10 ** 9), "large"),
    (250000, "large"),                     # an int works as well as a Decimal
])
def test_bands_lower_bound_inclusive_in_any_listed_order(evaluator, amount, band) -> None:
    out = evaluator.evaluate(record(stage="Proposal", amount=amount), TODAY)
    assert out.factors["size"] == band
    assert out.rule == ("p40" if band == "small" else "p60")


@pytest.mark.parametrize("amount", [Decimal("999.99"), Decimal(0), Decimal(-5)])
def test_below_every_band_fails_the_record(evaluator, amount) -> None:
    with pytest.raises(RecordError, match=r"below every band of factor 'size'.*1000"):
        evaluator.evaluate(record(stage="Proposal", amount=amount), TODAY)


@pytest.mark.parametrize("amount", [None, "", "lots"])
def test_a_band_needs_a_number(evaluator, amount) -> None:
    with pytest.raises(RecordError, match="amount"):
        evaluator.evaluate(record(stage="Proposal", amount=amount), TODAY)


# --- factor values --------------------------------------------------------------------------------

@pytest.mark.parametrize("blank", [None, ""])
def test_empty_uses_the_factors_empty_value(evaluator, blank) -> None:
    out = evaluator.evaluate(record(proposal_type=blank), TODAY)
    assert out.factors["proposal"] == "Budgetary"
    assert out.rule == "p60"


def test_factor_values_match_without_regard_to_case_and_blanks(evaluator) -> None:
    out = evaluator.evaluate(record(stage=" negotiation ", proposal_type="FIRM"), TODAY)
    assert out.rule == "p90"
    assert out.factors == {"stage": "Negotiation", "proposal": "Firm", "size": "medium"}
    assert out.values["proposal_type"] == "FIRM"  # the record's own value is kept


def test_an_unknown_value_fails_that_record_alone(evaluator) -> None:
    records = [record(id="1"), record(id="2", stage="Negociation"),
               record(id="3", stage="Prospecting"), record(id="4", stage="Negociation")]
    outcomes, errors = {}, {}
    for r in records:
        try:
            outcomes[r["id"]] = evaluator.evaluate(r, TODAY).rule
        except RecordError as exc:
            errors[r["id"]] = str(exc)
    assert outcomes == {"1": "p90", "3": "p10"}
    assert set(errors) == {"2", "4"}
    message = errors["2"]
    assert "Negociation" in message and "stage" in message
    assert "did you mean 'Negotiation'" in message
    assert "Negotiation, Proposal, Prospecting" in message
    # the evaluator remembers combinations: a bad record must not spoil the next good one
    assert evaluator.evaluate(record(stage="Negotiation"), TODAY).rule == "p90"


def test_a_blank_value_of_a_factor_without_empty_fails(evaluator) -> None:
    with pytest.raises(RecordError, match="'stage' is empty and factor 'stage' needs it"):
        evaluator.evaluate(record(stage=None), TODAY)


# --- set: literals and formulas -------------------------------------------------------------------

def test_set_literals(evaluator) -> None:
    out = evaluator.evaluate(record(), TODAY)
    assert out.rule == "p90"
    assert out.values["probability"] == 90
    assert out.values["next_step"] == "Send the contract"
    assert out.changes["next_step"] == "Send the contract"


def test_set_formulas(evaluator) -> None:
    out = evaluator.evaluate(record(name="Globex", stage="Proposal", amount=Decimal(1500)),
                             TODAY)
    assert out.rule == "p40"
    assert out.values["probability"] == 40
    assert out.values["next_step"] == "Call Globex"


def test_a_workflow_that_does_not_set_a_field_leaves_it(evaluator) -> None:
    out = evaluator.evaluate(record(stage="Prospecting", next_step="Qualify the lead"), TODAY)
    assert out.values["next_step"] == "Qualify the lead"
    assert "next_step" not in out.changes


# --- computed fields ----------------------------------------------------------------------------

@pytest.mark.parametrize("stage, rule, status", [
    ("Negotiation", "p90", "open"), ("Closed Won", "closed-won", "won"),
    ("Cancelled", "closed-lost", "lost")])
def test_won_lost_rule_in_formulas_and_reverse_declared_order(evaluator, stage, rule,
                                                              status) -> None:
    out = evaluator.evaluate(record(stage=stage), TODAY)
    assert out.values["status"] == status
    assert out.values["label"] == f"{rule}:{status}"
    assert out.values["won"] is (status == "won")
    assert out.values["lost"] is (status == "lost")
    assert "status" not in out.changes and "label" not in out.changes  # not writeback


def test_a_chain_of_computed_fields_declared_backwards() -> None:
    rules = build({
        "factors": {"stage": {"field": "stage", "values": ["A"]}},
        "workflows": [{"name": "p50", "when": {}, "set": {"probability": 50}}],
        "computed": {"d": "c + probability", "c": "b * 2", "b": "a + 1", "a": "amount / 1000"},
    }, MAPPING)
    out = Evaluator(rules).evaluate(record(stage="A", amount=Decimal(4000)), TODAY)
    assert [out.values[k] for k in "abcd"] == [4, 5, 10, 60]


def test_a_factor_may_read_a_computed_field() -> None:
    """A computed field a factor reads is evaluated before the workflow is chosen."""
    rules = build({
        "factors": {"tier": {"field": "amount_k", "bands": {"big": 100, "small": 0}}},
        "workflows": [{"name": "p80", "when": {"tier": "big"}, "set": {"probability": 80}},
                      {"name": "p20", "when": {"tier": "small"}, "set": {"probability": 20}}],
        "computed": {"weighted_amount": "amount * probability / 100",
                     "amount_k": "amount_raw_k", "amount_raw_k": "amount / 1000"},
    }, MAPPING)
    ev = Evaluator(rules)
    big = ev.evaluate(record(amount=Decimal(150000)), TODAY)
    small = ev.evaluate(record(amount=Decimal(99999)), TODAY)
    assert (big.rule, big.values["weighted_amount"]) == ("p80", Decimal("120000.00"))
    assert (small.rule, small.values["weighted_amount"]) == ("p20", Decimal("19999.80"))


# --- money and changes ----------------------------------------------------------------------------

def test_money_is_decimal_from_the_crm_to_the_write(evaluator) -> None:
    typed = MAPPING.read({"Id": "006A", "name": "Acme", "stage": "Proposal",
                          "amount": "1,234.56", "proposal_type": "Firm",
                          "close_date": "2031-06-30"})
    assert typed["amount"] == Decimal("1234.56")
    out = evaluator.evaluate(typed, TODAY)
    assert out.rule == "p40"
    weighted = out.values["weighted_amount"]
    assert type(weighted) is Decimal and weighted == Decimal("493.82")  # 493.824 rounded
    assert out.changes["weighted_amount"] == Decimal("493.82")
    assert not any(isinstance(v, float) for v in out.values.values())


def test_money_rounds_half_up_to_two_places(evaluator) -> None:
    # 60 % of 21234.575 = 12740.745 -> 12740.75 (half up, as Salesforce does)
    out = evaluator.evaluate(record(stage="Proposal", amount=Decimal("21234.575")), TODAY)
    assert out.rule == "p60"
    assert out.values["weighted_amount"] == Decimal("12740.75")  # 12740.745


@pytest.mark.parametrize("old, changed", [
    (60, False), ("60", False), (Decimal("60.0"), False), ("60.00", False), ("60%", False),
    (None, True), ("", True), (50, True), (Decimal("60.4"), True), ("sixty", True),
])
def test_a_change_only_when_the_value_differs(evaluator, old, changed) -> None:
    out = evaluator.evaluate(record(stage="Proposal", amount=Decimal(30000), probability=old),
                             TODAY)
    assert out.rule == "p60"
    assert ("probability" in out.changes) is changed
    if changed:
        assert out.changes["probability"] == 60


@pytest.mark.parametrize("old, new, changed", [
    (None, "", False), ("", "", False), (None, "Call back", True), ("", "Call back", True),
    ("Call back", "", True), ("Call back", "Call back", False), ("call back", "Call back", True),
])
def test_blank_over_blank_is_no_change(old, new, changed) -> None:
    # a text writeback field a formula sets to '' (here the record's name, blank): over a
    # blank (None, as read from an empty cell) it is no change; the fast path and the
    # reference interpreter agree
    rules = build({**RULES, "workflows": [
        {**w, "set": {"probability": 10, "next_step": "= name"}} if w["name"] == "p10" else w
        for w in RULES["workflows"]]}, MAPPING)
    values = record(stage="Prospecting", name=new, next_step=old)
    for out in (Evaluator(rules).evaluate(values, TODAY), evaluate(rules, values, TODAY)):
        assert out.rule == "p10"
        assert ("next_step" in out.changes) is changed, out.changes


@pytest.mark.parametrize("old, changed", [
    (Decimal("18000.00"), False), ("18000", False), (Decimal(18000), False),
    (Decimal("18000.01"), True), (None, True),
])
def test_money_compares_at_the_fields_scale(evaluator, old, changed) -> None:
    # 60 % of 30000.006 = 18000.0036 -> 18000.00 on write
    out = evaluator.evaluate(record(stage="Proposal", amount=Decimal("30000.006"), rule="p60",
                                    probability=60, weighted_amount=old), TODAY)
    assert ("weighted_amount" in out.changes) is changed
    assert out.values["weighted_amount"] == Decimal("18000.00")


def test_nothing_changes_when_everything_is_already_written(evaluator) -> None:
    out = evaluator.evaluate(record(probability="90", weighted_amount="45000.00", rule="p90",
                                    next_step="Send the contract"), TODAY)
    assert out.rule == "p90"
    assert out.changes == {}


def test_only_writeback_fields_change(evaluator) -> None:
    out = evaluator.evaluate(record(status="stale", label="stale"), TODAY)
    assert set(out.changes) <= set(MAPPING.writeback)
    assert out.changes == {"probability": 90, "weighted_amount": Decimal("45000.00"),
                           "rule": "p90", "next_step": "Send the contract"}


def test_percent_is_written_at_its_scale() -> None:
    rules = build({
        "factors": {"stage": {"field": "stage", "values": ["A"]}},
        "workflows": [{"name": "half", "when": {}, "set": {"probability": "= 125 / 2"}}],
    }, MAPPING)
    ev = Evaluator(rules)
    out = ev.evaluate(record(stage="A", probability=63), TODAY)
    assert out.values["probability"] == 63  # 62.5 rounded half up to 0 places
    assert out.changes == {"rule": "half"}
    assert ev.evaluate(record(stage="A", probability=62), TODAY).changes["probability"] == 63


# --- actions --------------------------------------------------------------------------------------

def test_actions_due_from_the_workflow(evaluator) -> None:
    out = evaluator.evaluate(record(), TODAY)
    assert out.due == (ActionDue("notify-director", "workflow:p90"),)


def test_actions_due_from_triggers(evaluator) -> None:
    out = evaluator.evaluate(record(amount=Decimal(100000)), TODAY)
    assert out.due == (ActionDue("notify-director", "workflow:p90"),
                       ActionDue("push", "trigger:big"))
    big_proposal = evaluator.evaluate(record(stage="Proposal", amount=Decimal(100000)), TODAY)
    assert big_proposal.due == (ActionDue("push", "trigger:big"),)


def test_nothing_due_when_no_condition_holds(evaluator) -> None:
    out = evaluator.evaluate(record(stage="Prospecting", amount=Decimal(500000)), TODAY)
    assert out.rule == "p10"
    assert out.due == ()


# --- today ------------------------------------------------------------------------------------

@pytest.mark.parametrize("today, days", [
    (dt.date(2001, 1, 1), 59), (dt.date(2001, 1, 31), 29), (dt.date(2001, 4, 1), -31)])
def test_today_is_given_in(evaluator, today, days) -> None:
    out = evaluator.evaluate(record(close_date=dt.date(2001, 3, 1)), today)
    assert out.values["today"] == today
    assert out.values["days_to_close"] == days


def test_the_record_given_in_is_not_modified(evaluator) -> None:
    r = record(stage="Proposal", amount=Decimal(1500), probability=10)
    before = dict(r)
    evaluator.evaluate(r, TODAY)
    assert r == before


# --- names a record may lack ---------------------------------------------------------------------

ABSENT_NAME_CASES = {
    # p10 does not set 'memo', which p90 sets and a computed field reads
    "set-by-another-workflow": ("B", {"computed": {"memo_text": "coalesce(memo, '-')"}},
                                lambda out: out.values["memo_text"] == "-"),
    # a closed deal has no factor values, yet a trigger may read a factor's name
    "factor-name-on-a-closed-deal": ("W", {"actions": {"a": {"erp": "sales_order"}},
                                           "triggers": [{"name": "t", "when": "size == 'large'",
                                                         "do": ["a"]}]},
                                     lambda out: out.due == ()),
}


@pytest.mark.parametrize("case", sorted(ABSENT_NAME_CASES))
def test_a_name_absent_from_the_record_is_blank(case) -> None:
    """SPEC: a missing value propagates as empty (not a crash of the whole run)."""
    stage, extra, check = ABSENT_NAME_CASES[case]
    rules = build({
        "factors": {"stage": {"field": "stage", "values": ["A", "B"]},
                    "size": {"field": "amount", "bands": {"large": 100, "small": 0}}},
        "closed": {"field": "stage", "won": ["W"], "lost": ["L"]},
        "workflows": [{"name": "p90", "when": {"stage": "A"},
                       "set": {"probability": 90, "memo": "hi"}},
                      {"name": "p10", "when": {"stage": "B"}, "set": {"probability": 10}}],
        **extra,
    }, MAPPING)
    out = Evaluator(rules).evaluate(record(stage=stage, amount=Decimal(500)), TODAY)
    assert check(out)


@pytest.mark.parametrize("stage, kind, rule", [
    ("Negotiation", "open", "p50"),
    ("W", "closed", "closed-won"),
])
def test_a_factor_on_a_computed_field_that_reads_won(stage, kind, rule) -> None:
    rules = build({
        "factors": {"kind": {"field": "kind", "values": ["open", "closed"]}},
        "closed": {"field": "stage", "won": ["W"], "lost": ["L"]},
        "workflows": [{"name": "p50", "when": {"kind": "open"}, "set": {"probability": 50}},
                      {"name": "p0", "when": {"kind": "closed"}, "set": {"probability": 0}}],
        "computed": {"kind": "'closed' if won or lost else 'open'"},
    }, MAPPING)
    out = Evaluator(rules).evaluate(record(stage=stage), TODAY)
    assert out.rule == rule
    assert out.values["kind"] == kind


# --- one record's answer does not depend on the records before it --------------------------------

NUMERIC = {
    "factors": {"n": {"field": "n", "values": [1, 2, 3]},
                "kind": {"field": "proposal_type", "values": ["Firm", "Budgetary"]}},
    "closed": {"field": "stage", "won": ["Closed Won"], "lost": ["Closed Lost"]},
    "workflows": [{"name": "p90", "when": {"n": 1}, "set": {"probability": 90}},
                  {"name": "p10", "when": {"n": [2, 3]}, "set": {"probability": 10}}],
}
NUMERIC_MAPPING = make_mapping(["n", "stage", "proposal_type", "probability", "rule"],
                               writeback=["probability", "rule"])
POOL = [Decimal(2), Decimal("2.0"), 2, True, 1, False, 0, Decimal(1), "2", " 1 ", "x", "FIRM",
        None, "", "Closed Won", "closed won"]


def answer(ev: Evaluator, rec: dict[str, object]) -> str:
    try:
        return ev.evaluate(rec, TODAY).rule
    except RecordError as exc:
        return f"error: {exc}"


@settings(max_examples=200, deadline=None)
@example(values=[(Decimal("2.0"), "Firm", None), (Decimal(2), "Firm", None)])
@example(values=[(True, "Firm", None), (1, "Firm", None)])
@given(st.lists(st.tuples(st.sampled_from(POOL), st.sampled_from(POOL), st.sampled_from(POOL)),
                min_size=1, max_size=6))
def test_an_answer_does_not_depend_on_earlier_records(values) -> None:
    rules = build(NUMERIC, NUMERIC_MAPPING)
    shared = Evaluator(rules)
    for n, kind, stage in values:
        rec = {"n": n, "proposal_type": kind, "stage": stage}
        assert answer(shared, rec) == answer(Evaluator(rules), rec), rec


@pytest.mark.parametrize("field", ["n", "stage"])
def test_an_unhashable_value_fails_that_record_alone(field) -> None:
    ev = Evaluator(build(NUMERIC, NUMERIC_MAPPING))
    rec: dict[str, object] = {"n": 1, "proposal_type": "Firm", "stage": None}
    rec[field] = ["1"]
    try:
        out = ev.evaluate(rec, TODAY)
    except RecordError:
        return
    assert out.rule in ("p90", "p10")


# --- the fast path answers as the plain interpreter ---------------------------------------------
# `Evaluator` takes records along routes prepared once, with formulas compiled and a route's
# formulas, rounding, changes and triggers written out as one function (connector/core/_fast.py).
# `evaluate` states the same rules plainly. On random rule sets (picklist, banded and computed
# factors, a closed state or none, literal and formula sets, triggers the route settles or the
# record does, escalations, a weights table) and random records, both give the same outcome, or
# the same failure, record after record.

DIFF_FIELDS = ["name", "stage", "amount", "a", "b", "d", "probability", "weighted_amount",
               "rule", "next_step", "score", "explanation"]
# formulas of the record's own fields: some fail on some records (a blank, text, zero, a date)
SET_FORMULAS = ["amount * 2 / 100", "a / b", "round(a * 1.005, 2)", "coalesce(a, 0) + b",
                "a if b > 0 else amount", "'Call ' + name", "days_between(today, d)", "a % b",
                "-a", "min(a, b)", "date(name)", "month(d)", "a + name"]
CONDITIONS = ["amount >= 100000 and probability >= 60", "won", "lost", "rule == 'closed-lost'",
              "probability >= 60", "probability < 50", "a > b", "score > 1", "date(name) > today",
              "days_between(d, today) > 3", "next_step == 'Call'", "status == 'open'"]
TIER = ["'high' if amount >= 50000 else 'low'", "'high' if won or a > 1 else 'low'"]
DIFF_POOLS = {
    "name": [None, "", "Acme", "2031-01-01", "Call"],
    "stage": ["Negotiation", " proposal ", "Prospecting", "Proposal", "Closed Won",
              "closed lost", "", None, "Qualification", 3],
    "amount": [None, Decimal(0), Decimal("19999.995"), Decimal(20000), Decimal(150000), 50000,
               Decimal(-1), "x", True],
    "a": [None, Decimal(0), Decimal("2.5"), 7, Decimal("1E+2"), "x"],
    "b": [None, 0, 3, Decimal("-1.5"), ""],
    "d": [None, dt.date(2031, 5, 1), dt.date(2031, 5, 16), dt.datetime(2031, 4, 1, 9), "x"],
    "probability": [None, "", 60, Decimal("60.0"), "90", Decimal(10)],
    "weighted_amount": [None, Decimal("1000.00"), "0"],
    "rule": [None, "p90", "closed-won"],
    "next_step": [None, "", "Call Acme", "Send the contract"],
    "score": [None, 2],
    "explanation": [None, "old"],
}


@st.composite
def rule_sets(draw: st.DrawFn) -> dict[str, object]:
    stages = ["Negotiation", "Proposal", "Prospecting"]
    factors: dict[str, object] = {"stage": {"field": "stage", "values": stages}}
    if draw(st.booleans()):
        factors["stage"]["empty"] = "Prospecting"  # type: ignore[index]
    computed = {"weighted_amount": "amount * probability / 100",
                "status": "'won' if won else ('lost' if lost else 'open')"}
    if draw(st.booleans()):
        factors["size"] = {"field": "amount", "bands": {"large": 100000, "medium": 20000,
                                                         "small": 0}}
        if draw(st.booleans()):
            factors["size"]["empty"] = "small"  # type: ignore[index]
    if draw(st.booleans()):  # a factor on a computed field: computed before the workflow
        computed["tier"] = draw(st.sampled_from(TIER))
        factors["tier"] = {"field": "tier", "values": ["high", "low"], "empty": "low"}
    if draw(st.booleans()):
        computed["score"] = draw(st.sampled_from(SET_FORMULAS))
    data: dict[str, object] = {"factors": factors, "computed": computed}
    if draw(st.booleans()):
        data["closed"] = {"field": "stage", "won": ["Closed Won"], "lost": ["Closed Lost"]}
    literal_or_formula = st.one_of(st.sampled_from([10, 40, 60, 90, 12.5]),
                                   st.sampled_from(SET_FORMULAS).map(lambda f: f"= {f}"))
    if draw(st.booleans()) and "size" not in factors and "tier" not in factors:
        data["probability"] = {"min": 5, "max": 95, "step": 5, "weights": {"stage": 1}}
    else:
        workflows = []
        for k, stage in enumerate(stages):  # one per stage: complete and exclusive
            sets: dict[str, object] = {"probability": draw(literal_or_formula)}
            if draw(st.integers(0, 3)) == 0:  # a workflow's own explanation wins
                sets["explanation"] = draw(st.sampled_from(["mine", "= 'why: ' + rule"]))
            if draw(st.booleans()):
                sets["next_step"] = draw(st.one_of(
                    st.sampled_from(["Call", "", "Send the contract"]),
                    st.sampled_from(SET_FORMULAS).map(lambda f: f"= {f}")))
            workflows.append({"name": f"w{k}", "when": {"stage": stage}, "set": sets,
                              "actions": draw(st.lists(st.sampled_from(["push", "ping"]),
                                                       max_size=2, unique=True))})
        data["workflows"] = workflows
    data["actions"] = {"push": {"http": {"url": "https://example.com/push"}},
                       "ping": {"http": {"url": "https://example.com/ping"}}}
    triggers: list[dict[str, object]] = [
        {"name": f"t{i}", "when": when, "do": draw(st.lists(st.sampled_from(["push", "ping"]),
                                                            min_size=1, max_size=2, unique=True))}
        for i, when in enumerate(draw(st.lists(st.sampled_from(CONDITIONS), max_size=4)))]
    if draw(st.booleans()):
        triggers.append({"name": "stuck", "when": draw(st.sampled_from(CONDITIONS)),
                         "since": draw(st.sampled_from(["d", "name", "today"])),
                         "steps": [{"after_days": 0, "do": ["ping"]},
                                   {"after_days": 14, "do": ["push"]}]})
    data["triggers"] = [t for t in triggers if "score" in computed or "score" not in t["when"]]
    return data


def diff_mapping(explains: bool):
    writeback = ["probability", "weighted_amount", "rule", "next_step"]
    return make_mapping(
        [f for f in DIFF_FIELDS if explains or f != "explanation"],
        writeback=writeback + (["explanation"] if explains else []),
        types={"amount": "money", "a": "number", "b": "integer", "d": "date",
               "probability": "percent", "weighted_amount": "money"})


def outcome_or_failure(evaluate_one, record):  # type: ignore[no-untyped-def]
    try:
        out = evaluate_one(record)
    except Exception as exc:  # a RecordError, or whatever else: both must fail alike
        return type(exc).__name__, str(exc)
    return (out.record_id, out.rule, out.factors, out.due,
            {k: repr(v) for k, v in out.changes.items()},  # repr: the exact Decimal
            {k: repr(v) for k, v in out.values.items()})


@settings(max_examples=300, deadline=None)
@given(rule_sets(), st.booleans(),
       st.lists(st.fixed_dictionaries({f: st.sampled_from(p) for f, p in DIFF_POOLS.items()}),
                min_size=1, max_size=8))
def test_the_fast_path_answers_as_the_plain_rules(data, explains, records) -> None:
    rules = build(data, diff_mapping(explains))
    fast = Evaluator(rules)  # one for every record: what it remembers must not change answers
    for n, values in enumerate(records):
        record = {"id": f"006{n}", **values}
        assert (outcome_or_failure(lambda r: fast.evaluate(r, TODAY), record)
                == outcome_or_failure(lambda r: evaluate(rules, r, TODAY), record)), record


def test_only_the_core_imports_its_fast_path() -> None:
    """connector/core/_fast.py is private: the rest of the connector evaluates through
    `Evaluator` (and reads `Names`, `Verdict` from connector.core.evaluate)."""
    import ast
    from pathlib import Path

    import connector

    root = Path(connector.__file__).parent
    importers = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            if any(n.startswith("connector.core._fast") for n in names):
                importers.add(path.relative_to(root).as_posix())
    assert importers and all(p.startswith("core/") for p in importers), importers


def test_the_plain_rules_give_the_documented_outcome(evaluator) -> None:
    """The interpreter on the module's own rule set: a p40 deal, its formulas and triggers."""
    rules = evaluator.rules
    out = evaluate(rules, record(stage="Proposal", amount=Decimal(5000), probability=60), TODAY)
    assert (out.rule, out.factors) == ("p40", {"stage": "Proposal", "proposal": "Firm",
                                               "size": "small"})
    assert out.values["probability"] == 40 and out.values["next_step"] == "Call Acme"
    assert out.changes == {"probability": 40, "weighted_amount": Decimal("2000.00"),
                           "rule": "p40", "next_step": "Call Acme"}
    assert out.values["label"] == "p40:open"
    assert out.due == ()
    with pytest.raises(RecordError, match="unknown stage 'Qualification'"):
        evaluate(rules, record(stage="Qualification"), TODAY)


def test_the_fast_path_answers_as_the_plain_rules_on_the_bundled_example() -> None:
    """The bundled rules and mapping, every row of examples/opportunities.csv (bad rows too)."""
    from pathlib import Path

    from connector.export import Export
    from connector.files import load
    from connector.simulate import records

    root = Path(__file__).resolve().parent.parent
    loaded = load(root / "rules", root / "mappings")
    assert loaded.ok and loaded.rules is not None
    rules = loaded.rules
    fast = Evaluator(rules)
    today = dt.date(2026, 11, 26)
    answered = 0
    with Export(root / "examples" / "opportunities.csv") as export:
        for _line, _raw, values, _error in records(rules, export):
            if values is None:
                continue
            ours = outcome_or_failure(lambda r: fast.evaluate(r, today), values)
            assert ours == outcome_or_failure(lambda r: evaluate(rules, r, today), values)
            answered += len(ours) > 2
    assert answered > 300  # most rows are evaluated, not refused
