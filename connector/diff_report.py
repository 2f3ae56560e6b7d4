"""The HTML page of `diff`: the effect of a rule change, in the dry-run report's style (one
self-contained page, offline)."""

from __future__ import annotations

import datetime as dt
from html import escape
from pathlib import Path

from connector.formatting import format_money, row_label
from connector.i18n import gettext as _
from connector.i18n import say
from connector.report import cell, page, tag
from connector.rulediff import RuleDiff


def render_diff(diff: RuleDiff, source: Path, before: str, today: dt.date,
                locale: str | None = None) -> str:
    """The page, in the person's language, money in `locale` (as `diff` shows it)."""
    months = diff.months()
    total_before, total_after = diff.totals()

    def cash(value: object) -> str:
        return format_money(value, locale)

    def head(*names: str) -> str:
        return "<tr>" + "".join(tag("th", n) for n in names) + "</tr>"

    blank = escape(_("(blank)"))
    parts = [
        tag("h1", _("What the rule change does to {file}").format(file=source.name)),
        '<p class="muted">' + escape(_(
            "Rules before: {before} ({before_version}); after: {after_version}; today = "
            "{today}. Nothing was written and nothing was sent.").format(
            before=before, before_version=diff.before_version,
            after_version=diff.after_version, today=today.isoformat())) + "</p>",
        '<div class="cards" id="summary">',
        _card(_("records read"), "records-read", str(diff.read)),
        _card(_("would change"), "records-changed", str(diff.changed)),
        _card(_("forecast change"), "forecast-delta", cash(total_after - total_before)),
        "</div>",
        tag("h2", _("Workflows, before → after")),
        '<table id="moves">' + head(_("before"), _("after"), _("records"))]
    for (old, new), n in sorted(diff.moves.items()):
        mark = "" if old == new else ' class="bad"'
        parts.append(f"<tr{mark}>{cell(old)}{cell(new)}{cell(n, True)}</tr>")
    parts += ["</table>", tag("h2", _("Weighted forecast per month")),
              '<table id="forecast">' + head(_("month"), _("before"), _("after"), _("change"))]
    for month, old_w, new_w in months:
        parts.append(f'<tr data-month="{escape(month)}">{cell(row_label(month))}'
                     f"{cell(cash(old_w), True)}{cell(cash(new_w), True)}"
                     f"{cell(cash(new_w - old_w), True)}</tr>")
    parts.append('<tr id="forecast-total">' + tag("th", _("total"))
                 + f"{cell(cash(total_before), True)}{cell(cash(total_after), True)}"
                 f"{cell(cash(total_after - total_before), True)}</tr></table>")
    parts.append(tag("h2", _("Actions")))
    if not diff.newly and not diff.stopped:
        parts.append(tag("p", _("No action would newly fire or stop.")))
    else:
        parts.append('<table id="actions">'
                     + head(_("action"), _("newly due"), _("no longer due")))
        for action in sorted(diff.newly.keys() | diff.stopped.keys()):
            parts.append(f"<tr>{cell(action)}{cell(diff.newly[action], True)}"
                         f"{cell(diff.stopped[action], True)}</tr>")
        parts.append("</table>")
    parts.append(tag("h2", _("Records that change ({n})").format(n=diff.changed)))
    if diff.records:
        parts.append('<table id="changes">'
                     + head(_("line"), _("id"), _("workflow"), _("fields"), _("actions")))
        for r in diff.records:
            fields = "<br>".join(f"{escape(k)}: <del>{escape(b) or blank}</del> &rarr; "
                                 f"<ins>{escape(a) or blank}</ins>"
                                 for k, (b, a) in r.fields.items())
            acts = "<br>".join([f"+ {escape(a)}" for a in r.newly]
                               + [f"&minus; {escape(a)}" for a in r.stopped])
            parts.append(f"<tr>{cell(r.line, True)}{cell(r.record_id)}"
                         f"{cell(f'{r.before_rule} → {r.after_rule}')}<td>{fields}"
                         f"{escape(say(r.reason))}</td><td>{acts}</td></tr>")
        parts.append("</table>")
    else:
        parts.append(tag("p", _("None.")))
    return page(_("Rule change: {file}").format(file=source.name), parts, script=False)


def _card(label: str, id_: str, value: str) -> str:
    return f'<div class="card">{escape(label)}<b id="{id_}">{escape(value)}</b></div>'
