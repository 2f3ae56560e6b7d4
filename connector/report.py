"""The dry run's report: one self-contained HTML page an admin opens in a browser, offline. It
opens with what matters (how many records would change or fail, and what the rules do to the
forecast), then the decision table, then each changed record with *why*: the factor values
that chose its workflow and where that workflow is written.

Nothing is fetched from anywhere; the one inline script (sorting and filtering the tables) is
pinned by its hash in the page's Content-Security-Policy, so no text from the CRM can run even
if it slipped past the escaping."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from html import escape
from pathlib import Path

from connector.chart import forecast_svg
from connector.core.expressions import Formula
from connector.core.forecast import Forecast, money
from connector.core.proof import describe_cubes
from connector.core.ruleset import CLOSED_LOST, CLOSED_WON, RuleSet
from connector.formatting import format_money, row_label
from connector.i18n import gettext as _
from connector.i18n import language, say
from connector.simulate import Change, Summary

__all__ = ["CSS", "SCRIPT", "cell", "page", "render", "tag"]

CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222;
       padding: 0 1rem; overflow-wrap: anywhere; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ccc; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: .5rem 0; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f5f8; } td.n { text-align: right; font-variant-numeric: tabular-nums;
overflow-wrap: normal; white-space: nowrap; }
table.sortable thead th { cursor: pointer; user-select: none; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
.cards { display: flex; gap: 1rem; flex-wrap: wrap; }
.card { border: 1px solid #ccd; border-radius: 6px; padding: .6rem 1rem; flex: 1 1 9rem;
        max-width: 20rem; }
.card b { display: block; font-size: 1.6rem; }
.bad { color: #a40000; } .good { color: #006400; } .muted { color: #666; }
del { color: #a40000; } ins { color: #006400; text-decoration: none; }
svg { max-width: 100%; height: auto; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: .25rem 0; }
details { border: 1px solid #ddd; border-radius: 4px; padding: .25rem .5rem; margin: .25rem 0; }
summary { cursor: pointer; }
input[type=search] { font: inherit; padding: .25rem .5rem; width: min(24rem, 100%);
                     box-sizing: border-box; }
.why { font-size: .85rem; }
"""

# Sorting (click a column's header; numbers by their data-sort value) and filtering (the
# search box above a table: every word must appear in the row; `workflow:p60` picks the rows of
# that workflow exactly, which is what a workflow's count in the decision table sets).
SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, column) {
    th.addEventListener('click', function () {
      var up = th.getAttribute('aria-sort') !== 'ascending';
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', up ? 'ascending' : 'descending');
      var key = function (row) {
        var cell = row.cells[column];
        var n = cell.getAttribute('data-sort');
        return n === null ? cell.textContent.trim().toLowerCase() : parseFloat(n);
      };
      var rows = Array.prototype.slice.call(table.tBodies[0].rows);
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
      });
      rows.forEach(function (row) { table.tBodies[0].appendChild(row); });
    });
  });
});
function filterTable(input) {
  var table = document.getElementById(input.getAttribute('data-table'));
  var words = input.value.toLowerCase().split(/\\s+/).filter(Boolean);
  var shown = 0;
  Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
    var text = row.textContent.toLowerCase();
    var rule = (row.getAttribute('data-rule') || '').toLowerCase();
    var match = words.every(function (w) {
      return w.indexOf('workflow:') === 0 ? rule === w.slice(9) : text.indexOf(w) >= 0;
    });
    row.hidden = !match;
    shown += match ? 1 : 0;
  });
  var count = document.getElementById(input.getAttribute('data-table') + '-shown');
  if (count) { count.textContent = shown; }
}
document.querySelectorAll('input[data-table]').forEach(function (input) {
  input.addEventListener('input', function () { filterTable(input); });
});
document.querySelectorAll('a[data-rule]').forEach(function (link) {
  link.addEventListener('click', function () {
    var input = document.getElementById('changes-filter');
    if (input) { input.value = 'workflow:' + link.getAttribute('data-rule'); filterTable(input); }
  });
});
"""


def cell(value: object, numeric: bool = False, sort: object = None) -> str:
    cls = ' class="n"' if numeric else ""
    key = f' data-sort="{escape(str(sort))}"' if sort is not None else ""
    return f"<td{cls}{key}>{escape(str(value))}</td>"


Cash = Callable[[Decimal], str]  # money as a person reads it, in the mapping's locale


def _money_cell(value: Decimal, cash: Cash) -> str:
    return cell(cash(value), True, money(value))


def page(title: str, body: Iterable[str], script: bool = True) -> str:
    """A complete page in the report's style: its CSS, and (with `script`) the sorting and
    filtering script, allowed by hash and nothing else."""
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    policy = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
              f"script-src 'sha256-{digest}'")
    return "\n".join([
        "<!DOCTYPE html>", f'<html lang="{language()}"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        *body,
        *([f"<script>{SCRIPT}</script>"] if script else []),
        "</body></html>"])


def render(rules: RuleSet, summary: Summary, source: Path, today: dt.date,
           locale: str | None = None) -> str:
    title = _("Dry run: {file}").format(file=source.name)
    unchanged = summary.read - summary.changed - summary.failed
    on_rules = summary.forecast.total().weighted_amount
    as_exported = summary.forecast_as_is.total().weighted_amount
    effect = on_rules - as_exported
    currency = summary.forecast.currency if locale else None

    def cash(value: Decimal) -> str:
        return format_money(value, locale, currency)

    body = [
        tag("h1", _("Dry run of {file}").format(file=source.name)),
        '<p class="muted">' + escape(_(
            "Rule set {version}, {crm} mapping, today = {today}. Nothing was written to the "
            "CRM and nothing was sent.").format(version=rules.version, crm=rules.mapping.crm,
                                                today=today.isoformat())) + "</p>",
        '<div class="cards" id="summary">',
        _card(_("records read"), "records-read", summary.read),
        _card(_("would change"), "records-changed", summary.changed),
        _card(_("unchanged"), "records-unchanged", unchanged),
        _card(_("failed"), "records-failed", summary.failed, "bad" if summary.failed else ""),
        _card(_("weighted forecast on the rules"), "forecast-rules",
              cash(on_rules)),
        _card(_("the rules' effect on the forecast"), "forecast-effect",
              ("+" if effect > 0 else "") + cash(effect),
              "good" if effect > 0 else "bad" if effect < 0 else ""),
        "</div>",
    ]
    body += _forecast(summary.forecast, summary.forecast_as_is, cash, locale)
    body += _workflows(rules, summary)
    body += _changes(rules, summary)
    body += _actions(rules, summary)
    body += _previews(summary)
    body += _failures(summary)
    return page(title, body)


def tag(name: str, text: str) -> str:
    return f"<{name}>{escape(text)}</{name}>"


def _card(label: str, ident: str, value: object, cls: str = "") -> str:
    extra = f" {cls}" if cls else ""
    return (f'<div class="card{extra}">{escape(label)}<b id="{ident}">'
            f"{escape(str(value))}</b></div>")


def _table(ident: str, headers: Iterable[str], sortable: bool = True) -> str:
    cls = ' class="sortable"' if sortable else ""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f'<div class="scroll"><table id="{ident}"{cls}><thead><tr>{head}</tr></thead><tbody>'


END_TABLE = "</tbody></table></div>"


def _filter(table: str, count: int) -> str:
    hint, label, shown = (_("filter: type a workflow, a stage, a name..."), _("filter"),
                          _("shown"))
    return (f'<p><input type="search" id="{table}-filter" data-table="{table}" '
            f'placeholder="{escape(hint)}" aria-label="{escape(label)}"> <span class="muted">'
            f'<span id="{table}-shown">{count}</span> {escape(shown)}</span></p>')


def _forecast(fc: Forecast, as_is: Forecast, cash: Cash, locale: str | None) -> list[str]:
    rows = fc.rows()
    before = {b.key: b for b in as_is.rows()}
    out = [tag("h2", _("Forecast: as exported and on the rules")),
           forecast_svg(rows, standalone=False, locale=locale),
           _table("forecast", [_("month"), _("opportunities"), _("amount"),
                               _("weighted, on the rules"), _("weighted, as exported"),
                               _("difference")])]
    for b in rows:
        old = before.get(b.key)
        diff = b.weighted_amount - old.weighted_amount if old else b.weighted_amount
        out.append(f'<tr data-month="{escape(b.key)}">{cell(row_label(b.key))}'
                   f"{cell(b.opportunities, True)}{_money_cell(b.amount, cash)}"
                   f"{_money_cell(b.weighted_amount, cash)}"
                   f"{_money_cell(old.weighted_amount, cash) if old else cell('', True)}"
                   f"{_money_cell(diff, cash)}</tr>")
    out.append("</tbody>")
    t, old_total = fc.total(), as_is.total().weighted_amount
    total = tag("th", _("total"))
    out.append(f'<tfoot><tr id="forecast-total">{total}'
               f"{cell(t.opportunities, True)}{_money_cell(t.amount, cash)}"
               f"{_money_cell(t.weighted_amount, cash)}{_money_cell(old_total, cash)}"
               f"{_money_cell(t.weighted_amount - old_total, cash)}</tr></tfoot></table></div>")
    if fc.left_out:
        out.append("<p>" + escape(_("Left out of the forecast: {reasons}.").format(
            reasons=", ".join(f"{n} {say(why)}" for why, n in fc.left_out.items()))) + "</p>")
    return out


def _workflows(rules: RuleSet, summary: Summary) -> list[str]:
    out = [tag("h2", _("Decision table")),
           _table("workflows", [_("workflow"), _("probability"), _("when"), _("where"),
                                _("records")])]
    for w in rules.workflows:
        p = w.sets.get("probability")
        shown = f"= {p.source}" if isinstance(p, Formula) else (
            format(p.normalize(), "f") + " %" if p is not None else "")
        when = (_("the weights formula") if w.generated
                else say(describe_cubes(rules.factors, w.cubes)))
        out.append(f'<tr data-workflow="{escape(w.name)}">{cell(w.name)}{cell(shown)}'
                   f"{cell(when)}{cell(_where(w.where.file, w.where.line))}"
                   f"{_records_link(w.name, summary.per_workflow.get(w.name, 0))}</tr>")
    if rules.closed:
        for name, p, state in ((CLOSED_WON, "100 %", _("won")), (CLOSED_LOST, "0 %", _("lost"))):
            when = _("{field} is a {state} state").format(field=rules.closed.field, state=state)
            out.append(f'<tr data-workflow="{name}">{cell(name)}{cell(p)}{cell(when)}'
                       f"{cell('')}{_records_link(name, summary.per_workflow.get(name, 0))}</tr>")
    out.append(END_TABLE)
    return out


def _where(file: str | None, line: int | None) -> str:
    if not file:
        return ""
    return f"{file}:{line}" if line else file


def _records_link(rule: str, count: int) -> str:
    if not count:
        return cell(0, True, 0)
    return (f'<td class="n" data-sort="{count}"><a href="#changes" data-rule="{escape(rule)}">'
            f"{count}</a></td>")


def _why(rules: RuleSet, change: Change) -> str:
    """The factor values that chose the workflow, and where the workflow is written; for a
    closed deal, its state."""
    if change.rule in (CLOSED_WON, CLOSED_LOST):
        field = rules.closed.field if rules.closed else ""
        return (_("{field} is a won state") if change.rule == CLOSED_WON
                else _("{field} is a lost state")).format(field=field)
    where = next((_where(w.where.file, w.where.line) for w in rules.workflows
                  if w.name == change.rule), "")
    matched = ", ".join(f"{k}={v}" for k, v in change.factors.items())
    return f"{matched} ({where})" if where else matched


def _changes(rules: RuleSet, summary: Summary) -> list[str]:
    out = [tag("h2", _("Records that would change ({n})").format(n=summary.changed))]
    if not summary.changes:
        return out + [tag("p", _("None."))]
    if summary.changed > len(summary.changes):
        out.append("<p>" + escape(_("The first {n} are shown; the output file has all.").format(
            n=len(summary.changes))) + "</p>")
    out.append(_filter("changes", len(summary.changes)))
    out.append(_table("changes", [_("line"), _("id"), _("name"), _("workflow"), _("why"),
                                  _("before → after")]))
    blank = escape(_("(blank)"))
    for c in summary.changes:
        diff = "<br>".join(f"{escape(k)}: <del>{escape(c.before[k]) or blank}</del> "
                           f"&rarr; <ins>{escape(c.after[k]) or blank}</ins>"
                           for k in c.after)
        out.append(f'<tr data-rule="{escape(c.rule)}">{cell(c.line, True, c.line)}'
                   f"{cell(c.record_id)}{cell(c.name)}{cell(c.rule)}"
                   f'<td class="why">{escape(_why(rules, c))}</td><td>{diff}</td></tr>')
    out.append(END_TABLE)
    return out


def _actions(rules: RuleSet, summary: Summary) -> list[str]:
    out = [tag("h2", _("Actions that would fire")), '<p id="backfill">' + escape(_(
        "A first sync is a backfill: it records these conditions as already true and fires "
        "nothing (sync --fire-backfill fires them). After it, each action fires when a change "
        "makes its condition true: a deal entering the workflow, a trigger turning true.")) +
        "</p>"]
    if not summary.actions:
        return out + [tag("p", _("None."))]
    out.append(_table("actions", [_("action"), _("kind"), _("times")]))
    for name, count in sorted(summary.actions.items()):
        kind = rules.actions[name].kind if name in rules.actions else "?"
        out.append(f"<tr>{cell(name)}{cell(kind)}{cell(count, True, count)}</tr>")
    out.append(END_TABLE)
    return out


def _previews(summary: Summary) -> list[str]:
    if not summary.previews:
        return []
    out = [tag("h2", _("What they would send")),
           '<p class="muted">' + escape(_(
               "The first {n}, rendered as they would be sent; nothing was sent.").format(
               n=len(summary.previews))) + "</p>", '<div id="previews">']
    for p in summary.previews:
        label = _("line {line} ({id}): {action}").format(line=p.line, id=p.record_id,
                                                         action=p.action)
        if p.rendered is None:
            body = f'<span class="bad">{escape(say(p.error))}</span>'
        elif p.kind in ("email", "approval"):
            body = _email(p.rendered)
        else:
            body = f"<pre>{escape(json.dumps(p.rendered, indent=2, default=str))}</pre>"
        out.append(f"<details><summary>{escape(label)}</summary>{body}</details>")
    out.append("</div>")
    return out


def _email(rendered: Mapping[str, object]) -> str:
    to = rendered.get("to") or []
    recipients = ", ".join(str(t) for t in to) if isinstance(to, list) else str(to)
    to_label, subject_label = tag("b", _("To")), tag("b", _("Subject"))
    return (f"{to_label}: {escape(recipients)}<br>{subject_label}: "
            f"{escape(str(rendered.get('subject', '')))}"
            f"<pre>{escape(str(rendered.get('text', '')))}</pre>")


def _failures(summary: Summary) -> list[str]:
    title = escape(_("Records that failed"))
    out = [f'<h2>{title} (<span id="failures-count">{summary.failed}</span>)</h2>']
    if not summary.failures:
        return out + [tag("p", _("None."))]
    out.append(_filter("failures", len(summary.failures)))
    out.append(_table("failures", [_("line"), _("id"), _("reason")]))
    for f in summary.failures:
        out.append(f'<tr class="bad">{cell(f.line, True, f.line)}{cell(f.record_id)}'
                   f"{cell(say(f.reason))}</tr>")
    out.append(END_TABLE)
    return out
