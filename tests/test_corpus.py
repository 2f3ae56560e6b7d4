"""The corpus of real-shaped exports (tests/exports/): Salesforce report exports in en_US, es_CO,
es_MX, es_ES and pt_BR with their footers, a Data Loader extract, a HubSpot export, and an
Excel-saved Windows-1252 file with `;`. Each is read exactly as tests/exports/expected.yaml says
(written by hand from the files), or refused with the message it says: no silent misread."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.cli import main
from connector.core.mapping import ID
from connector.errors import ConfigurationError
from connector.files import load
from connector.simulate import ReadOptions, records, require_columns

ROOT = Path(__file__).resolve().parent.parent
EXPORTS = Path(__file__).resolve().parent / "exports"
CASES = yaml.safe_load((EXPORTS / "expected.yaml").read_text(encoding="utf-8"))
TODAY = dt.date(2026, 11, 26)


def case_id(case: dict[str, Any]) -> str:
    return f"{case['file']}-{case.get('locale') or 'no locale'}-{case.get('mapping') or 'bundled'}"


@cache
def rules_for(mapping: str | None):  # type: ignore[no-untyped-def]
    loaded = load(ROOT / "rules", ROOT / "mappings",
                  mapping_file=None if mapping is None else EXPORTS / "mappings" / mapping)
    assert loaded.ok and loaded.rules is not None, loaded.findings
    return loaded.rules


def read(case: dict[str, Any]) -> tuple[dict[int, dict[str, Any] | str], list[str]]:
    """Line -> canonical values, or the reason the row is refused; and the notes."""
    rules = rules_for(case.get("mapping"))
    options = ReadOptions(locale=case.get("locale"))
    with options.open(EXPORTS / case["file"]) as export:
        require_columns(rules, export, rules.names_read() - set(rules.mapping.writeback))
        got = {line: values if values is not None else error
               for line, _raw, values, error in records(rules, export,
                                                        cells=options.cells(rules))}
        return got, export.notes  # type: ignore[return-value]


def canonical(name: str, value: Any) -> Any:
    """The expected value as the reader gives it: money and percents as Decimal with the digits
    written in the file, dates as dates."""
    if value is None or name in (ID, "stage", "name", "currency", "owner_name", "account_name",
                                 "owner_email", "rule"):
        return value
    if isinstance(value, dt.date):
        return value
    return Decimal(value)


@pytest.mark.parametrize("case", [c for c in CASES if "rows" in c], ids=case_id)
def test_every_row_is_read_exactly_or_refused(case):
    got, notes = read(case)
    assert sorted(got) == sorted(case["rows"]), "every data line is a record; the footer none"
    for line, expected in case["rows"].items():
        row = got[line]
        if "error" in expected:
            assert isinstance(row, str), f"line {line} read as {row}, expected refused"
            assert row.startswith(expected["error"]), (line, row)
            if case.get("locale_hint"):
                assert "--locale" in row
            continue
        assert not isinstance(row, str), f"line {line} refused: {row}"
        for name, value in expected.items():
            want = canonical(name, value)
            assert row[name] == want and str(row[name]) == str(want), (line, name, row[name])
    for note in case.get("notes", []):
        assert any(note in n for n in notes), (note, notes)
    assert len(notes) == len(case.get("notes", []))


@pytest.mark.parametrize("case", [c for c in CASES if "refused" in c], ids=case_id)
def test_a_file_whose_columns_do_not_match_is_refused_before_any_row(case):
    with pytest.raises(ConfigurationError) as caught:
        read(case)
    message = str(caught.value)
    assert case["refused"] in message
    assert "found Opportunity ID, Opportunity Name, Stage" in message and "optional:" in message


def test_the_cli_reads_the_corpus_with_the_locale_and_says_what_it_detected(capsys, tmp_path):
    """`simulate --locale` end to end on the Excel file: the Windows-1252 fallback is said on
    stderr, the bad row fails alone, and --out is written back as the input was (`;`,
    Windows-1252, CRLF), the cells it copies as they were, the values it writes plain."""
    out = tmp_path / "out.csv"
    code = main(["simulate", str(EXPORTS / "excel_es_CO_windows1252.csv"), "--locale", "es_CO",
                 "--out", str(out), "--rules", str(ROOT / "rules"), "--mappings",
                 str(ROOT / "mappings"), "--today", TODAY.isoformat()])
    printed = capsys.readouterr()
    assert code == 1 and "Traceback" not in printed.err
    assert "read as Windows-1252" in printed.err
    assert "would change 3, unchanged 1, failed 1" in printed.out
    text = out.read_bytes().decode("cp1252")
    assert text.count("\r\n") == 6 and text.count("\n") == 6
    header, *lines = text.splitlines()
    assert header.split(";")[:3] == ["Id", "Name", "StageName"]
    assert header.endswith(";_rule;_changed;_error")
    first = lines[0].split(";")
    assert first[1] == "Compañía Andina - Servidores" and first[3] == "400.000.000"  # as read
    assert first[11] == "360000000.00"  # the weighted amount written plainly: 400,000,000 x 90 %
    assert '"Flores; Sabana"' in lines[3]  # a cell with the delimiter is quoted


def test_without_the_locale_no_row_of_the_excel_file_is_read(capsys):
    code = main(["forecast", str(EXPORTS / "excel_es_CO_windows1252.csv"), "--format", "json",
                 "--rules", str(ROOT / "rules"), "--mappings", str(ROOT / "mappings"),
                 "--today", TODAY.isoformat()])
    printed = capsys.readouterr()
    *months, left_out = json.loads(printed.out)
    assert code == 1 and months == []
    assert left_out == {"month": "left out", "opportunities": 5, "reasons": {"failed": 5}}
