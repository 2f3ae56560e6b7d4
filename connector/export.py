"""CRM exports (CSV from Data Loader or a report, JSON from the REST API) read as a stream of
rows, and the dry run's output written back in the same format.

Whatever the file's size, one row at a time is in memory. The quirks a real export has are read
right: a byte-order mark, CRLF line ends, blank lines, quoted thousands separators ("12,500.00")
in amounts (those are refused or read by the field's type, with the row's line number).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, TypeVar

from connector.errors import ConfigurationError, RecordError

T = TypeVar("T")

_CHUNK = 1 << 16


@dataclass
class Row:
    number: int           # the line where the row starts (the header is line 1)
    data: dict[str, Any]  # CRM field -> raw value, as the file has it


class ByteCounter(io.RawIOBase):
    """Counts the bytes read from a binary file, for a progress bar on long runs."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        return n


def kind_of(path: Path) -> str:
    suffix = path.suffix.casefold()
    if suffix == ".csv":
        return "csv"
    if suffix in (".json", ".jsonl", ".ndjson"):
        return "json"
    raise ConfigurationError(f"{path}: unknown export format '{path.suffix}'; use .csv or .json")


class Export:
    """An export file opened for streaming. `header` is known after the first row for JSON."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.kind = kind_of(path)
        try:
            self._binary = path.open("rb")
        except OSError as exc:
            raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
        self.counter = ByteCounter(self._binary)
        self.size = path.stat().st_size
        self._text = io.TextIOWrapper(io.BufferedReader(self.counter), encoding="utf-8-sig",
                                      newline="")
        self.header: list[str] = []
        self._lines: _Lines | None = None  # CSV: the rows, once the header is read

    def close(self) -> None:
        self._text.close()
        self._binary.close()

    def __enter__(self) -> Export:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def rows(self) -> Iterator[Row]:
        """Each row as a dict by the header (CSV) or as the JSON object it is."""
        try:
            if self.kind == "csv":
                header = self.read_header()
                for line, cells, data, _ in self.records(lambda c: dict(zip(header, c))):
                    # making the dict cannot fail: no data means the row's width is wrong
                    yield Row(line, data if data is not None else
                              {"__error__": self.width_error(cells)})
            else:
                yield from self._json_rows()
        except UnicodeDecodeError as exc:
            raise self._not_utf8(exc) from None

    def _not_utf8(self, exc: UnicodeDecodeError) -> ConfigurationError:
        return ConfigurationError(f"{self.path}: not UTF-8 text ({exc.reason}); export it as "
                                  "UTF-8")

    def read_header(self) -> list[str]:
        """A CSV export's header: its first line that is not blank, names trimmed."""
        if self._lines is not None:
            return self.header
        self._lines = _Lines(self._text)
        try:
            for raw in self._lines:
                if any(cell.strip() for cell in raw):
                    self.header = [h.strip() for h in raw]
                    break
            else:
                raise ConfigurationError(f"{self.path}: the file is empty (no header row)")
        except UnicodeDecodeError as exc:
            raise self._not_utf8(exc) from None
        except csv.Error as exc:
            raise self._unreadable(self._lines.next, exc) from None
        if len(set(self.header)) != len(self.header):
            dupes = sorted({h for h in self.header if self.header.count(h) > 1})
            raise ConfigurationError(f"{self.path}: the header repeats {', '.join(dupes)}")
        return self.header

    def records(self, read: Callable[[list[str]], T]
                ) -> Iterator[tuple[int, list[str], T | None, str | None]]:
        """A CSV export's rows after the header, as (line, cells, values, reason): the line
        where the row starts (a quoted cell may span lines), the row's cell texts, `read(cells)`,
        or None and the reason the row cannot be read (`read` raised RecordError, or the row has
        more or fewer cells than the header). Blank lines are skipped. Reading is done here, in
        the one loop over the file, because a generator per layer costs a dry run more than
        some of its rules."""
        self.read_header()
        rows = self._lines
        assert rows is not None
        width = len(self.header)
        quoted = rows.quoted
        number = rows.next  # the line where the next row starts
        try:
            # _Lines' own loop, inlined: one method call per row costs a fifth of reading it
            for text in self._text:
                line = number
                if '"' in text:
                    raw = quoted(text)
                    number += rows.taken
                else:
                    raw = text.rstrip("\r\n").split(",")
                    number += 1
                first = raw[0]  # (a row has a cell: split gives one, so does csv.reader)
                # Most rows start with an id: only a row whose first cell is blank can be a
                # blank line ('', or ',,,' from a spreadsheet), so only those are searched.
                if (not first or first.isspace()) and not any(c.strip() for c in raw):
                    continue
                if len(raw) != width:
                    yield line, raw, None, f"the row {self.width_error(raw)}"
                    continue
                try:
                    values = read(raw)
                except RecordError as exc:
                    yield line, raw, None, str(exc)
                    continue
                yield line, raw, values, None
        except UnicodeDecodeError as exc:
            raise self._not_utf8(exc) from None
        except csv.Error as exc:
            raise self._unreadable(number, exc) from None

    def _unreadable(self, line: int, exc: csv.Error) -> ConfigurationError:
        """csv.reader's refusal of a quoted row (a cell over its 131,072 characters): the
        rows after it cannot be told apart, so the file is refused, saying where."""
        return ConfigurationError(f"{self.path}: line {line}: cannot read the row ({exc})")

    def width_error(self, cells: list[str]) -> str | None:
        if len(cells) == len(self.header):
            return None
        return f"has {len(cells)} columns where the header has {len(self.header)}"

    def _json_rows(self) -> Iterator[Row]:
        decoder = json.JSONDecoder(parse_float=Decimal)  # money never passes through float
        buffer = ""
        position = 0
        number = 0
        eof = False
        in_array = None

        def fill() -> bool:
            nonlocal buffer, position, eof
            chunk = self._text.read(_CHUNK)
            if not chunk:
                eof = True
                return False
            buffer = buffer[position:] + chunk
            position = 0
            return True

        while True:
            while position < len(buffer) and buffer[position] in " \t\r\n,":
                position += 1
            if position >= len(buffer):
                if eof or not fill():
                    break
                continue
            char = buffer[position]
            if in_array is None:
                in_array = char == "["
                if in_array:
                    position += 1
                    continue
            if in_array and char == "]":
                break
            try:
                value, end = decoder.raw_decode(buffer, position)
            except json.JSONDecodeError as exc:
                if not eof and fill():
                    continue
                raise ConfigurationError(f"{self.path}: not valid JSON near character "
                                         f"{self.counter.count - len(buffer) + exc.pos}: "
                                         f"{exc.msg}") from None
            if end == len(buffer) and not eof and fill():
                continue  # the value may go on in the next chunk (a number cut in two)
            position = end
            records = value.get("records") if isinstance(value, dict) else None
            batch = records if isinstance(records, list) else [value]
            for record in batch:
                number += 1
                if not isinstance(record, dict):
                    yield Row(number, {"__error__": "is not a JSON object"})
                    continue
                record.pop("attributes", None)
                if not self.header:
                    self.header = list(record)
                yield Row(number, record)


class _Lines:
    """A CSV file's rows, as csv.reader reads them (excel dialect, not strict), at a third of
    its cost: a line without a quote is a row whose cells are split at the commas (no cell
    can hold a comma, a quote or a line break unless it is quoted); a line with a quote goes
    to csv.reader, which takes as many further lines as its quoted cells span. `next` is the
    line where the next row starts (the first line is 1). Export.records inlines the loop.
    tests/test_export.py checks rows and line numbers against csv.reader on random text."""

    def __init__(self, text: IO[str]) -> None:
        self._text = text
        self._feed = _Feed(text)
        self._quoted = csv.reader(self._feed, strict=False)
        self.next = 1
        self.taken = 0  # the lines the last quoted row spans

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> list[str]:
        line = next(self._text)  # StopIteration at the end of the file ends the rows
        if '"' in line:
            cells = self.quoted(line)
            self.next += self.taken
            return cells
        self.next += 1
        return line.rstrip("\r\n").split(",")

    def quoted(self, line: str) -> list[str]:
        """The row that starts with `line`, which has a quote; sets `taken`."""
        before = self._quoted.line_num
        self._feed.first = line
        cells = next(self._quoted)
        self.taken = self._quoted.line_num - before
        return cells


class _Feed:
    """The lines csv.reader reads a quoted row from: its first line, then the file's."""

    def __init__(self, text: IO[str]) -> None:
        self._text = text
        self.first: str | None = None

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        line = self.first
        if line is None:
            return next(self._text)
        self.first = None
        return line


class ExportWriter:
    """Writes the dry run's rows as CSV or JSON, by the output file's extension."""

    def __init__(self, path: Path, header: list[str]) -> None:
        self.kind = kind_of(path)
        self.path = path
        self._file = path.open("w", encoding="utf-8", newline="")
        self._first = True
        self.header = header
        if self.kind == "csv":
            self._lines: list[str] = []
            self._csv = csv.writer(_Collect(self._lines), lineterminator="\n")
            self.write_rows([header])
        else:
            self._file.write("[")

    def write(self, row: dict[str, Any]) -> None:
        if self.kind == "csv":
            self.write_rows([[_cell(row.get(h)) for h in self.header]])
        else:
            self._file.write(("\n" if self._first else ",\n")
                             + json.dumps(row, default=_json_default))
            self._first = False

    def write_rows(self, rows: list[list[str]]) -> None:
        """CSV rows given as their cells, in the header's order (the fast way). A row none of
        whose cells holds a comma, a quote or a line break is written as its cells joined by
        commas, which is what csv.writer would write, at a fifth of the cost; csv.writer
        writes the others."""
        lines = self._lines
        try:
            for cells in rows:
                line = ",".join(cells)
                if (line and line.count(",") == len(cells) - 1 and '"' not in line
                        and "\n" not in line and "\r" not in line):
                    lines.append(line)
                else:
                    self._csv.writerow(cells)
            lines.append("")
            self._file.write("\n".join(lines))
        finally:
            lines.clear()  # written, or failed: never written twice

    def close(self) -> None:
        if self.kind == "json":
            self._file.write("\n]\n")
        self._file.close()


class _Collect:
    """Where csv.writer writes the rows it quotes: into ExportWriter's lines, in order."""

    def __init__(self, lines: list[str]) -> None:
        self._lines = lines

    def write(self, text: str) -> None:
        self._lines.append(text[:-1])  # without the line end; write_rows joins the lines


def _json_default(value: Any) -> Any:
    """What json cannot write itself. A number read as Decimal is written as a JSON number
    again (an amount must not come back as a string); dates as ISO text."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
