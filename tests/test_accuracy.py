"""accuracy: the forecast made N days before each month, against what was won, equal to an
independent computation from the generating model, and the engine equal to the reference."""

from __future__ import annotations

import datetime as dt
import json
import random
from decimal import Decimal
from pathlib import Path

from history_gen import ROOT, combos_by_workflow, example_rules, row, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.cli import main
from connector.history.accuracy import accuracy
from connector.history.engine import opened
from connector.history.source import plan_for, reference

CONFIG = ["--rules", str(ROOT / "rules"), "--mappings", str(ROOT / "mappings")]
LAGS = [0, 30, 60, 90]


def generated(tmp_path: Path, seed: int = 5):  # type: ignore[no-untyped-def]
    """Deals whose outcomes follow the rules' own probabilities; some close dates move.
    Returns the file and each deal's versions as (from day, close date, amount, p, crm)."""
    rng = random.Random(seed)
    rules = example_rules()
    said = {w.name: w.probability for w in rules.workflows}
    combos = combos_by_workflow()
    rows, deals = [], []
    for n in range(400):
        name = rng.choice(list(combos))
        stage, proposal, relationship, size = rng.choice(combos[name])
        amount = {"large": 150_000, "medium": 50_000, "small": 5_000}[size] + rng.randint(0, 999)
        opened_on = dt.date(2025, 1, 1) + dt.timedelta(days=rng.randrange(300))
        close = opened_on + dt.timedelta(days=rng.randint(20, 150))
        versions = [(opened_on, close)]
        if rng.random() < 0.3:  # pushed out once, halfway
            moved = opened_on + (close - opened_on) / 2
            close = close + dt.timedelta(days=rng.randint(10, 60))
            versions.append((moved, close))
        crm = rng.choice([20, 40, 60])
        for day, expected in versions:
            rows.append(row(f"A{n}", dt.datetime.combine(day, dt.time(9)), stage, amount,
                            expected, proposal, relationship, probability=crm))
        won = rng.random() < float(said[name]) / 100
        rows.append(row(f"A{n}", close, "Closed Won" if won else "Closed Lost", amount, close,
                        proposal, relationship, probability=100 if won else 0))
        deals.append((versions, close, Decimal(amount), said[name], Decimal(crm), won))
    rows.append(row("late", dt.datetime(2026, 6, 1), "Prospecting", 1, dt.date(2026, 9, 1)))
    return write(tmp_path / "acc.csv", rows), deals


def expected(deals, month: str, lag: int):  # type: ignore[no-untyped-def]
    y, m = int(month[:4]), int(month[5:])
    when = dt.date(y, m, 1) - dt.timedelta(days=lag)
    rules = crm = won = Decimal(0)
    for versions, close, amount, p, crm_p, is_won in deals:
        if is_won and (close.year, close.month) == (y, m):
            won += amount
        if when >= close:  # closed by then (the closing snapshot is dated on its close date)
            continue
        current = [exp for day, exp in versions if day <= when]
        if current and (current[-1].year, current[-1].month) == (y, m):
            rules += amount * p / 100
            crm += amount * crm_p / 100
    return rules, crm, won


def test_forecast_matches_an_independent_computation(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path, deals = generated(tmp_path)
    docs = []
    for engine in ("duckdb", "python"):
        assert main(["accuracy", "--input", str(path), "--lags", "0,30,60,90", "--format",
                     "json", "--engine", engine, *CONFIG]) == 0
        docs.append(json.loads(capsys.readouterr().out))
    assert docs[0] == docs[1]
    doc = docs[0]
    assert {d["lag"] for d in doc} == set(LAGS)
    months = sorted({d["month"] for d in doc})
    assert months[0] <= "2025-03" and months[-1] == "2026-05"  # the history reaches 2026-06-01
    nonzero = 0
    for d in doc:
        rules, crm, won = expected(deals, d["month"], d["lag"])
        cent = Decimal("0.01")
        assert Decimal(d["forecast"]) == rules.quantize(cent), d
        assert Decimal(d["forecast_crm"]) == crm.quantize(cent), d
        assert Decimal(d["won"]) == won.quantize(cent), d
        assert Decimal(d["error"]) == (rules - won).quantize(cent)
        nonzero += rules > 0 and won > 0
    assert nonzero > 20


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(
    st.sampled_from("ABCDEF"), st.integers(0, 200),
    st.sampled_from(["Negotiation/Review", "Prospecting", "Closed Won", "Closed Lost", "Bogus"]),
    st.integers(0, 10**6), st.integers(0, 6), st.sampled_from(["", "10", "50"])),
    min_size=1, max_size=50))
def test_engine_agrees_with_reference(tmp_path: Path, spec) -> None:  # type: ignore[no-untyped-def]
    rows = [row(deal, dt.datetime(2026, 1, 1, 8) + dt.timedelta(days=day), stage,
                Decimal(cents) / 100, dt.date(2026, 1 + month, 10), probability=p)
            for deal, day, stage, cents, month, p in spec]
    path = write(tmp_path / "h.csv", rows)
    plan = plan_for(example_rules())
    ref = accuracy(reference(plan, path), plan, LAGS)
    with opened(plan, path) as h:
        fast = accuracy(h, plan, LAGS)
    assert [x.as_json() for x in fast] == [x.as_json() for x in ref]


def test_text_chart_and_report(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path, _ = generated(tmp_path)
    chart, report = tmp_path / "a.svg", tmp_path / "a.html"
    assert main(["accuracy", "--input", str(path), "--chart", str(chart), "--report",
                 str(report), *CONFIG]) == 0
    out = capsys.readouterr().out
    assert "30 days ahead" in out and "MAPE" in out and "CRM" in out
    assert chart.read_text().startswith("<svg")
    assert 'id="accuracy"' in report.read_text()
    assert main(["accuracy", "--input", str(path), "--lags", "x", *CONFIG]) == 2
