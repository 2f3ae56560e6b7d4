"""`simulate`: the dry run over an export, compared row by row with an independent model.

The model (tests/reference_dry_run.py) is written from the SPEC and the bundled rule files; it
does not call the connector. Each output row must carry the input's cells, the writeback
columns set to what would be written, `_rule`, `_changed` and `_error`, and the summary's counts
must be the model's.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
from collections import Counter
from decimal import Decimal
from functools import cache
from pathlib import Path

import pytest
import reference_dry_run as ref
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.cli import main
from connector.files import load
from connector.simulate import simulate

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "opportunities.csv"
EXAMPLE_JSON = ROOT / "examples" / "opportunities.json"
TODAY = dt.date(2026, 11, 26)
CONFIG = ["--rules", str(ROOT / "rules"), "--mappings", str(ROOT / "mappings"),
          "--today", TODAY.isoformat()]
DATASET = ROOT.parent / "shared" / "datasets" / "crm-sales-opportunities"

# examples/README.md: the six rows that must fail, and what the reason must name
BAD_ROWS = {
    "006Dn00000MUb51IAD": ("stage", "Negotiaton/Review"),
    "006Dn00000CoKSUIA3": ("amount", "abc"),
    "006Dn00000OvR79IAF": ("amount", "392.000,00"),
    "006Dn00000unTLiIAM": ("close_date", "empty"),
    "006Dn00000elds3IAA": ("relationship", "Champion"),
    "006Dn00000EL9dvIAD": ("stage", "empty"),
}


@cache
def rules():  # type: ignore[no-untyped-def]
    loaded = load(ROOT / "rules", ROOT / "mappings")
    assert loaded.ok and loaded.rules is not None
    return loaded.rules


def read_output(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8-sig", newline="") as f:  # with the input's BOM, if it had one
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def compare(inputs: list[tuple[int, dict[str, str]]], header: list[str],
            out_header: list[str], out_rows: list[dict[str, str]],
            explain: bool = False) -> list[ref.Expected]:
    """Every output row against the model. `header` is the input file's own header (maybe
    upper-case, maybe without a writeback column); the input dicts are keyed by ref.HEADER."""
    expected = [ref.expect(line, row, TODAY) for line, row in inputs]
    by_fold = {h.casefold(): h for h in out_header}
    assert out_header[:len(header)] == header
    for name in ref.WRITEBACK:  # a writeback column the input lacks is added
        assert ref.COLUMNS[name].casefold() in by_fold
    written = [by_fold[ref.COLUMNS[name].casefold()] for name in ref.WRITEBACK]
    added = out_header.index("_rule")
    assert out_header[added:] == ["_rule", "_changed", "_error"] + (
        ["_why", *(f"_before_{column}" for column in written)] if explain else [])
    assert len(out_rows) == len(expected)
    for e, (line, row), got in zip(expected, inputs, out_rows):
        where = f"line {line} ({e.record_id})"
        for column in ref.HEADER:
            out_column = by_fold[column.casefold()]
            name = next((n for n, c in ref.COLUMNS.items() if c == column), None)
            if e.error is None and name in e.changed:
                want = ref.shown(e.written[name])
            else:
                want = row.get(column, "")
            assert got[out_column] == want, f"{where}: {column}"
            if explain and name in ref.WRITEBACK:  # and what it held before, as read
                assert got[f"_before_{out_column}"] == row.get(column, ""), where
        if e.error is not None:
            assert got["_error"], f"{where}: should fail ({e.error.field} {e.error.value})"
            assert e.error.field in got["_error"] and e.error.value in got["_error"], where
            assert got["_rule"] == "" and got["_changed"] == ""
            assert "Traceback" not in got["_error"]
        else:
            assert got["_error"] == "", f"{where}: {got['_error']}"
            assert got["_rule"] == e.rule, where
            assert got["_changed"] == ";".join(e.changed), where
            if not explain:
                continue
            if e.rule.startswith("closed"):
                assert got["_why"] == "", where
            else:
                shown = dict(p.split("=", 1) for p in got["_why"].split(" · "))
                assert list(shown) == ["stage", "proposal", "relationship", "size"], where
                assert shown["stage"] == row["StageName"].strip(), where
    return expected


def check_summary(summary, expected: list[ref.Expected]) -> None:  # type: ignore[no-untyped-def]
    ok = [e for e in expected if e.error is None]
    assert summary.read == len(expected)
    assert summary.failed == len(expected) - len(ok)
    assert summary.changed == sum(1 for e in ok if e.changed)
    assert dict(summary.per_workflow) == dict(Counter(e.rule for e in ok))
    assert dict(summary.actions) == dict(Counter(a for e in ok for a in e.actions))
    failed = [(e.line, e.record_id) for e in expected if e.error is not None]
    assert [(f.line, f.record_id) for f in summary.failures] == failed[:len(summary.failures)]
    assert [c.line for c in summary.changes] == [e.line for e in ok if e.changed][
        :len(summary.changes)]
    for c in summary.changes:
        e = next(x for x in ok if x.line == c.line)
        assert list(c.after) == e.changed
        assert c.after == {k: ref.shown(e.written[k]) for k in e.changed}
    for fc, as_is in ((summary.forecast, False), (summary.forecast_as_is, True)):
        buckets, _ = ref.forecast(expected, as_is=as_is, today=TODAY)
        assert {b.key: (b.opportunities, b.amount, b.weighted_amount) for b in fc.rows()} == {
            k: (t.opportunities, t.amount, t.weighted) for k, t in buckets.items()}


# --- the bundled example ----------------------------------------------------------------------

def test_explain_adds_why_and_what_each_written_column_held(tmp_path, capsys):
    """`--explain`: each row also says which factor values chose its workflow, and what each
    writeback column held before; every other column as without it."""
    plain, explained = tmp_path / "plain.csv", tmp_path / "explained.csv"
    assert main(["simulate", str(EXAMPLE), "--out", str(plain), *CONFIG]) == 1
    assert main(["simulate", str(EXAMPLE), "--out", str(explained), "--explain", *CONFIG]) == 1
    capsys.readouterr()
    inputs = ref.read_csv_with_lines(EXAMPLE.read_text(encoding="utf-8"))
    out_header, out_rows = read_output(explained)
    compare(inputs, ref.HEADER, out_header, out_rows, explain=True)
    _, plain_rows = read_output(plain)
    assert [{k: r[k] for k in p} for p, r in zip(plain_rows, out_rows)] == plain_rows


def test_the_example_matches_the_model_row_by_row(tmp_path, capsys):
    out = tmp_path / "out.csv"
    assert main(["simulate", str(EXAMPLE), "--out", str(out), *CONFIG]) == 1  # six rows fail
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err
    inputs = ref.read_csv_with_lines(EXAMPLE.read_text(encoding="utf-8"))
    out_header, out_rows = read_output(out)
    expected = compare(inputs, ref.HEADER, out_header, out_rows)
    failed = {e.record_id: e for e in expected if e.error is not None}
    assert {k: (e.error.field, e.error.value) for k, e in failed.items()} == BAD_ROWS
    # each failure is printed with its line, its id and the reason
    for record_id, e in failed.items():
        line = next(x for x in printed.out.splitlines() if record_id in x)
        assert line.strip().startswith(f"line {e.line} ({record_id}):"), line
        assert e.error.value in line or e.error.value == "empty"
    ok = [e for e in expected if e.error is None]
    assert f"would change {sum(1 for e in ok if e.changed)}, unchanged " \
           f"{sum(1 for e in ok if not e.changed)}, failed 6" in printed.out
    # the example is meant to have changed and unchanged rows, and every workflow
    assert 0 < sum(1 for e in ok if e.changed) < len(ok)
    check_summary(simulate(rules(), EXAMPLE, None, TODAY), expected)


def test_the_json_export_gives_the_same_answers_as_the_csv(tmp_path):
    csv_out, json_out = tmp_path / "out.csv", tmp_path / "out.json"
    from_csv = simulate(rules(), EXAMPLE, csv_out, TODAY)
    from_json = simulate(rules(), EXAMPLE_JSON, json_out, TODAY)
    for attr in ("read", "changed", "failed", "per_workflow", "actions"):
        assert getattr(from_json, attr) == getattr(from_csv, attr), attr
    assert from_json.forecast.rows() == from_csv.forecast.rows()
    _, csv_rows = read_output(csv_out)
    json_rows = json.loads(json_out.read_text(encoding="utf-8"))
    assert [r["Id"] for r in json_rows] == [r["Id"] for r in csv_rows]
    for c, j in zip(csv_rows, json_rows):
        assert (j["_rule"], j["_changed"]) == (c["_rule"], c["_changed"]), c["Id"]
        assert bool(j["_error"]) == bool(c["_error"])
        assert "attributes" not in j  # the REST API's metadata is not data
        for name in c["_changed"].split(";") if c["_changed"] else []:
            column = ref.COLUMNS[name]
            got, want = j[column], c[column]
            if name == "rule" or want == "":
                assert got == (want or None)
            else:  # a JSON number, never a string, equal to the CSV's text
                assert isinstance(got, (int, float)) and Decimal(str(got)) == Decimal(want)


def test_out_json_holds_the_rows_with_numbers_and_the_three_columns(tmp_path):
    out = tmp_path / "out.json"
    assert main(["simulate", str(EXAMPLE), "--out", str(out), *CONFIG]) == 1
    rows = json.loads(out.read_text(encoding="utf-8"))
    inputs = ref.read_csv_with_lines(EXAMPLE.read_text(encoding="utf-8"))
    assert len(rows) == len(inputs)
    for (line, row), got in zip(inputs, rows):
        e = ref.expect(line, row, TODAY)
        assert list(got)[:len(ref.HEADER)] == ref.HEADER
        assert list(got)[-3:] == ["_rule", "_changed", "_error"]
        assert got["Id"] == row["Id"] and got["Name"] == row["Name"]
        if e.error is not None:
            assert got["_error"] and got["_rule"] == ""
            continue
        assert (got["_rule"], got["_changed"], got["_error"]) == (e.rule, ";".join(e.changed), "")
        for name in e.changed:
            value = got[ref.COLUMNS[name]]
            new = e.written[name]
            if isinstance(new, (int, Decimal)):
                assert isinstance(value, (int, float)) and not isinstance(value, bool)
                assert Decimal(str(value)) == new
            else:
                assert value == new


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_a_json_export_explained_says_why_and_before_for_every_record(tmp_path, suffix):
    """A JSON export's output starts with its first record's keys; with --explain, each
    record, failed or not, has `_why` and what each written field held before, as the CSV
    export's output has them."""
    out, from_csv = tmp_path / f"out{suffix}", tmp_path / f"from_csv{suffix}"
    simulate(rules(), EXAMPLE_JSON, out, TODAY, explain=True)
    simulate(rules(), EXAMPLE, from_csv, TODAY, explain=True)
    if suffix == ".json":
        got = json.loads(out.read_text(encoding="utf-8"))
        want = json.loads(from_csv.read_text(encoding="utf-8"))
    else:
        got, want = read_output(out)[1], read_output(from_csv)[1]
    assert len(got) == len(want) == len(ref.read_csv_with_lines(EXAMPLE.read_text("utf-8")))
    columns = ["_rule", "_changed", "_why", *(f"_before_{ref.COLUMNS[n]}" for n in ref.WRITEBACK)]

    def same(a: object, b: object) -> bool:  # a number in JSON, its text in the CSV
        a, b = "" if a is None else str(a), "" if b is None else str(b)
        return a == b or (a[:1].isdigit() and b[:1].isdigit() and Decimal(a) == Decimal(b))

    for g, w in zip(got, want):
        assert g["Id"] == w["Id"] and bool(g["_error"]) == bool(w["_error"]), w["Id"]
        assert all(same(g[c], w[c]) for c in columns), (w["Id"], g, w)


# --- exit codes and usage errors ----------------------------------------------------------------

def test_exit_code_is_0_when_every_row_passes(tmp_path, capsys):
    good = tmp_path / "good.csv"
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
    good.write_text("".join(line for line in lines
                            if not any(bad in line for bad in BAD_ROWS)), encoding="utf-8")
    assert main(["simulate", str(good), "--out", str(tmp_path / "o.csv"), *CONFIG]) == 0
    assert "failed 0" in capsys.readouterr().out
    _, rows = read_output(tmp_path / "o.csv")
    assert len(rows) == 394 and not any(r["_error"] for r in rows)


def test_one_bad_row_gives_exit_code_1_and_the_others_go_on(tmp_path, capsys):
    bad = tmp_path / "one-bad.csv"
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
    bad.write_text("".join(lines[:4]) + lines[4].replace(",Qualification,", ",Qualifcation,"),
                   encoding="utf-8")
    assert main(["simulate", str(bad), "--out", str(tmp_path / "o.csv"), *CONFIG]) == 1
    printed = capsys.readouterr().out
    assert "line 5 (" in printed and "Qualifcation" in printed and "Traceback" not in printed
    _, rows = read_output(tmp_path / "o.csv")
    assert [bool(r["_error"]) for r in rows] == [False, False, False, True]


@pytest.mark.parametrize("suffix", [".xlsx", ".parquet", ""])
def test_an_unknown_out_suffix_is_a_usage_error(tmp_path, capsys, suffix):
    out = tmp_path / f"out{suffix}"
    assert main(["simulate", str(EXAMPLE), "--out", str(out), *CONFIG]) == 2
    assert not out.exists()
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err


def test_a_missing_input_file_is_a_usage_error(tmp_path, capsys):
    assert main(["simulate", str(tmp_path / "nope.csv"), *CONFIG]) == 2
    printed = capsys.readouterr()
    assert "nope.csv" in printed.err and "Traceback" not in printed.out + printed.err


def test_an_input_that_is_not_csv_or_json_is_a_configuration_error(tmp_path, capsys):
    source = tmp_path / "export.xlsx"
    source.write_bytes(b"PK\x03\x04")
    assert main(["simulate", str(source), *CONFIG]) == 2
    assert "use .csv (or .tsv, .txt) or .json" in capsys.readouterr().err


def test_a_report_with_a_wrong_suffix_is_a_usage_error(tmp_path):
    assert main(["simulate", str(EXAMPLE), "--report", str(tmp_path / "r.pdf"), *CONFIG]) == 2


# --- generated exports --------------------------------------------------------------------------

NAMES = ["Acme - 40 Servers", 'Union Street Legal, LLP - 3 "Rugged" Handhelds',
         "Müller-Lindqvist - Cabling", "  padded name  ", "2026-01-05 kickoff", "12 Laptops"]
STAGE_TEXTS = [*ref.STAGES, *ref.WON, *ref.LOST, " negotiation/review ", "CLOSED WON",
               "cancelled", "", "Negotiaton/Review", "Won"]
AMOUNTS = ["", "0", "2000", "19999.99", "20000", "99999.995", "100000", "450000", "12,500.00",
           "1,234,567.89", " 2500 ", "+300", "7%", "-5", "abc", "12.500,00", "1,2345"]
DATES = ["2026-12-31", "2027-02-28", "2026-06-15", "2026-11-01", "2026-10-31", "", "31/12/2026",
         "2026-13-01"]
PROPOSAL_TEXTS = ["", "Firm", "Budgetary", " firm", "BUDGETARY", "Verbal"]
LEVELS = ["", "Strategic", "Trusted", "Known", "New", "trusted ", "Champion"]
PROBABILITIES = ["", "10", "60", "60.0", "75", "90%", "55.5", "abc"]
WEIGHTED = ["", "0", "0.00", "7500.00", "x"]
RULE_TEXTS = ["", "p60", "closed-won", "P60", "closed-lost"]


@st.composite
def export_rows(draw: st.DrawFn) -> dict[str, str]:
    row = {
        "Id": "", "Name": draw(st.sampled_from(NAMES)),
        "StageName": draw(st.sampled_from(STAGE_TEXTS)),
        "Amount": draw(st.sampled_from(AMOUNTS)), "CloseDate": draw(st.sampled_from(DATES)),
        "Proposal_Type__c": draw(st.sampled_from(PROPOSAL_TEXTS)),
        "Relationship_Level__c": draw(st.sampled_from(LEVELS)),
        "Owner.Name": draw(st.sampled_from(["Maria Gonzalez", "Chen Wei", ""])),
        "Owner.Email": draw(st.sampled_from(["maria@example.com", "chen@example.com"])),
        "Account.Name": draw(st.sampled_from(["Acme Corp", "Zenith Robotics", ""])),
        "Probability": draw(st.sampled_from(PROBABILITIES)),
        "Weighted_Amount__c": draw(st.sampled_from(WEIGHTED)),
        "Probability_Rule__c": draw(st.sampled_from(RULE_TEXTS)),
    }
    if draw(st.integers(0, 2)) == 0:  # already written by an earlier run: often unchanged
        e = ref.expect(2, row, TODAY)
        if e.error is None:
            row["Probability"] = draw(st.sampled_from(
                [str(e.written["probability"]), f"{e.written['probability']}.0"]))
            w = e.written["weighted_amount"]
            row["Weighted_Amount__c"] = "" if w is None else draw(st.sampled_from(
                [ref.shown(w), ref.shown(w.normalize()) if w else "0"]))
            row["Probability_Rule__c"] = str(e.written["rule"])
    return row


@st.composite
def exports(draw: st.DrawFn) -> tuple[str, list[str], list[tuple[int, dict[str, str]]]]:
    """A CSV text with its quirks, its header, and the rows (by ref.HEADER) with their lines."""
    rows = draw(st.lists(export_rows(), max_size=30))
    header = list(ref.HEADER)
    if draw(st.booleans()):
        header = [h.upper() for h in header]  # Data Loader
    dropped = draw(st.sampled_from([None, "Weighted_Amount__c", "Probability_Rule__c"]))
    if dropped is not None:
        header = [h for h in header if h.casefold() != dropped.casefold()]
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator=eol)
    writer.writerow(header)
    line = 2
    inputs = []
    for n, row in enumerate(rows):
        row["Id"] = f"006GEN{n:012d}"
        if dropped is not None:
            row[dropped] = ""
        while draw(st.integers(0, 5)) == 0:  # blank lines between rows
            text.write(eol)
            line += 1
        by_canonical = dict(zip([h.casefold() for h in ref.HEADER], ref.HEADER))
        writer.writerow([row[by_canonical[h.casefold()]] for h in header])
        inputs.append((line, row))
        line += 1
    bom = "\ufeff" if draw(st.booleans()) else ""
    return bom + text.getvalue(), header, inputs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exports())
def test_generated_exports_match_the_model(export):
    import tempfile

    text, header, inputs = export
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "export.csv", Path(tmp) / "out.csv"
        source.write_bytes(text.encode("utf-8"))
        summary = simulate(rules(), source, out, TODAY)
        out_header, out_rows = read_output(out)
    expected = compare(inputs, header, out_header, out_rows)
    check_summary(summary, expected)


def test_a_large_generated_export_matches_the_model(tmp_path):
    """Two thousand rows, enough to fill the parse caches and go past them."""
    rng = random.Random(11)
    source, out = tmp_path / "big.csv", tmp_path / "out.csv"
    inputs = []
    with source.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(ref.HEADER)
        for n in range(2000):
            row = {"Id": f"006BIG{n:012d}", "Name": f"Deal {n}",
                   "StageName": rng.choice(STAGE_TEXTS),
                   "Amount": rng.choice([*AMOUNTS, str(rng.randrange(10**7) / 100)]),
                   "CloseDate": rng.choice([*DATES, (TODAY + dt.timedelta(
                       days=rng.randrange(-200, 400))).isoformat()]),
                   "Proposal_Type__c": rng.choice(PROPOSAL_TEXTS),
                   "Relationship_Level__c": rng.choice(LEVELS),
                   "Owner.Name": f"Owner {n % 7}", "Owner.Email": f"o{n % 7}@example.com",
                   "Account.Name": f"Account {n % 31}",
                   "Probability": rng.choice(PROBABILITIES),
                   "Weighted_Amount__c": rng.choice(WEIGHTED),
                   "Probability_Rule__c": rng.choice(RULE_TEXTS)}
            writer.writerow([row[h] for h in ref.HEADER])
            inputs.append((n + 2, row))
    summary = simulate(rules(), source, out, TODAY)
    out_header, out_rows = read_output(out)
    expected = compare(inputs, ref.HEADER, out_header, out_rows)
    check_summary(summary, expected)
    assert summary.failed > 0 and summary.changed > 0


@pytest.mark.parametrize("source", [EXAMPLE, EXAMPLE_JSON])
def test_progress_is_told_how_far_into_the_file_the_run_is(tmp_path, source):
    """Long runs show a progress bar on a terminal: it is fed (bytes read, file size)."""
    big = tmp_path / f"big{source.suffix}"
    if source.suffix == ".csv":
        lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
        big.write_text(lines[0] + "".join(lines[1:]) * 15, encoding="utf-8")  # 6,000 rows
    else:
        records = json.loads(source.read_text(encoding="utf-8"))
        big.write_text(json.dumps(records * 15), encoding="utf-8")
    calls: list[tuple[int, int]] = []
    summary = simulate(rules(), big, None, TODAY, lambda done, total: calls.append((done, total)))
    assert summary.read == 6000
    size = big.stat().st_size
    assert len(calls) == 6000 // 2000 + 1
    assert all(total == size for _, total in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done) and 0 < done[0] < size and done[-1] == size


def test_the_model_agrees_with_the_decision_table(capsys):
    """Guards the model itself: if rules/probability.yaml changes, this fails first."""
    assert main(["table", "--format", "json", *CONFIG[:4]]) == 0
    table = json.loads(capsys.readouterr().out)
    assert len(table) == 6 * 2 * 4 * 3
    for row in table:
        f = row["factors"]
        p = ref.probability_of(f["stage"], f["proposal"], f["relationship"])
        assert row["workflow"] == f"p{p}" and row["probability"] == str(p), row


# --- the real dataset ---------------------------------------------------------------------------

DATASET_MAPPING = """\
crm: salesforce
object: Opportunity
id: opportunity_id
modified: close_date
fields:
  name: product
  stage: deal_stage
  amount: close_value
  close_date: close_date
  owner_name: sales_agent
  account_name: account
  probability: Probability
  weighted_amount: Weighted_Amount
  rule: Rule
writeback: [probability, weighted_amount, rule]
types:
  amount: money
  close_date: date
  probability: percent
  weighted_amount: money
"""

DATASET_RULES = """\
factors:
  stage:
    field: stage
    values: [Engaging, Prospecting]
closed:
  field: stage
  won: [Won]
  lost: [Lost]
workflows:
  - name: p40
    when: {stage: Engaging}
    set: {probability: 40}
  - name: p10
    when: {stage: Prospecting}
    set: {probability: 10}
computed:
  weighted_amount: amount * probability / 100
"""


@pytest.mark.dataset
def test_the_real_maven_dataset(tmp_path, capsys):
    """8,800 real pipeline rows (CRLF, empty accounts, open deals without close date or value):
    every row passes, the workflow counts are the stage counts, and the forecast by month is
    the sum of the won deals' values (lost deals weigh 0, open deals have no close date)."""
    source = DATASET / "sales_pipeline.csv"
    if not source.is_file():
        pytest.skip(f"the dataset is not at {DATASET}")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(DATASET_RULES, encoding="utf-8")
    mapping = tmp_path / "maven.yaml"
    mapping.write_text(DATASET_MAPPING, encoding="utf-8")
    config = ["--rules", str(tmp_path / "rules"), "--mapping", str(mapping),
              "--mappings", str(tmp_path), "--today", "2018-01-01"]
    with source.open(encoding="utf-8", newline="") as f:
        data = list(csv.DictReader(f))
    stages = Counter(r["deal_stage"] for r in data)
    out = tmp_path / "out.csv"
    assert main(["simulate", str(source), "--out", str(out), *config]) == 0
    printed = capsys.readouterr().out
    assert f"{len(data)} records" in printed and "failed 0" in printed
    out_header, rows = read_output(out)
    assert out_header[:8] == list(data[0])
    assert out_header[8:] == ["Probability", "Weighted_Amount", "Rule", "_rule", "_changed",
                              "_error"]
    want_rule = {"Won": "closed-won", "Lost": "closed-lost", "Engaging": "p40",
                 "Prospecting": "p10"}
    want_p = {"Won": "100", "Lost": "0", "Engaging": "40", "Prospecting": "10"}
    assert Counter(r["_rule"] for r in rows) == Counter(
        {want_rule[k]: v for k, v in stages.items()})
    for source_row, got in zip(data, rows):
        stage = source_row["deal_stage"]
        assert got["opportunity_id"] == source_row["opportunity_id"]
        assert (got["_rule"], got["Probability"]) == (want_rule[stage], want_p[stage])
        value = source_row["close_value"]
        want_w = "" if not value else f"{Decimal(value) * int(want_p[stage]) / 100:.2f}"
        assert got["Weighted_Amount"] == want_w
    assert main(["forecast", str(source), "--format", "json", *config]) == 0
    printed = capsys.readouterr()
    *months, left_out = json.loads(printed.out)
    won = [r for r in data if r["deal_stage"] == "Won"]
    # lost deals are out of the pipeline (SPEC 6.1): only the won ones are summed
    assert sum(m["opportunities"] for m in months) == len(won) == stages["Won"]
    assert sum(Decimal(m["amount"]) for m in months) == sum(Decimal(r["close_value"])
                                                           for r in won)
    open_deals = stages["Engaging"] + stages["Prospecting"]
    assert left_out["reasons"] == {"lost": stages["Lost"], "without a close date": open_deals}
    assert sum(Decimal(m["weighted_amount"]) for m in months) == sum(
        Decimal(r["close_value"]) for r in won) == 10_005_534
    per_month = Counter()
    for r in won:
        per_month[r["close_date"][:7]] += int(r["close_value"])
    assert {m["month"]: Decimal(m["weighted_amount"]) for m in months} == per_month
    assert f"{open_deals} without a close date" in printed.err


# --- the dry run's fast paths give what the general ones give ------------------------------------
# simulate reads, evaluates and compares through shortcuts (connector/core/_fast.py,
# values.ParseCache, Mapping.row_reader, values.writer_for, _fast._differs): each is checked
# here against the plain function it stands in for, on values chosen to hit the corners.

from connector.core._fast import Names, _differs, compile_formula  # noqa: E402
from connector.core.expressions import parse_formula  # noqa: E402
from connector.core.forecast import month_of  # noqa: E402
from connector.core.values import (  # noqa: E402
    EXPORT,
    FieldType,
    as_text,
    for_write,
    parse_cache,
    same,
    writer_for,
)
from connector.errors import RecordError  # noqa: E402

VALUES = [None, Decimal(0), Decimal("2.50"), Decimal("-3"), Decimal("100000"), Decimal("1E+2"),
          7, 0, 1.5, True, False, "x", "", "60", dt.date(2026, 11, 1), dt.date(2027, 1, 31)]
LEAVES = ["a", "b", "c", "today", "0", "2", "0.5", "100000", "'x'", "''", "date('2026-11-01')",
          "date('not a date')", "true", "none"]
BINARY = ["+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "and", "or", "in",
          "not in"]


@st.composite
def formulas(draw: st.DrawFn, depth: int = 3) -> str:
    shape = draw(st.integers(0, 9 if depth > 0 else 0))
    if shape == 0:
        return draw(st.sampled_from(LEAVES))
    x, y, z = (draw(formulas(depth - 1)) for _ in range(3))
    if shape == 1:
        return f"({x} {draw(st.sampled_from(BINARY))} {y})"
    if shape == 2:
        return f"({x} < {y} <= {z})"
    if shape == 3:
        return f"(not {x})"
    if shape == 4:
        return f"(-{x})"
    if shape == 5:
        return f"({x} if {y} else {z})"
    if shape == 6:
        return f"({x} in ['x', 'y', 2])"
    if shape == 7:
        return f"{draw(st.sampled_from(['min', 'max', 'coalesce', 'days_between']))}({x}, {y})"
    if shape == 8:
        return f"round({x}, {draw(st.sampled_from(['0', '2', '-1', '0.5', 'b']))})"
    return f"{draw(st.sampled_from(['round', 'abs', 'month', 'date']))}({x})"


def result(fn, values):  # type: ignore[no-untyped-def]
    try:
        value = fn(values)
    except RecordError as exc:
        return "RecordError", str(exc)
    except Exception as exc:  # the two must fail alike, whatever the failure
        return type(exc).__name__, str(exc)
    return type(value).__name__, repr(value)  # repr: Decimal('1.0') is not Decimal('1.00')


@settings(max_examples=600, deadline=None)
@given(formulas(), st.lists(st.sampled_from(VALUES), min_size=3, max_size=3))
def test_a_compiled_formula_equals_the_interpreted_one(source, values):
    formula = parse_formula(source, ["a", "b", "c", "today"])
    names = dict(zip("abc", values), today=TODAY)
    compiled = result(compile_formula(formula), Names(names))
    interpreted = result(formula.evaluate, names)
    assert compiled == interpreted  # a failure's message too


OPERANDS = [None, Decimal("2.50"), Decimal(0), Decimal("-3"), 7, 0, -2, True, 1.5, "x",
            dt.date(2026, 11, 1)]


@pytest.mark.parametrize("operator", ["+", "-", "*", "/", "%"])
def test_compiled_arithmetic_equals_the_interpreted_on_every_pair_of_kinds(operator):
    # the fast path takes two Decimals; every other pair (an int, a bool, a blank, a date)
    # must come out as the operator function's, with a literal on either side too
    for source in (f"a {operator} b", f"a {operator} 4", f"4 {operator} a", f"a {operator} 0"):
        formula = parse_formula(source, ["a", "b"])
        compiled = compile_formula(formula)
        for a in OPERANDS:
            for b in OPERANDS:
                names = {"a": a, "b": b}
                assert result(compiled, Names(names)) == result(formula.evaluate, names), (
                    source, a, b)


TEXTS = ["", " ", "0", "60", "60%", " 60.50 ", "1,234.50", "12.500,00", "abc", "2026-11-26",
         "2026-02-30", "2026-11-26T10:00:00.000+0000", "true", "No", "Firm", " firm ", "0123",
         "1234.50", "1234.", ".5", "-5", "+5", "٣٤", "²", "Firm ", "Ünïcode", "5e3", "1_000",
         "NaN", "Infinity", "12 500", "1.500", "1,500", "-250.000", "01/05/2027", "31/12/2026",
         "$ 1.234,50"]
KINDS = [None, "text", "number", "money", "percent", "integer", "date", "datetime", "boolean"]


@given(st.sampled_from(KINDS), st.lists(st.sampled_from(TEXTS), max_size=30),
       st.sampled_from([None, "es_CO", "en_US"]))
def test_a_parse_cache_answers_as_parsing_each_time(kind, texts, locale):
    from connector.core.values import EXPORT, guess_value
    from connector.locales import locale_cells

    ftype = FieldType(kind) if kind else None  # type: ignore[arg-type]
    cells = EXPORT if locale is None else locale_cells(locale)
    cache = parse_cache(ftype, "f", limit=3, cells=cells)  # a small limit: past it too

    def plain(text: str) -> object:
        return guess_value(text) if ftype is None else cells.reader(ftype, "f")(text)

    for text in texts:
        assert result(cache.__getitem__, text) == result(plain, text)
    assert len(cache) <= 3


@given(st.lists(st.sampled_from(TEXTS), min_size=len(ref.HEADER), max_size=len(ref.HEADER)),
       st.booleans())
def test_the_row_reader_reads_as_the_mapping_does(cells, upper):
    mapping = rules().mapping
    header = [h.upper() for h in ref.HEADER] if upper else list(ref.HEADER)
    by_dict = result(lambda raw: mapping.read(raw, EXPORT), dict(zip(header, cells)))
    by_cells = result(mapping.row_reader(header), cells)
    assert by_cells == by_dict


@given(st.sampled_from(KINDS[1:]), st.sampled_from(VALUES))
def test_writer_for_is_for_write(kind, value):
    ftype = FieldType(kind, scale=None)  # type: ignore[arg-type]
    assert result(writer_for(ftype), value) == result(lambda v: for_write(v, ftype), value)


def test_differs_is_not_same():
    pool = [*VALUES, "60.0", " 60 ", Decimal("60.0"), "true", "0", "2026-11-01"]
    for old in pool:
        for new in pool:
            if old != new:
                assert _differs(old, new) == (not same(old, new)), (old, new)


@given(st.decimals(allow_nan=True, allow_infinity=True))
def test_as_text_of_a_decimal_is_its_plain_notation(value):
    assert as_text(value) == format(value, "f")


@given(st.dates())
def test_month_of_is_strftime(day):
    assert month_of(day) == f"{day.year:04d}-{day.month:02d}"
    if day.year >= 1000:
        assert month_of(day) == day.strftime("%Y-%m")


BANDED = {  # a workflow per band, so a record in the wrong band gets the wrong probability
    "factors": {"stage": {"field": "stage", "values": ["Negotiation", "Proposal"]},
                "size": {"field": "amount", "bands": {"large": 100000, "medium": 20000,
                                                      "small": 0}, "empty": "small"}},
    "closed": {"field": "stage", "won": ["Won"], "lost": ["Lost"]},
    "workflows": [
        {"name": "p90", "when": {"stage": "Negotiation", "size": "large"},
         "set": {"probability": 90}},
        {"name": "p70", "when": {"stage": "Negotiation", "size": "medium"},
         "set": {"probability": 70}},
        {"name": "p50", "when": {"any": [{"stage": "Negotiation", "size": "small"},
                                         {"stage": "Proposal", "size": "large"}]},
         "set": {"probability": 50}},
        {"name": "p30", "when": {"stage": "Proposal", "size": ["medium", "small"]},
         "set": {"probability": 30}},
    ],
    "computed": {"weighted_amount": "amount * probability / 100"},
    "triggers": [{"name": "big", "when": "amount >= 100000 and probability >= 70",
                  "do": ["push"]},
                 {"name": "likely", "when": "probability >= 70", "do": ["push"]}],
    "actions": {"push": {"http": {"url": "https://example.com/hook"}}},
}
AMOUNT_POOL = [None, "", Decimal(0), Decimal("19999.99"), Decimal(20000), Decimal("20000.00"),
               Decimal("99999.995"), Decimal(100000), Decimal("1E+5"), 100000, 20000, 0, -1,
               Decimal("-0.01"), True, "100000", [1]]
STAGE_POOL = ["Negotiation", " negotiation ", "Proposal", "PROPOSAL", "Won", "Lost", "won",
              "", None, "Qualification", 1, ["x"]]


def _answer(evaluator, record):  # type: ignore[no-untyped-def]
    try:
        out = evaluator.evaluate(record, TODAY)
    except RecordError as exc:
        return "error", str(exc)
    return (out.rule, out.changes, out.due,
            {k: repr(v) for k, v in out.values.items()})  # repr: the exact Decimal


@cache
def _banded():  # type: ignore[no-untyped-def]
    from helpers_core import build, make_mapping

    mapping = make_mapping(["stage", "amount", "probability", "weighted_amount", "rule"],
                           writeback=["probability", "weighted_amount", "rule"],
                           types={"amount": "money", "probability": "percent",
                                  "weighted_amount": "money"})
    return build(BANDED, mapping)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(STAGE_POOL), st.sampled_from(AMOUNT_POOL),
                          st.sampled_from([None, Decimal(70), 50, "p90"])),
                min_size=1, max_size=12))
def test_the_remembered_routes_answer_as_the_long_way(records):
    """An evaluator that has seen other records (its route, band and picklist caches warm)
    answers each record as a new one does (caches cold: every factor looked up)."""
    from connector.core.evaluate import Evaluator

    shared = Evaluator(_banded())
    for stage, amount, probability in records:
        record = {"id": "X", "stage": stage, "amount": amount, "probability": probability,
                  "weighted_amount": None, "rule": None}
        assert _answer(shared, record) == _answer(Evaluator(_banded()), record), record


def test_the_bands_are_lower_bound_inclusive():
    from connector.core.evaluate import Evaluator

    evaluator = Evaluator(_banded())
    got = {amount: evaluator.evaluate({"stage": "Negotiation", "amount": Decimal(amount)},
                                      TODAY).rule
           for amount in ("0", "19999.99", "20000", "99999.99", "100000")}
    assert got == {"0": "p50", "19999.99": "p50", "20000": "p70", "99999.99": "p70",
                   "100000": "p90"}


WRITEBACK_POOL = [None, "", Decimal(90), Decimal("90.0"), 90, "90", "p90", "p50", 50,
                  Decimal("1234.50"), "1234.5", True, dt.date(2026, 11, 1)]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(STAGE_POOL[:6]), st.sampled_from(AMOUNT_POOL[:12]),
       st.tuples(*[st.sampled_from(WRITEBACK_POOL)] * 3))
def test_what_would_change_is_what_same_says_and_actions_come_in_the_files_order(
        stage, amount, olds):
    """The changes are the writeback fields whose value is not `same` as the record's, and the
    actions due are the workflow's, then each trigger's whose condition holds, in file order
    (a trigger the route decides is folded in once, not per record, in the same place)."""
    from connector.core.evaluate import Evaluator

    rules = _banded()
    record = {"id": "X", "stage": stage, "amount": amount,
              **dict(zip(("probability", "weighted_amount", "rule"), olds))}
    try:
        out = Evaluator(rules).evaluate(record, TODAY)
    except RecordError:
        return
    expected_changes = {name: out.values[name] for name in ("probability", "weighted_amount",
                                                            "rule")
                        if not same(record[name], out.values[name])}
    assert out.changes == expected_changes
    workflow = next((w for w in rules.workflows if w.name == out.rule), None)
    expected_due = [(a, f"workflow:{out.rule}") for a in (workflow.actions if workflow else ())]
    for trigger in rules.triggers:
        if trigger.condition.evaluate(out.values):
            expected_due += [(a, f"trigger:{trigger.name}") for a in trigger.actions]
    assert [(d.action, d.source) for d in out.due] == expected_due


@given(st.lists(st.sampled_from(TEXTS), min_size=len(ref.HEADER), max_size=len(ref.HEADER)),
       st.sets(st.sampled_from(["stage", "amount", "close_date", "probability", "owner_name",
                                "weighted_amount", "unknown"])))
def test_the_row_reader_of_some_fields_reads_as_a_mapping_of_those_fields(cells, names):
    from dataclasses import replace

    mapping = rules().mapping
    only = replace(mapping, fields={n: f for n, f in mapping.fields.items() if n in names},
                   types={n: t for n, t in mapping.types.items() if n in names})
    by_dict = result(lambda raw: only.read(raw, EXPORT), dict(zip(ref.HEADER, cells)))
    assert result(mapping.row_reader(list(ref.HEADER), names), cells) == by_dict


def test_the_dry_run_reads_on_every_row_what_the_rules_and_the_forecast_read():
    from connector.simulate import _needed

    bundled = rules()
    assert bundled.names_read() >= {"stage", "proposal_type", "relationship_level", "amount",
                                    "close_date", "probability", "weighted_amount", "rule"}
    needed = _needed(bundled)
    assert needed & set(bundled.mapping.fields) == {
        "stage", "proposal_type", "relationship_level", "amount", "close_date", "probability",
        "weighted_amount", "rule"}
    assert not needed & {"name", "owner_name", "owner_email", "account_name"}


@settings(max_examples=400, deadline=None)
@given(formulas(), formulas(), st.lists(st.sampled_from(VALUES), min_size=3, max_size=3))
def test_a_routes_written_out_function_computes_as_the_formulas_do(source, condition, values):
    """A route's formulas, their rounding as written and its trigger conditions, inlined into
    one function (_finisher), give the values, or fail with the message, that calling the
    compiled formulas and the fields' writers gives."""
    from connector.core._fast import Route, Routes
    from connector.core.evaluate import ActionDue

    formula = parse_formula(source, ["a", "b", "c", "today"])
    when = parse_formula(condition, ["a", "b", "c", "today", "probability"])
    act = (ActionDue("push", "trigger:t"),)
    mapping = _banded().mapping
    writers = tuple((n, writer_for(mapping.type_of(n))) for n in ("probability",
                                                                  "weighted_amount"))
    route = Route("p1", {}, (("probability", formula), ("weighted_amount", formula)), {}, (),
                  rewrite=writers, triggers=((when, act),))
    finish = Routes(_banded())._finish(route)
    names = dict(zip("abc", values), today=TODAY)

    def by_route(v):  # type: ignore[no-untyped-def]
        got = Names(v)
        changes, due = finish(got, {})
        return got["probability"], got["weighted_amount"], changes, due

    def by_formulas(v):  # type: ignore[no-untyped-def]
        got = Names(v)
        for name, _ in route.formulas:
            try:
                got[name] = compile_formula(formula)(got)
            except RecordError as exc:
                raise RecordError(f"{name}: {exc}") from None
        for name, write in writers:
            got[name] = write(got[name])
        changes = {n: got[n] for n in ("probability", "weighted_amount")
                   if not same(None, got[n])}
        return (got["probability"], got["weighted_amount"], changes,
                act if compile_formula(when)(got) else ())

    assert result(by_route, names) == result(by_formulas, names)


def test_no_function_of_the_formula_language_starts_with_an_underscore():
    """A route's written-out function binds only names that start with one (see _finisher)."""
    from connector.core.expressions import FUNCTIONS

    assert FUNCTIONS and not [name for name in FUNCTIONS if name.startswith("_")]
