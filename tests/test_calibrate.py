"""calibrate: the engine agrees with the reference exactly; wrong workflows are found and
right ones are not; the proposal lowers the Brier score on a later period and passes check."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import shutil
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
from history_gen import (
    HEADER,
    ROOT,
    calibration_history,
    example_rules,
    row,
    write,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest

from connector.cli import main
from connector.history.calibrate import counts, score, wilson
from connector.history.engine import opened
from connector.history.source import plan_for, reference

CONFIG = ["--rules", str(ROOT / "rules"), "--mappings", str(ROOT / "mappings")]
# mostly good values, some bad ones: a bad row must fail alone, the same way on both paths
STAGES = ["Negotiation/Review", "Closed Won", "Prospecting", "Closed Lost", "Qualification",
          "Cancelled", "Proposal/Price Quote"] * 3 + ["Bogus", ""]
AMOUNTS = ["1000", "25000.50", "250000", "100000", "20000"] * 3 + [
    "1,500.00", "", "abc", "-5", " 20000 "]


def both(path: Path, **kw: object):  # type: ignore[no-untyped-def]
    plan = plan_for(example_rules())
    ref = reference(plan, path)
    with opened(plan, path) as h:
        fast = counts(h, **kw)  # type: ignore[arg-type]
        engine_failures = (h.failures.rows, h.failures.deals)
    return counts(ref, **kw), fast, (ref.failures.rows, ref.failures.deals), engine_failures  # type: ignore[arg-type]


snapshot = st.tuples(
    st.sampled_from(["A", "B", "C", "D", "E"]),
    st.integers(0, 60),                          # day
    st.integers(0, 23),                          # hour
    st.sampled_from(STAGES),
    st.sampled_from(AMOUNTS),
    st.sampled_from(["Firm", "Budgetary", "", "firm "]),
    st.sampled_from(["Strategic", "New", "", "Trusted", "Nope"]),
    st.sampled_from(["", "10", "55.5", "10", "20", "x"]),
    st.sampled_from(["2026-02-01"] * 6 + ["2026-02-30", ""]),
    # the modification stamp, which orders rows of one instant
    st.sampled_from(["", "2026-01-01T00:00:00Z", "2026-01-05T12:00:00+02:00",
                     "2026-01-05T12:00:00", "2026-01-05T10:00:00.5Z", "x"]),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(snapshot, min_size=10, max_size=40), st.sampled_from([None, 0, 2]),
       st.sampled_from([None, dt.date(2026, 1, 3)]), st.sampled_from([None, dt.date(2026, 1, 5)]))
def test_engine_agrees_with_reference(tmp_path: Path, rows, horizon, since, split) -> None:  # type: ignore[no-untyped-def]
    base = dt.datetime(2026, 1, 1)
    # time mostly moves on row by row; `day` 0 puts a row back at the first one's instant.
    # One fixed deal is always judged, so no example is vacuous.
    fixed = [row("Z", base + dt.timedelta(hours=3), "Prospecting", 1000, dt.date(2026, 2, 1)),
             row("Z", base + dt.timedelta(days=9), "Closed Won", 1000, dt.date(2026, 2, 1))]
    header = [*HEADER[:-1], "SystemModstamp", "as_of"]
    path = write(tmp_path / "h.csv", [[*r[:-1], "", r[-1]] for r in fixed] + [
        [deal, "n", stage, amount, close, proposal, rel, "o", "o@x", "a", crm, "", "", stamp,
         (base + dt.timedelta(hours=(day and 6 * i) + hour)).isoformat()]
        for i, (deal, day, hour, stage, amount, proposal, rel, crm, close, stamp)
        in enumerate(rows)], header)
    ref, fast, ref_failed, fast_failed = both(path, horizon=horizon, since=since, split=split)
    assert fast == ref
    assert fast_failed == ref_failed
    assert ref


def test_closing_snapshot_and_weights(tmp_path: Path) -> None:
    """A deal with k open snapshots adds 1/k per snapshot; with a horizon, the one in force."""
    close = dt.date(2026, 3, 1)
    path = write(tmp_path / "h.csv", [
        row("A", dt.datetime(2026, 1, 1), "Prospecting", 1000, close),
        row("A", dt.datetime(2026, 2, 1), "Negotiation/Review", 1000, close, "Firm", "Strategic"),
        row("A", dt.datetime(2026, 2, 20), "Negotiation/Review", 1000, close, "Firm", "Strategic"),
        row("A", close, "Closed Won", 1000, close),
        row("B", dt.datetime(2026, 1, 1), "Prospecting", 1000, close),  # still open: not judged
    ])
    assert main(["calibrate", "--input", str(path), "--format", "json", *CONFIG]) == 0
    ref, fast, *_ = both(path)
    assert ref == fast
    per = {k[0]: Fraction(n, k[4]) for k, n in ref.items()}
    assert sorted(per.values()) == [Fraction(1, 3), Fraction(2, 3)]
    ref, _, *_ = both(path, horizon=15)  # 2026-02-14: the snapshot of 2026-02-01
    assert [(k[0][0], k[4]) for k in ref] == [(0, 1)]


def _truth(wrong: set[str]) -> dict[str, float]:
    rules = example_rules()
    truth = {}
    for w in rules.workflows:
        p = float(w.probability) / 100
        truth[w.name] = (p - 0.25 if p > 0.5 else p + 0.25) if w.name in wrong else p
    return truth


def test_calibrate_flags_exactly_the_wrong_workflows(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Over 10 seeded histories, every workflow off by 25 points is outside its interval, and
    the right ones are flagged about as often as a 95 % interval allows (5 %)."""
    wrong = {"p80", "p40", "p20"}
    false_alarms = right_verdicts = 0
    for seed in range(10):
        path = calibration_history(tmp_path / f"h{seed}.csv", seed, _truth(wrong), 250)
        assert main(["calibrate", "--input", str(path), "--format", "json", *CONFIG]) == 0
        doc = json.loads(capsys.readouterr().out)
        for w in doc["workflows"]:
            if w["workflow"] in wrong:
                assert w["verdict"] == "outside", (seed, w)
            else:
                right_verdicts += 1
                false_alarms += w["verdict"] == "outside"
    assert right_verdicts == 60
    # P(more than 8 of 60 outside | each 5 %) < 1 %
    assert false_alarms <= 8, false_alarms


def test_propose_lowers_brier_later_and_passes_check(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    truth = _truth({"p80", "p40", "p20", "p90"})
    path = calibration_history(tmp_path / "h.csv", 7, truth, 300)
    proposed = tmp_path / "probability.yaml"
    assert main(["calibrate", "--input", str(path), "--format", "json", "--backtest",
                 "2025-01-01", "--propose", str(proposed), *CONFIG]) == 0
    doc = json.loads(capsys.readouterr().out)
    back = doc["backtest"]
    assert back["fit_deals"] > 1000 and back["test_deals"] > 500
    assert Fraction(back["brier_proposed"]) < Fraction(back["brier_current"])
    # only numbers change, and check accepts the result
    old = (ROOT / "rules" / "probability.yaml").read_text().splitlines()
    new = proposed.read_text().splitlines()
    assert len(old) == len(new)
    changed = [(a, b) for a, b in zip(old, new) if a != b]
    assert changed and all("probability:" in a and "probability:" in b for a, b in changed)
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    shutil.copy(proposed, rules / "probability.yaml")
    assert main(["check", "--rules", str(rules), "--mappings", str(ROOT / "mappings")]) == 0
    values = [int(b.split("probability:")[1].strip(" }")) for _, b in changed]
    assert all(1 <= v <= 99 for v in values)


def test_propose_weights(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    (rules / "probability.yaml").write_text(
        "probability:\n  min: 10\n  max: 90\n  step: 5\n"
        "  weights: {stage: 5, proposal: 2, relationship: 3, size: 1}   # best guess\n")
    path = calibration_history(tmp_path / "h.csv", 3, _truth(set()), 120)
    proposed = tmp_path / "p.yaml"
    config = ["--rules", str(rules), "--mappings", str(ROOT / "mappings")]
    code = main(["calibrate", "--input", str(path), "--propose", str(proposed), *config])
    assert code == 0
    text = proposed.read_text()
    assert "# best guess" in text and "weights: {stage:" in text
    shutil.copy(proposed, rules / "probability.yaml")
    assert main(["check", *config]) == 0
    capsys.readouterr()


def test_wilson_is_scipy_for_whole_counts() -> None:
    for wins, deals in ((0, 10), (3, 10), (50, 80), (80, 80)):
        ci = binomtest(wins, deals).proportion_ci(0.95, method="wilson")
        assert wilson(Fraction(wins), Fraction(deals)) == (ci.low, ci.high)
        # the written-out formula (weighted counts) gives the same numbers
        low, high = wilson(Fraction(wins * 3 + 1, 3) - Fraction(1, 3), Fraction(deals))
        assert low == pytest.approx(ci.low) and high == pytest.approx(ci.high)


@given(st.lists(st.tuples(st.integers(0, 100), st.booleans(), st.integers(1, 5)), min_size=1))
def test_murphy_decomposition_is_exact(items) -> None:  # type: ignore[no-untyped-def]
    s = score((Fraction(p, 100), won, Fraction(1, k)) for p, won, k in items)
    assert s is not None
    assert s.brier == s.reliability - s.resolution + s.uncertainty


def test_report_and_text(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = calibration_history(tmp_path / "h.csv", 1, _truth({"p80"}), 40)
    report = tmp_path / "r.html"
    assert main(["calibrate", "--input", str(path), "--report", str(report), *CONFIG]) == 0
    out = capsys.readouterr().out
    assert "p80" in out and "outside" in out and "Brier" in out
    html = report.read_text()
    assert "<svg" in html and 'id="workflows"' in html
    assert "http:" not in html and "https:" not in html  # no link out (http-equiv is no URL)


def test_missing_column_is_a_configuration_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "h.csv"
    path.write_text("Id,StageName,as_of\nA,Prospecting,2026-01-01\n")
    assert main(["calibrate", "--input", str(path), *CONFIG]) == 2
    assert "Proposal_Type__c" in capsys.readouterr().err



def test_the_state_stores_snapshots_without_input(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """No --input: the configured store's snapshots (StateStore.read_snapshots: CRM field ->
    text, plus as_of) are read by the same engine."""
    import csv

    import connector.state as state
    from connector.state.sqlite import SqliteState

    path = calibration_history(tmp_path / "h.csv", 2, _truth(set()), 20)
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))

    class WithSnapshots(SqliteState):
        def read_snapshots(self):  # type: ignore[no-untyped-def]
            return iter(sorted(rows, key=lambda r: (r["Id"], r["as_of"])))

    monkeypatch.setattr(state, "open_state", lambda url: WithSnapshots(str(tmp_path / "s.db")))
    assert main(["calibrate", "--format", "json", *CONFIG]) == 0
    from_store = json.loads(capsys.readouterr().out)
    assert main(["calibrate", "--input", str(path), "--format", "json", *CONFIG]) == 0
    assert from_store == json.loads(capsys.readouterr().out)


def test_file_shapes_read_alike(tmp_path: Path) -> None:
    """A BOM, CRLF line ends, quoted commas and line breaks, blank and ',,,' lines: the
    engine reads them as the reference does."""
    header = ",".join(["Id", "Name", "StageName", "Amount", "CloseDate", "Proposal_Type__c",
                       "Relationship_Level__c", "Owner.Name", "Owner.Email", "Account.Name",
                       "Probability", "Weighted_Amount__c", "Probability_Rule__c", "as_of"])
    text = ("\ufeff" + header + "\r\n"
            'A,"a, b",Prospecting,1000,2026-03-01,,,o,o@x,acc,10,,,2026-01-01T10:00:00\r\n'
            "\r\n"
            'A,"multi\r\nline",Closed Won,1000,2026-03-01,,,o,o@x,acc,10,,,2026-03-01\r\n'
            ",,,,,,,,,,,,,\r\n")
    path = tmp_path / "h.csv"
    path.write_bytes(text.encode("utf-8"))
    ref, fast, ref_failed, fast_failed = both(path)
    assert ref == fast and len(ref) == 1
    assert ref_failed == fast_failed == (0, 0)


def test_order_of_snapshots_as_history_export_dates_them(tmp_path: Path) -> None:
    """`history export` dates a closing snapshot on the midnight of its close date and orders
    rows of one instant by the modification stamp: a deal last edited open on its close day is
    closed by the end of that day, and two closed rows of one instant are not ambiguous."""
    import csv

    header = ["Id", "StageName", "Amount", "CloseDate", "Proposal_Type__c",
              "Relationship_Level__c", "Probability", "SystemModstamp", "as_of"]
    close = "2026-03-10"
    rows = [
        ["A", "Prospecting", "1000", close, "", "", "10", "2026-03-01T08:00:00Z",
         "2026-03-01T08:00:00Z"],
        ["A", "Negotiation/Review", "1000", close, "Firm", "Known", "80",
         "2026-03-10T10:00:00Z", "2026-03-10T10:00:00Z"],                 # open, that morning
        ["A", "Closed Won", "1000", close, "Firm", "Known", "100", "2026-03-10T15:00:00Z",
         "2026-03-10T00:00:00Z"],                                          # closed that day
        ["A", "Closed Won", "1200", close, "Firm", "Known", "100", "2026-03-12T09:00:00Z",
         "2026-03-10T00:00:00Z"],                                          # edited after
    ]
    path = tmp_path / "h.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    ref, fast, ref_failed, fast_failed = both(path)
    assert ref == fast
    assert ref_failed == fast_failed == (0, 0)
    assert sorted((k[0][0], k[2], k[4]) for k in ref) == [(0, True, 2), (5, True, 2)]
    # without the stamps, the two closed rows of one instant cannot be ordered
    stampless = tmp_path / "no-stamp.csv"
    with stampless.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header[:-2] + ["as_of"])
        w.writerows(r[:-2] + [r[-1]] for r in rows)
    ref, fast, ref_failed, fast_failed = both(stampless)
    assert ref == fast == Counter()
    assert ref_failed == fast_failed == (0, 1)


@given(st.lists(st.tuples(st.integers(0, 100), st.integers(1, 50)), min_size=1, max_size=30))
def test_pool_adjacent_violators(items) -> None:  # type: ignore[no-untyped-def]
    """Never increasing, the weighted total kept, and each pooled block at its weighted mean
    (so a list already in order comes back as it was)."""
    from connector.history.propose import pool_adjacent_violators

    values = [Fraction(v) for v, _ in items]
    weights = [Fraction(w) for _, w in items]
    fitted = pool_adjacent_violators(values, weights)
    assert all(a >= b for a, b in itertools.pairwise(fitted))
    assert sum(f * w for f, w in zip(fitted, weights)) == sum(v * w for v, w in items)
    if all(a >= b for a, b in itertools.pairwise(values)):
        assert fitted == values
