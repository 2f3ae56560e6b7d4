"""What a person reads about records, exports and runs, in Spanish (SPEC 7): a record's failure
reason in simulate's `_error` column and the report, a configuration error, what reading an
export detected, a sync's summary. Each is the Spanish of the message the code raised (a Text),
with its values as they were; English output stays as it was (the other tests)."""

from __future__ import annotations

import csv
import datetime as dt
import html
import json
from pathlib import Path

import pytest
import responses

from connector.cli import main
from connector.errors import Text
from connector.files import load
from connector.i18n import say
from connector.simulate import simulate
from tests.fake_salesforce import INSTANCE, Clock, FakeOrg

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "opportunities.csv"
CONFIG = ["--rules", str(ROOT / "rules"), "--mappings", str(ROOT / "mappings"),
          "--today", "2026-11-26"]


@pytest.fixture
def spanish(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LANG", "es_CO.UTF-8")
    monkeypatch.delenv("CRM_AUTOMATION_LANG", raising=False)


def _export_with_bad_rows(tmp_path: Path) -> Path:
    """Four good rows of the example, then rows that fail on what the reading itself checks:
    a word for an amount, a number that reads two ways, a date that is no date, a row one
    cell short."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    header, good = lines[0], lines[1:5]
    columns = header.split(",")
    first = good[0].split(",")

    def bad(row_id: str, **cells: str) -> str:
        row = dict(zip(columns, first), Id=row_id)
        row.update(cells)
        return ",".join(row[c] for c in columns)

    rows = [bad("006BAD000000000001", Amount="abc"),
            bad("006BAD000000000002", Amount="1.500"),
            bad("006BAD000000000003", CloseDate="2027-13-45"),
            ",".join(bad("006BAD000000000004").split(",")[:-1])]
    source = tmp_path / "export.csv"
    source.write_text("\n".join([header, *good, *rows]) + "\n", encoding="utf-8")
    return source


def test_a_records_failure_reason_is_in_spanish_in_the_out_file_and_the_report(
        tmp_path, spanish, capsys):
    source = _export_with_bad_rows(tmp_path)
    loaded = load(ROOT / "rules", ROOT / "mappings")
    assert loaded.rules is not None
    raised = simulate(loaded.rules, source, None, dt.date(2026, 11, 26)).failures
    assert len(raised) == 4
    assert all(isinstance(f.reason, Text) for f in raised)
    expected = {f.record_id: say(f.reason, "es") for f in raised}
    assert all(expected[f.record_id] != str(f.reason) for f in raised)

    out, report = tmp_path / "out.csv", tmp_path / "report.html"
    assert main(["simulate", str(source), "--out", str(out), "--report", str(report),
                 *CONFIG]) == 1
    with out.open(encoding="utf-8", newline="") as f:
        errors = {r["Id"]: r["_error"] for r in csv.DictReader(f) if r["_error"]}
    assert errors == expected
    page = report.read_text(encoding="utf-8")
    printed = " ".join(capsys.readouterr().out.split())  # as wrapped to the console's width
    for f in raised:
        spanish_reason, english = say(f.reason, "es"), str(f.reason)
        assert html.escape(spanish_reason) in page and html.escape(english) not in page
        assert " ".join(spanish_reason.split()) in printed
        assert " ".join(english.split()) not in printed
    assert "no es un número" in page and "se puede leer de dos formas" in page


def test_the_failures_group_by_kind_whatever_the_language(tmp_path):
    source = _export_with_bad_rows(tmp_path)
    loaded = load(ROOT / "rules", ROOT / "mappings")
    assert loaded.rules is not None
    summary = simulate(loaded.rules, source, None, dt.date(2026, 11, 26))
    # amount twice (a word, a number read two ways), close_date once, the short row once
    assert sorted(summary.reasons.values()) == [1, 1, 2]


def test_a_missing_column_is_a_configuration_error_in_spanish(tmp_path, spanish, capsys):
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    columns = lines[0].split(",")
    drop = columns.index("StageName")
    source = tmp_path / "no-stage.csv"
    source.write_text("\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != drop)
                                for line in lines[:3]) + "\n", encoding="utf-8")
    assert main(["simulate", str(source), *CONFIG]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error de configuración" in err
    assert "las columnas que leen las reglas no están en su encabezado: StageName" in err
    assert "the columns the rules read" not in err


def test_what_reading_the_export_detected_is_said_in_spanish(tmp_path, spanish, capsys):
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    source = tmp_path / "report-export.csv"
    body = [lines[0], lines[1].replace("Golden Valley Foods", "Alimentos Peñalisa"), lines[2],
            "", '"Grand Totals (2 records)"', '"Confidential Information - Do Not Distribute"']
    source.write_bytes(("\n".join(body) + "\n").encode("cp1252"))
    assert main(["simulate", str(source), *CONFIG]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "no es UTF-8 (en el byte" in err and "se leyó como Windows-1252" in err
    assert "línea 5: se omitió el pie del reporte ('Grand Totals (2 records)' ...)" in err
    assert "read as Windows-1252" not in err and "skipped the report's footer" not in err


def test_a_sync_summary_with_a_failed_record_is_in_spanish(tmp_path, spanish, monkeypatch,
                                                           capsys):
    for name, value in {"SALESFORCE_INSTANCE_URL": INSTANCE,
                        "SALESFORCE_ACCESS_TOKEN": "00Dxx!session",
                        "STATE_URL": f"sqlite:///{tmp_path / 'state.db'}",
                        "MARKETING_WEBHOOK_URL": "http://127.0.0.1:9/hook"}.items():
        monkeypatch.setenv(name, value)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        org = FakeOrg(rsps, Clock())
        org.add("006C00000000000001", StageName="Prospecting", Amount=5000)
        org.add("006C00000000000002", StageName="Prospecting", Amount="cinco mil")
        org.clock.advance(seconds=1)
        assert main(["sync"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "leídos 2" in out and "con error 1" in out
    assert "006C00000000000002: " in out and "'cinco mil' no es un número" in out
    assert "is not a number" not in out and "read 2" not in out


@pytest.mark.parametrize(("case", "record", "english"), [
    ("gap", {"stage": "Negotiation/Review", "proposal_type": "Firm",
             "relationship_level": "New", "amount": 5000},
     "no workflow matches stage=Negotiation/Review, proposal=Firm, relationship=New, "
     "size=small: run 'check' to find the gap"),
    ("overlap", {"stage": "Prospecting", "amount": 5000},
     "workflows p20, p10 all match stage=Prospecting, proposal=Budgetary, relationship=New, "
     "size=small: run 'check' to find the overlap"),
])
def test_both_evaluation_paths_say_no_single_workflow_alike(case, record, english):
    """The interpreted path (`evaluate`) and the compiled one (`Evaluator`) raise one message,
    from one template, said in Spanish with the same values."""
    from connector.core.evaluate import Evaluator, evaluate
    from connector.errors import RecordError

    broken = ROOT / "tests" / "broken" / case
    rules = load(broken / "rules", broken / "mappings").rules
    assert rules is not None
    today = dt.date(2026, 11, 26)
    texts = []
    for run in (lambda: evaluate(rules, record, today),
                lambda: Evaluator(rules).evaluate(record, today)):
        with pytest.raises(RecordError) as raised:
            run()
        texts.append(raised.value.text)
    slow, fast = texts
    assert slow == fast == english
    assert isinstance(slow, Text) and isinstance(fast, Text)
    assert (slow.template, slow.values) == (fast.template, fast.values)
    spanish = say(fast, "es")
    assert spanish != english and "ejecute 'check'" in spanish


def test_the_forecasts_left_out_reasons_are_words_in_spanish_and_keys_in_json(spanish, capsys):
    assert main(["forecast", str(EXAMPLE), *CONFIG]) == 1
    table = capsys.readouterr().out
    assert "perdidas" in table and "con error" in table
    assert " lost " not in table and " failed " not in table
    assert main(["forecast", str(EXAMPLE), "--format", "json", *CONFIG]) == 1
    left = json.loads(capsys.readouterr().out)[-1]
    assert left["reasons"] == {"lost": 53, "failed": 6}  # for machines: the English keys


def test_the_history_pages_are_in_the_persons_language(tmp_path, spanish, capsys):
    history = ROOT / "examples" / "history.csv"
    report = tmp_path / "calibration.html"
    assert main(["calibrate", "--input", str(history), "--report", str(report),
                 *CONFIG[:4]]) == 0
    page = report.read_text(encoding="utf-8")
    assert '<html lang="es"' in page and "<h1>Calibración</h1>" in page
    assert "Confiabilidad" in page and "Puntajes" in page
    assert "Reliability" not in page and "Lower Brier is better" not in page


def test_every_failure_of_the_example_is_said_in_spanish(tmp_path, spanish):
    """The six rows examples/README.md says must fail: each reason (read, factor value,
    formula) is a Text, and `_error` holds its Spanish."""
    loaded = load(ROOT / "rules", ROOT / "mappings")
    assert loaded.rules is not None
    raised = simulate(loaded.rules, EXAMPLE, None, dt.date(2026, 11, 26)).failures
    assert len(raised) == 6 and all(isinstance(f.reason, Text) for f in raised)
    out = tmp_path / "out.csv"
    assert main(["simulate", str(EXAMPLE), "--out", str(out), *CONFIG]) == 1
    with out.open(encoding="utf-8", newline="") as f:
        errors = {r["Id"]: r["_error"] for r in csv.DictReader(f) if r["_error"]}
    assert errors == {f.record_id: say(f.reason, "es") for f in raised}
    assert all(errors[f.record_id] != str(f.reason) for f in raised)


def test_the_overdue_row_is_named_in_spanish_and_keyed_in_english(tmp_path, spanish, capsys):
    import re

    chart = tmp_path / "forecast.svg"
    later = [*CONFIG[:-1], "2026-12-07"]  # three open deals of the example are overdue then
    assert main(["forecast", str(EXAMPLE), *later, "--chart", str(chart)]) == 1
    table = capsys.readouterr().out
    assert "vencidas" in table and "overdue" not in table
    svg = chart.read_text(encoding="utf-8")
    assert ">vencidas</text>" in svg and ">overdue<" not in svg
    # the tooltips' amounts as the person reads them (es_CO, from LANG): 1.234,56
    amounts = [t.rsplit(": ", 1)[1] for t in _titles(svg) if ": " in t]
    assert amounts and all(re.fullmatch(r"\d{1,3}(\.\d{3})*,\d{2}", a) for a in amounts), amounts
    assert main(["forecast", str(EXAMPLE), "--format", "json", *later]) == 1
    assert json.loads(capsys.readouterr().out)[0]["month"] == "overdue"  # for machines


def _titles(svg: str) -> list[str]:
    import re

    return [html.unescape(t) for t in re.findall(r"<title>([^<]*)</title>", svg)]


def test_the_diff_report_is_in_spanish_with_money_in_the_locale(tmp_path, spanish, capsys):
    import shutil

    after = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", after)
    rules_file = next(p for p in after.glob("*.yaml") if "probability: 60" in p.read_text())
    rules_file.write_text(rules_file.read_text().replace("probability: 60", "probability: 65"))
    page = tmp_path / "diff.html"
    assert main(["diff", str(EXAMPLE), "--before", str(ROOT / "rules"), "--rules", str(after),
                 "--mappings", str(ROOT / "mappings"), "--today", "2026-12-07",
                 "--report", str(page)]) == 0
    text = html.unescape(page.read_text(encoding="utf-8"))
    for spanish_words in ("Qué le hace el cambio de reglas a", "registros leídos",
                          "Forecast ponderado por mes", "Registros que cambian", "vencidas"):
        assert spanish_words in text
    for english in ("What the rule change does", "records read", "Weighted forecast per month",
                    ">overdue<"):
        assert english not in text
    delta = text.split('id="forecast-delta">')[1].split("<")[0]
    assert "," in delta and delta.replace(".", "").replace(",", "").isdigit(), delta


def test_the_decision_table_and_the_pipeline_buckets_are_named_in_spanish(capsys):
    from connector.history.movement import BUCKETS, bucket_label
    from connector.i18n import set_language

    assert main(["--lang", "es", "table", "--rules", str(ROOT / "rules"),
                 "--mappings", str(ROOT / "mappings")]) == 0
    header = capsys.readouterr().out
    assert "flujo" in header and "probabilidad" in header and "workflow" not in header
    set_language("en")  # (main left it Spanish)
    english = {b: bucket_label(b) for b in BUCKETS}
    set_language("es")
    try:
        spanish = {b: bucket_label(b) for b in BUCKETS}
    finally:
        set_language("en")
    assert all(spanish[b] != english[b] for b in BUCKETS), spanish
    assert spanish["pushed_out"] == "aplazados" and english["pushed_out"] == "pushed out"
