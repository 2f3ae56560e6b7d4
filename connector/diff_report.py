"""The HTML page of `diff`: the effect of a rule change, in the dry-run report's style (one
self-contained page, offline)."""

from __future__ import annotations

import datetime as dt
from html import escape
from pathlib import Path

from connector.core.forecast import money
from connector.i18n import say
from connector.report import cell, page
from connector.rulediff import RuleDiff


def render_diff(diff: RuleDiff, source: Path, before: str, today: dt.date) -> str:
    months = diff.months()
    total_before, total_after = diff.totals()
    parts = [
        f"<h1>What the rule change does to {escape(source.name)}</h1>",
        f'<p class="muted">Rules before: {escape(before)} ({escape(diff.before_version)}); '
        f"after: {escape(diff.after_version)}; today = {today.isoformat()}. Nothing was "
        "written and nothing was sent.</p>",
        '<div class="cards" id="summary">',
        f'<div class="card">records read<b id="records-read">{diff.read}</b></div>',
        f'<div class="card">would change<b id="records-changed">{diff.changed}</b></div>',
        f'<div class="card">forecast change<b id="forecast-delta">'
        f"{money(total_after - total_before)}</b></div>",
        "</div>",
        "<h2>Workflows, before &rarr; after</h2>",
        '<table id="moves"><tr><th>before</th><th>after</th><th>records</th></tr>']
    for (old, new), n in sorted(diff.moves.items()):
        mark = "" if old == new else ' class="bad"'
        parts.append(f"<tr{mark}>{cell(old)}{cell(new)}{cell(n, True)}</tr>")
    parts += ["</table>", "<h2>Weighted forecast per month</h2>",
              '<table id="forecast"><tr><th>month</th><th>before</th><th>after</th>'
              "<th>change</th></tr>"]
    for month, old_w, new_w in months:
        parts.append(f'<tr data-month="{escape(month)}">{cell(month)}'
                     f"{cell(money(old_w), True)}{cell(money(new_w), True)}"
                     f"{cell(money(new_w - old_w), True)}</tr>")
    parts.append(f'<tr id="forecast-total"><th>total</th>{cell(money(total_before), True)}'
                 f"{cell(money(total_after), True)}"
                 f"{cell(money(total_after - total_before), True)}</tr></table>")
    parts.append("<h2>Actions</h2>")
    if not diff.newly and not diff.stopped:
        parts.append("<p>No action would newly fire or stop.</p>")
    else:
        parts.append('<table id="actions"><tr><th>action</th><th>newly due</th>'
                     "<th>no longer due</th></tr>")
        for action in sorted(diff.newly.keys() | diff.stopped.keys()):
            parts.append(f"<tr>{cell(action)}{cell(diff.newly[action], True)}"
                         f"{cell(diff.stopped[action], True)}</tr>")
        parts.append("</table>")
    parts.append(f"<h2>Records that change ({diff.changed})</h2>")
    if diff.records:
        parts.append('<table id="changes"><tr><th>line</th><th>id</th><th>workflow</th>'
                     "<th>fields</th><th>actions</th></tr>")
        for r in diff.records:
            fields = "<br>".join(f"{escape(k)}: <del>{escape(b) or '(blank)'}</del> &rarr; "
                                 f"<ins>{escape(a) or '(blank)'}</ins>"
                                 for k, (b, a) in r.fields.items())
            acts = "<br>".join([f"+ {escape(a)}" for a in r.newly]
                               + [f"&minus; {escape(a)}" for a in r.stopped])
            parts.append(f"<tr>{cell(r.line, True)}{cell(r.record_id)}"
                         f"{cell(f'{r.before_rule} → {r.after_rule}')}<td>{fields}"
                         f"{escape(say(r.reason))}</td><td>{acts}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>None.</p>")
    return page(f"Rule change: {source.name}", parts, script=False)
