"""The history commands' work, for `connector.cli`: open the history on the chosen engine, run
one analysis, print it (text, CSV or JSON) and write its picture or page."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from connector.core.ruleset import RuleSet
from connector.errors import ConfigurationError, Text
from connector.files import display, load
from connector.formatting import listed
from connector.history.calibrate import (
    Calibration,
    Counts,
    base_rate,
    calibrate,
    counts,
    current_forecast,
    deals_in,
    number,
    rate,
    rules_score,
)
from connector.history.engine import History, opened
from connector.history.inputs import history_file
from connector.history.source import Failures, Plan, Reference, plan_for, reference
from connector.i18n import gettext as _
from connector.i18n import say


@contextmanager
def history(rules: RuleSet, given: Path | None, engine: str) -> Iterator[History | Reference]:
    plan = plan_for(rules)
    with history_file(rules, given) as path:
        if engine == "python":
            yield reference(plan, path)
        else:
            with opened(plan, path) as h:
                yield h


def _failures(failures: Failures, console: Console) -> None:
    if failures.rows or failures.deals:
        console.print(_("left out: {rows} rows that could not be read, {deals} deals whose "
                        "rows cannot be ordered").format(rows=failures.rows, deals=failures.deals)
                      + "".join(f"\n  {escape(say(r))}" for r in failures.reasons))


def _split(c: Counts, fit: bool) -> Counts:
    return Counts({k: n for k, n in c.items() if k[3] is fit})


def calibrate_command(rules: RuleSet, rules_dir: Path, mappings_dir: Path, given: Path | None,
                      engine: str,
                      horizon: int | None, since: dt.date | None, fmt: str,
                      report: Path | None, propose_to: Path | None, backtest: dt.date | None,
                      out: Console, err: Console) -> int:
    from connector.history.propose import diff, propose, rewrite, rules_file

    with history(rules, given, engine) as h:
        plan = h.plan
        every = counts(h, horizon, since, backtest)
        failures = h.failures
    result = calibrate(plan, every, failures)
    doc: dict[str, Any] = result.as_json()
    fit = _split(every, True) if backtest else every
    proposal = None
    if propose_to is not None or backtest is not None:
        if not fit:
            raise ConfigurationError(_("no closed deal to propose from before {date}").format(
                date=backtest) if backtest else _("no closed deal to propose from"))
        proposal = propose(plan, fit)
    if backtest is not None:
        assert proposal is not None
        test = _split(every, False)
        base = base_rate(fit)
        doc["backtest"] = _backtest(plan, fit, test, base, proposal.forecast(plan), backtest)
    if fmt == "json":
        print(json.dumps(doc, indent=2))
    else:
        _print_calibration(result, doc, out)
        _failures(failures, err)
    if propose_to is not None:
        assert proposal is not None
        source = rules_file(rules_dir)
        old = source.read_text(encoding="utf-8")
        new = rewrite(old, proposal)
        _proven(rules_dir, mappings_dir, source, new)
        propose_to.write_text(new, encoding="utf-8")
        (err if fmt == "json" else out).print(
            escape(diff(old, new, display(source)) or _("no change: the table fits the evidence"))
            + "\n" + _("proposed table: {file} (replaces {rules})").format(
                file=escape(str(propose_to)), rules=escape(display(source))))
    if report is not None:
        from connector.history.report import calibration_html

        report.write_text(calibration_html(result, str(given or _("the state store")),
                                           rules.version), encoding="utf-8")
        err.print(_("report: {file}").format(file=escape(str(report))))
    return 1 if failures.rows or failures.deals else 0


def _backtest(plan: Plan, fit: Counts, test: Counts, base: Fraction, proposed: Any,
              date: dt.date) -> dict[str, Any]:
    from connector.history.calibrate import crm_score, score

    now = rules_score(test, current_forecast(plan))
    new = rules_score(test, proposed)
    flat = score((base, k[2], Fraction(n, k[4])) for k, n in test.items())
    crm = crm_score(test)
    return {"date": date.isoformat(), "fit_deals": deals_in(fit), "test_deals": deals_in(test),
            "brier_current": rate(now.brier) if now else None,
            "brier_proposed": rate(new.brier) if new else None,
            "brier_base_rate": rate(flat.brier) if flat else None,
            "brier_crm": rate(crm.brier) if crm else None,
            "ece_current": rate(now.ece) if now else None,
            "ece_proposed": rate(new.ece) if new else None}


def _proven(rules_dir: Path, mappings_dir: Path, source: Path, text: str) -> None:
    """The proposal goes through `check` before it is written: it must hold as the rules do."""
    from connector.core.proof import prove

    with tempfile.TemporaryDirectory(prefix="crm-propose-") as folder:
        copy = Path(folder) / "rules"
        shutil.copytree(rules_dir, copy)
        (copy / source.relative_to(rules_dir)).write_text(text, encoding="utf-8")
        loaded = load(copy, mappings_dir)
        errors = [f for f in loaded.findings if f.severity == "error"]
        if loaded.rules is not None and not errors:
            errors = [f for f in prove(loaded.rules) if f.severity == "error"]
        if errors:  # pragma: no cover - only numbers change; a proof failing is a bug here
            raise ConfigurationError(Text("the proposed table does not pass check: {problems}",
                                          problems=listed([f.message for f in errors], "; ")))


def _print_calibration(result: Calibration, doc: dict[str, Any], out: Console) -> None:
    verdicts = {"inside": _("inside"), "outside": _("outside"), "too few": _("too few")}
    t = Table(_("workflow"), _("says"), _("deals"), _("wins"), _("win rate"), _("interval (95%)"),
              _("verdict"), title=_("Calibration over {n} closed deals").format(n=result.deals))
    for w in result.workflows:
        verdict = verdicts[w.verdict]
        style = "red" if w.verdict == "outside" else ("dim" if w.verdict == "too few" else "")
        t.add_row(escape(w.workflow), f"{w.probability}%", str(number(w.deals)),
                  str(number(w.wins)), rate(w.observed) if w.observed is not None else "-",
                  _("{low} to {high}").format(low=rate(w.low), high=rate(w.high)),
                  f"[{style}]{verdict}[/{style}]" if style else verdict)
    out.print(t)
    for name, part in ((_("rules"), doc["rules"]), (_("CRM as it was"), doc["crm"]),
                       (_("base rate"), doc["base_rate"])):
        if part is None:
            out.print(_("{name}: no probability recorded").format(name=name))
            continue
        out.print(_("{name}: Brier {brier} (reliability {reliability}, resolution "
                    "{resolution}, uncertainty {uncertainty}), ECE {ece}").format(name=name,
                                                                                 **part))
    out.print(_("no verdict below {n} deals in a workflow").format(n=doc["minimum_deals"]))
    back = doc.get("backtest")
    if back:
        out.print(_("backtest on deals closed from {date} ({test_deals} deals; fitted on "
                    "{fit_deals}): Brier current {brier_current}, proposed {brier_proposed}, "
                    "base rate {brier_base_rate}, CRM {brier_crm}").format(**back))


def movement_command(rules: RuleSet, given: Path | None, engine: str, first: dt.date,
                     second: dt.date, fmt: str, details: bool, chart: Path | None,
                     report: Path | None, out: Console, err: Console) -> int:
    import csv
    import sys

    from connector.history.movement import BUCKETS, bucket_label, movement

    if second < first:
        raise ConfigurationError(_("--to {second} is before --from {first}").format(
            second=second, first=first))
    with history(rules, given, engine) as h:
        result = movement(h, first, second, details)
        failures = h.failures
    months = sorted(result.months.items())
    if fmt == "json":
        doc = result.as_json()
        if details:
            doc["details"] = [_detail_json(d) for d in result.details]
        print(json.dumps(doc, indent=2))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["month", "bucket", "deals", "unweighted", "weighted"])
        for month, mo in months:
            writer.writerow([month, "start", "", mo.unweighted.start, mo.weighted.start])
            for b in BUCKETS:
                writer.writerow([month, b, mo.deals[b], mo.unweighted.changes[b],
                                 mo.weighted.changes[b]])
            writer.writerow([month, "end", "", mo.unweighted.end, mo.weighted.end])
        if details:
            writer.writerow([])
            writer.writerow(["month", "bucket", "id", "cause", "unweighted", "weighted"])
            for d in result.details:
                writer.writerow([d.month, d.bucket, d.id, d.cause, d.unweighted, d.weighted])
    else:
        for month, mo in months:
            t = Table("", _("deals"), _("unweighted"), _("weighted"),
                      title=_("{month}: pipeline from {first} to {second}").format(
                          month=month, first=first, second=second))
            t.add_row(_("start"), "", str(mo.unweighted.start), str(mo.weighted.start))
            for b in BUCKETS:
                if mo.deals[b]:
                    note = ""
                    if b.startswith("probability_"):
                        note = " " + _("({rules} rules, {factors} factors)").format(
                            **mo.causes)
                    t.add_row(bucket_label(b) + note, str(mo.deals[b]),
                              str(mo.unweighted.changes[b]), str(mo.weighted.changes[b]))
            t.add_row(_("end"), "", str(mo.unweighted.end), str(mo.weighted.end), style="bold")
            out.print(t)
        if details:
            t = Table(_("month"), _("bucket"), "id", _("cause"), _("unweighted"),
                      _("weighted"), title=_("The deals behind each bucket"))
            for d in result.details:
                t.add_row(d.month, bucket_label(d.bucket), escape(d.id),
                          bucket_label(d.cause) if d.cause else "", str(d.unweighted),
                          str(d.weighted))
            out.print(t)
        out.print(_("probability moves: 'rules' = same factor values (the rule set or the "
                    "CRM's own figure changed), 'factors' = the deal's factors changed"))
        _failures(failures, err)
    if chart is not None or report is not None:
        from decimal import Decimal

        from connector.history.charts import waterfall_svg

        start = sum((mo.weighted.start for _month, mo in months), Decimal("0.00"))
        end = sum((mo.weighted.end for _month, mo in months), Decimal("0.00"))
        steps = [(b, sum((mo.weighted.changes[b] for _month, mo in months), Decimal("0.00")))
                 for b in BUCKETS]

        def svg(standalone: bool) -> str:
            return waterfall_svg(f"{first} - {second}", start, [s for s in steps if s[1]], end,
                                 _("Weighted pipeline, all months,"), standalone)

        if chart is not None:
            chart.write_text(svg(True), encoding="utf-8")
            err.print(_("chart: {file}").format(file=escape(str(chart))))
        if report is not None:
            from connector.history.report import movement_html

            report.write_text(movement_html(result, [svg(False)]), encoding="utf-8")
            err.print(_("report: {file}").format(file=escape(str(report))))
    return 1 if failures.rows or failures.deals else 0


def _detail_json(d: Any) -> dict[str, Any]:
    def side(s: Any) -> dict[str, Any] | None:
        if s is None:
            return None
        return {"state": s.state, "close_date": s.close.isoformat() if s.close else None,
                "amount": str(s.value), "probability": None if s.crm is None else str(s.crm)}

    return {"month": d.month, "bucket": d.bucket, "id": d.id, "cause": d.cause or None,
            "unweighted": str(d.unweighted), "weighted": str(d.weighted),
            "before": side(d.before), "after": side(d.after)}


def accuracy_command(rules: RuleSet, given: Path | None, engine: str, lags: list[int],
                     fmt: str, chart: Path | None, report: Path | None, out: Console,
                     err: Console) -> int:
    import csv
    import sys

    from connector.history.accuracy import accuracy, summaries

    with history(rules, given, engine) as h:
        lines = accuracy(h, h.plan, lags)
        failures = h.failures
    summary = summaries(lines, lags)
    if fmt == "json":
        print(json.dumps([x.as_json() for x in lines], indent=2))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["month", "lag", "forecast", "forecast_crm", "won", "error"])
        for x in lines:
            d = x.as_json()
            writer.writerow([d[k] if d[k] is not None else "" for k in
                             ("month", "lag", "forecast", "forecast_crm", "won", "error")])
    else:
        t = Table(_("month"), _("lag"), _("forecast (rules)"), _("forecast (CRM)"), _("won"),
                  _("error"), title=_("Forecast accuracy: said before the month began vs won"))
        for x in lines:
            d = x.as_json()
            t.add_row(d["month"], str(x.lag), d["forecast"], d["forecast_crm"] or "-", d["won"],
                      d["error"])
        out.print(t)
        for s in summary:
            crm = ("; " + _("CRM: MAPE {mape}%, bias {bias}").format(mape=s.mape_crm,
                                                                     bias=s.bias_crm)
                   if s.bias_crm is not None else "")
            out.print(_("{lag} days ahead, {months} months: rules MAPE {mape}%, bias {bias}")
                      .format(lag=s.lag, months=s.months,
                              mape=s.mape if s.mape is not None else "-", bias=s.bias) + crm)
        _failures(failures, err)
    if chart is not None and lags:
        from connector.history.charts import accuracy_svg

        chart.write_text(accuracy_svg([(x.month, x.forecast, x.forecast_crm, x.won)
                                       for x in lines if x.lag == lags[0]], lags[0]),
                         encoding="utf-8")
        err.print(_("chart: {file}").format(file=escape(str(chart))))
    if report is not None:
        from connector.history.report import accuracy_html

        report.write_text(accuracy_html(lines, summary, lags, str(given or _("the state store")),
                                        rules.version), encoding="utf-8")
        err.print(_("report: {file}").format(file=escape(str(report))))
    return 1 if failures.rows or failures.deals else 0
