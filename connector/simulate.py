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

from connector.core.evaluate import ActionDue, Evaluator, Names, Route
from connector.core.findings import did_you_mean
from connector.core.forecast import (
    LOST,
    OPEN,
    WON,
    DealFields,
    Forecast,
    MonthPairs,
    Rates,
    as_decimal,
)
from connector.core.mapping import ID
from connector.core.ruleset import CLOSED_LOST, CLOSED_WON, RuleSet
from connector.core.values import EXPORT, Cells, as_text
from connector.errors import ConfigurationError, ConnectorError, RecordError, Text
from connector.export import Dialect, Export, ExportWriter
from connector.formatting import listed
from connector.i18n import say

SHOWN = 500  # changes and failures kept for the report; the counts cover every record
PREVIEWS = 50  # actions rendered for the report (rendering costs more than evaluating)

Progress = Callable[[int, int], None]  # (bytes read, file size)


Record = tuple[int, Any, dict[str, Any] | None, str | None]


@dataclass(frozen=True)
class ReadOptions:
    """How to read an export, where the command line says: its locale (else the mapping's),
    its encoding and delimiter (else detected), and the currency rates for the forecast."""

    locale: str | None = None
    encoding: str | None = None
    delimiter: str | None = None
    rates: Rates | None = None

    def open(self, source: Path) -> Export:
        return Export(source, self.encoding, self.delimiter)

    def cells(self, rules: RuleSet) -> Cells:
        locale = self.locale or rules.mapping.locale
        if locale is None:
            return EXPORT
        from connector.locales import locale_cells

        return locale_cells(locale)


def records(rules: RuleSet, export: Export, progress: Progress | None = None,
            names: Collection[str] | None = None, cells: Cells = EXPORT) -> Iterator[Record]:
    """Each row of the export as (line, raw, values, error): `raw` is the row as the file has it
    (a CSV row's list of cells, or a JSON object), `values` its canonical typed values, or None
    with the reason it cannot be read. One row in memory at a time. With `names`, a CSV row's
    values hold only those fields (and the id). `cells` reads numbers and dates in text."""
    rows: Iterator[Record]
    if export.kind == "csv":
        rows = export.records(rules.mapping.row_reader(export.read_header(), names, cells))
    else:
        rows = _json_records(rules, export, cells)
    return rows if progress is None else _reporting(rows, export, progress)


def _json_records(rules: RuleSet, export: Export, cells: Cells) -> Iterator[Record]:
    for row in export.rows():
        if "__error__" in row.data:
            yield row.number, {}, None, row.data["__error__"]
            continue
        try:
            yield row.number, row.data, rules.mapping.read(row.data, cells), None
        except RecordError as exc:
            yield row.number, row.data, None, exc.text


def require_columns(rules: RuleSet, export: Export, names: Collection[str]) -> None:
    """Before any row: every field in `names` the mapping has (but its `optional` ones) must be
    a column of a CSV export, else a configuration error naming the missing fields, the columns
    found and a near one. A JSON export's records carry their own fields: not checked."""
    if export.kind != "csv":
        return
    mapping = rules.mapping
    header = export.read_header()
    columns = mapping.columns(header)
    missing = [Text("{column}{hint}", column=mapping.crm_field(n),
                    hint=did_you_mean(mapping.crm_field(n), header))
               for n in mapping.fields if n in names and n not in mapping.optional
               and columns.get(n) is None]
    if missing:
        raise ConfigurationError(Text(
            "{file}: the columns the rules read are not in its header: {missing}; found "
            "{found}. Export those fields, name them in the mapping ({mapping}), or list those "
            "that may be absent under 'optional:' in it", file=str(export.path),
            missing=listed(missing), found=", ".join(header),
            mapping=mapping.source or "--mapping"))


def deal_fields(rules: RuleSet) -> DealFields:
    """Where a record's forecast status (won, lost, open: the rules' closed states) and its
    currency (the canonical `currency` field, when mapped) are."""
    currency = "currency" if "currency" in rules.mapping.fields else ""
    closed = rules.closed
    if closed is None:
        return DealFields(currency=currency, written=written_by(rules))
    statuses = {CLOSED_WON: WON, CLOSED_LOST: LOST}
    seen: dict[Any, str] = {}

    def status(value: Any) -> str:
        if type(value) is not str:  # blank, or what a JSON export holds (a list, a number)
            return statuses.get(closed.state(value) or "", OPEN)
        found = seen.get(value)
        if found is None:
            found = statuses.get(closed.state(value) or "", OPEN)
            if len(seen) < 4096:  # a few stages; a column of garbage must not grow it
                seen[value] = found
        return found

    return DealFields(closed.field, status, currency, written_by(rules))


def written_by(rules: RuleSet) -> frozenset[str]:
    """The fields the rules may change: the writeback ones, the computed ones and those a
    workflow sets."""
    return frozenset(rules.mapping.writeback) | frozenset(rules.computed) | {
        name for w in rules.workflows for name in w.sets}


def stage_order(rules: RuleSet) -> tuple[str, ...]:
    """The stages in pipeline order: the values of the factor on the closed field, as listed,
    then the won ones."""
    closed = rules.closed
    if closed is None:
        return ()
    factor = next((f for f in rules.factors if f.field == closed.field), None)
    values = factor.values if factor is not None else ()
    return values + tuple(v for v in closed.labels if closed.state(v) == CLOSED_WON)


def _reporting(rows: Iterator[Record], export: Export, progress: Progress) -> Iterator[Record]:
    """The rows, telling `progress` how far into the file they are every 2,000 rows."""
    for n, row in enumerate(rows, 1):
        if n % 2000 == 0:
            progress(export.bytes_read, export.size)
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
    notes: list[Text] = field(default_factory=list)  # what reading the export detected, skipped

    @property
    def ok(self) -> bool:
        return self.failed == 0


def simulate(rules: RuleSet, source: Path, out: Path | None, today: dt.date,
             progress: Progress | None = None,
             preview: Callable[[str, Mapping[str, Any]], Any] | None = None,
             options: ReadOptions = ReadOptions(), explain: bool = False) -> Summary:
    """Replays `source` through the rules: the summary (counts, the first SHOWN changes and
    failures, the forecast on the rules' and on the export's own probabilities) and, with
    `out`, every row with what would be written (and, with `explain`, why and what each
    written column held before). The loop runs once per row of exports of a million rows, so
    what it calls is bound to locals first."""
    summary = Summary(forecast=Forecast(due_by=today, rates=options.rates),
                      forecast_as_is=Forecast(due_by=today, rates=options.rates))
    decide = Evaluator(rules).decide
    deal = deal_fields(rules)
    forecasts = MonthPairs(summary.forecast, summary.forecast_as_is, deal)
    add_to_forecasts = forecasts.adder()
    add_as_is = summary.forecast_as_is.month_adder(deal)  # the records the rules fail
    cells = options.cells(rules)
    needed = _needed(rules)
    per_workflow, actions, reasons = summary.per_workflow, summary.actions, summary.reasons
    changes_shown, failures_shown = summary.changes, summary.failures
    changed = failed = unread = 0
    # Counted in plain dicts: a Counter's `+= 1` costs four times a dict's, once per record.
    # The records each route takes, and the actions that would fire: per route when they are
    # its own (most records), else per set fired together; each counted once per record, as
    # the ledger would fire them.
    taken: dict[Route, int] = {}
    fired_on: dict[Route, int] = {}
    fired_together: dict[tuple[str, ...], int] = {}
    with options.open(source) as export:
        require_columns(rules, export, needed - set(rules.mapping.writeback))
        output = None if out is None else _Output(out, export, rules, explain)
        write = None if output is None else output.write
        complete = _completer(rules, export, cells)
        record_id = id_reader(rules, export)
        for line, raw, values, error in records(rules, export, progress, needed, cells):
            if values is not None:
                try:
                    after, route, changes, due = decide(values, today)
                except RecordError as exc:
                    error = exc.text
                    add_as_is(values)
                else:
                    taken[route] = taken.get(route, 0) + 1
                    add_to_forecasts(after, values)
                    if due:
                        if due is route.due:  # no trigger of the record's own
                            fired_on[route] = fired_on.get(route, 0) + 1
                        else:
                            names = distinct_actions(due)
                            fired_together[names] = fired_together.get(names, 0) + 1
                        if preview is not None and len(summary.previews) < PREVIEWS:
                            summary.previews.extend(_preview(
                                preview, line, record_id(raw, values),
                                action, complete(raw, after)) for action in distinct_actions(due))
                    if changes:
                        changed += 1
                        if len(changes_shown) < SHOWN:
                            changes_shown.append(Change(
                                line, record_id(raw, values),
                                as_text(complete(raw, after).get("name")), route.rule,
                                {k: as_text(values.get(k)) for k in changes},
                                {k: as_text(v) for k, v in changes.items()}, route.factors))
                    if write is not None:
                        write(raw, changes, route)
                    continue
            # the record could not be read, or the rules could not take it
            failed += 1
            if values is None:
                unread += 1
            reason = error or Text("unknown error")
            reasons[_reason_kind(reason)] += 1
            if len(failures_shown) < SHOWN:
                failures_shown.append(Failure(line, record_id(raw, values), reason))
            if output is not None:
                output.fail(raw, say(reason))
        if output is not None:
            output.close()
        summary.notes = export.notes
        read = failed + sum(taken.values())
        if export.footer_records is not None and export.footer_records != read:
            summary.notes.append(Text("{file}: the report's footer counts {counted} records, "
                                      "{read} were read: is the export whole?", file=str(source),
                                      counted=export.footer_records, read=read))
    forecasts.close()
    for route, n in taken.items():
        per_workflow[route.rule] += n
    summary.forecast.fail(failed)
    summary.forecast_as_is.fail(unread)
    for route, n in fired_on.items():
        names = distinct_actions(route.due)
        fired_together[names] = fired_together.get(names, 0) + n
    for names, n in fired_together.items():
        for action in names:
            actions[action] += n
    del summary.previews[PREVIEWS:]
    summary.read, summary.changed, summary.failed = read, changed, failed
    return summary


def forecast(rules: RuleSet, source: Path, today: dt.date, by: str = "month",
             as_is: bool = False, progress: Progress | None = None,
             options: ReadOptions = ReadOptions()) -> tuple[Forecast, list[Text]]:
    """The forecast (what it left out, records that failed, lost ..., is in its `left_out`)
    and what reading the export detected or skipped (Export.notes)."""
    result = Forecast(by, today, options.rates, stage_order(rules) if by == "stage" else ())
    deal = deal_fields(rules)
    add = _adder(result, deal)
    decide = Evaluator(rules).decide
    cells = options.cells(rules)
    needed = {"amount", "close_date", deal.currency, deal.status_field} | (
        {"probability"} if as_is else rules.names_read() - set(rules.mapping.writeback))
    with options.open(source) as export:
        grouped = _grouped_by(rules, by, export)
        require_columns(rules, export, needed | grouped)
        # only the fields the forecast reads, and every typed one (a bad value fails its row,
        # as in simulate): names and other untyped text are not read a million times
        read = _needed(rules) | set(GROUP_FIELDS.get(by, ())) | grouped
        for _line, _raw, values, _error in records(rules, export, progress, read, cells):
            if values is None:
                result.fail()
            elif as_is:
                add(values, values)
            else:
                try:
                    add(decide(values, today)[0], values)
                except RecordError:
                    result.fail()
    return result, export.notes


def _grouped_by(rules: RuleSet, by: str, export: Export) -> set[str]:
    """The field a forecast groups by must be a column too: for owners, the first of the
    owner fields the mapping has that the file has, else the first the mapping has."""
    if by == "month":
        return set()
    mapped = [n for n in GROUP_FIELDS[by] if n in rules.mapping.fields]
    if export.kind != "csv" or not mapped:
        return set(mapped[:1]) if mapped else {by}
    columns = rules.mapping.columns(export.read_header())
    return set(next(([n] for n in mapped if columns.get(n) is not None), mapped[:1]))


def distinct_actions(due: tuple[ActionDue, ...]) -> tuple[str, ...]:
    """One edge per action (or escalation step) and record, as the ledger would fire on a
    first sync: a workflow and a trigger naming the same action send one email."""
    return tuple({d.key: d.action for d in due}.values())


def _needed(rules: RuleSet) -> set[str]:
    """The fields a dry run reads on every row: those the rules read, those the forecast sums,
    and every typed one (a bad value fails its row, whichever field it is in). The others,
    untyped text a template or the report may show (names, owners), are read only for the
    rows shown: a column of distinct names costs more to read than some of the rules."""
    return (rules.names_read() | {"amount", "close_date", "probability"}
            | set(rules.mapping.types) | {"currency"} & set(rules.mapping.fields))


def _completer(rules: RuleSet, export: Export, cells: Cells
               ) -> Callable[[Any, Mapping[str, Any]], Names]:
    """(raw row, values after the rules) -> those values with every field of the row."""
    if export.kind != "csv":
        return lambda _raw, values: Names(values)  # a JSON record is read whole
    read_all = rules.mapping.row_reader(export.read_header(), cells=cells)

    def complete(raw: Any, values: Mapping[str, Any]) -> Names:
        whole = Names(read_all(raw))
        whole.update(values)
        return whole
    return complete


GROUP_FIELDS = {"owner": ("owner_name", "owner", "owner_email"), "stage": ("stage",)}


def _adder(fc: Forecast, deal: DealFields
           ) -> Callable[[Mapping[str, Any], Mapping[str, Any]], None]:
    """Adds one record to a forecast: `values` give the amount, probability, close date and
    status (after the rules, or as read for the as-is forecast), `read` the owner or stage."""
    if fc.by == "month":
        add_values = fc.month_adder(deal)
        return lambda values, _read: add_values(values)
    add = fc.add
    names = GROUP_FIELDS[fc.by]
    status, currency = deal.status, deal.currency

    def by_key(values: Mapping[str, Any], read: Mapping[str, Any]) -> None:
        key = next((as_text(read.get(n)) for n in names if read.get(n)), None)
        code = values.get(currency) if currency else None
        add(as_decimal(values.get("amount")), as_decimal(values.get("probability")),
            _date(values.get("close_date")), key, status(values.get(deal.status_field)),
            None if not currency else as_text(code).strip().upper())
    return by_key


def _date(value: Any) -> dt.date | None:
    return value if isinstance(value, dt.date) else None


def _preview(render: Callable[[str, Mapping[str, Any]], Any], line: int, record_id: str,
             action: str, values: Mapping[str, Any]) -> Shown:
    try:
        shown = render(action, values)
    except ConnectorError as exc:  # a template that fails for this record, no SMTP needed
        return Shown(line, record_id, action, "", None, exc.text)
    return Shown(line, record_id, action, shown.kind, shown.rendered)


def id_reader(rules: RuleSet, export: Export) -> Callable[[Any, dict[str, Any] | None], str]:
    """(raw, values) -> the record's id as the file has it, for the failures and changes the
    report lists; its column is found once (without regard to case), not per record."""
    if export.kind != "csv":
        id_field = rules.mapping.id_field
        return lambda raw, values: as_text(raw.get(id_field) or (values or {}).get(ID) or "")
    index = rules.mapping.columns(export.read_header())[ID]

    def of_row(raw: list[str], values: dict[str, Any] | None) -> str:
        if index is not None and index < len(raw):
            return raw[index]
        return as_text((values or {}).get(ID) or "")
    return of_row


def _reason_kind(reason: str) -> str:
    """Group failures by their kind: 'unknown stage ...' -> 'unknown stage'."""
    head = reason.split(":")[0].split("'")[0].strip()
    return head[:80] or reason[:80]


# What a failed record is written with: no workflow, no factors (a blank `_rule` and `_why`).
_NO_ROUTE = Route("", {}, (), {}, ())


class _Output:
    """The output file: each input row, the writeback columns set to what would be written,
    and `_rule`, `_changed`, `_error`; with `explain`, also `_why` (the factor values that
    chose the workflow, `·` between them; blank for a closed deal) and, for each writeback
    column, `_before_<column>`: its value as read. Not by default: they make the file a
    third larger, and writing it is a fifth of a dry run's time.

    `write(raw, changes, route)` writes a record the rules took, `fail(raw, reason)` one they
    could not."""

    def __init__(self, path: Path, export: Export, rules: RuleSet, explain: bool) -> None:
        self.path, self.export, self.rules, self.explain = path, export, rules, explain
        self.whys: dict[Route, str] = {}  # a route's why, once: every record it takes shares it
        self.writer: ExportWriter | None = None
        self.write: Callable[..., None] = self._write_record
        if export.kind == "csv":  # (JSON: the header is the first record's)
            self._open(export.read_header())
            if self.writer is not None and self.writer.kind == "csv":
                # CSV in and CSV out: the row's own list of cells is patched, no dict
                self.write = self._cells_writer()

    def _open(self, header: list[str]) -> None:
        out_header, self.columns = _output_header(header, self.rules, self.explain)
        self.writer = ExportWriter(self.path, out_header, self.export.dialect
                                   if self.export.kind == "csv" else Dialect())
        self.header = header
        self.width = len(header)
        # writeback columns it lacked (blank: not in the input)
        extra = 4 + len(self.columns) if self.explain else 3  # the columns after those
        self.added = [""] * (len(out_header) - extra - len(header))
        self.index = {name: out_header.index(column) for name, column in self.columns.items()}
        self.olds = list(self.index.values())  # the writeback cells, read before they change

    def why(self, route: Route) -> str:
        why = self.whys.get(route)
        if why is None:  # no comma: a plain CSV line skips csv's quoting
            why = self.whys[route] = " · ".join(f"{k}={v}" for k, v in route.factors.items())
        return why

    def _cells_writer(self) -> Callable[..., None]:
        """Writes a CSV row given as the input's cells, patched: a closure over what it needs,
        a row's attribute lookups cost a tenth of writing it."""
        width, added, index = self.width, self.added, self.index
        assert self.writer is not None
        put = self.writer.write_row
        olds = self.olds if self.explain else None
        why = self.why

        def write(raw: list[str], changes: dict[str, Any], route: Route, error: str = ""
                  ) -> None:
            row = raw
            if len(row) != width:  # a row with too few or too many cells: fit the header
                row = (row + [""] * width)[:width]
            if added:
                row.extend(added)
            before = [row[i] for i in olds] if olds is not None else None
            if changes:
                for name, value in changes.items():  # text and ints as they are: no call
                    kind = type(value)
                    row[index[name]] = (value if kind is str else str(value) if kind is int
                                        else as_text(value))
                row.extend((route.rule, ";".join(changes), error))
            else:
                row.extend((route.rule, "", error))
            if before is not None:
                row.append(why(route))
                row.extend(before)
            put(row)

        return write

    def fail(self, raw: Any, reason: str) -> None:
        """A record the rules could not take: as read, with why in `_error`."""
        self.write(raw, {}, _NO_ROUTE, reason)

    def _write_record(self, raw: Any, changes: dict[str, Any], route: Route,
                      error: str = "") -> None:
        if self.writer is None:
            self._open(self.export.header)
        assert self.writer is not None
        record = dict(zip(self.header, raw)) if isinstance(raw, list) else dict(raw)
        before = {f"_before_{column}": record.get(column, "")
                  for column in self.columns.values()} if self.explain else None
        for name, value in changes.items():
            record[self.columns[name]] = (_json_value(value) if self.writer.kind == "json"
                                          else as_text(value))
        record["_rule"] = route.rule
        record["_changed"] = ";".join(changes)
        record["_error"] = error
        if before is not None:
            record["_why"] = self.why(route)
            record.update(before)
        self.writer.write(record)

    def close(self) -> None:
        if self.writer is None:  # a JSON export with no records
            self._open(self.export.header)
        assert self.writer is not None
        self.writer.close()


def _output_header(header: list[str], rules: RuleSet, explain: bool = False
                   ) -> tuple[list[str], dict[str, str]]:
    """The input's columns (writeback columns added when missing), _rule, _changed, _error
    (and, with `explain`, _why and each writeback column's value before); plus canonical
    writeback name -> the column it is written to."""
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
    if not explain:
        return out + ["_rule", "_changed", "_error"], columns
    return (out + ["_rule", "_changed", "_error", "_why"]
            + [f"_before_{column}" for column in columns.values()], columns)


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
