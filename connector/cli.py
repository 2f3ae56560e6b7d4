"""The admin's command line: `crm-automation check | table | ...`.

Exit codes: 0 success, 1 the work found errors (invalid rules, records that failed),
2 usage or configuration error. No traceback reaches the admin: unexpected errors are reported
in one line (set CRM_AUTOMATION_DEBUG=1 to see the traceback).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from connector.cli_help import N_
from connector.cli_help import run as run_in_language
from connector.core.findings import Finding
from connector.errors import ConfigurationError, Text
from connector.files import Loaded, load
from connector.i18n import choose_language, language_of, ngettext, say, say_error, set_language
from connector.i18n import gettext as _

if TYPE_CHECKING:
    from connector.simulate import ReadOptions

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help=N_("Homologated win probabilities for CRM opportunities: check the "
                          "rules, try them on an export, forecast, and sync."))

RulesOpt = Annotated[Path, typer.Option("--rules", help=N_("The rules folder."))]
MappingsOpt = Annotated[Path, typer.Option("--mappings", help=N_("The mappings folder."))]


class CheckFormat(str, Enum):
    text = "text"
    json = "json"


class TableFormat(str, Enum):
    text = "text"
    csv = "csv"
    json = "json"


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _print_table(console: Console, title: str, headers: list[str], rows: list[list[str]],
                 reasons: list[str] | None = None) -> None:
    """A table whose cells (ids, keys, factor values) are never cut: as wide as they need, as
    a pipe has no width of its own. `reasons` (long texts, one per row) make a last column
    that wraps to the console's width, or, when the other columns leave it too little room,
    are listed below the table, each after its row's first cell."""
    widths = [max(cell_len(c) for c in [h, *(r[i] for r in rows)])
              for i, h in enumerate(headers)]
    needed = sum(widths) + 3 * len(widths) + 1
    fold = reasons is not None and needed + 3 + 20 <= console.width
    t = Table(*headers, title=title)
    for column, width in zip(t.columns, widths):
        column.no_wrap, column.min_width = True, width
    if fold:
        t.add_column(_("reason"), overflow="fold")
    for i, row in enumerate(rows):
        t.add_row(*map(escape, row), *([escape(reasons[i])] if fold and reasons else []))
    console.width = max(console.width, needed)
    console.print(t)
    if reasons is not None and not fold and any(reasons):
        console.print(_("reasons:"))
        for row, reason in zip(rows, reasons):
            if reason:
                console.print(f"  {escape(row[0])}: {escape(reason)}")


def _print_findings(findings: list[Finding], console: Console) -> None:
    for f in findings:
        colour = "red" if f.severity == "error" else "yellow"
        where = ""
        if f.file:
            where = f"{f.file}:{f.line}: " if f.line else f"{f.file}: "
        severity = _("error") if f.severity == "error" else _("warning")
        console.print(f"{escape(where)}[{colour}]{severity}[/{colour}]: {escape(say(f.message))}")
        if f.example:
            console.print("    " + _("example: {combination}").format(combination=escape(
                ", ".join(f"{k}={v}" for k, v in f.example.items()))))


def _folders(rules: Path, mappings: Path) -> None:
    """A folder that is not there is a usage error (exit 2), not a finding about the rules."""
    for path, option in ((rules, "--rules"), (mappings, "--mappings")):
        if not path.is_dir():
            raise typer.BadParameter(_("no folder at {path}").format(path=path),
                                     param_hint=option)


def _load_or_exit(rules: Path, mappings: Path, mapping: Path | None = None) -> Loaded:
    _folders(rules, mappings)
    loaded = load(rules, mappings, mapping_file=mapping)
    if not loaded.ok:
        _print_findings([f for f in loaded.findings if f.severity == "error"], _err())
        raise typer.Exit(1)
    return loaded


@app.command(help=N_(
    "Validate every file, then prove the workflows exclusive and complete."))
def check(rules: RulesOpt = Path("rules"), mappings: MappingsOpt = Path("mappings"),
          format: Annotated[CheckFormat, typer.Option(
              "--format", help=N_("text, or JSON for another program."))
          ] = CheckFormat.text) -> None:
    from connector.checks import check_erp, check_templates
    from connector.core.proof import prove

    _folders(rules, mappings)
    loaded = load(rules, mappings)
    findings = list(loaded.findings)
    if loaded.rules is not None and loaded.ok:
        findings += check_templates(loaded.rules, rules)
        findings += check_erp(loaded.rules, mappings)
        findings += prove(loaded.rules)
    ok = not any(f.severity == "error" for f in findings)
    if format is CheckFormat.json:
        print(json.dumps({"ok": ok, "findings": [{**f.as_json(), "message": say(f.message)}
                                                  for f in findings]}, indent=2))
        raise typer.Exit(0 if ok else 1)
    console = _out()
    _print_findings(findings, console)
    if ok and loaded.rules is not None:
        rs = loaded.rules
        combos = 1
        for n in rs.sizes:
            combos *= n
        warnings = sum(f.severity == "warning" for f in findings)
        line = _("{factors} factors ({combinations} combinations), {workflows} workflows: "
                 "exactly one matches every combination").format(
            factors=len(rs.factors), combinations=f"{combos:,}", workflows=len(rs.workflows))
        if warnings:
            line += "; " + ngettext("{n} warning", "{n} warnings", warnings).format(n=warnings)
        line += " " + _("(rule set {version})").format(version=rs.version)
        console.print(f"[green]ok[/green]: {line}")
        timed = rs.time_dependent_triggers
        if timed:
            console.print(_("time-dependent triggers (they need the daily sweep): {names}")
                          .format(names=", ".join(t.name for t in timed)))
    else:
        errors = sum(f.severity == "error" for f in findings)
        console.print("[red]" + ngettext("{n} error", "{n} errors", errors).format(n=errors)
                      + "[/red]")
    raise typer.Exit(0 if ok else 1)


@app.command(help=N_(
    "The effective decision table, one row per combination of factor values."))
def table(rules: RulesOpt = Path("rules"), mappings: MappingsOpt = Path("mappings"),
          format: Annotated[TableFormat, typer.Option(
              "--format", help=N_("text, CSV or JSON."))] = TableFormat.text) -> None:
    from connector.core.expressions import Formula
    from connector.core.table import DecisionTable

    loaded = _load_or_exit(rules, mappings)
    rs = loaded.rules
    assert rs is not None
    dt = DecisionTable(rs)
    names = [f.name for f in rs.factors]

    def probability(ws: list[Any]) -> str:
        if len(ws) != 1:
            return ""
        p = ws[0].sets.get("probability")
        return f"= {p.source}" if isinstance(p, Formula) else format_number(p)

    def workflow(ws: list[Any]) -> str:
        if not ws:
            return _("(gap)")
        return " + ".join(w.name for w in ws) + (" " + _("(overlap)") if len(ws) > 1 else "")

    failed = False
    if format is TableFormat.json:
        rows = []
        for combo, ws in dt.rows():
            failed |= len(ws) != 1
            rows.append({"factors": dict(zip(names, combo)), "workflow": workflow(ws),
                         "probability": probability(ws)})
        print(json.dumps(rows, indent=2))
    elif format is TableFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([*names, "workflow", "probability"])
        for combo, ws in dt.rows():
            failed |= len(ws) != 1
            writer.writerow([*combo, workflow(ws), probability(ws)])
    else:
        table_rows = []
        for combo, ws in dt.rows():
            failed |= len(ws) != 1
            table_rows.append([*combo, workflow(ws), probability(ws)])
        console = _out()
        _print_table(console, _("Decision table ({version})").format(version=rs.version),
                     [*names, _("workflow"), _("probability")], table_rows)
        if rs.closed:
            console.print(_("closed deals, outside the table: {field} in won -> closed-won "
                            "(100 %), lost -> closed-lost (0 %)").format(field=rs.closed.field))
    raise typer.Exit(1 if failed else 0)


ExportArg = Annotated[Path, typer.Argument(
    help=N_("A CSV or JSON export with the CRM's field names."), exists=True, dir_okay=False)]
MappingOpt = Annotated[Path | None, typer.Option(
    "--mapping", help=N_("The CRM mapping file to read the export with (default: the "
                         "CRM's)."))]
TodayOpt = Annotated[str | None, typer.Option(
    "--today", help=N_("The date formulas see as today (YYYY-MM-DD); default: the real "
                       "today."))]


LocaleOpt = Annotated[str | None, typer.Option(
    "--locale", help=N_("How the export writes numbers and dates, a CLDR locale such as "
                        "es_CO (default: the mapping's 'locale:'; none: ISO dates, plain "
                        "numbers)."))]
EncodingOpt = Annotated[str | None, typer.Option(
    "--encoding", help=N_("The export's encoding (default: UTF-8, else Windows-1252)."))]
DelimiterOpt = Annotated[str | None, typer.Option(
    "--delimiter", help=N_("The export's column separator (default: detected among , ; "
                           "tab |)."))]


def _read_options(locale: str | None, encoding: str | None, delimiter: str | None,
                  loaded: Loaded) -> ReadOptions:
    """What the command line says about reading the export, checked before any row, with
    the currency rates `load` read from the mappings folder."""
    from connector.simulate import ReadOptions

    if locale is not None:
        from connector.locales import known_locale

        unknown = known_locale(locale)
        if unknown:
            raise typer.BadParameter(say(unknown), param_hint="--locale")
    return ReadOptions(locale, encoding, delimiter, loaded.rates)


def _shown_locale(option: str | None, mapping: str | None) -> str | None:
    """How money and dates are shown to a person: the export's locale (--locale, the
    mapping's), else the person's own (LANG=es_CO.UTF-8), else plainly."""
    from connector.i18n import person_locale

    return option or mapping or person_locale(os.environ)


def _notes(notes: Sequence[str]) -> None:
    console = _err()
    for note in notes:
        console.print(escape(say(note)))


def _today(value: str | None) -> dt.date:
    if value is None:
        return dt.date.today()
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(_("'{value}' is not a date (YYYY-MM-DD)").format(value=value),
                                 param_hint="--today") from None


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on a terminal; none when the output is piped or in CI."""
    if not sys.stderr.isatty() or os.environ.get("CI"):
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), console=_err(), transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@app.command(help=N_(
    "Dry run over an export: which workflow each record gets, what would be written, which "
    "actions would fire. Writes nothing to the CRM, sends nothing."))
def simulate(
    input: ExportArg,
    mapping: MappingOpt = None,
    out: Annotated[Path | None, typer.Option(
        "--out",
        help=N_("Write the rows with what would be written (.csv, .tsv, .txt or .json)."))
    ] = None,
    report: Annotated[Path | None, typer.Option(
        "--report", help=N_("Write a self-contained HTML report."))] = None,
    rules: RulesOpt = Path("rules"), mappings: MappingsOpt = Path("mappings"),
    today: TodayOpt = None, locale: LocaleOpt = None, encoding: EncodingOpt = None,
    delimiter: DelimiterOpt = None,
    explain: Annotated[bool, typer.Option(
        "--explain", help=N_("--out also gets _why (the factor values that chose the "
                             "workflow) and _before_<column> (each written column as "
                             "read)."))] = False,
) -> None:
    from connector.simulate import simulate as run_simulation

    when = _today(today)
    loaded = _load_or_exit(rules, mappings, mapping)
    options = _read_options(locale, encoding, delimiter, loaded)
    assert loaded.rules is not None
    from connector.export import DELIMITED

    for path, kinds in ((out, (*DELIMITED, ".json")), (report, (".html", ".htm"))):
        if path is not None and path.suffix.casefold() not in kinds:
            raise typer.BadParameter(_("{path}: use {kinds}").format(
                path=path, kinds=_(" or ").join(kinds)))
    from connector.actions import ActionRunner

    runner = ActionRunner(loaded.rules, rules, mappings)
    with _progress(_("simulating {file}").format(file=input.name)) as progress:
        summary = run_simulation(loaded.rules, input, out, when, progress, runner.render,
                                 options, explain)
    _notes(summary.notes)
    console = _out()
    console.print(_("{n} records from {file} (rule set {version}, today {today})").format(
        n=summary.read, file=escape(str(input)), version=loaded.rules.version,
        today=when.isoformat()))
    console.print("  " + ", ".join(f"{k} {v}" for k, v in sorted(summary.per_workflow.items())))
    unchanged = summary.read - summary.changed - summary.failed
    console.print(_("would change {changed}, unchanged {unchanged}, failed {failed}").format(
        changed=summary.changed, unchanged=unchanged, failed=summary.failed))
    if summary.actions:
        console.print(_("actions that would fire:") + " " + ", ".join(
            f"{k} {v}" for k, v in sorted(summary.actions.items())))
        console.print("  " + _("(on a change; a first sync is a backfill and fires none of "
                               "them)"))
    if summary.failures:
        console.print("[red]" + _("failed") + "[/red]:")
        for f in summary.failures:
            console.print("  " + _("line {line} ({id}): {reason}").format(
                line=f.line, id=escape(f.record_id or "?"), reason=escape(say(f.reason))))
        if summary.failed > len(summary.failures):
            console.print("  " + _("... and {n} more").format(
                n=summary.failed - len(summary.failures)))
    if out is not None:
        console.print(_("wrote {file}").format(file=escape(str(out))))
    if report is not None:
        from connector.report import render

        report.write_text(render(loaded.rules, summary, input, when,
                                 _shown_locale(options.locale, loaded.rules.mapping.locale)),
                          encoding="utf-8")
        console.print(_("report: {file}").format(file=escape(str(report))))
    raise typer.Exit(0 if summary.ok else 1)


class ForecastBy(str, Enum):
    month = "month"
    owner = "owner"
    stage = "stage"


@app.command(help=N_(
    "The weighted pipeline per expected close month (or owner, or stage): open and won "
    "deals, overdue ones in one row, in the corporate currency; what was left out, counted."))
def forecast(
    input: ExportArg,
    by: Annotated[ForecastBy, typer.Option(
        "--by", help=N_("One row per expected close month, per owner or per stage."))
    ] = ForecastBy.month,
    format: Annotated[TableFormat, typer.Option(
        "--format", help=N_("text, CSV or JSON."))] = TableFormat.text,
    chart: Annotated[Path | None, typer.Option(
        "--chart", help=N_("Write an SVG chart of the pipeline, won and overdue per "
                           "month."))] = None,
    as_is: Annotated[bool, typer.Option(
        "--as-is", help=N_("Use the export's own probabilities, not the rules'."))] = False,
    mapping: MappingOpt = None,
    rules: RulesOpt = Path("rules"), mappings: MappingsOpt = Path("mappings"),
    today: TodayOpt = None, locale: LocaleOpt = None, encoding: EncodingOpt = None,
    delimiter: DelimiterOpt = None,
) -> None:
    from connector.core.forecast import money
    from connector.simulate import forecast as run_forecast

    when = _today(today)
    if chart is not None and chart.suffix.casefold() != ".svg":
        raise typer.BadParameter(_("{chart}: the chart is written as SVG; name it .svg")
                                 .format(chart=chart),
                                 param_hint="--chart")
    loaded = _load_or_exit(rules, mappings, mapping)
    options = _read_options(locale, encoding, delimiter, loaded)
    assert loaded.rules is not None
    with _progress(_("forecasting {file}").format(file=input.name)) as progress:
        result, notes = run_forecast(loaded.rules, input, when, by.value, as_is, progress,
                                     options)
    _notes(notes)
    rows = result.rows()
    total = result.total()
    left = result.left_out
    if format is TableFormat.json:
        print(json.dumps([b.as_json(by.value) for b in rows] + [result.left_out_json()],
                         indent=2))
    elif format is TableFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([by.value, "opportunities", "amount", "weighted_amount"])
        for b in rows:
            writer.writerow([b.key, b.opportunities, money(b.amount), money(b.weighted_amount)])
        for why, n in left.items():  # counted, not summed: no amounts
            writer.writerow([f"left out: {why}", n, "", ""])
        writer.writerow([total.key, total.opportunities, money(total.amount),
                         money(total.weighted_amount)])
    else:
        from connector.formatting import format_money, row_label

        shown = _shown_locale(options.locale, loaded.rules.mapping.locale)

        def cash(value: Any) -> str:  # as a person reads money in the mapping's locale
            return format_money(value, shown, result.currency if shown else None)

        basis = _("the export's own probabilities") if as_is else _("the rules' probabilities")
        currency = _(", in {currency}").format(currency=result.currency) \
            if result.currency else ""
        group = {"month": _("month"), "owner": _("owner"), "stage": _("stage")}[by.value]
        t = Table(group, _("opportunities"), _("amount"), _("weighted amount"),
                  title=_("Forecast by {group}, on {basis}").format(group=group, basis=basis)
                  + currency)
        for b in rows:
            t.add_row(escape(row_label(b.key)), str(b.opportunities), cash(b.amount),
                      cash(b.weighted_amount))
        t.add_section()
        t.add_row(_("total"), str(total.opportunities), cash(total.amount),
                  cash(total.weighted_amount), style="bold")
        if left:
            t.add_row(_("left out"), str(sum(left.values())), "", "")
            for why, n in left.items():
                t.add_row(f"  {escape(say(why))}", str(n), "", "")
        _out().print(t)
    if left and format is not TableFormat.text:
        _err().print(_("left out:") + " " + ", ".join(f"{n} {escape(say(why))}"
                                                      for why, n in left.items()))
    if "failed" in left:
        _err().print(_("(run 'simulate' to see why records failed)"))
    if chart is not None:
        from connector.chart import forecast_svg

        if by is not ForecastBy.month:
            _err().print(_("the chart shows months; --by is ignored for it"))
            result, _notes_again = run_forecast(loaded.rules, input, when, "month", as_is,
                                                options=options)
        shown = _shown_locale(options.locale, loaded.rules.mapping.locale)
        chart.write_text(forecast_svg(result.rows(), locale=shown), encoding="utf-8")
        _err().print(_("chart: {file}").format(file=escape(str(chart))))
    raise typer.Exit(1 if "failed" in left else 0)


class Engine(str, Enum):
    duckdb = "duckdb"
    python = "python"


InputOpt = Annotated[Path | None, typer.Option(
    "--input", help=N_("A snapshot history CSV (history export); default: the state "
                       "store's."),
    exists=True, dir_okay=False)]
EngineOpt = Annotated[Engine, typer.Option(
    "--engine", help=N_("duckdb (any size) or python (the reference, for small histories)."))]


def _date(value: str | None, option: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(_("'{value}' is not a date (YYYY-MM-DD)").format(value=value),
                                 param_hint=option) from None


def _suffix(path: Path | None, kinds: tuple[str, ...], option: str) -> None:
    if path is not None and path.suffix.casefold() not in kinds:
        raise typer.BadParameter(_("{file}: name it {kinds}").format(
            file=path, kinds=_(" or ").join(kinds)), param_hint=option)


@app.command(help=N_(
    "Do the workflows' probabilities match what was won? Per workflow, with its interval."))
def calibrate(
    input: InputOpt = None,
    horizon: Annotated[int | None, typer.Option(
        "--horizon", min=0, help=N_("Judge each deal as it was DAYS before it closed."))] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help=N_("Only deals closed on or after DATE."))] = None,
    format: Annotated[CheckFormat, typer.Option(
        "--format", help=N_("text, or JSON for another program."))] = CheckFormat.text,
    report: Annotated[Path | None, typer.Option(
        "--report", help=N_("Write an HTML report with the reliability diagram."))] = None,
    propose: Annotated[Path | None, typer.Option(
        "--propose", help=N_("Write the rule file with each probability set to what was "
                             "won."))
    ] = None,
    backtest: Annotated[str | None, typer.Option(
        "--backtest", help=N_("Fit on deals closed before DATE, score on those closed "
                              "after."))
    ] = None,
    engine: EngineOpt = Engine.duckdb,
    mapping: MappingOpt = None,
    rules: RulesOpt = Path("rules"), mappings: MappingsOpt = Path("mappings"),
) -> None:
    from connector.history.commands import calibrate_command

    _suffix(report, (".html", ".htm"), "--report")
    _suffix(propose, (".yaml", ".yml"), "--propose")
    loaded = _load_or_exit(rules, mappings, mapping)
    assert loaded.rules is not None
    code = calibrate_command(loaded.rules, rules, mappings, input, engine.value, horizon,
                             _date(since, "--since"), format.value, report, propose,
                             _date(backtest, "--backtest"), _out(), _err())
    raise typer.Exit(code)


@app.command(help=N_(
    "What moved the open pipeline of each close month between two dates."))
def movement(
    from_: Annotated[str, typer.Option("--from", help=N_("The first date (YYYY-MM-DD)."))],
    to: Annotated[str, typer.Option("--to", help=N_("The second date (YYYY-MM-DD)."))],
    input: InputOpt = None,
    format: Annotated[TableFormat, typer.Option(
        "--format", help=N_("text, CSV or JSON."))] = TableFormat.text,
    details: Annotated[bool, typer.Option(
        "--details", help=N_("List the deals behind each bucket."))] = False,
    chart: Annotated[Path | None, typer.Option(
        "--chart", help=N_("Write an SVG waterfall."))] = None,
    report: Annotated[Path | None, typer.Option(
        "--report", help=N_("Write an HTML page."))] = None,
    engine: EngineOpt = Engine.duckdb,
    mapping: MappingOpt = None,
    rules: RulesOpt = Path("rules"), mappings: MappingsOpt = Path("mappings"),
) -> None:
    from connector.history.commands import movement_command

    _suffix(chart, (".svg",), "--chart")
    _suffix(report, (".html", ".htm"), "--report")
    first, second = _date(from_, "--from"), _date(to, "--to")
    assert first is not None and second is not None
    loaded = _load_or_exit(rules, mappings, mapping)
    assert loaded.rules is not None
    raise typer.Exit(movement_command(loaded.rules, input, engine.value, first, second,
                                      format.value, details, chart, report, _out(), _err()))


@app.command(help=N_(
    "How close was the forecast made N days before each past month, to what was won?"))
def accuracy(
    lags: Annotated[str, typer.Option(
        "--lags", help=N_("Days before each month began, comma-separated."))] = "30,60,90",
    input: InputOpt = None,
    format: Annotated[TableFormat, typer.Option(
        "--format", help=N_("text, CSV or JSON."))] = TableFormat.text,
    chart: Annotated[Path | None, typer.Option(
        "--chart", help=N_("Write an SVG chart (the first lag)."))] = None,
    report: Annotated[Path | None, typer.Option(
        "--report", help=N_("Write an HTML page."))] = None,
    engine: EngineOpt = Engine.duckdb,
    mapping: MappingOpt = None,
    rules: RulesOpt = Path("rules"), mappings: MappingsOpt = Path("mappings"),
) -> None:
    from connector.history.commands import accuracy_command

    try:
        days = [int(x) for x in lags.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(_("'{lags}': give whole days, like 30,60,90").format(
            lags=lags), param_hint="--lags") from None
    if not days or any(d < 0 for d in days):
        raise typer.BadParameter(_("'{lags}': give whole days, like 30,60,90").format(
            lags=lags), param_hint="--lags")
    _suffix(chart, (".svg",), "--chart")
    _suffix(report, (".html", ".htm"), "--report")
    loaded = _load_or_exit(rules, mappings, mapping)
    assert loaded.rules is not None
    raise typer.Exit(accuracy_command(loaded.rules, input, engine.value, days, format.value,
                                      chart, report, _out(), _err()))


def _print_drain(console: Console, drained: Any) -> None:
    flight = ""
    if drained.in_flight:
        flight = _(", in flight {n} (held by another run; retried when its lease ends, by "
                   "{until})").format(n=drained.in_flight, until=drained.in_flight_until)
    console.print(_("outbox: done {done}, retrying {retrying}, parked {parked}").format(
        done=drained.done, retrying=drained.retrying, parked=drained.parked) + flight)


def _app(rules: Path, mappings: Path) -> Any:
    from connector.app import build_app

    return build_app(rules, mappings)


def _since(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(_("'{value}' is not an ISO date or date-time").format(
                                     value=value),
                                 param_hint="--since") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@app.command(help=N_(
    "One poll cycle against the configured CRM, then the outbox is drained. The first sync "
    "is a backfill: what is already true is recorded, and fires nothing."))
def sync(
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help=N_("Compute and report; write nothing, keep the cursor."))] = False,
    since: Annotated[str | None, typer.Option(
        "--since", help=N_("Read changes since this ISO date-time instead of the "
                           "cursor."))] = None,
    fire_backfill: Annotated[bool, typer.Option(
        "--fire-backfill", help=N_("On the first sync, fire the actions of every condition "
                                   "already true (a deliberate catch-up) instead of "
                                   "recording them as the past."))] = False,
    rules: RulesOpt = Path("rules"), mappings: MappingsOpt = Path("mappings"),
) -> None:
    application = _app(rules, mappings)
    pipeline = application.pipeline
    report = pipeline.poll(since=_since(since), dry_run=dry_run, fire_backfill=fire_backfill)
    console = _out()
    console.print(_("read {read}, already handled {skipped}, written {written}, unchanged "
                    "{unchanged}, parked {parked}, failed {failed}, actions queued {actions}")
                  .format(read=report.read, skipped=report.skipped, written=report.written,
                          unchanged=report.unchanged, parked=report.parked,
                          failed=report.failed, actions=report.actions)
                  + (" " + _("(dry run: nothing written)") if dry_run else ""))
    if report.backfill and not fire_backfill:
        console.print(_("first sync, a backfill: {n} actions whose conditions were already true "
                        "are recorded as the past and not fired (--fire-backfill fires them)")
                      .format(n=report.backfilled))
    console.print(_("API calls: {calls} (+ {logins} login)").format(
        calls=application.crm.calls, logins=application.crm.auth_calls))
    for reason in report.reasons:
        console.print(f"  {escape(say(reason))}")
    drained = None
    if not dry_run and report.stopped is None:
        drained = pipeline.drain()
        _print_drain(console, drained)
    if report.stopped:
        _err().print("[red]" + _("stopped") + "[/red]: " + _(
            "{reason} (cursor kept at {cursor})").format(reason=escape(say(report.stopped)),
                                                         cursor=report.cursor))
        raise typer.Exit(1)
    bad = report.failed or report.parked or (drained is not None and drained.parked)
    raise typer.Exit(1 if bad else 0)


@app.command(help=N_(
    "Re-evaluate every open opportunity for the conditions that age (run it daily), then "
    "drain the outbox."))
def sweep(rules: RulesOpt = Path("rules"), mappings: MappingsOpt = Path("mappings")) -> None:
    application = _app(rules, mappings)
    report = application.pipeline.sweep()
    console = _out()
    console.print(_("open records {read}, written {written}, unchanged {unchanged}, failed "
                    "{failed}, actions queued {actions}").format(
        read=report.read, written=report.written, unchanged=report.unchanged,
        failed=report.failed, actions=report.actions))
    console.print(_("API calls: {calls} (+ {logins} login)").format(
        calls=application.crm.calls, logins=application.crm.auth_calls))
    if report.stopped:
        _err().print("[red]" + _("stopped") + f"[/red]: {escape(say(report.stopped))}")
        raise typer.Exit(1)
    drained = application.pipeline.drain()
    _print_drain(console, drained)
    raise typer.Exit(1 if report.failed or report.parked or drained.parked else 0)


history_app = typer.Typer(no_args_is_help=True, help=N_(
    "Snapshots of the opportunities as they were: fill them from the CRM's history, export "
    "them as CSV."))
app.add_typer(history_app, name="history")


@history_app.command("pull", help=N_(
    "Read the CRM's history of the mapped fields (Salesforce OpportunityHistory and "
    "OpportunityFieldHistory, HubSpot propertiesWithHistory) into the snapshots."))
def history_pull(
    since: Annotated[str | None, typer.Option(
        "--since", help=N_("Only history from this ISO date or date-time on."))] = None,
    rules: RulesOpt = Path("rules"), mappings: MappingsOpt = Path("mappings"),
) -> None:
    from connector.history.pull import pull

    application = _app(rules, mappings)
    rule_set = application.loaded.rules
    report = pull(application.crm, rule_set, application.state, application.now(),
                  _since(since))
    console = _out()
    console.print(_("opportunities {n}, history values {changes}, snapshots added "
                    "{snapshots}; API calls {calls}").format(
        n=f"{report.opportunities:,}", changes=f"{report.changes:,}",
        snapshots=f"{report.snapshots:,}", calls=f"{report.api_calls:,}"))
    if report.orphans:
        console.print(_("history values of opportunities not read (deleted?): {n}, left out")
                      .format(n=f"{report.orphans:,}"))
    if report.approximated:
        console.print(_("approximated: fields with no history keep the value read now in "
                        "every past snapshot:"))
        for name, count in sorted(report.approximated.items()):
            used = (" [bold]" + _("(read by the rules)") + "[/bold]"
                    if name in report.read_by_rules else "")
            console.print("  " + _("{field}: {n} of {total} opportunities").format(
                field=escape(name), n=f"{count:,}", total=f"{report.opportunities:,}") + used)


@history_app.command("export", help=N_(
    "Write the snapshots as CSV: the mapping's CRM fields, then as_of (ISO date-time)."))
def history_export(
    file: Annotated[Path, typer.Argument(help=N_("The CSV to write."))],
    rules: RulesOpt = Path("rules"), mappings: MappingsOpt = Path("mappings"),
) -> None:
    from connector.history.snapshots import write_snapshot_csv

    application = _app(rules, mappings)
    mapping = application.loaded.rules.mapping
    count = write_snapshot_csv(application.state.read_snapshots(), file, mapping)
    _out().print(_("wrote {n} snapshots to {file}").format(n=f"{count:,}",
                                                           file=escape(str(file))))


rates_app = typer.Typer(no_args_is_help=True, help=N_(
    "Currency rates for the forecast, in mappings/currencies.yaml."))
app.add_typer(rates_app, name="rates")


@rates_app.command("pull", help=N_(
    "Read the org's rates (CurrencyType; with --dated, DatedConversionRate) into "
    "mappings/currencies.yaml, for the forecast to convert amounts as Salesforce does."))
def rates_pull(
    dated: Annotated[bool, typer.Option(
        "--dated", help=N_("Also the dated rates (advanced currency management)."))] = False,
    rules: RulesOpt = Path("rules"), mappings: MappingsOpt = Path("mappings"),
) -> None:
    from connector.currency import FILE, rates_from_salesforce, rates_yaml

    application = _app(rules, mappings)
    if application.loaded.rules.mapping.crm != "salesforce":
        raise ConfigurationError(_("currency rates are read from Salesforce; for another CRM, "
                                   "write {file} by hand").format(file=mappings / FILE))
    crm = application.crm

    def query(soql: str) -> list[dict[str, Any]]:
        return [r for page in crm.query_pages(Text("the currency rates"), soql) for r in page]

    rates = rates_from_salesforce(query, dated)
    target = mappings / FILE
    partial = target.with_name(target.name + ".part")  # a crash never leaves half a file
    partial.write_text(rates_yaml(rates), encoding="utf-8")
    partial.replace(target)
    _out().print(_("{file}: corporate {corporate}, {n} rates, {dated} with dated rates; API "
                   "calls {calls}").format(file=escape(str(target)), corporate=rates.corporate,
                                           n=len(rates.rates), dated=len(rates.dated),
                                           calls=crm.calls))


@app.command(help=N_(
    "The webhook endpoints on a local HTTP server (the same code as the Lambda handlers)."))
def serve(
    host: Annotated[str, typer.Option(
        "--host", help=N_("The address to listen on (127.0.0.1: this machine only)."))
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help=N_("The port to listen on."))] = 8080,
    rules: RulesOpt = Path("rules"), mappings: MappingsOpt = Path("mappings"),
) -> None:
    import logging

    from connector.handlers.approvals import approval_route
    from connector.handlers.webhook import route
    from connector.web import Worker, make_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    application = _app(rules, mappings)
    # no credentials: exit 2 now, as `sync` does, not a traceback per drain
    application.crm  # noqa: B018 - building the adapter is the check
    worker = Worker(lambda: application.pipeline.drain())

    def store(key: str, ids: list[str]) -> bool:
        stored = application.pipeline_store(key, ids)
        worker.wake.set()
        return stored

    loaded_rules = application.loaded.rules
    assert loaded_rules is not None  # _app refuses rules that do not pass check
    approver_language = language_of(loaded_rules.mapping.locale)  # unless the browser asks

    def dispatch(event: dict[str, Any]) -> dict[str, Any]:
        if str(event.get("rawPath", "")).startswith("/approvals/"):
            secret = application.settings.approval_secret
            return approval_route(event, secret=secret.get_secret_value() if secret else "",
                                  record_verdict=record_verdict, now=application.now,
                                  language=approver_language)
        return route(event, settings=application.settings, store=store,
                     version=application.version)

    def record_verdict(key: str, verdict: str) -> str:
        outcome = application.pipeline.record_verdict(key, verdict)
        worker.wake.set()
        return outcome

    server = make_server(host, port, dispatch)
    worker.start()
    _err().print(_("serving on {url} (rule set {version}); Ctrl-C to stop").format(
        url=f"http://{host}:{server.server_port}", version=application.version))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        worker.stop()
        server.server_close()


@app.command(help=N_(
    "The effect of a rule change on an export: records that change workflow, the forecast "
    "per month before and after, actions that would newly fire or stop."))
def diff(
    input: ExportArg,
    before: Annotated[str, typer.Option(
        "--before", help=N_("The rules before the change: a folder, or a git ref (its "
                            "rules/)."))],
    format: Annotated[CheckFormat, typer.Option(
        "--format", help=N_("text, or JSON for another program."))] = CheckFormat.text,
    report: Annotated[Path | None, typer.Option(
        "--report", help=N_("Write a self-contained HTML report."))] = None,
    mapping: MappingOpt = None,
    rules: RulesOpt = Path("rules"), mappings: MappingsOpt = Path("mappings"),
    today: TodayOpt = None, locale: LocaleOpt = None, encoding: EncodingOpt = None,
    delimiter: DelimiterOpt = None,
) -> None:
    from connector.formatting import format_money, row_label
    from connector.rulediff import compare, rules_at

    when = _today(today)
    _suffix(report, (".html", ".htm"), "--report")
    after = _load_or_exit(rules, mappings, mapping)
    options = _read_options(locale, encoding, delimiter, after)
    with rules_at(before, rules) as before_folder:
        old = _load_or_exit(before_folder, mappings, mapping)
    assert old.rules is not None and after.rules is not None
    result = compare(old.rules, after.rules, input, when, options)
    shown = _shown_locale(options.locale, after.rules.mapping.locale)
    if format is CheckFormat.json:
        print(json.dumps(result.as_json(), indent=2))
    else:
        console = _out()
        console.print(_("{n} records from {file}: {changed} would change (rules {before} -> "
                        "{after})").format(n=result.read, file=escape(str(input)),
                                           changed=result.changed,
                                           before=result.before_version,
                                           after=result.after_version))
        moves = Table(_("before"), _("after"), _("records"), title=_("Workflows that change"))
        for (old_rule, new_rule), n in sorted(result.moves.items()):
            if old_rule != new_rule:
                moves.add_row(escape(old_rule), escape(new_rule), str(n))
        if moves.row_count:
            console.print(moves)
        months = Table(_("month"), _("before"), _("after"), _("change"),
                       title=_("Weighted forecast"))

        def cash(value: Any) -> str:  # as `forecast` shows money
            return format_money(value, shown)

        for month, old_w, new_w in result.months():
            months.add_row(row_label(month), cash(old_w), cash(new_w), cash(new_w - old_w))
        if months.row_count:
            total_before, total_after = result.totals()
            months.add_section()
            months.add_row(_("total"), cash(total_before), cash(total_after),
                           cash(total_after - total_before), style="bold")
        console.print(months)
        for label, counts in ((_("actions newly due:"), result.newly),
                              (_("actions no longer due:"), result.stopped)):
            if counts:
                console.print(label + " " + ", ".join(
                    f"{escape(k)} {v}" for k, v in sorted(counts.items())))
    if report is not None:
        from connector.diff_report import render_diff

        report.write_text(render_diff(result, input, before, when, shown), encoding="utf-8")
        _err().print(_("report: {file}").format(file=escape(str(report))))
    raise typer.Exit(0)


class ListFormat(str, Enum):
    text = "text"
    json = "json"


class OutboxCommand(str, Enum):
    list = "list"
    retry = "retry"
    drop = "drop"


@app.command(help=N_(
    "The actions, ERP syncs and records that wait, and what to do with them."))
def outbox(
    command: Annotated[OutboxCommand, typer.Argument(help=N_("list, retry or drop"))],
    keys: Annotated[list[str] | None, typer.Argument(
        help=N_("Item keys (retry without keys: every parked item)."))] = None,
    all_items: Annotated[bool, typer.Option("--all", help=N_("list: done items too."))] = False,
    format: Annotated[ListFormat, typer.Option(
        "--format", help=N_("list: a table, or every field of every item as JSON."))
    ] = ListFormat.text,
    rules: RulesOpt = Path("rules"), mappings: MappingsOpt = Path("mappings"),
) -> None:
    from connector.settings import load_settings
    from connector.state import open_state
    from connector.state.holder import host_of

    state = open_state(load_settings().state_url)
    now = dt.datetime.now(dt.UTC)
    console = _out()
    if command is OutboxCommand.list:
        items = [i for i in state.items() if all_items or i.status != "done"]
        flying = {i.key for i in state.in_flight(now)}
        # the words for the statuses stored (JSON keeps the stored ones)
        statuses = {"pending": _("pending"), "waiting": _("waiting"), "parked": _("parked"),
                    "done": _("done")}

        def shown(i: Any) -> tuple[str, dt.datetime | None, str]:
            """Status, when it is retried, and why: an item in flight is retried when its
            lease ends, if the process that runs it does not finish it first."""
            if i.key in flying:
                return (_("in flight"), i.lease_until,
                        _("run by {host}").format(host=host_of(i.holder)) if i.holder
                        else _("run by another worker"))
            return statuses.get(i.status, i.status), \
                i.next_at if i.status == "pending" else None, say(i.reason)

        if format is ListFormat.json:
            print(json.dumps([dataclasses.asdict(i) for i in items], indent=2, default=str))
            raise typer.Exit(0)
        rows = [(i, *shown(i)) for i in items]
        _print_table(console, _("Outbox"), [_("key"), _("record"), _("kind"), _("status"),
                                            _("tries"), _("next")],
                     [[i.key, i.record_id, i.kind, status, str(i.attempts),
                       when.isoformat(timespec="seconds") if when else ""]
                      for i, status, when, _reason in rows],
                     reasons=[reason for *_shown, reason in rows])
        console.print(ngettext("{n} item", "{n} items", len(items)).format(n=len(items))
                      + (_(", {n} in flight").format(n=len(flying)) if flying else ""))
        raise typer.Exit(0)
    if command is OutboxCommand.drop:
        if not keys:
            raise typer.BadParameter(_("name the keys to drop (see 'outbox list')"))
        console.print(_("dropped {n}").format(n=state.drop(keys)))
        raise typer.Exit(0)
    released = state.release(keys or None, now)
    console.print(ngettext("{n} item back in the queue", "{n} items back in the queue",
                           released).format(n=released))
    application = _app(rules, mappings)
    drained = application.pipeline.drain()
    _print_drain(console, drained)
    raise typer.Exit(1 if drained.parked else 0)


def format_number(value: object) -> str:
    from decimal import Decimal

    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return "" if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    """Run the command line in-process and return its exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    lang, args = _take_lang(args)
    set_language(choose_language(lang, os.environ))
    try:
        return run_in_language(app, args, "crm-automation")
    except SystemExit as exc:  # typer's own exit on a broken pipe (output piped to `head`)
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    except ConfigurationError as exc:
        _err().print("[red]" + _("configuration error") + f"[/red]: {escape(say_error(exc))}")
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the admin gets one line, never a traceback
        if os.environ.get("CRM_AUTOMATION_DEBUG"):
            raise
        _err().print("[red]" + _("unexpected error") + f"[/red]: {escape(type(exc).__name__)}: "
                     f"{escape(say_error(exc))} " + _("(set CRM_AUTOMATION_DEBUG=1 for details)"))
        return 2


def _take_lang(args: list[str]) -> tuple[str | None, list[str]]:
    """`--lang es` or `--lang=es`, wherever it stands (before or after the command), and the
    arguments without it: the language is set before typer runs, so that its own usage errors
    are reported in it too."""
    rest: list[str] = []
    lang = None
    it = iter(args)
    for arg in it:
        if arg == "--lang":
            lang = next(it, None)
        elif arg.startswith("--lang="):
            lang = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return lang, rest


@app.callback()
def _options(lang: Annotated[str | None, typer.Option(
        "--lang", help=N_("The language of messages: es or en (default: "
                          "CRM_AUTOMATION_LANG, then LANG)."))] = None) -> None:
    del lang  # taken by main() before typer runs (see _take_lang): listed here for --help


def run() -> None:
    """The console script's entry point."""
    sys.exit(main())
