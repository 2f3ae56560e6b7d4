"""`forecast`: the weighted pipeline per expected close month (or owner, or stage).

The sums are checked against the independent model in tests/reference_dry_run.py, and a
Hypothesis property checks that whatever the data, the forecast's totals are the sums over the
records, and every record is either in a bucket or reported as left out.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import tempfile
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path
from unittest.mock import patch

import pytest
import reference_dry_run as ref
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.cli import main
from connector.core import forecast as forecast_module
from connector.core.forecast import Forecast, MonthPairs
from connector.files import load
from connector.simulate import forecast, simulate

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "opportunities.csv"
TODAY = dt.date(2026, 11, 26)
CONFIG = ["--rules", str(ROOT / "rules"), "--mappings", str(ROOT / "mappings"),
          "--today", TODAY.isoformat()]
MONEY = re.compile(r"^-?\d+\.\d{2}$")


@cache
def rules():  # type: ignore[no-untyped-def]
    loaded = load(ROOT / "rules", ROOT / "mappings")
    assert loaded.rules is not None
    return loaded.rules


def cents(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def example_model() -> list[ref.Expected]:
    rows = ref.read_csv_with_lines(EXAMPLE.read_text(encoding="utf-8"))
    return [ref.expect(line, row, TODAY) for line, row in rows]


def run_json(capsys, *args: str) -> tuple[int, list[dict], str]:  # type: ignore[no-untyped-def]
    code = main(["forecast", str(EXAMPLE), "--format", "json", *args, *CONFIG])
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err
    return code, json.loads(printed.out), printed.err


def test_json_has_the_spec_shape_and_the_models_sums(capsys):
    code, months, err = run_json(capsys)
    assert code == 1  # the six bad rows are left out, and said so
    assert "6 failed" in err
    assert isinstance(months, list) and months
    left_out = months.pop()
    buckets, left = ref.forecast(example_model(), today=TODAY)
    assert left_out == {"month": "left out", "opportunities": sum(left.values()),
                        "reasons": {"lost": left["lost"], "failed": 6}}
    assert left["lost"] > 0
    for m in months:
        assert list(m) == ["month", "opportunities", "amount", "weighted_amount"]
        assert re.fullmatch(r"\d{4}-\d{2}", m["month"])
        assert type(m["opportunities"]) is int and m["opportunities"] > 0
        assert MONEY.match(m["amount"]) and MONEY.match(m["weighted_amount"])
    keys = [m["month"] for m in months]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert {m["month"]: (m["opportunities"], m["amount"], m["weighted_amount"])
            for m in months} == {k: (t.opportunities, cents(t.amount), cents(t.weighted))
                                 for k, t in buckets.items()}
    # open deals close 2026-12 .. 2027-08, closed ones 2026-06 .. 2026-11 (examples/README.md)
    assert keys[0] == "2026-06" and keys[-1] == "2027-08"


def test_as_is_uses_the_exports_own_probabilities(capsys):
    code, months, err = run_json(capsys, "--as-is")
    left_out = months.pop()
    buckets, left = ref.forecast(example_model(), as_is=True, today=TODAY)
    assert {m["month"]: (m["opportunities"], m["amount"], m["weighted_amount"])
            for m in months} == {k: (t.opportunities, cents(t.amount), cents(t.weighted))
                                 for k, t in buckets.items()}
    # two amounts cannot be read at all; the deal without a close date is left out, not lost
    assert left == {"failed": 2, "without a close date": 1, "lost": left["lost"]}
    assert left_out["reasons"] == dict(left)
    assert "1 without a close date" in err and "2 failed" in err
    assert code == 1
    _, by_rules, _ = run_json(capsys)
    assert [m["weighted_amount"] for m in months] != [m["weighted_amount"] for m in by_rules[:-1]]


@pytest.mark.parametrize("by", ["owner", "stage"])
def test_by_owner_and_by_stage(capsys, by):
    code, rows, _ = run_json(capsys, "--by", by)
    assert code == 1
    assert rows.pop()[by] == "left out"
    for r in rows:
        assert list(r) == [by, "opportunities", "amount", "weighted_amount"]
    keys = [r[by] for r in rows]
    buckets, _ = ref.forecast(example_model(), by=by, today=TODAY)
    assert {r[by]: (r["opportunities"], r["amount"], r["weighted_amount"]) for r in rows} == {
        k: (t.opportunities, cents(t.amount), cents(t.weighted)) for k, t in buckets.items()}
    if by == "owner":
        assert keys == sorted(keys)
    else:  # in pipeline order (rules/factors.yaml lists the stage factor's values), then won
        assert keys == ref.STAGES + ref.WON
        won = next(r for r in rows if r["stage"] == "Closed Won")
        assert won["amount"] == won["weighted_amount"]  # won at 100 %; lost ones are left out


def test_csv_and_text_formats_show_the_same_numbers(capsys):
    _, months, _ = run_json(capsys)
    left_out = months.pop()
    assert main(["forecast", str(EXAMPLE), "--format", "csv", *CONFIG]) == 1
    lines = list(csv.reader(capsys.readouterr().out.splitlines()))
    assert lines[0] == ["month", "opportunities", "amount", "weighted_amount"]
    reasons = left_out["reasons"]
    assert lines[1:-1 - len(reasons)] == [[m["month"], str(m["opportunities"]), m["amount"],
                                           m["weighted_amount"]] for m in months]
    # what was left out, counted by reason, before the total
    assert lines[-1 - len(reasons):-1] == [[f"left out: {why}", str(n), "", ""]
                                           for why, n in reasons.items()]
    buckets, _ = ref.forecast(example_model(), today=TODAY)
    exact = cents(sum((t.weighted for t in buckets.values()), Decimal(0)))
    amount = cents(sum((t.amount for t in buckets.values()), Decimal(0)))
    count = sum(t.opportunities for t in buckets.values())
    assert lines[-1] == ["total", str(count), amount, exact]  # CSV ends with the total row
    assert main(["forecast", str(EXAMPLE), "--format", "text", *CONFIG]) == 1
    text = capsys.readouterr().out
    for m in months:
        assert re.search(rf"{m['month']}\s.*\s{re.escape(m['weighted_amount'])}", text)
    total = sum(Decimal(m["weighted_amount"]) for m in months)
    assert abs(Decimal(exact) - total) <= Decimal("0.01") * len(months)  # each month rounded
    assert re.search(rf"total\s.*\s{re.escape(exact)}", text)
    # what was left out is in the table's footer, by reason
    assert re.search(rf"left out\s.*\s{left_out['opportunities']}\s", text)
    for why, n in left_out["reasons"].items():
        assert re.search(rf"{why}\s.*\s{n}\s", text)


def test_records_without_a_close_date_or_an_amount_are_reported(tmp_path, capsys):
    source = tmp_path / "export.csv"
    rows = [
        ["N1", "No amount, won", "Closed Won", "", "2026-11-20"],
        ["N2", "No amount, open", "Prospecting", "", "2027-01-10"],
        ["N3", "Fine", "Prospecting", "1000", "2027-01-10"],
        ["N4", "No close date", "Prospecting", "1000", ""],
    ]
    with source.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Id", "Name", "StageName", "Amount", "CloseDate", "Probability",
                         "Proposal_Type__c", "Relationship_Level__c"])
        writer.writerows([*r, "10", "", ""] for r in rows)
    assert main(["forecast", str(source), "--format", "json", *CONFIG]) == 1
    printed = capsys.readouterr()
    assert json.loads(printed.out)[:-1] == [{"month": "2027-01", "opportunities": 1,
                                             "amount": "1000.00", "weighted_amount": "100.00"}]
    assert json.loads(printed.out)[-1] == {
        "month": "left out", "opportunities": 3,
        "reasons": {"without an amount": 2, "failed": 1}}
    # the rules need a close date (days_to_close): that record fails; the others are counted
    assert "2 without an amount" in printed.err and "1 failed" in printed.err
    assert main(["forecast", str(source), "--format", "json", "--as-is", *CONFIG]) == 0
    printed = capsys.readouterr()
    assert "1 without a close date" in printed.err and "2 without an amount" in printed.err


def test_the_chart_is_written_as_svg(tmp_path, capsys):
    chart = tmp_path / "forecast.svg"
    main(["forecast", str(EXAMPLE), "--chart", str(chart), "--by", "owner", *CONFIG])
    err = capsys.readouterr().err
    assert "--by is ignored" in err
    svg = chart.read_text(encoding="utf-8")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert 'xmlns="http://www.w3.org/2000/svg"' in svg  # a file on its own needs the namespace
    for month in ("2026-06", "2027-08"):
        assert f">{month}</text>" in svg
    assert main(["forecast", str(EXAMPLE), "--chart", str(tmp_path / "x.png"), *CONFIG]) == 2


# --- the property -----------------------------------------------------------------------------

AMOUNTS = st.one_of(st.just(""), st.just("abc"),
                    st.decimals(min_value=0, max_value=10**9, places=2).map(str),
                    st.integers(0, 10**7).map(lambda n: f"{n:,}"),
                    st.decimals(min_value=-10**5, max_value=0, places=3).map(str))
DATES = st.one_of(st.just(""), st.just("2026-02-30"),
                  st.dates(dt.date(2024, 1, 1), dt.date(2029, 12, 31)).map(dt.date.isoformat))
STAGE_TEXTS = st.sampled_from([*ref.STAGES, *ref.WON, *ref.LOST, "", "Lost?"])


@st.composite
def records(draw: st.DrawFn) -> dict[str, str]:
    return {
        "Id": "", "Name": "x", "StageName": draw(STAGE_TEXTS), "Amount": draw(AMOUNTS),
        "CloseDate": draw(DATES),
        "Proposal_Type__c": draw(st.sampled_from(["", "Firm", "Budgetary"])),
        "Relationship_Level__c": draw(st.sampled_from(["", *ref.RELATIONSHIPS])),
        "Owner.Name": draw(st.sampled_from(["", "Ana", "Bo"])), "Owner.Email": "",
        "Account.Name": "", "Probability": draw(st.sampled_from(["", "0", "35", "99.5", "120"])),
        "Weighted_Amount__c": "", "Probability_Rule__c": "",
    }


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(), max_size=40), st.sampled_from(["month", "owner", "stage"]),
       st.booleans())
def test_whatever_the_data_the_totals_are_the_sums_over_the_records(data, by, as_is):
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "export.csv"
        for n, r in enumerate(data):
            r["Id"] = f"H{n}"
        ref.write_export(source, data)
        result, _ = forecast(rules(), source, TODAY, by, as_is)
    expected = [ref.expect(n + 2, r, TODAY) for n, r in enumerate(data)]
    buckets, left = ref.forecast(expected, by, as_is, TODAY)
    rows = result.rows()
    # each bucket, and so the totals, are the sums over the records placed in it
    assert {b.key: (b.opportunities, b.amount, b.weighted_amount) for b in rows} == {
        k: (t.opportunities, t.amount, t.weighted) for k, t in buckets.items()}
    total = result.total()
    assert total.opportunities == sum(t.opportunities for t in buckets.values())
    assert total.amount == sum((t.amount for t in buckets.values()), Decimal(0))
    assert total.weighted_amount == sum((e.amount * (e.old_probability if as_is else
                                                     e.probability) / 100
                                         for e in expected if _placed(e, by, as_is)),
                                        Decimal(0))
    # nothing is dropped silently: placed + left out (by reason, failures too) = every record
    assert result.left_out == dict(left)
    assert total.opportunities + sum(result.left_out.values()) == len(data)
    keys = [b.key for b in rows]
    if by != "stage":  # overdue first, then the months (or owners) in order
        assert keys == sorted(keys, key=lambda k: (k != "overdue", k))


def _placed(e: ref.Expected, by: str, as_is: bool) -> bool:
    if not e.read_ok or (not as_is and e.error is not None):
        return False
    if e.stage and e.stage.strip().casefold() in {s.casefold() for s in ref.LOST}:
        return False
    key = e.close_date if by == "month" else (e.owner if by == "owner" else e.stage)
    p = e.old_probability if as_is else e.probability
    return bool(key) and e.amount is not None and p is not None


def test_the_cli_json_total_is_the_rounded_exact_sum(tmp_path, capsys):
    """Amounts with cents at 33 %: the weighted sum is rounded once, at the end, not per deal."""
    source = tmp_path / "export.csv"
    amounts = ["0.05", "0.05", "0.05", "10.01"]
    with source.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Id", "StageName", "Amount", "CloseDate", "Probability"])
        writer.writerows([f"R{i}", "Qualification", a, "2027-03-15", "33"]
                         for i, a in enumerate(amounts))
    assert main(["forecast", str(source), "--format", "json", "--as-is", *CONFIG]) == 0
    [month, left_out] = json.loads(capsys.readouterr().out)
    assert left_out == {"month": "left out", "opportunities": 0, "reasons": {}}
    exact = sum(Decimal(a) * 33 / 100 for a in amounts)
    assert month == {"month": "2027-03", "opportunities": 4, "amount": "10.16",
                     "weighted_amount": cents(exact)}
    assert cents(exact) == "3.35"  # per-deal rounding would say 0.02 * 3 + 3.30 = 3.36


# --- the dry run's two forecasts, summed per (close date, probabilities) -----------------------

def _bucket_map(fc: Forecast) -> dict[str, tuple[int, Decimal, Decimal]]:
    return {b.key: (b.opportunities, b.amount, b.weighted_amount) for b in fc.rows()}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(), max_size=40))
def test_the_dry_runs_forecasts_are_the_forecast_commands(data):
    """`simulate` fills both forecasts at once (MonthPairs); `forecast` adds record by record."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "export.csv"
        for n, r in enumerate(data):
            r["Id"] = f"H{n}"
        ref.write_export(source, data)
        summary = simulate(rules(), source, None, TODAY)
        after, _ = forecast(rules(), source, TODAY)
        as_is, _ = forecast(rules(), source, TODAY, as_is=True)
    assert _bucket_map(summary.forecast) == _bucket_map(after)
    assert summary.forecast.left_out == after.left_out
    assert _bucket_map(summary.forecast_as_is) == _bucket_map(as_is)
    # the records the rules fail stay in the as-is forecast, as `forecast --as-is` counts them
    assert summary.forecast_as_is.left_out == as_is.left_out


PROBABILITIES = st.one_of(st.none(), st.booleans(), st.just("50"),
                          st.integers(0, 100), st.decimals(0, 100, places=1))
VALUES = st.fixed_dictionaries({
    "amount": st.one_of(st.none(), st.integers(0, 10**6),
                        st.decimals(min_value=0, max_value=10**12, places=2)),
    "close_date": st.one_of(st.none(), st.just("2027-01-05"),
                            st.dates(dt.date(2026, 1, 1), dt.date(2027, 12, 31))),
    "probability": PROBABILITIES})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(VALUES, PROBABILITIES, st.sampled_from(["as read", "changed",
                                                                   "rounded"])), max_size=30),
       st.sampled_from([0, 3, 50_000]))
def test_month_pairs_equal_adding_each_record_to_each_forecast(data, limit):
    """Whatever the values (a probability True, 50 or Decimal('50.0'), an amount the rules
    changed or rounded): the sums by (close date, probabilities) give each forecast's buckets
    and counts. `limit`: the sums kept, past which records are added the long way."""
    paired_after, paired_as_is, one_after, one_as_is = (Forecast() for _ in range(4))
    with patch.object(forecast_module, "_PAIRS_LIMIT", limit):
        pairs = MonthPairs(paired_after, paired_as_is)
        add = pairs.adder()
        add_after, add_as_is = one_after.month_adder(), one_as_is.month_adder()
        for read, probability, amount_after in data:
            after = dict(read, probability=probability)
            if amount_after != "as read" and read["amount"] is not None:
                # a rule set it, or the writeback rounded it: equal maybe, but another object
                after["amount"] = (read["amount"] + 1 if amount_after == "changed"
                                   else +read["amount"])
            add(after, read)
            add_after(after)
            add_as_is(read)
        assert len(pairs._sums) <= limit
        pairs.close()
    assert _bucket_map(paired_after) == _bucket_map(one_after)
    assert _bucket_map(paired_as_is) == _bucket_map(one_as_is)
    assert paired_after.left_out == one_after.left_out
    assert paired_as_is.left_out == one_as_is.left_out


def test_an_amount_the_writeback_rounds_is_forecast_rounded_in_both(tmp_path):
    """With the amount among the writeback fields, its value after the rules is rounded to
    cents: the dry run's forecast sums the rounded amounts, as `forecast` does."""
    import shutil

    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    sf = mappings / "salesforce.yaml"
    sf.write_text(sf.read_text(encoding="utf-8").replace(
        "writeback: [probability, weighted_amount, rule]",
        "writeback: [probability, weighted_amount, rule, amount]"), encoding="utf-8")
    loaded = load(ROOT / "rules", mappings)
    assert loaded.rules is not None and loaded.ok, loaded.findings
    source = tmp_path / "export.csv"
    ref.write_export(source, [
        {"Id": f"R{n}", "StageName": "Prospecting", "Amount": amount, "CloseDate": "2027-01-15"}
        for n, amount in enumerate(["392000.555", "1000.005", "20000.004", "5"])])
    summary = simulate(loaded.rules, source, None, TODAY)
    after, _ = forecast(loaded.rules, source, TODAY)
    assert _bucket_map(summary.forecast) == _bucket_map(after)
    assert _bucket_map(summary.forecast)["2027-01"][1] == Decimal("413005.57")  # each rounded
