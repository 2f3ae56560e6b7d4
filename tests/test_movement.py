"""movement: every deal in its bucket, start + changes = end to the cent in every month and
both views, and the engine equal to the reference."""

from __future__ import annotations

import datetime as dt
import json
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from history_gen import ROOT, example_rules, row, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.cli import main
from connector.history.engine import opened
from connector.history.movement import BUCKETS, movement
from connector.history.source import plan_for, reference

CONFIG = ["--rules", str(ROOT / "rules"), "--mappings", str(ROOT / "mappings")]
D1, D2 = dt.date(2026, 3, 1), dt.date(2026, 4, 1)
MAY, JUNE, APRIL = dt.date(2026, 5, 20), dt.date(2026, 6, 10), dt.date(2026, 4, 25)
BEFORE, BETWEEN = dt.datetime(2026, 2, 1, 9), dt.datetime(2026, 3, 15, 9)
NEGO = "Negotiation/Review"


def known_moves(tmp_path: Path) -> Path:
    """One deal per bucket of May's pipeline, by construction (deal id = its bucket)."""
    rows = [
        row("won", BEFORE, NEGO, 1000, MAY, probability=80),
        row("won", BETWEEN, "Closed Won", 1000, MAY, probability=100),
        row("lost", BEFORE, NEGO, 2000, MAY, probability=60),
        row("lost", BETWEEN, "Closed Lost", 2000, MAY, probability=0),
        row("new", BETWEEN, "Prospecting", 3000, MAY, probability=10),
        row("pulled_in", BEFORE, NEGO, 4000, JUNE, probability=50),
        row("pulled_in", BETWEEN, NEGO, 4000, MAY, probability=50),
        row("pushed_in", BEFORE, NEGO, 5000, APRIL, probability=50),
        row("pushed_in", BETWEEN, NEGO, 5000, MAY, probability=50),
        row("pushed_out", BEFORE, NEGO, 6000, MAY, probability=50),
        row("pushed_out", BETWEEN, NEGO, 6000, JUNE, probability=50),
        row("pulled_out", BEFORE, NEGO, 7000, MAY, probability=50),
        row("pulled_out", BETWEEN, NEGO, 7000, APRIL, probability=50),
        row("amount_up", BEFORE, NEGO, 8000, MAY, probability=50),
        row("amount_up", BETWEEN, NEGO, 9000, MAY, probability=40),
        row("amount_down", BEFORE, NEGO, 8000, MAY, probability=50),
        row("amount_down", BETWEEN, NEGO, "7000.505", MAY, probability=50),
        # the rules changed: same factor values, a new probability
        row("probability_up", BEFORE, NEGO, 1000, MAY, "Firm", "Known", probability=80),
        row("probability_up", BETWEEN, NEGO, 1000, MAY, "Firm", "Known", probability=85),
        # the factors changed: a budgetary proposal
        row("probability_down", BEFORE, NEGO, 1000, MAY, "Firm", "Known", probability=80),
        row("probability_down", BETWEEN, NEGO, 1000, MAY, "Budgetary", "Known", probability=60),
        row("unchanged", BEFORE, NEGO, 1234, MAY, probability=33),
        row("unchanged", BETWEEN, NEGO, 1234, MAY, probability=33, rule="p60"),
        row("closed-before", BEFORE, "Closed Won", 99, MAY),  # in no pipeline: nowhere
    ]
    return write(tmp_path / "moves.csv", rows)


def test_every_deal_in_its_bucket(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = known_moves(tmp_path)
    for engine in ("duckdb", "python"):
        assert main(["movement", "--input", str(path), "--from", str(D1), "--to", str(D2),
                     "--format", "json", "--details", "--engine", engine, *CONFIG]) == 0
        doc = json.loads(capsys.readouterr().out)
        may = [d for d in doc["details"] if d["month"] == "2026-05"]
        assert {d["id"]: d["bucket"] for d in may} == {b: b for b in BUCKETS}
        causes = {d["id"]: d["cause"] for d in may if d["cause"]}
        assert causes == {"probability_up": "rules", "probability_down": "factors"}
        month = next(m for m in doc["months"] if m["month"] == "2026-05")
        assert month["unweighted"]["deals"] == dict.fromkeys(BUCKETS, 1)
        assert month["unweighted"]["won"] == "-1000.00"
        assert month["weighted"]["won"] == "-800.00"
        assert month["unweighted"]["amount_down"] == "-999.49"   # 7000.505 rounds to 7000.51
        assert month["weighted"]["probability_up"] == "50.00"
        june = next(m for m in doc["months"] if m["month"] == "2026-06")
        assert june["unweighted"]["deals"]["pushed_in"] == 1
        assert june["unweighted"]["deals"]["pulled_out"] == 1
        for m in doc["months"]:
            for view in ("unweighted", "weighted"):
                v = m[view]
                assert Decimal(v["start"]) + sum(Decimal(v[b]) for b in BUCKETS) == Decimal(
                    v["end"])


def _independent_pipeline(rows: list[list[str]], day: dt.date) -> dict[str, tuple[Decimal,
                                                                                 Decimal]]:
    """Each month's open pipeline at the end of `day`, straight from the rows (for rows that
    are all valid), to check start and end against."""
    last: dict[str, list[str]] = {}
    for r in sorted(rows, key=lambda r: r[-1]):
        if dt.datetime.fromisoformat(r[-1]).date() <= day:
            last[r[0]] = r
    out: dict[str, tuple[Decimal, Decimal]] = {}
    for r in last.values():
        if r[2] in ("Closed Won", "Closed Lost"):
            continue
        cent = Decimal("0.01")  # each deal's value to the cent, halves up, as documented
        amount = Decimal(r[3]).quantize(cent, ROUND_HALF_UP)
        weighted = (Decimal(r[3]) * Decimal(r[10]) / 100).quantize(cent, ROUND_HALF_UP)
        u, w = out.get(r[4][:7], (Decimal(0), Decimal(0)))
        out[r[4][:7]] = (u + amount, w + weighted)
    return out


history_rows = st.lists(st.tuples(
    st.sampled_from("ABCDEFGH"), st.integers(0, 90),
    st.sampled_from([NEGO, "Prospecting", "Closed Won", "Closed Lost"]),
    st.integers(0, 10**7), st.integers(0, 3), st.sampled_from([0, 10, 33, 50, 99, 100]),
    st.sampled_from(["Firm", "Budgetary"])), min_size=1, max_size=60)


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history_rows, st.integers(0, 90), st.integers(0, 90))
def test_identity_and_engines_agree(tmp_path: Path, spec, a, b) -> None:  # type: ignore[no-untyped-def]
    start = dt.datetime(2026, 1, 1)
    rows, seen = [], set()
    for deal, day, stage, cents, month, p, proposal in spec:
        at = start + dt.timedelta(days=day)
        if (deal, at) in seen:
            continue
        seen.add((deal, at))
        close = dt.date(2026, 2 + month, 15)
        rows.append(row(deal, at, stage, Decimal(cents) / 100, close, proposal, probability=p))
    path = write(tmp_path / "h.csv", rows)
    first, second = sorted([dt.date(2026, 1, 1) + dt.timedelta(days=d) for d in (a, b)])
    plan = plan_for(example_rules())
    ref = movement(reference(plan, path), first, second, details=True)
    with opened(plan, path) as h:
        fast = movement(h, first, second, details=True)
    assert fast.as_json() == ref.as_json()
    assert [(d.month, d.bucket, d.id, d.cause) for d in fast.details] == [
        (d.month, d.bucket, d.id, d.cause) for d in ref.details]
    at_first, at_second = (_independent_pipeline(rows, first),
                           _independent_pipeline(rows, second))
    for month, mo in ref.months.items():
        for k, view in enumerate((mo.unweighted, mo.weighted)):
            assert view.start + sum(view.changes.values()) == view.end
            assert view.start == at_first.get(month, (Decimal(0), Decimal(0)))[k]
            assert view.end == at_second.get(month, (Decimal(0), Decimal(0)))[k]
        assert sum(mo.deals.values()) == len([d for d in ref.details if d.month == month])


def test_text_csv_and_chart(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = known_moves(tmp_path)
    chart = tmp_path / "w.svg"
    assert main(["movement", "--input", str(path), "--from", str(D1), "--to", str(D2),
                 "--chart", str(chart), *CONFIG]) == 0
    out = capsys.readouterr().out
    assert "pulled in" in out and "1 rules" in out
    assert chart.read_text().startswith("<svg")
    assert main(["movement", "--input", str(path), "--from", str(D1), "--to", str(D2),
                 "--format", "csv", *CONFIG]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "month,bucket,deals,unweighted,weighted"
    assert "2026-05,won,1,-1000.00,-800.00" in lines
    assert main(["movement", "--input", str(path), "--from", str(D2), "--to", str(D1),
                 *CONFIG]) == 2
