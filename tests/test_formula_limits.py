"""A formula `check` accepts always runs: formulas past the size and depth bounds are refused at
their file and line (never a RecursionError, in `check` or later), and every formula within
them compiles and evaluates in `simulate` and `sync` without an internal error."""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.cli import main
from connector.core.expressions import MAX_DEPTH
from connector.files import load
from connector.pipeline import Pipeline
from connector.simulate import simulate
from connector.state.sqlite import SqliteState

ROOT = Path(__file__).resolve().parent.parent
TODAY = dt.date(2026, 11, 15)


def rule_set(folder: Path, formula: str) -> tuple[Path, Path]:
    """The example rules with one more computed field, `extra`, on line 2 of computed.yaml."""
    rules, mappings = folder / "rules", folder / "mappings"
    if not rules.exists():
        shutil.copytree(ROOT / "rules", rules)
        shutil.copytree(ROOT / "mappings", mappings)
    text = yaml.safe_dump({"computed": {"extra": formula, "weighted_amount":
                                        "amount * probability / 100"}}, width=10**9)
    (rules / "computed.yaml").write_text(text)
    return rules, mappings


def check(capsys, rules: Path, mappings: Path) -> tuple[int, str]:
    code = main(["check", "--rules", str(rules), "--mappings", str(mappings)])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("terms", [250, 600, 5000])
def test_a_formula_of_many_terms_is_refused_at_its_line(tmp_path, capsys, terms):
    rules, mappings = rule_set(tmp_path, " + ".join(["amount"] * terms))
    code, out = check(capsys, rules, mappings)
    assert code == 1
    assert "computed.yaml:2: error" in out and "split it into computed fields" in out
    assert "Traceback" not in out and "RecursionError" not in out
    assert len(out) < 2000  # the formula is quoted short, not 5000 terms long


@pytest.mark.parametrize("formula", [
    "(" * 150 + "amount" + " + 1)" * 150,
    "not " * 3000 + "won",
    "-" * 20000 + "amount",
    "min(" * 40 + "amount" + ")" * 40,
    "1 if won else " * 40 + "2",
])
def test_deep_nesting_of_any_kind_is_refused_at_its_line(tmp_path, capsys, formula):
    rules, mappings = rule_set(tmp_path, formula)
    code, out = check(capsys, rules, mappings)
    assert code == 1 and "computed.yaml:2: error" in out, out
    assert "Traceback" not in out


def test_a_formula_at_the_bound_runs(tmp_path, capsys):
    formula = " + ".join(["amount"] * MAX_DEPTH)
    rules, mappings = rule_set(tmp_path, formula)
    assert check(capsys, rules, mappings)[0] == 0
    summary = run_simulate(tmp_path, rules, mappings)
    assert summary.read == 59 and summary.failed == 0


# --- check ok => simulate and sync evaluate every formula --------------------------------------

WRAPS = ["({x} + amount)", "(amount - {x})", "({x} * 2)", "({x} / probability)", "({x} % 7)",
         "min({x}, 1)", "max(0, {x}, amount)", "round({x}, 2)", "abs({x})", "coalesce({x}, 0)",
         "({x} if won else 0)", "(1 if {x} else 2)", "(not {x})", "(-{x})", "({x} < 5)",
         "(0 <= {x} < amount)", "({x} and won)", "({x} or lost)", "({x} in [1, 2, 'a'])",
         "days_between(close_date, today + {x})", "({x} == stage)", "month(today + {x})"]
LEAVES = ["amount", "probability", "close_date", "today", "won", "stage", "3", "0.5", "''"]


@st.composite
def deep_formulas(draw: st.DrawFn) -> str:
    """A formula grown by wrapping a leaf, up to past the depth bound."""
    formula = draw(st.sampled_from(LEAVES))
    for wrap in draw(st.lists(st.sampled_from(WRAPS), max_size=MAX_DEPTH + 8)):
        formula = wrap.format(x=formula)
    return formula


def run_simulate(folder: Path, rules_dir: Path, mappings_dir: Path):  # type: ignore[no-untyped-def]
    rules = load(rules_dir, mappings_dir).rules
    assert rules is not None
    source = folder / "some.csv"
    with open(ROOT / "examples" / "opportunities.csv", newline="") as f:
        rows = list(itertools.islice(csv.reader(f), 60))
    with open(source, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return simulate(rules, source, None, TODAY)


class _NoWrites:
    calls = auth_calls = 0

    def write(self, updates):  # type: ignore[no-untyped-def]
        raise AssertionError("a dry run writes nothing")


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(formula=deep_formulas())
def test_a_formula_check_accepts_evaluates_in_simulate_and_sync(tmp_path_factory, formula):
    folder = tmp_path_factory.mktemp("rules")
    rules_dir, mappings_dir = rule_set(folder, formula)
    loaded = load(rules_dir, mappings_dir)
    if not loaded.ok:  # refused: with a finding at its line, never an exception
        errors = [f for f in loaded.findings if f.severity == "error"]
        assert errors and all(f.line == 2 and "computed.yaml" in str(f.file) for f in errors)
        return
    run_simulate(folder, rules_dir, mappings_dir)  # raises on an internal error
    rules = loaded.rules
    assert rules is not None
    with open(ROOT / "examples" / "opportunities.csv", newline="") as f:
        records = [dict(row, SystemModstamp="2026-11-15T10:00:00Z")
                   for row in itertools.islice(csv.DictReader(f), 60)]
    state = SqliteState(folder / "state.db")
    pipeline = Pipeline(rules, _NoWrites(), state,  # type: ignore[arg-type]
                        now=lambda: dt.datetime(2026, 11, 15, 12, tzinfo=dt.UTC))
    report = pipeline.process(records, dry_run=True)  # a record may fail; none may raise
    assert report.read == 60


def test_a_long_chain_of_computed_fields_is_checked_and_runs(tmp_path, capsys):
    """Each field reads the one before: no recursion in `check` or in the run follows it."""
    rules, mappings = rule_set(tmp_path, "amount")
    chain = {"weighted_amount": "amount * probability / 100", "c0": "amount"}
    chain.update({f"c{i}": f"c{i - 1} + 1" for i in range(1, 3000)})
    chain = dict(reversed(chain.items()))  # the last first: each reads the whole chain
    (rules / "computed.yaml").write_text(yaml.safe_dump({"computed": chain}, sort_keys=False))
    code, out = check(capsys, rules, mappings)
    assert code == 0, out
    summary = run_simulate(tmp_path, rules, mappings)
    assert summary.read == 59 and summary.failed == 0


def test_a_cycle_through_a_long_chain_is_named(tmp_path, capsys):
    rules, mappings = rule_set(tmp_path, "amount")
    chain = {"weighted_amount": "amount * probability / 100", "c0": "c2999"}
    chain.update({f"c{i}": f"c{i - 1} + 1" for i in range(1, 3000)})
    (rules / "computed.yaml").write_text(yaml.safe_dump({"computed": chain}, sort_keys=False))
    code, out = check(capsys, rules, mappings)
    assert code == 1 and "depend on each other in a circle: c0 -> c2999" in out
    assert "Traceback" not in out and "unexpected error" not in out
