"""The dry run: replay an export through the rules and tell what would happen, writing nothing
to any CRM. Used by `simulate` (what would be written, which workflow, which actions) and by
`forecast` (the weighted pipeline on the homologated probabilities)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from connector.core.evaluate import Evaluator, Outcome
from connector.core.forecast import Forecast
from connector.core.mapping import ID
from connector.core.ruleset import RuleSet
from connector.core.values import as_text
from connector.errors import RecordError
from connector.export import Export, ExportWriter

SHOWN = 500  # changes and failures kept for the report; the counts cover every record

Progress = Callable[[int, int], None]  # (bytes read, file size)


@dataclass
class Replayed:
    line: int
    raw: dict[str, Any]
    values: dict[str, Any] | None = None  # canonical values as read (None: unreadable row)
    outcome: Outcome | None = None
    error: str | None = None


def replay(rules: RuleSet, export: Export, today: dt.date, apply_rules: bool = True,
           progress: Progress | None = None) -> Iterator[Replayed]:
    """Each row of the export with its outcome, or the reason it failed. One row in memory."""
    evaluator = Evaluator(rules)
    read: Callable[[Mapping[str, Any]], dict[str, Any]] = rules.mapping.read
    flat = export.kind == "csv"
    n = 0
    for row in export.rows():
        if n == 0 and flat:
            read = rules.mapping.reader(export.header)
        n += 1
        if progress is not None and n % 2000 == 0:
            progress(export.counter.count, export.size)
        item = Replayed(row.number, row.data)
        if "__error__" in row.data:
            item.error = f"the row {row.data.pop('__error__')}"
            yield item
            continue
        try:
            item.values = read(row.data)
            if apply_rules:
                item.outcome = evaluator.evaluate(item.values, today)
        except RecordError as exc:
            item.error = str(exc)
        yield item
    if progress is not None:
        progress(export.size, export.size)


@dataclass
class Change:
    line: int
    record_id: str
    name: str
    rule: str
    before: dict[str, str]
    after: dict[str, str]


@dataclass
class Failure:
    line: int
    record_id: str
    reason: str


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

    @property
    def ok(self) -> bool:
        return self.failed == 0


def simulate(rules: RuleSet, source: Path, out: Path | None, today: dt.date,
             progress: Progress | None = None) -> Summary:
    summary = Summary()
    mapping = rules.mapping
    with Export(source) as export:
        writer: ExportWriter | None = None
        columns: dict[str, str] = {}
        for item in replay(rules, export, today, progress=progress):
            summary.read += 1
            if out is not None and writer is None:
                header, columns = _output_header(export.header, rules)
                writer = ExportWriter(out, header)
            record_id = as_text(item.raw.get(mapping.id_field) or
                                (item.values or {}).get(ID) or "")
            outcome = item.outcome
            if item.values is not None:
                _add_to_forecast(summary.forecast_as_is, item.values, item.values)
            if outcome is None:
                summary.failed += 1
                reason = item.error or "unknown error"
                summary.reasons[_reason_kind(reason)] += 1
                if len(summary.failures) < SHOWN:
                    summary.failures.append(Failure(item.line, record_id, reason))
                if writer is not None:
                    writer.write(_output_row(item.raw, {}, "", [], reason, columns, writer.kind))
                continue
            summary.per_workflow[outcome.rule] += 1
            _add_to_forecast(summary.forecast, outcome.values, item.values or {})
            for due in outcome.due:
                summary.actions[due.action] += 1
            if outcome.changes:
                summary.changed += 1
                if len(summary.changes) < SHOWN:
                    before = {k: as_text((item.values or {}).get(k)) for k in outcome.changes}
                    after = {k: as_text(v) for k, v in outcome.changes.items()}
                    summary.changes.append(Change(item.line, record_id,
                                                  as_text(outcome.values.get("name")),
                                                  outcome.rule, before, after))
            if writer is not None:
                writer.write(_output_row(item.raw, outcome.changes, outcome.rule,
                                         list(outcome.changes), "", columns, writer.kind))
        if out is not None and writer is None:  # an export with a header and no rows
            header, columns = _output_header(export.header, rules)
            writer = ExportWriter(out, header)
        if writer is not None:
            writer.close()
    return summary


def forecast(rules: RuleSet, source: Path, today: dt.date, by: str = "month",
             as_is: bool = False, progress: Progress | None = None) -> tuple[Forecast, int]:
    """The forecast and the number of records that failed (left out, with their reason)."""
    result = Forecast(by)
    failed = 0
    with Export(source) as export:
        for item in replay(rules, export, today, apply_rules=not as_is, progress=progress):
            if item.values is None or (not as_is and item.outcome is None):
                failed += 1
                continue
            values = item.values if as_is else item.outcome.values  # type: ignore[union-attr]
            _add_to_forecast(result, values, item.values)
    return result, failed


GROUP_FIELDS = {"owner": ("owner_name", "owner", "owner_email"), "stage": ("stage",)}


def _add_to_forecast(fc: Forecast, values: dict[str, Any], read: dict[str, Any]) -> None:
    key = None
    if fc.by != "month":
        key = next((as_text(read.get(n)) for n in GROUP_FIELDS[fc.by] if read.get(n)), None)
    fc.add(_decimal(values.get("amount")), _decimal(values.get("probability")),
           _date(values.get("close_date")), key)


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    return None


def _date(value: Any) -> dt.date | None:
    return value if isinstance(value, dt.date) else None


def _reason_kind(reason: str) -> str:
    """Group failures by their kind: 'unknown stage ...' -> 'unknown stage'."""
    head = reason.split(":")[0].split("'")[0].strip()
    return head[:80] or reason[:80]


def _output_header(header: list[str], rules: RuleSet) -> tuple[list[str], dict[str, str]]:
    """The input's columns (writeback columns added when missing) and _rule, _changed, _error;
    plus canonical writeback name -> the column it is written to."""
    out = list(header)
    folded = {h.casefold(): h for h in header}
    columns: dict[str, str] = {}
    for name in rules.mapping.writeback:
        crm_field = rules.mapping.crm_field(name)
        column = folded.get(crm_field.casefold())
        if column is None:
            column = crm_field
            out.append(column)
        columns[name] = column
    return out + ["_rule", "_changed", "_error"], columns


def _output_row(raw: dict[str, Any], changes: dict[str, Any], rule: str, changed: list[str],
                error: str, columns: dict[str, str], kind: str) -> dict[str, Any]:
    row = dict(raw)
    for name, value in changes.items():
        row[columns[name]] = _json_value(value) if kind == "json" else as_text(value)
    row["_rule"] = rule
    row["_changed"] = ";".join(changed)
    row["_error"] = error
    return row


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
