"""The dry run: replay an export through the rules and tell what would happen, writing nothing
to any CRM. Used by `simulate` (what would be written, which workflow, which actions) and by
`forecast` (the weighted pipeline on the homologated probabilities)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from connector.core.evaluate import ActionDue, Evaluator, Names, Verdict
from connector.core.forecast import Forecast, MonthPairs, as_decimal
from connector.core.mapping import ID
from connector.core.ruleset import RuleSet
from connector.core.values import as_text
from connector.errors import ConnectorError, RecordError
from connector.export import Export, ExportWriter

SHOWN = 500  # changes and failures kept for the report; the counts cover every record
PREVIEWS = 50  # actions rendered for the report (rendering costs more than evaluating)

Progress = Callable[[int, int], None]  # (bytes read, file size)


Record = tuple[int, Any, dict[str, Any] | None, str | None]


def records(rules: RuleSet, export: Export, progress: Progress | None = None,
            names: Collection[str] | None = None) -> Iterator[Record]:
    """Each row of the export as (line, raw, values, error): `raw` is the row as the file has it
    (a CSV row's list of cells, or a JSON object), `values` its canonical typed values, or None
    with the reason it cannot be read. One row in memory at a time. With `names`, a CSV row's
    values hold only those fields (and the id)."""
    rows: Iterator[Record]
    if export.kind == "csv":
        rows = export.records(rules.mapping.row_reader(export.read_header(), names))
    else:
        rows = _json_records(rules, export)
    return rows if progress is None else _reporting(rows, export, progress)


def _json_records(rules: RuleSet, export: Export) -> Iterator[Record]:
    for row in export.rows():
        if "__error__" in row.data:
            yield row.number, {}, None, f"the row {row.data['__error__']}"
            continue
        try:
            yield row.number, row.data, rules.mapping.read(row.data), None
        except RecordError as exc:
            yield row.number, row.data, None, str(exc)


def _reporting(rows: Iterator[Record], export: Export, progress: Progress) -> Iterator[Record]:
    """The rows, telling `progress` how far into the file they are every 2,000 rows."""
    for n, row in enumerate(rows, 1):
        if n % 2000 == 0:
            progress(export.counter.count, export.size)
        yield row
    progress(export.size, export.size)


@dataclass
class Change:
    line: int
    record_id: str
    name: str
    rule: str
    before: dict[str, str]
    after: dict[str, str]
    factors: dict[str, str] = field(default_factory=dict)  # why: the values that chose `rule`


@dataclass
class Failure:
    line: int
    record_id: str
    reason: str


@dataclass
class Shown:
    """One action as it would be sent: rendered, never sent (or why it cannot be rendered)."""

    line: int
    record_id: str
    action: str
    kind: str
    rendered: dict[str, Any] | None
    error: str = ""


@dataclass
class Summary:
    read: int = 0
    changed: int = 0
    failed: int = 0
    per_workflow: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    changes: list[Change] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    forecast: Forecast = field(default_factory=Forecast)
    forecast_as_is: Forecast = field(default_factory=Forecast)
    previews: list[Shown] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0


def simulate(rules: RuleSet, source: Path, out: Path | None, today: dt.date,
             progress: Progress | None = None,
             preview: Callable[[str, Mapping[str, Any]], Any] | None = None) -> Summary:
    """Replays `source` through the rules: the summary (counts, the first SHOWN changes and
    failures, the forecast on the rules' and on the export's own probabilities) and, with
    `out`, every row with what would be written. The loop runs once per row of exports of a
    million rows, so what it calls is bound to locals first."""
    summary = Summary()
    decide = Evaluator(rules).decide
    forecasts = MonthPairs(summary.forecast, summary.forecast_as_is)
    add_to_forecasts = forecasts.adder()
    add_as_is = summary.forecast_as_is.month_adder()  # the records the rules fail
    per_workflow, actions, reasons = summary.per_workflow, summary.actions, summary.reasons
    changes_shown, failures_shown = summary.changes, summary.failures
    read = changed = failed = 0
    # the actions that would fire, counted per set fired together; a route's own, once
    fired_together: Counter[tuple[str, ...]] = Counter()
    route_actions: dict[Any, tuple[str, ...]] = {}
    with Export(source) as export:
        output: _Output | None = None
        if out is not None and export.kind == "csv":
            output = _Output(out, export.read_header(), rules, export.kind)
        complete = _completer(rules, export)
        for line, raw, values, error in records(rules, export, progress, _needed(rules)):
            read += 1
            if output is None and out is not None:  # JSON: the header is the first record's
                output = _Output(out, export.header, rules, export.kind)
            verdict: Verdict | None = None
            if values is not None:
                try:
                    verdict = decide(values, today)
                except RecordError as exc:
                    error = str(exc)
                    add_as_is(values)
            if verdict is None:
                failed += 1
                reason = error or "unknown error"
                reasons[_reason_kind(reason)] += 1
                if len(failures_shown) < SHOWN:
                    failures_shown.append(Failure(line, _record_id(rules, export, raw, values),
                                                  reason))
                if output is not None:
                    output.write(raw, _NO_CHANGES, "", reason)
                continue
            after, route, changes, due = verdict
            rule = route.rule
            per_workflow[rule] += 1
            add_to_forecasts(after, values)  # type: ignore[arg-type]
            if due:
                if due is route.due:  # no trigger of the record's own: the route's actions
                    names = route_actions.get(route) or route_actions.setdefault(
                        route, _distinct_actions(due))
                else:
                    names = _distinct_actions(due)
                fired_together[names] += 1
                if preview is not None and len(summary.previews) < PREVIEWS:
                    summary.previews.extend(_preview(
                        preview, line, _record_id(rules, export, raw, values), action,
                        complete(raw, after)) for action in names)
            if changes:
                changed += 1
                if len(changes_shown) < SHOWN:
                    before = {k: as_text(values.get(k)) for k in changes}  # type: ignore[union-attr]
                    changes_shown.append(Change(
                        line, _record_id(rules, export, raw, values),
                        as_text(complete(raw, after).get("name")),
                        rule, before, {k: as_text(v) for k, v in changes.items()},
                        route.factors))
            if output is not None:
                output.write(raw, changes, rule, "")
        if out is not None and output is None:  # a JSON export with no records
            output = _Output(out, export.header, rules, export.kind)
        if output is not None:
            output.close()
    forecasts.close()
    for names, n in fired_together.items():
        for action in names:
            actions[action] += n
    del summary.previews[PREVIEWS:]
    summary.read, summary.changed, summary.failed = read, changed, failed
    return summary


def forecast(rules: RuleSet, source: Path, today: dt.date, by: str = "month",
             as_is: bool = False, progress: Progress | None = None) -> tuple[Forecast, int]:
    """The forecast and the number of records that failed (left out, with their reason)."""
    result = Forecast(by)
    add = _adder(result)
    decide = Evaluator(rules).decide
    failed = 0
    with Export(source) as export:
        for _line, _raw, values, _error in records(rules, export, progress):
            if values is None:
                failed += 1
            elif as_is:
                add(values, values)
            else:
                try:
                    add(decide(values, today)[0], values)
                except RecordError:
                    failed += 1
    return result, failed


def _distinct_actions(due: tuple[ActionDue, ...]) -> tuple[str, ...]:
    """One edge per action (or escalation step) and record, as the ledger would fire on a
    first sync: a workflow and a trigger naming the same action send one email."""
    return tuple({d.key: d.action for d in due}.values())


def _needed(rules: RuleSet) -> set[str]:
    """The fields a dry run reads on every row: those the rules read, those the forecast sums,
    and every typed one (a bad value fails its row, whichever field it is in). The others,
    untyped text a template or the report may show (names, owners), are read only for the
    rows shown: a column of distinct names costs more to read than some of the rules."""
    return rules.names_read() | {"amount", "close_date", "probability"} | set(rules.mapping.types)


def _completer(rules: RuleSet, export: Export) -> Callable[[Any, Mapping[str, Any]], Names]:
    """(raw row, values after the rules) -> those values with every field of the row."""
    if export.kind != "csv":
        return lambda _raw, values: Names(values)  # a JSON record is read whole
    read_all = rules.mapping.row_reader(export.read_header())

    def complete(raw: Any, values: Mapping[str, Any]) -> Names:
        whole = Names(read_all(raw))
        whole.update(values)
        return whole
    return complete


GROUP_FIELDS = {"owner": ("owner_name", "owner", "owner_email"), "stage": ("stage",)}


def _adder(fc: Forecast) -> Callable[[Mapping[str, Any], Mapping[str, Any]], None]:
    """Adds one record to a forecast: `values` give the amount, probability and close date
    (after the rules, or as read for the as-is forecast), `read` the owner or stage."""
    if fc.by == "month":
        add_values = fc.month_adder()
        return lambda values, _read: add_values(values)
    add = fc.add
    names = GROUP_FIELDS[fc.by]

    def by_key(values: Mapping[str, Any], read: Mapping[str, Any]) -> None:
        key = next((as_text(read.get(n)) for n in names if read.get(n)), None)
        add(as_decimal(values.get("amount")), as_decimal(values.get("probability")),
            _date(values.get("close_date")), key)
    return by_key


def _date(value: Any) -> dt.date | None:
    return value if isinstance(value, dt.date) else None


def _preview(render: Callable[[str, Mapping[str, Any]], Any], line: int, record_id: str,
             action: str, values: Mapping[str, Any]) -> Shown:
    try:
        shown = render(action, values)
    except ConnectorError as exc:  # a template that fails for this record, no SMTP needed
        return Shown(line, record_id, action, "", None, str(exc))
    return Shown(line, record_id, action, shown.kind, shown.rendered)


def _record_id(rules: RuleSet, export: Export, raw: Any, values: dict[str, Any] | None) -> str:
    """The record's id as the file has it, for the failures and changes the report lists."""
    if isinstance(raw, list):  # a CSV row: the id column, found without regard to case
        index = rules.mapping.columns(export.header)[ID]
        if index is not None and index < len(raw):
            return raw[index]
        return as_text((values or {}).get(ID) or "")
    return as_text(raw.get(rules.mapping.id_field) or (values or {}).get(ID) or "")


def _reason_kind(reason: str) -> str:
    """Group failures by their kind: 'unknown stage ...' -> 'unknown stage'."""
    head = reason.split(":")[0].split("'")[0].strip()
    return head[:80] or reason[:80]


_NO_CHANGES: dict[str, Any] = {}


class _Output:
    """The output file: each input row, the writeback columns set to what would be written,
    and `_rule`, `_changed`, `_error`."""

    BATCH = 512  # CSV rows handed to csv.writer at a time (writerows: one call, not 512)

    def __init__(self, path: Path, header: list[str], rules: RuleSet, kind: str) -> None:
        out_header, self.columns = _output_header(header, rules)
        self.writer = ExportWriter(path, out_header)
        self.header = header
        self.json = self.writer.kind == "json"
        self.width = len(header)
        self.added = [""] * (len(out_header) - 3 - len(header))  # writeback columns it lacked
        self.index = {name: out_header.index(column) for name, column in self.columns.items()}
        self.batch: list[list[str]] = []
        # CSV in and CSV out: the row's own list of cells is patched and written, no dict.
        self.write = self._write_cells if kind == "csv" and not self.json else self._write_record

    def _write_cells(self, raw: list[str], changes: dict[str, Any], rule: str,
                     error: str) -> None:
        row = raw
        if len(row) != self.width:  # a row with too few or too many cells: fit the header
            row = (row + [""] * self.width)[:self.width]
        if self.added:
            row.extend(self.added)
        if changes:
            index = self.index
            for name, value in changes.items():  # text as it is: a call less per cell
                row[index[name]] = value if type(value) is str else as_text(value)
            row.extend((rule, ";".join(changes), error))
        else:
            row.extend((rule, "", error))
        batch = self.batch
        batch.append(row)
        if len(batch) >= self.BATCH:
            self.writer.write_rows(batch)
            batch.clear()

    def _write_record(self, raw: Any, changes: dict[str, Any], rule: str, error: str) -> None:
        record = dict(zip(self.header, raw)) if isinstance(raw, list) else dict(raw)
        for name, value in changes.items():
            record[self.columns[name]] = _json_value(value) if self.json else as_text(value)
        record["_rule"] = rule
        record["_changed"] = ";".join(changes)
        record["_error"] = error
        self.writer.write(record)

    def close(self) -> None:
        if self.batch:
            self.writer.write_rows(self.batch)
        self.writer.close()


def _output_header(header: list[str], rules: RuleSet) -> tuple[list[str], dict[str, str]]:
    """The input's columns (writeback columns added when missing) and _rule, _changed, _error;
    plus canonical writeback name -> the column it is written to."""
    out = list(header)
    found = rules.mapping.columns(header)
    columns: dict[str, str] = {}
    for name in rules.mapping.writeback:
        index = found.get(name)
        if index is None:
            column = rules.mapping.crm_field(name)
            out.append(column)
        else:
            column = header[index]
        columns[name] = column
    return out + ["_rule", "_changed", "_error"], columns


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
