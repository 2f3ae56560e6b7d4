"""The history's HTML pages, in the dry-run report's style (its CSS, no script, offline), in
the person's language."""

from __future__ import annotations

from html import escape

from connector.history.accuracy import Line, Summary
from connector.history.calibrate import Calibration, number, rate
from connector.history.charts import accuracy_svg, reliability_svg
from connector.history.movement import BUCKETS, Movement, bucket_label
from connector.i18n import gettext as _
from connector.i18n import say
from connector.report import cell
from connector.report import page as report_page


def page(title: str, body: list[str]) -> str:
    """The dry-run report's page (its language, its Content-Security-Policy), with no script."""
    return report_page(title, [f"<h1>{escape(title)}</h1>", *body], script=False)


def _heading(title: str) -> str:
    return f"<h2>{escape(title)}</h2>"


def _header(*names: str) -> str:
    return "<tr>" + "".join(f"<th>{escape(n)}</th>" for n in names) + "</tr>"


def calibration_html(result: Calibration, source: str, version: str) -> str:
    data = result.as_json()
    verdicts = {"inside": _("inside"), "outside": _("outside"), "too few": _("too few")}
    cards = [(_("deals"), str(result.deals)), (_("Brier, rules"), data["brier"] or "-"),
             (_("Brier, CRM"), data["brier_crm"] or "-"),
             (_("Brier, base rate"), data["brier_base_rate"] or "-"), ("ECE", data["ece"] or "-")]
    body = ['<p class="muted">' + escape(_(
                "{source}, rule set {version}. A closed deal weighs 1, spread over its open "
                "snapshots. Lower Brier is better; the base rate says the overall win rate for "
                "every deal.").format(source=source, version=version)) + "</p>",
            '<div class="cards" id="summary">',
            *(f'<div class="card">{escape(k)}<b>{escape(v)}</b></div>' for k, v in cards),
            "</div>", _heading(_("Reliability")),
            reliability_svg([(w.workflow, float(w.probability) / 100,
                              float(w.observed) if w.observed is not None else None,
                              w.low, w.high, w.verdict == "outside")
                             for w in result.workflows], standalone=False),
            _heading(_("Workflows")),
            '<table id="workflows">' + _header(_("workflow"), _("says"), _("deals"), _("wins"),
                                               _("win rate"), _("interval (95%)"),
                                               _("verdict"))]
    for w in result.workflows:
        cls = ' class="bad"' if w.verdict == "outside" else ""
        interval = _("{low} to {high}").format(low=rate(w.low), high=rate(w.high))
        body.append(f"<tr{cls}>{cell(w.workflow)}{cell(f'{w.probability}%', True)}"
                    f"{cell(number(w.deals), True)}{cell(number(w.wins), True)}"
                    f"{cell(rate(w.observed) if w.observed is not None else '-', True)}"
                    f"{cell(interval, True)}{cell(verdicts[w.verdict])}</tr>")
    body.append("</table>")
    body.append('<p class="muted">' + escape(_(
        "No verdict below {n} deals: the interval is shown, but it is too wide to judge.").format(
        n=data["minimum_deals"])) + "</p>")
    scores = [(_("rules"), data["rules"]), (_("CRM as it was"), data["crm"]),
              (_("base rate"), data["base_rate"])]
    body.append(_heading(_("Scores")) + '<table id="scores">' + _header(
        "", "Brier", _("reliability"), _("resolution"), _("uncertainty"), "ECE"))
    for name, s in scores:
        if s is None:
            body.append(f"<tr>{cell(name)}<td colspan=5>"
                        + escape(_("no probability recorded")) + "</td></tr>")
            continue
        body.append(f"<tr>{cell(name)}" + "".join(
            cell(s[k], True) for k in ("brier", "reliability", "resolution", "uncertainty",
                                        "ece")) + "</tr>")
    body.append("</table>")
    failed = result.failures
    if failed.rows or failed.deals:
        body.append('<p class="bad">' + escape(_(
            "Left out: {rows} rows that could not be read, {deals} deals with two rows at one "
            "instant.").format(rows=failed.rows, deals=failed.deals) + " "
            + "; ".join(say(r) for r in failed.reasons)) + "</p>")
    return page(_("Calibration"), body)


def accuracy_html(lines: list[Line], summary: list[Summary], lags: list[int], source: str,
                  version: str) -> str:
    body = ['<p class="muted">' + escape(_(
                "{source}, rule set {version}. The forecast is the current rules on each deal as "
                "it was that many days before the month began; the CRM's is its own probability "
                "then. Error = forecast - won.").format(source=source, version=version)) + "</p>",
            '<table id="accuracy-summary">' + _header(
                _("days ahead"), _("months"), _("MAPE, rules"), _("bias, rules"), _("MAPE, CRM"),
                _("bias, CRM"))]
    for s in summary:
        body.append(f"<tr>{cell(s.lag, True)}{cell(s.months, True)}"
                    f"{cell(f'{s.mape}%' if s.mape is not None else '-', True)}"
                    f"{cell(s.bias, True)}"
                    f"{cell(f'{s.mape_crm}%' if s.mape_crm is not None else '-', True)}"
                    f"{cell(s.bias_crm if s.bias_crm is not None else '-', True)}</tr>")
    body.append("</table>")
    for lag in lags:
        body.append(_heading(_("{n} days ahead").format(n=lag)))
        body.append(accuracy_svg([(x.month, x.forecast, x.forecast_crm, x.won)
                                  for x in lines if x.lag == lag], lag, standalone=False))
    body.append('<table id="accuracy">' + _header(_("month"), _("days ahead"), _("forecast"),
                                                  _("forecast, CRM"), _("won"), _("error")))
    for x in lines:
        d = x.as_json()
        body.append("<tr>" + "".join(cell(d[k] if d[k] is not None else "-", k != "month")
                                     for k in ("month", "lag", "forecast", "forecast_crm",
                                               "won", "error")) + "</tr>")
    body.append("</table>")
    return page(_("Forecast accuracy"), body)


def movement_html(result: Movement, charts: list[str]) -> str:
    body = ['<p class="muted">' + escape(_(
                "The open pipeline of each close month from {first} to {second}: each deal in "
                "one bucket; start + changes = end.").format(first=result.first,
                                                             second=result.second)) + "</p>",
            *charts]
    for month, mo in sorted(result.months.items()):
        body.append(f'<h2>{escape(month)}</h2><table class="movement" data-month="{month}">'
                    + _header("", _("deals"), _("unweighted"), _("weighted")))
        body.append("<tr>" + cell(_("start")) + f"{cell('')}{cell(mo.unweighted.start, True)}"
                    f"{cell(mo.weighted.start, True)}</tr>")
        for b in BUCKETS:
            if mo.deals[b]:
                body.append(f"<tr>{cell(bucket_label(b))}{cell(mo.deals[b], True)}"
                            f"{cell(mo.unweighted.changes[b], True)}"
                            f"{cell(mo.weighted.changes[b], True)}</tr>")
        body.append("<tr><th>" + escape(_("end")) + f"</th>{cell('')}"
                    f"{cell(mo.unweighted.end, True)}{cell(mo.weighted.end, True)}</tr></table>")
    return page(_("Pipeline movement"), body)
