"""The dry run's report: one self-contained HTML page (no script, no external font or file) an
admin opens in a browser, offline."""

from __future__ import annotations

import datetime as dt
import json
from html import escape
from pathlib import Path

from connector.chart import forecast_svg
from connector.core.expressions import Formula
from connector.core.forecast import Forecast, money
from connector.core.proof import describe_cubes
from connector.core.ruleset import CLOSED_LOST, CLOSED_WON, RuleSet
from connector.simulate import Summary

CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222;
       padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .5rem 0; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f5f8; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: flex; gap: 1rem; flex-wrap: wrap; }
.card { border: 1px solid #ccd; border-radius: 6px; padding: .6rem 1rem; min-width: 9rem; }
.card b { display: block; font-size: 1.6rem; }
.bad { color: #a40000; } .muted { color: #666; } del { color: #a40000; } ins { color: #006400;
text-decoration: none; }
"""


def _cell(value: object, numeric: bool = False) -> str:
    cls = ' class="n"' if numeric else ""
    return f"<td{cls}>{escape(str(value))}</td>"


def render(rules: RuleSet, summary: Summary, source: Path, today: dt.date) -> str:
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Dry run: {escape(source.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>Dry run of {escape(source.name)}</h1>",
        f'<p class="muted">Rule set {escape(rules.version)}, {rules.mapping.crm} mapping, '
        f"today = {today.isoformat()}. Nothing was written to the CRM and nothing was sent.</p>",
        '<div class="cards" id="summary">',
        f'<div class="card">records read<b id="records-read">{summary.read}</b></div>',
        f'<div class="card">would change<b id="records-changed">{summary.changed}</b></div>',
        f'<div class="card">unchanged<b id="records-unchanged">'
        f"{summary.read - summary.changed - summary.failed}</b></div>",
        f'<div class="card{" bad" if summary.failed else ""}">failed<b id="records-failed">'
        f"{summary.failed}</b></div>",
        "</div>",
    ]
    parts += _workflows(rules, summary)
    parts += _actions(rules, summary)
    parts += _previews(summary)
    parts += _forecast(summary.forecast, summary.forecast_as_is)
    parts += _changes(summary)
    parts += _failures(summary)
    parts.append("</body></html>")
    return "\n".join(parts)


def _workflows(rules: RuleSet, summary: Summary) -> list[str]:
    out = ["<h2>Decision table</h2>", '<table id="workflows"><tr><th>workflow</th>'
           "<th>probability</th><th>when</th><th>records</th></tr>"]
    for w in rules.workflows:
        p = w.sets.get("probability")
        shown = f"= {p.source}" if isinstance(p, Formula) else (
            format(p.normalize(), "f") + " %" if p is not None else "")
        when = ("the weights formula" if w.generated else describe_cubes(rules.factors, w.cubes))
        out.append(f'<tr data-workflow="{escape(w.name)}">{_cell(w.name)}{_cell(shown)}'
                   f"{_cell(when)}{_cell(summary.per_workflow.get(w.name, 0), True)}</tr>")
    if rules.closed:
        for name, p, state in ((CLOSED_WON, "100 %", "won"), (CLOSED_LOST, "0 %", "lost")):
            when = f"{rules.closed.field} is a {state} state"
            out.append(f'<tr data-workflow="{name}">{_cell(name)}{_cell(p)}{_cell(when)}'
                       f"{_cell(summary.per_workflow.get(name, 0), True)}</tr>")
    out.append("</table>")
    return out


def _actions(rules: RuleSet, summary: Summary) -> list[str]:
    out = ["<h2>Actions that would fire</h2>",
           '<p id="backfill">A first <code>sync</code> is a backfill: it records these '
           "conditions as already true and fires <b>nothing</b> (<code>sync --fire-backfill"
           "</code> fires them). After it, each action fires when a change makes its "
           "condition true: a deal entering the workflow, a trigger turning true.</p>"]
    if not summary.actions:
        return out + ["<p>None.</p>"]
    out.append('<table id="actions"><tr><th>action</th><th>kind</th><th>times</th></tr>')
    for name, count in sorted(summary.actions.items()):
        kind = rules.actions[name].kind if name in rules.actions else "?"
        out.append(f"<tr>{_cell(name)}{_cell(kind)}{_cell(count, True)}</tr>")
    out.append("</table>")
    return out


def _previews(summary: Summary) -> list[str]:
    if not summary.previews:
        return []
    out = [f"<h2>What they would send (the first {len(summary.previews)}; nothing was sent)</h2>",
           '<table id="previews"><tr><th>line</th><th>id</th><th>action</th><th>rendered</th>'
           "</tr>"]
    for p in summary.previews:
        if p.rendered is None:
            body = f'<span class="bad">{escape(p.error)}</span>'
        elif p.kind in ("email", "approval"):
            r = p.rendered
            body = (f"<b>To</b>: {escape(', '.join(r['to']))}<br><b>Subject</b>: "
                    f"{escape(r['subject'])}<pre>{escape(r['text'])}</pre>")
        else:
            body = f"<pre>{escape(json.dumps(p.rendered, indent=2, default=str))}</pre>"
        out.append(f"<tr>{_cell(p.line, True)}{_cell(p.record_id)}{_cell(p.action)}"
                   f"<td>{body}</td></tr>")
    out.append("</table>")
    return out


def _forecast(fc: Forecast, as_is: Forecast) -> list[str]:
    rows = fc.rows()
    before = {b.key: b for b in as_is.rows()}
    out = ["<h2>Forecast</h2>", forecast_svg(rows, standalone=False),
           '<table id="forecast"><tr><th>month</th><th>opportunities</th><th>amount</th>'
           "<th>weighted amount</th><th>weighted, as the export has it</th></tr>"]
    for b in rows:
        old = before.get(b.key)
        out.append(f'<tr data-month="{escape(b.key)}">{_cell(b.key)}'
                   f"{_cell(b.opportunities, True)}{_cell(money(b.amount), True)}"
                   f"{_cell(money(b.weighted_amount), True)}"
                   f"{_cell(money(old.weighted_amount) if old else '', True)}</tr>")
    t = fc.total()
    out.append(f'<tr id="forecast-total"><th>total</th>{_cell(t.opportunities, True)}'
               f"{_cell(money(t.amount), True)}{_cell(money(t.weighted_amount), True)}"
               f"{_cell(money(as_is.total().weighted_amount), True)}</tr></table>")
    if fc.left_out:
        out.append("<p>Left out of the forecast: " + escape(", ".join(
            f"{n} {why}" for why, n in fc.left_out.items())) + ".</p>")
    return out


def _changes(summary: Summary) -> list[str]:
    out = [f"<h2>Records that would change ({summary.changed})</h2>"]
    if not summary.changes:
        return out + ["<p>None.</p>"]
    if summary.changed > len(summary.changes):
        out.append(f"<p>The first {len(summary.changes)} are shown; the output file has all.</p>")
    out.append('<table id="changes"><tr><th>line</th><th>id</th><th>name</th><th>workflow</th>'
               "<th>changes</th></tr>")
    for c in summary.changes:
        diff = "<br>".join(f"{escape(k)}: <del>{escape(c.before[k]) or '(blank)'}</del> &rarr; "
                           f"<ins>{escape(c.after[k]) or '(blank)'}</ins>" for k in c.after)
        out.append(f"<tr>{_cell(c.line, True)}{_cell(c.record_id)}{_cell(c.name)}"
                   f"{_cell(c.rule)}<td>{diff}</td></tr>")
    out.append("</table>")
    return out


def _failures(summary: Summary) -> list[str]:
    out = [f'<h2>Records that failed (<span id="failures-count">{summary.failed}</span>)</h2>']
    if not summary.failures:
        return out + ["<p>None.</p>"]
    out.append('<table id="failures"><tr><th>line</th><th>id</th><th>reason</th></tr>')
    for f in summary.failures:
        out.append(f'<tr class="bad">{_cell(f.line, True)}{_cell(f.record_id)}'
                   f"{_cell(f.reason)}</tr>")
    out.append("</table>")
    return out
