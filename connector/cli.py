"""The admin's command line: `crm-automation check | table | ...`.

Exit codes: 0 success, 1 the work found errors (invalid rules, records that failed),
2 usage or configuration error. No traceback reaches the admin: unexpected errors are reported
in one line (set CRM_AUTOMATION_DEBUG=1 to see the traceback).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from connector.core.findings import Finding
from connector.errors import ConfigurationError
from connector.files import Loaded, load

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Homologated win probabilities for CRM opportunities: check the rules, "
                       "try them on an export, forecast, and sync.")

RulesOpt = Annotated[Path, typer.Option("--rules", help="The rules folder.")]
MappingsOpt = Annotated[Path, typer.Option("--mappings", help="The mappings folder.")]


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


def _print_findings(findings: list[Finding], console: Console) -> None:
    for f in findings:
        colour = "red" if f.severity == "error" else "yellow"
        where = ""
        if f.file:
            where = f"{f.file}:{f.line}: " if f.line else f"{f.file}: "
        console.print(f"{escape(where)}[{colour}]{f.severity}[/{colour}]: {escape(f.message)}")
        if f.example:
            console.print("    example: " + escape(", ".join(f"{k}={v}"
                                                          for k, v in f.example.items())))


def _load_or_exit(rules: Path, mappings: Path) -> Loaded:
    loaded = load(rules, mappings)
    if not loaded.ok:
        _print_findings([f for f in loaded.findings if f.severity == "error"], _err())
        raise typer.Exit(1)
    return loaded


@app.command()
def check(rules: RulesOpt = Path("rules"), mappings: MappingsOpt = Path("mappings"),
          format: Annotated[CheckFormat, typer.Option("--format")] = CheckFormat.text) -> None:
    """Validate every file, then prove the workflows exclusive and complete."""
    from connector.core.proof import prove

    loaded = load(rules, mappings)
    findings = list(loaded.findings)
    if loaded.rules is not None and loaded.ok:
        findings += prove(loaded.rules)
    ok = not any(f.severity == "error" for f in findings)
    if format is CheckFormat.json:
        print(json.dumps({"ok": ok, "findings": [f.as_json() for f in findings]}, indent=2))
        raise typer.Exit(0 if ok else 1)
    console = _out()
    _print_findings(findings, console)
    if ok and loaded.rules is not None:
        rs = loaded.rules
        combos = 1
        for n in rs.sizes:
            combos *= n
        warnings = sum(f.severity == "warning" for f in findings)
        console.print(
            f"[green]ok[/green]: {len(rs.factors)} factors ({combos:,} combinations), "
            f"{len(rs.workflows)} workflows: exactly one matches every combination"
            + (f"; {warnings} warning{'s' if warnings != 1 else ''}" if warnings else "")
            + f" (rule set {rs.version})")
        timed = rs.time_dependent_triggers
        if timed:
            console.print("time-dependent triggers (they need the daily sweep): "
                          + ", ".join(t.name for t in timed))
    else:
        errors = sum(f.severity == "error" for f in findings)
        console.print(f"[red]{errors} error{'s' if errors != 1 else ''}[/red]")
    raise typer.Exit(0 if ok else 1)


@app.command()
def table(rules: RulesOpt = Path("rules"), mappings: MappingsOpt = Path("mappings"),
          format: Annotated[TableFormat, typer.Option("--format")] = TableFormat.text) -> None:
    """The effective decision table, one row per combination of factor values."""
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
            return "(gap)"
        return " + ".join(w.name for w in ws) + (" (overlap)" if len(ws) > 1 else "")

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
        t = Table(*names, "workflow", "probability", title=f"Decision table ({rs.version})")
        for combo, ws in dt.rows():
            failed |= len(ws) != 1
            t.add_row(*map(escape, combo), workflow(ws), probability(ws))
        console = _out()
        console.print(t)
        if rs.closed:
            console.print(f"closed deals, outside the table: {rs.closed.field} in "
                          f"won -> closed-won (100 %), lost -> closed-lost (0 %)")
    raise typer.Exit(1 if failed else 0)


def format_number(value: object) -> str:
    from decimal import Decimal

    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return "" if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    """Run the command line in-process and return its exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        app(args=args, prog_name="crm-automation")
    except SystemExit as exc:  # typer ends every run this way, usage errors with 2
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    except ConfigurationError as exc:
        _err().print(f"[red]configuration error[/red]: {escape(str(exc))}")
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the admin gets one line, never a traceback
        if os.environ.get("CRM_AUTOMATION_DEBUG"):
            raise
        _err().print(f"[red]unexpected error[/red]: {escape(type(exc).__name__)}: "
                     f"{escape(str(exc))} (set CRM_AUTOMATION_DEBUG=1 for details)")
        return 2
    return 0


def run() -> None:
    """The console script's entry point."""
    sys.exit(main())
