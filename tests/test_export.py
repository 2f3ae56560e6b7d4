"""Reading CRM exports as they really come (connector/export.py), and the dry run's output file.

CSV from Data Loader or a report: byte-order mark, CRLF, blank lines, quoted thousands
separators, upper-case headers, short rows. JSON from the REST API: an array, JSON Lines, or
query responses (`{"totalSize": .., "records": [...]}`), numbers read as Decimal, never float.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest
import reference_dry_run as ref

from connector.cli import main
from connector.errors import ConfigurationError
from connector.export import Export, ExportWriter
from connector.files import load
from connector.simulate import simulate

ROOT = Path(__file__).resolve().parent.parent
TODAY = dt.date(2026, 11, 26)
CONFIG = ["--rules", str(ROOT / "rules"), "--mappings", str(ROOT / "mappings"),
          "--today", TODAY.isoformat()]
HEADER = ",".join(ref.HEADER)


def rules():  # type: ignore[no-untyped-def]
    loaded = load(ROOT / "rules", ROOT / "mappings")
    assert loaded.rules is not None
    return loaded.rules


def row(record_id: str, stage: str = "Qualification", amount: str = "5000",
        close: str = "2027-01-31", **other: str) -> dict[str, str]:
    data = dict.fromkeys(ref.HEADER, "")
    data.update({"Id": record_id, "Name": f"Deal {record_id}", "StageName": stage,
                 "Amount": amount, "CloseDate": close, "Owner.Name": "Chen Wei"})
    data.update(other)
    return data


def csv_line(data: dict[str, str], header: list[str] = ref.HEADER, delimiter: str = ",") -> str:
    out: list[str] = []
    writer = csv.writer(_Collect(out), lineterminator="", delimiter=delimiter)
    writer.writerow([data.get(h, "") for h in header])
    return out[0]


class _Collect:
    def __init__(self, out: list[str]) -> None:
        self.out = out

    def write(self, text: str) -> None:
        self.out.append(text)


def rows_of(path: Path) -> list[tuple[int, dict]]:
    with Export(path) as export:
        return [(r.number, r.data) for r in export.rows()]


def outputs(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


# --- CSV ----------------------------------------------------------------------------------------

def test_bom_crlf_and_blank_lines_keep_the_line_numbers(tmp_path):
    source = tmp_path / "export.csv"
    lines = [HEADER, csv_line(row("A1")), "", "   ", csv_line(row("A2")), ",,,,,,,,,,,,",
             csv_line(row("A3", Name='Two\r\nlines, "quoted"')), csv_line(row("A4")), ""]
    source.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8"))
    got = rows_of(source)
    assert [(n, d["Id"]) for n, d in got] == [(2, "A1"), (5, "A2"), (7, "A3"), (9, "A4")]
    assert list(got[0][1]) == ref.HEADER  # no byte-order mark glued to the first name
    assert got[2][1]["Name"] == 'Two\r\nlines, "quoted"'


def test_a_header_after_blank_lines_and_spaces_around_names(tmp_path):
    source = tmp_path / "export.csv"
    source.write_text("\n\n" + ", ".join(ref.HEADER) + "\n" + csv_line(row("B1")) + "\n",
                      encoding="utf-8")
    with Export(source) as export:
        got = list(export.rows())
        assert export.header == ref.HEADER
    assert [(r.number, r.data["Id"]) for r in got] == [(4, "B1")]


def test_quoted_thousands_separators_are_read_as_numbers(tmp_path):
    source, out = tmp_path / "export.csv", tmp_path / "out.csv"
    source.write_text("\n".join([HEADER, csv_line(row("C1", "Negotiation/Review",
                                                       "1,234,567.50",
                                                       Proposal_Type__c="Firm",
                                                       Relationship_Level__c="Known"))]) + "\n",
                      encoding="utf-8")
    assert '"1,234,567.50"' in source.read_text(encoding="utf-8")
    summary = simulate(rules(), source, out, TODAY)
    assert summary.failed == 0
    [got] = outputs(out)
    assert got["Amount"] == "1,234,567.50"  # the input cell is written back as it was
    assert (got["Probability"], got["Weighted_Amount__c"]) == ("80", "987654.00")
    assert summary.forecast.total().amount == Decimal("1234567.50")


def test_a_european_amount_is_refused_with_its_line_number(tmp_path, capsys):
    source, out = tmp_path / "export.csv", tmp_path / "out.csv"
    source.write_text("\n".join([HEADER, csv_line(row("D1")), "",
                                 csv_line(row("D2", amount="12.500,00")),
                                 csv_line(row("D3"))]) + "\n", encoding="utf-8")
    assert main(["simulate", str(source), "--out", str(out), *CONFIG]) == 1
    printed = capsys.readouterr().out
    assert "line 4 (D2): amount: '12.500,00' is not a number" in printed
    got = outputs(out)
    assert [r["_error"] != "" for r in got] == [False, True, False]
    assert "12.500,00" in got[1]["_error"] and got[1]["Amount"] == "12.500,00"


def test_a_short_row_fails_alone_with_its_line_and_the_column_counts(tmp_path, capsys):
    source, out = tmp_path / "export.csv", tmp_path / "out.csv"
    source.write_text("\n".join([HEADER, csv_line(row("E1")), "E2,Short row,Qualification",
                                 csv_line(row("E3")) + ",extra", csv_line(row("E4")) + ", ,"])
                      + "\n", encoding="utf-8")
    summary = simulate(rules(), source, out, TODAY)
    assert (summary.read, summary.failed) == (4, 2)  # E4's extra cells are blank: read
    assert [(f.line, f.reason) for f in summary.failures] == [
        (3, "the row has 3 columns where the header has 13"),
        (4, "the row has 14 columns where the header has 13")]
    got = outputs(out)
    assert [r["_rule"] for r in got] == ["p20", "", "", "p20"]
    assert got[1]["_error"] == "the row has 3 columns where the header has 13"
    # the output stays one column per header name: the short row's cells are kept, padded
    assert (got[1]["Id"], got[1]["Name"], got[1]["StageName"], got[1]["Amount"]) == (
        "E2", "Short row", "Qualification", "")
    assert got[2]["Id"] == "E3" and None not in got[2]  # no cell past the header's
    assert main(["simulate", str(source), *CONFIG]) == 1
    assert "line 3" in capsys.readouterr().out


def test_data_loader_upper_case_headers_read_like_the_api_names(tmp_path):
    example = ROOT / "examples" / "opportunities.csv"
    text = example.read_text(encoding="utf-8")
    header, rest = text.split("\n", 1)
    upper = tmp_path / "upper.csv"
    upper.write_text(header.upper() + "\n" + rest, encoding="utf-8")
    a = simulate(rules(), example, tmp_path / "a.csv", TODAY)
    b = simulate(rules(), upper, tmp_path / "b.csv", TODAY)
    for attr in ("read", "changed", "failed", "per_workflow", "actions"):
        assert getattr(a, attr) == getattr(b, attr), attr
    assert [(f.line, f.record_id, f.reason) for f in a.failures] == [
        (f.line, f.record_id, f.reason) for f in b.failures]
    assert all(f.record_id for f in b.failures)  # the id is found whatever its case
    rows_a, rows_b = outputs(tmp_path / "a.csv"), outputs(tmp_path / "b.csv")
    assert [list(r.values()) for r in rows_a] == [list(r.values()) for r in rows_b]
    assert list(rows_b[0])[:13] == header.upper().split(",")


def test_a_missing_writeback_column_is_added_to_the_output(tmp_path):
    header = [h for h in ref.HEADER if h not in ("Weighted_Amount__c", "Probability_Rule__c")]
    source, out = tmp_path / "export.csv", tmp_path / "out.csv"
    source.write_text("\n".join([",".join(header),
                                 csv_line(row("F1", "Prospecting", "20000"), header),
                                 csv_line(row("F2", "Closed Won", ""), header)]) + "\n",
                      encoding="utf-8")
    simulate(rules(), source, out, TODAY)
    with out.open(encoding="utf-8", newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0] == [*header, "Weighted_Amount__c", "Probability_Rule__c", "_rule",
                        "_changed", "_error"]
    got = outputs(out)
    assert (got[0]["Weighted_Amount__c"], got[0]["Probability_Rule__c"]) == ("2000.00", "p10")
    assert got[0]["_changed"] == "probability;weighted_amount;rule"
    # no amount: nothing to weigh, so the added column stays blank and is not 'changed'
    assert (got[1]["Weighted_Amount__c"], got[1]["_changed"]) == ("", "probability;rule")
    # with explain, the added columns had no value before
    simulate(rules(), source, out, TODAY, explain=True)
    got = outputs(out)
    assert (got[0]["_before_Weighted_Amount__c"], got[0]["_before_Probability_Rule__c"]) == (
        "", "")
    assert got[0]["_before_Probability"] == "" and got[0]["_why"].startswith("stage=Prospecting")


def test_an_export_with_only_a_header_gives_an_output_with_only_a_header(tmp_path):
    source, out = tmp_path / "export.csv", tmp_path / "out.csv"
    source.write_text(HEADER + "\r\n", encoding="utf-8")
    summary = simulate(rules(), source, out, TODAY)
    assert summary.read == 0
    assert out.read_text(encoding="utf-8").splitlines() == [
        HEADER + ",_rule,_changed,_error"]


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty"), (b"\n\n  \n", "empty"),
    (b"Id,Name,Id\n1,a,2\n", "the header repeats Id"),
    (HEADER.encode() + b"\nA1,Caf\x81\n", "neither UTF-8 nor Windows-1252"),
])
def test_unreadable_csv_files_are_configuration_errors(tmp_path, content, message):
    source = tmp_path / "export.csv"
    source.write_bytes(content)
    with pytest.raises(ConfigurationError, match=message):
        simulate(rules(), source, None, TODAY)


# --- JSON ---------------------------------------------------------------------------------------

RECORDS = [
    {"attributes": {"type": "Opportunity", "url": "/x/1"}, "Id": "J1", "Name": "One",
     "StageName": "Negotiation/Review", "Amount": 12500.5, "CloseDate": "2027-01-31",
     "Proposal_Type__c": "Firm", "Relationship_Level__c": "Trusted",
     "Owner": {"attributes": {"type": "User"}, "Name": "Chen Wei", "Email": "c@example.com"},
     "Account": {"Name": "Acme"}, "Probability": 90, "Weighted_Amount__c": 0.1,
     "Probability_Rule__c": None},
    {"attributes": {"type": "Opportunity"}, "Id": "J2", "Name": "Two", "StageName": "Prospecting",
     "Amount": 1e3, "CloseDate": "2027-02-28", "Proposal_Type__c": None,
     "Relationship_Level__c": None, "Owner": {"Name": "Maria", "Email": "m@example.com"},
     "Account": {"Name": "Zenith"}, "Probability": 10, "Weighted_Amount__c": None,
     "Probability_Rule__c": "p10"},
]


def shapes() -> dict[str, str]:
    array = json.dumps(RECORDS, indent=2)
    lines = "\n".join(json.dumps(r) for r in RECORDS) + "\n"
    response = json.dumps({"totalSize": 2, "done": True, "records": RECORDS})
    pages = "\n".join(json.dumps({"totalSize": 2, "done": i == 1, "records": [r]})
                      for i, r in enumerate(RECORDS))
    return {"array.json": array, "lines.jsonl": lines, "response.json": response,
            "pages.ndjson": pages, "crlf.jsonl": lines.replace("\n", "\r\n"),
            "bom.json": "\ufeff" + array}


@pytest.mark.parametrize("name", list(shapes()))
def test_every_json_shape_gives_the_same_records(tmp_path, name):
    source = tmp_path / name
    source.write_text(shapes()[name], encoding="utf-8")
    got = rows_of(source)
    assert [n for n, _ in got] == [1, 2]  # the record's position in the file
    assert [d["Id"] for _, d in got] == ["J1", "J2"]
    assert all("attributes" not in d for _, d in got)
    assert got[0][1]["Owner"]["Name"] == "Chen Wei"
    summary = simulate(rules(), source, None, TODAY)
    assert (summary.read, summary.failed, dict(summary.per_workflow)) == (2, 0,
                                                                          {"p90": 1, "p10": 1})


def test_json_numbers_are_decimal_never_float(tmp_path):
    source = tmp_path / "export.json"
    source.write_text(json.dumps(RECORDS), encoding="utf-8")
    [(_, first), (_, second)] = rows_of(source)

    def floats(value: object) -> list[object]:
        if isinstance(value, dict):
            return [x for v in value.values() for x in floats(v)]
        return [value] if isinstance(value, float) else []

    assert floats(first) == floats(second) == []
    assert first["Amount"] == Decimal("12500.5") and isinstance(first["Amount"], Decimal)
    assert str(first["Weighted_Amount__c"]) == "0.1"  # exactly, not 0.1000000000000000055...
    assert second["Amount"] == Decimal("1E+3") and first["Probability"] == 90
    summary = simulate(rules(), source, None, TODAY)
    assert summary.forecast.total().weighted_amount == Decimal("12500.5") * 90 / 100 + 100


def test_a_large_json_array_is_read_across_chunk_boundaries(tmp_path):
    """More than 64 KiB, so values (numbers too) are cut between two reads of the file."""
    records = [{"Id": f"K{i}", "Amount": f"{i}.{i % 100:02d}", "N": Decimal(f"{i}.{i % 7}"),
                "StageName": "Prospecting", "CloseDate": "2027-01-01"} for i in range(3000)]
    text = json.dumps(records, default=str).replace('"N": "', '"N": ').replace('", "StageName',
                                                                                ', "StageName')
    source = tmp_path / "big.json"
    source.write_text(text, encoding="utf-8")
    assert source.stat().st_size > 3 * (1 << 16)
    got = rows_of(source)
    assert len(got) == 3000
    assert all(d["N"] == Decimal(f"{i}.{i % 7}") for i, (_, d) in enumerate(got))
    assert [d["Id"] for _, d in got] == [f"K{i}" for i in range(3000)]


@pytest.mark.parametrize(("content", "message"), [
    ('[{"Id": "1"}, {"Id": ', "not valid JSON"),
    ('{"Id": "1"}\n{"Id": "2"', "not valid JSON"),
    ("[1, 2]", None),
])
def test_broken_json(tmp_path, content, message):
    source = tmp_path / "export.json"
    source.write_text(content, encoding="utf-8")
    if message is None:  # valid JSON, but not objects: each such row fails alone
        summary = simulate(rules(), source, None, TODAY)
        assert [(f.line, f.reason) for f in summary.failures] == [
            (1, "the row is not a JSON object"), (2, "the row is not a JSON object")]
        return
    with pytest.raises(ConfigurationError, match=message):
        simulate(rules(), source, None, TODAY)


def test_the_json_output_keeps_numbers_as_numbers(tmp_path):
    source, out = tmp_path / "export.json", tmp_path / "out.json"
    source.write_text(json.dumps(RECORDS), encoding="utf-8")
    simulate(rules(), source, out, TODAY)
    got = json.loads(out.read_text(encoding="utf-8"))
    assert got[0]["Amount"] == 12500.5 and got[1]["Amount"] == 1000
    assert got[0]["Weighted_Amount__c"] == 11250.45  # 12500.5 x 90 %, to the cent
    assert got[0]["Owner"] == {"Name": "Chen Wei", "Email": "c@example.com",
                               "attributes": {"type": "User"}}
    assert [(r["_rule"], r["_changed"], r["_error"]) for r in got] == [
        ("p90", "weighted_amount;rule", ""), ("p10", "weighted_amount", "")]
    assert got[1]["Weighted_Amount__c"] == 100  # 1e3 x 10 %
    assert got[1]["Probability_Rule__c"] == "p10"


def test_the_csv_output_of_a_json_export(tmp_path):
    source, out = tmp_path / "export.json", tmp_path / "out.csv"
    source.write_text(json.dumps(RECORDS), encoding="utf-8")
    simulate(rules(), source, out, TODAY)
    got = outputs(out)
    assert got[0]["Amount"] == "12500.5" and got[0]["Weighted_Amount__c"] == "11250.45"
    assert got[0]["Probability_Rule__c"] == "p90" and got[1]["Probability_Rule__c"] == "p10"


def test_the_writer_refuses_an_unknown_suffix(tmp_path):
    with pytest.raises(ConfigurationError, match=r"use \.csv \(or \.tsv, \.txt\) or \.json"):
        ExportWriter(tmp_path / "out.parquet", ["a"])


# --- the fast CSV reader and writer: the same rows, lines and bytes as Python's csv module ---

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from connector.export import _Lines  # noqa: E402

# every character that means something to CSV, a space, a NUL, and plain letters
_CSV_TEXT = st.text(alphabet=st.sampled_from(list('ab ,"\r\n\x00é')), max_size=80)


def _csv_rows(text: str) -> list[tuple[list[str], int]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=False)
    return [(cells, reader.line_num) for cells in reader]


@settings(max_examples=600, deadline=None)
@given(_CSV_TEXT)
def test_the_line_reader_reads_what_csv_reader_reads_with_its_line_numbers(text):
    lines = _Lines(io.StringIO(text, newline=""))
    got = []
    for cells in lines:
        got.append((cells, lines.next - 1))  # the last line the row took
    # csv.reader gives [] for an empty line, the line reader [''] (both are a blank row)
    def blank_as_empty(rows):
        return [([] if cells == [""] else cells, n) for cells, n in rows]
    assert blank_as_empty(got) == blank_as_empty(_csv_rows(text))


@settings(max_examples=300, deadline=None)
@given(st.lists(_CSV_TEXT, min_size=1, max_size=6), _CSV_TEXT)
def test_records_give_each_rows_first_line_as_csv_reader_counts_them(tmp_path_factory, header,
                                                                     body):
    path = tmp_path_factory.mktemp("csv") / "export.csv"
    names = [f"h{i}" for i in range(len(header))]
    path.write_text(",".join(names) + "\n" + body, encoding="utf-8", newline="")
    with Export(path) as export:
        got = [(line, cells) for line, cells, _, _ in export.records(lambda cells: cells)]
    expected = []
    start = 2
    for cells, last in _csv_rows(body):
        if any(c.strip() for c in cells):
            if not any(c.strip() for c in cells[len(names):]):  # blank cells past the header's
                cells = cells[:len(names)]
            expected.append((start, cells))
        start = last + 2
    assert got == expected


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(_CSV_TEXT, max_size=5), max_size=5))
def test_the_writer_writes_the_bytes_csv_writer_writes(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("out") / "out.csv"
    writer = ExportWriter(path, ["a", "b"])
    for r in rows:
        writer.write_row(list(r))
    writer.close()
    expected = io.StringIO()
    reference = csv.writer(expected, lineterminator="\n")
    reference.writerow(["a", "b"])
    reference.writerows(rows)
    assert path.read_bytes() == expected.getvalue().encode("utf-8")


def test_a_quoted_cell_over_three_lines_amid_plain_rows(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text('Id,Name\r\n1,plain\r\n2,"one\r\ntwo\r\nthree"\r\n\r\n3,"a ""quote"""\r\n',
                    encoding="utf-8", newline="")
    with Export(path) as export:
        got = [(line, cells) for line, cells, _, _ in export.records(lambda cells: cells)]
    assert got == [(2, ["1", "plain"]), (3, ["2", "one\r\ntwo\r\nthree"]),
                   (7, ["3", 'a "quote"'])]


def test_a_quoted_cell_over_the_csv_limit_refuses_the_file_with_its_line(tmp_path, capsys):
    source = tmp_path / "export.csv"
    huge = "x" * 200_000
    source.write_text(f"{HEADER}\n{csv_line(row('006A'))}\n"
                      f"{csv_line(row('006B', Name=f'a, {huge}'))}\n", encoding="utf-8")
    assert main(["simulate", str(source), *CONFIG]) == 2
    err = capsys.readouterr().err
    assert "line 3: cannot read the row (field larger than field limit" in err
    assert "Traceback" not in err


# --- exports as they really come (SPEC 6): encodings, delimiters, footers, headers --------------

SPANISH_ROW = {"Name": "Compañía Andina - Café", "Owner.Name": "María Pérez"}


def _cells(path: Path, **options: str) -> tuple[list[str], list[list[str]], list[str], object]:
    with Export(path, **options) as export:  # type: ignore[arg-type]
        header = export.read_header()
        rows = [cells for _, cells, _, _ in export.records(lambda c: c)]
        return header, rows, export.notes, export.dialect


def test_windows_1252_is_read_and_said(tmp_path):
    source = tmp_path / "export.csv"
    source.write_bytes((HEADER + "\n" + csv_line(row("A1", **SPANISH_ROW)) + "\n")
                       .encode("cp1252"))
    _, rows, notes, dialect = _cells(source)
    assert rows[0][1] == "Compañía Andina - Café" and rows[0][7] == "María Pérez"
    assert dialect.encoding == "cp1252" and any("read as Windows-1252" in n for n in notes)
    # UTF-8 is never taken for Windows-1252: the same text in UTF-8 is read as UTF-8
    source.write_bytes((HEADER + "\n" + csv_line(row("A1", **SPANISH_ROW)) + "\n")
                       .encode("utf-8"))
    _header, rows, notes, dialect = _cells(source)
    assert rows[0][1] == "Compañía Andina - Café" and notes == []
    # --encoding forces one (latin-1 reads any byte: the é of UTF-8 comes out as two letters)
    _, rows, notes, _ = _cells(source, encoding="latin-1")
    assert rows[0][1] == "Compañía Andina - Café".encode().decode("latin-1")
    with pytest.raises(ConfigurationError, match="not an encoding"):
        Export(source, encoding="klingon")


def test_the_encoding_is_decided_on_the_whole_file_before_any_row(tmp_path):
    """A Windows-1252 byte far into the file (past the first megabyte): every row is read as
    Windows-1252, not the first ones as UTF-8 and then a failure."""
    source = tmp_path / "export.csv"
    lines = [HEADER] + [csv_line(row(f"A{n}")) for n in range(20_000)]
    lines.append(csv_line(row("LAST", **SPANISH_ROW)))
    source.write_bytes(("\n".join(lines) + "\n").encode("cp1252"))
    assert source.stat().st_size > 1 << 20
    _, rows, _notes, dialect = _cells(source)
    assert dialect.encoding == "cp1252" and len(rows) == 20_001
    assert rows[-1][1] == "Compañía Andina - Café"


def test_a_windows_1252_byte_among_the_first_three_is_seen(tmp_path):
    """The only byte that is not ASCII is the file's second (`Nº`): it is looked at too."""
    source = tmp_path / "export.csv"
    source.write_bytes("Nº,Name\n1,Acme\n".encode("cp1252"))
    header, rows, notes, dialect = _cells(source)
    assert header == ["Nº", "Name"] and rows == [["1", "Acme"]]
    assert dialect.encoding == "cp1252" and any("at byte 1" in n for n in notes)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_utf16_and_utf32_are_read_by_their_byte_order_mark(tmp_path, encoding):
    """Excel's "Unicode Text": UTF-16 with its mark, tab-separated, saved as .txt."""
    source = tmp_path / "export.txt"
    lines = ["\t".join(ref.HEADER), csv_line(row("A1", **SPANISH_ROW), ref.HEADER, "\t")]
    source.write_bytes("\ufeff".encode(encoding) + ("\r\n".join(lines) + "\r\n").encode(encoding))
    header, rows, notes, dialect = _cells(source)
    assert header == ref.HEADER and rows[0][1] == "Compañía Andina - Café" and len(rows) == 1
    assert dialect.encoding == encoding[:6] and dialect.delimiter == "\t" and notes == []


def test_a_unicode_text_export_is_simulated_and_written_back_alike(tmp_path):
    source, out = tmp_path / "export.txt", tmp_path / "out.txt"
    data = row("A1", stage="Negotiation/Review", amount="1500.50",
               Proposal_Type__c="Firm", Relationship_Level__c="Strategic", **SPANISH_ROW)
    lines = ["\t".join(ref.HEADER), csv_line(data, ref.HEADER, "\t")]
    source.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-16"))
    assert main(["simulate", str(source), "--out", str(out), *CONFIG]) == 0
    written = out.read_bytes()
    assert written.startswith(codecs.BOM_UTF16)  # what Excel opens as Unicode Text
    got = written.decode("utf-16").split("\r\n")
    assert got[-1] == "" and len(got) == 3
    cells = dict(zip(got[0].split("\t"), got[1].split("\t")))
    assert cells["Name"] == "Compañía Andina - Café" and cells["Probability"] == "90"
    assert cells["Weighted_Amount__c"] == "1350.45" and cells["_rule"] == "p90"


@pytest.mark.parametrize("delimiter", [";", "\t", "|", ","])
def test_the_delimiter_is_detected_from_the_header(tmp_path, delimiter):
    source = tmp_path / "export.csv"
    data = row("A1", Name=f"Flores{delimiter} Sabana", Amount="1234,50")
    lines = [delimiter.join(ref.HEADER), csv_line(data, ref.HEADER, delimiter)]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    header, rows, _, dialect = _cells(source)
    assert dialect.delimiter == delimiter and header == ref.HEADER
    assert rows == [[data[h] for h in ref.HEADER]]


@pytest.mark.parametrize(("sep", "forced"), [(";", None), ("\t", None), ("|", None),
                                            (";", ";")])
def test_excels_sep_line_names_the_delimiter_and_is_kept_in_the_output(tmp_path, capsys, sep,
                                                                       forced):
    """A first line `sep=;` is how Excel is told the delimiter: it is not the header, the rows'
    line numbers count it, and `--out` starts with it too, so Excel opens the output alike."""
    source, out = tmp_path / "export.csv", tmp_path / "out.csv"
    bad = row("A2", amount="abc")
    lines = [f"sep={sep}", sep.join(ref.HEADER), csv_line(row("A1"), ref.HEADER, sep),
             csv_line(bad, ref.HEADER, sep)]
    source.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    header, rows, _, dialect = _cells(source, delimiter=forced)
    assert dialect.delimiter == sep and dialect.sep_line and header == ref.HEADER
    assert [r[0] for r in rows] == ["A1", "A2"]
    assert main(["simulate", str(source), "--out", str(out), *CONFIG,
                 *(["--delimiter", forced] if forced else [])]) == 1  # A2's amount
    assert "line 4" in capsys.readouterr().out
    written = out.read_bytes().decode("utf-8").split("\r\n")
    assert written[0] == f"sep={sep}" and written[1].split(sep)[:3] == ref.HEADER[:3]
    assert [line.split(sep)[0] for line in written[2:4]] == ["A1", "A2"]


def test_blank_columns_after_the_data_are_kept_not_refused(tmp_path):
    """Excel saves the formatted empty columns after the data: `...;Relationship;;` on every
    line. Blank names are no repeat; the rows are read, and --out keeps those columns."""
    source, out = tmp_path / "export.csv", tmp_path / "out.csv"
    lines = [";".join([*ref.HEADER, "", ""]), csv_line(row("A1"), ref.HEADER, ";") + ";;",
             ";" * (len(ref.HEADER) + 1)]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    header, rows, _, _ = _cells(source)
    assert header == [*ref.HEADER, "", ""] and [r[0] for r in rows] == ["A1"]
    assert main(["simulate", str(source), "--out", str(out), *CONFIG]) == 0
    written = out.read_text(encoding="utf-8").splitlines()
    assert written[0].startswith(";".join([*ref.HEADER, "", ""]) + ";")
    assert len(written) == 2 and written[1].startswith("A1;")


def test_a_header_with_as_many_of_two_delimiters_asks_for_one(tmp_path):
    source = tmp_path / "export.csv"
    source.write_text("Id;Name,StageName\n1;a,b\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="--delimiter"):
        Export(source)
    _, rows, _, _ = _cells(source, delimiter=";")
    assert rows == [["1", "a,b"]]
    _, rows, _, _ = _cells(source, delimiter="tab")
    assert rows == [["1;a,b"]]
    with pytest.raises(ConfigurationError, match="one character"):
        Export(source, delimiter=";;")


FOOTER = ['""', '"Grand Totals (2 records)"', '""',
          '"Copyright (c) 2000-2026 salesforce.com, inc. All rights reserved."',
          '"Confidential Information - Do Not Distribute"',
          '"Generated By:  Jane Admin  12/7/2026 3:04 AM"', '"Acme, Inc."']


def test_a_report_footer_is_skipped_and_said(tmp_path):
    source = tmp_path / "export.csv"
    source.write_text("\n".join([HEADER, csv_line(row("A1")), csv_line(row("A2")), *FOOTER])
                      + "\n", encoding="utf-8")
    _, rows, notes, _ = _cells(source)
    assert [r[0] for r in rows] == ["A1", "A2"]
    assert notes == [f"{source}: line 5: skipped the report's footer ('Grand Totals (2 "
                     "records)' ...)"]


def test_a_data_row_after_a_footer_is_not_dropped(tmp_path):
    """What follows a footer is skipped only while it looks like one: a data row fails (or is
    read), it never disappears."""
    source = tmp_path / "export.csv"
    source.write_text("\n".join([HEADER, csv_line(row("A1")), *FOOTER, csv_line(row("A9"))])
                      + "\n", encoding="utf-8")
    with Export(source) as export:
        got = [(cells[0], values) for _, cells, values, _ in export.records(lambda c: c)]
    assert got == [("A1", [c for c in csv_line(row("A1")).split(",")]),
                   ("A9", [c for c in csv_line(row("A9")).split(",")])]


def test_a_blank_line_then_a_row_is_not_a_footer(tmp_path):
    source = tmp_path / "export.csv"
    source.write_text("\n".join([HEADER, csv_line(row("A1")), "", csv_line(row("Total"))])
                      + "\n", encoding="utf-8")
    _, rows, notes, _ = _cells(source)
    assert [r[0] for r in rows] == ["A1", "Total"] and notes == []


def test_simulate_out_keeps_the_inputs_dialect(tmp_path):
    """`;`, Windows-1252, CRLF in; the same out, with the values written plainly."""
    source, out = tmp_path / "export.csv", tmp_path / "out.csv"
    data = row("A1", stage="Negotiation/Review", amount="1.500,50", close="31/12/2026",
               Proposal_Type__c="Firm", Relationship_Level__c="Strategic", **SPANISH_ROW)
    source.write_bytes(("\r\n".join([";".join(ref.HEADER), csv_line(data, ref.HEADER, ";")])
                        + "\r\n").encode("cp1252"))
    assert main(["simulate", str(source), "--out", str(out), "--locale", "es_CO", *CONFIG]) == 0
    text = out.read_bytes().decode("cp1252")
    lines = text.split("\r\n")
    assert lines[-1] == "" and len(lines) == 3
    cells = dict(zip(lines[0].split(";"), lines[1].split(";")))
    assert cells["Name"] == "Compañía Andina - Café" and cells["Amount"] == "1.500,50"
    assert cells["Weighted_Amount__c"] == "1350.45" and cells["Probability"] == "90"
    # with a BOM in, a BOM out
    source.write_bytes(b"\xef\xbb\xbf" + "\n".join([HEADER, csv_line(row("A1"))]).encode())
    assert main(["simulate", str(source), "--out", str(out), *CONFIG]) == 0
    assert out.read_bytes().startswith(b"\xef\xbb\xbfId,")


def test_a_macintosh_csv_with_cr_line_ends_is_read_and_written_alike(tmp_path):
    """Excel for Mac's "CSV (Macintosh)" ends its lines with CR alone."""
    source, out = tmp_path / "export.csv", tmp_path / "out.csv"
    source.write_bytes("\r".join([HEADER, csv_line(row("A1")), csv_line(row("A2"))]).encode()
                       + b"\r")
    _, rows, _, dialect = _cells(source)
    assert dialect.line_end == "\r" and [r[0] for r in rows] == ["A1", "A2"]
    assert main(["simulate", str(source), "--out", str(out), *CONFIG]) == 0
    written = out.read_bytes()
    assert b"\n" not in written and written.count(b"\r") == 3


def test_missing_columns_are_a_configuration_error_before_any_row(tmp_path, capsys):
    source = tmp_path / "export.csv"
    source.write_text("Opportunity ID,Stage,Amount,Close Date\nA1,Prospecting,10,2027-01-01\n",
                      encoding="utf-8")
    assert main(["simulate", str(source), *CONFIG]) == 2
    err = capsys.readouterr().err
    assert "StageName (did you mean 'Stage'?)" in err and "CloseDate (did you mean 'Close Date'?)" \
        in err and "found Opportunity ID, Stage, Amount, Close Date" in err
    assert "Traceback" not in err


def test_forecast_by_owner_needs_an_owner_column(tmp_path, capsys):
    source = tmp_path / "export.csv"
    columns = ["Id", "StageName", "Amount", "CloseDate", "Proposal_Type__c",
               "Relationship_Level__c", "Owner"]
    source.write_text(",".join(columns) + "\nA1,Prospecting,10,2027-01-01,,,Ana\n",
                      encoding="utf-8")
    assert main(["forecast", str(source), "--by", "owner", *CONFIG]) == 2
    assert "Owner.Name (did you mean 'Owner'?)" in capsys.readouterr().err
    assert main(["forecast", str(source), *CONFIG]) == 0  # by month, no owner is needed


def test_optional_fields_may_be_absent(tmp_path, capsys):
    import shutil

    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    sf = mappings / "salesforce.yaml"
    sf.write_text(sf.read_text(encoding="utf-8") + "optional: [proposal_type]\n",
                  encoding="utf-8")
    source = tmp_path / "export.csv"
    source.write_text("Id,StageName,Amount,CloseDate,Relationship_Level__c\n"
                      "A1,Prospecting,10,2027-01-01,New\n", encoding="utf-8")
    config = ["--rules", str(ROOT / "rules"), "--mappings", str(mappings), "--today", "2026-11-26"]
    assert main(["simulate", str(source), *config]) == 0
    sf.write_text(sf.read_text(encoding="utf-8").replace("optional: [proposal_type]",
                                                         "optional: [proposal_typ]"))
    assert main(["check", *config[:4]]) == 1
    assert "'optional' names 'proposal_typ', which is not in 'fields' (did you mean " \
        "'proposal_type'?)" in capsys.readouterr().out


def test_a_mappings_locale_is_checked_and_used(tmp_path, capsys):
    import shutil

    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    sf = mappings / "salesforce.yaml"
    text = sf.read_text(encoding="utf-8")
    sf.write_text(text + "locale: es_XX_bogus\n", encoding="utf-8")
    config = ["--rules", str(ROOT / "rules"), "--mappings", str(mappings), "--today", "2026-11-26"]
    assert main(["check", *config[:4]]) == 1
    line = len(text.splitlines()) + 1
    assert f"salesforce.yaml:{line}:" in capsys.readouterr().out
    sf.write_text(text + "locale: es_CO\n", encoding="utf-8")
    source = tmp_path / "export.json"  # a JSON export whose values are text: the same reading
    source.write_text(json.dumps([{"Id": "J1", "StageName": "Prospecting", "Amount": "1.500",
                                   "CloseDate": "31/12/2026", "Proposal_Type__c": None,
                                   "Relationship_Level__c": None}]), encoding="utf-8")
    out = tmp_path / "out.json"
    assert main(["simulate", str(source), "--out", str(out), *config]) == 0
    [record] = json.loads(out.read_text(encoding="utf-8"))
    assert record["Weighted_Amount__c"] == 150  # 1.500 is 1500 in es_CO; at 10 %
    assert main(["simulate", str(source), "--locale", "xx_NOPE", *config]) == 2
    assert "--locale" in capsys.readouterr().err


@pytest.mark.parametrize(("tail", "encoding"), [
    ("é".encode() + b"x", "utf-8"),   # a character cut at the edge of a chunk
    (b"\xc3xyz", "cp1252"),           # a UTF-8 lead byte, then ASCII in the next chunk
    (b"\xc3", "cp1252"),              # a UTF-8 sequence the file ends in the middle of
])
def test_a_character_at_the_edge_of_a_chunk(tmp_path, tail, encoding):
    from connector import export as module

    source = tmp_path / "export.csv"
    head = (HEADER + "\nA1,").encode()
    source.write_bytes(head + b"a" * (module._SCAN - len(head) - 1) + tail)
    with Export(source) as export:
        assert export.dialect.encoding == encoding


def test_a_footer_that_counts_other_records_than_were_read_is_said(tmp_path):
    """"Grand Totals (2 records)" with one row read: the export was cut (or a row was taken
    for the footer); the dry run says so."""
    source = tmp_path / "export.csv"
    source.write_text("\n".join([HEADER, csv_line(row("A1")), csv_line(row("A2")), *FOOTER])
                      + "\n", encoding="utf-8")
    assert simulate(rules(), source, None, TODAY).notes == [
        f"{source}: line 5: skipped the report's footer ('Grand Totals (2 records)' ...)"]
    source.write_text("\n".join([HEADER, csv_line(row("A1")), *FOOTER]) + "\n",
                      encoding="utf-8")
    assert simulate(rules(), source, None, TODAY).notes[1] == (
        f"{source}: the report's footer counts 2 records, 1 were read: is the export whole?")


def test_a_json_record_whose_stage_is_a_list_fails_alone(tmp_path):
    source = tmp_path / "export.json"
    source.write_text(json.dumps([
        {"Id": "J1", "StageName": ["Prospecting"], "Amount": 10, "CloseDate": "2027-01-01",
         "Probability": 10},
        {"Id": "J2", "StageName": "Prospecting", "Amount": 10, "CloseDate": "2027-01-01",
         "Probability": 10}]), encoding="utf-8")
    summary = simulate(rules(), source, None, TODAY)
    assert (summary.read, summary.failed) == (2, 1)
    assert summary.forecast_as_is.total().opportunities == 2  # read, so in the as-is forecast
