"""The history's HTML pages, in the dry-run report's style (its CSS, no script, offline)."""

from __future__ import annotations

from html import escape

from connector.history.accuracy import Line, Summary
from connector.history.calibrate import Calibration, number, rate
from connector.history.charts import accuracy_svg, reliability_svg
from connector.history.movement import BUCKETS, Movement
from connector.i18n import say
from connector.report import cell
from connector.report import page as report_page


def page(title: str, body: list[str]) -> str:
    """The dry-run report's page (its language, its Content-Security-Policy), with no script."""
    return report_page(title, [f"<h1>{escape(title)}</h1>", *body], script=False)


def calibration_html(result: Calibration, source: str, version: str) -> str:
    data = result.as_json()
    cards = [("deals", str(result.deals)), ("Brier, rules", data["brier"] or "-"),
             ("Brier, CRM", data["brier_crm"] or "-"),
             ("Brier, base rate", data["brier_base_rate"] or "-"), ("ECE", data["ece"] or "-")]
    body = [f'<p class="muted">{escape(source)}, rule set {escape(version)}. A closed deal '
            "weighs 1, spread over its open snapshots. Lower Brier is better; the base rate "
            "says the overall win rate for every deal.</p>",
            '<div class="cards" id="summary">',
            *(f'<div class="card">{escape(k)}<b>{escape(v)}</b></div>' for k, v in cards),
            "</div>", "<h2>Reliability</h2>",
            reliability_svg([(w.workflow, float(w.probability) / 100,
                              float(w.observed) if w.observed is not None else None,
                              w.low, w.high, w.verdict == "outside")
                             for w in result.workflows], standalone=False),
            "<h2>Workflows</h2>",
            '<table id="workflows"><tr><th>workflow</th><th>says</th><th>deals</th><th>wins</th>'
            "<th>won</th><th>95 % interval</th><th>verdict</th></tr>"]
    for w in result.workflows:
        cls = ' class="bad"' if w.verdict == "outside" else ""
        body.append(f"<tr{cls}>{cell(w.workflow)}{cell(f'{w.probability}%', True)}"
                    f"{cell(number(w.deals), True)}{cell(number(w.wins), True)}"
                    f"{cell(rate(w.observed) if w.observed is not None else '-', True)}"
                    f"{cell(f'{rate(w.low)} to {rate(w.high)}', True)}{cell(w.verdict)}</tr>")
    body.append("</table>")
    body.append(f"<p class=\"muted\">No verdict below {data['minimum_deals']} deals: the "
                "interval is shown, but it is too wide to judge.</p>")
    scores = [("rules", data["rules"]), ("CRM as it was", data["crm"]),
              ("base rate", data["base_rate"])]
    body.append('<h2>Scores</h2><table id="scores"><tr><th></th><th>Brier</th>'
                "<th>reliability</th><th>resolution</th><th>uncertainty</th><th>ECE</th></tr>")
    for name, s in scores:
        if s is None:
            body.append(f"<tr>{cell(name)}<td colspan=5>no probability recorded</td></tr>")
            continue
        body.append(f"<tr>{cell(name)}" + "".join(
            cell(s[k], True) for k in ("brier", "reliability", "resolution", "uncertainty",
                                        "ece")) + "</tr>")
    body.append("</table>")
    failed = result.failures
    if failed.rows or failed.deals:
        body.append(f"<p class=\"bad\">Left out: {failed.rows} rows that could not be read, "
                    f"{failed.deals} deals with two rows at one instant. "
                    + escape("; ".join(say(r) for r in failed.reasons)) + "</p>")
    return page("Calibration", body)


def accuracy_html(lines: list[Line], summary: list[Summary], lags: list[int], source: str,
                  version: str) -> str:
    body = [f'<p class="muted">{escape(source)}, rule set {escape(version)}. The forecast is '
            "the current rules on each deal as it was that many days before the month began; "
            "the CRM's is its own probability then. Error = forecast - won.</p>",
            '<table id="accuracy-summary"><tr><th>days ahead</th><th>months</th>'
            "<th>MAPE, rules</th><th>bias, rules</th><th>MAPE, CRM</th><th>bias, CRM</th></tr>"]
    for s in summary:
        body.append(f"<tr>{cell(s.lag, True)}{cell(s.months, True)}"
                    f"{cell(f'{s.mape}%' if s.mape is not None else '-', True)}"
                    f"{cell(s.bias, True)}"
                    f"{cell(f'{s.mape_crm}%' if s.mape_crm is not None else '-', True)}"
                    f"{cell(s.bias_crm if s.bias_crm is not None else '-', True)}</tr>")
    body.append("</table>")
    for lag in lags:
        body.append(f"<h2>{lag} days ahead</h2>")
        body.append(accuracy_svg([(x.month, x.forecast, x.forecast_crm, x.won)
                                  for x in lines if x.lag == lag], lag, standalone=False))
    body.append('<table id="accuracy"><tr><th>month</th><th>days ahead</th><th>forecast</th>'
                "<th>forecast, CRM</th><th>won</th><th>error</th></tr>")
    for x in lines:
        d = x.as_json()
        body.append("<tr>" + "".join(cell(d[k] if d[k] is not None else "-", k != "month")
                                     for k in ("month", "lag", "forecast", "forecast_crm",
                                               "won", "error")) + "</tr>")
    body.append("</table>")
    return page("Forecast accuracy", body)


def movement_html(result: Movement, charts: list[str]) -> str:
    body = [f'<p class="muted">The open pipeline of each close month from {result.first} to '
            f"{result.second}: each deal in one bucket; start + changes = end.</p>", *charts]
    for month, mo in sorted(result.months.items()):
        body.append(f'<h2>{escape(month)}</h2><table class="movement" data-month="{month}">'
                    "<tr><th></th><th>deals</th><th>unweighted</th><th>weighted</th></tr>")
        body.append(f"<tr>{cell('start')}{cell('')}{cell(mo.unweighted.start, True)}"
                    f"{cell(mo.weighted.start, True)}</tr>")
        for b in BUCKETS:
            if mo.deals[b]:
                body.append(f"<tr>{cell(b.replace('_', ' '))}{cell(mo.deals[b], True)}"
                            f"{cell(mo.unweighted.changes[b], True)}"
                            f"{cell(mo.weighted.changes[b], True)}</tr>")
        body.append(f"<tr><th>end</th>{cell('')}{cell(mo.unweighted.end, True)}"
                    f"{cell(mo.weighted.end, True)}</tr></table>")
    return page("Pipeline movement", body)
