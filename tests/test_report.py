"""The dry run's HTML report (`simulate --report`): one self-contained page that shows the
counts, the decision table with its per-workflow counts, the forecast and the failures.

Checked here on the markup; tests/test_report_browser.py opens it in a real browser."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest
import reference_dry_run as ref

from connector.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "opportunities.csv"
TODAY = dt.date(2026, 11, 26)
CONFIG = ["--rules", str(ROOT / "rules"), "--mappings", str(ROOT / "mappings"),
          "--today", TODAY.isoformat()]
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None]) -> None:
        self.tag, self.attrs = tag, attrs
        self.children: list[Node | str] = []

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        out = []
        for c in self.children:
            if isinstance(c, Node):
                if (tag is None or c.tag == tag) and all(
                        c.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items()):
                    out.append(c)
                out += c.find_all(tag, **attrs)
        return out

    def by_id(self, ident: str) -> Node:
        [node] = self.find_all(id=ident)
        return node

    def cells(self) -> list[str]:
        return [c.text.strip() for c in self.children if isinstance(c, Node)
                and c.tag in ("td", "th")]


class _Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html: str) -> Node:
    tree = _Tree()
    tree.feed(html)
    tree.close()
    return tree.root


def cents(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def expected_numbers(source: Path = EXAMPLE) -> dict[str, object]:
    """What the report must show for an export, from the independent model."""
    rows = ref.read_csv_with_lines(source.read_text(encoding="utf-8"))
    expected = [ref.expect(line, row, TODAY) for line, row in rows]
    ok = [e for e in expected if e.error is None]
    buckets, _ = ref.forecast(expected)
    as_is, _ = ref.forecast(expected, as_is=True)
    return {
        "read": len(expected), "failed": len(expected) - len(ok),
        "changed": sum(1 for e in ok if e.changed),
        "unchanged": sum(1 for e in ok if not e.changed),
        "per_workflow": Counter(e.rule for e in ok),
        "actions": Counter(a for e in ok for a in e.actions),
        "months": {k: (t.opportunities, cents(t.amount), cents(t.weighted),
                       cents(as_is[k].weighted) if k in as_is else "")
                   for k, t in buckets.items()},
        "total": (sum(t.opportunities for t in buckets.values()),
                  cents(sum((t.amount for t in buckets.values()), Decimal(0))),
                  cents(sum((t.weighted for t in buckets.values()), Decimal(0))),
                  cents(sum((t.weighted for t in as_is.values()), Decimal(0)))),
        "failures": [(str(e.line), e.record_id) for e in expected if e.error is not None],
    }


def write_report(tmp_path: Path, source: Path = EXAMPLE) -> str:
    report = tmp_path / "report.html"
    main(["simulate", str(source), "--report", str(report), *CONFIG])
    return report.read_text(encoding="utf-8")


def check_self_contained(html: str, raw: bool = True) -> None:
    """Nothing fetched: no external file, font, stylesheet or image; links only within the
    page; at most one script, inline, and the page's Content-Security-Policy allows only it
    (by hash). `raw` also searches the text itself (for exports whose own text cannot contain
    these words)."""
    doc = parse(html)
    scripts = doc.find_all("script")
    assert len(scripts) <= 1
    for node in doc.find_all():
        assert node.tag not in ("link", "img", "iframe", "object", "embed", "image",
                                "use", "foreignobject", "base", "form"), node.tag
        for name, value in node.attrs.items():
            assert not name.startswith("on"), f"an inline event handler: {name}"
            assert name not in ("src", "xlink:href", "srcset", "action"), name
            if name == "href":
                assert (value or "").startswith("#"), f"a link out of the page: {value}"
            assert "url(" not in (value or "").casefold(), value
    [policy] = [m.attrs["content"] for m in doc.find_all("meta")
                if m.attrs.get("http-equiv") == "Content-Security-Policy"]
    assert "default-src 'none'" in (policy or "")
    if scripts:
        import base64
        import hashlib

        digest = base64.b64encode(hashlib.sha256(scripts[0].text.encode()).digest()).decode()
        assert f"script-src 'sha256-{digest}'" in (policy or "")
    for style in doc.find_all("style"):
        css = style.text.casefold()
        for needle in ("url(", "@import", "@font-face", "http:", "https:"):
            assert needle not in css, needle
    if raw:
        lowered = html.casefold()
        for needle in ("http://", "https://", "//fonts.", "@import", "@font-face",
                       "url(", "<link", " src=", "javascript:", "fetch(", "xmlhttprequest"):
            assert needle not in lowered, f"the report refers outside itself: {needle!r}"
        assert lowered.count("<script") <= 1


def test_the_report_is_self_contained(tmp_path):
    html = write_report(tmp_path)
    assert html.startswith("<!DOCTYPE html>")
    assert '<meta charset="utf-8">' in html
    check_self_contained(html)
    doc = parse(html)
    assert len(doc.find_all("svg")) == 1  # the chart is inline


def test_the_report_shows_the_models_numbers(tmp_path):
    doc = parse(write_report(tmp_path))
    want = expected_numbers()
    assert doc.by_id("records-read").text == str(want["read"]) == "400"
    assert doc.by_id("records-changed").text == str(want["changed"])
    assert doc.by_id("records-unchanged").text == str(want["unchanged"])
    assert doc.by_id("records-failed").text == str(want["failed"]) == "6"
    assert doc.by_id("failures-count").text == "6"
    shown = {tr.attrs["data-workflow"]: int(tr.cells()[-1])
             for tr in doc.by_id("workflows").find_all("tr") if "data-workflow" in tr.attrs}
    assert set(shown) == {f"p{p}" for p in range(10, 100, 10)} | {"closed-won", "closed-lost"}
    assert shown == {k: want["per_workflow"].get(k, 0) for k in shown}  # type: ignore[union-attr]
    actions = {tr.cells()[0]: int(tr.cells()[2]) for tr in doc.by_id("actions").find_all("tr")[1:]}
    assert actions == dict(want["actions"])  # type: ignore[call-overload]
    months = {tr.attrs["data-month"]: tr.cells() for tr in doc.by_id("forecast").find_all("tr")
              if "data-month" in tr.attrs}
    assert {k: (int(c[1]), c[2], c[3], c[4]) for k, c in months.items()} == want["months"]
    total = doc.by_id("forecast-total").cells()
    assert (int(total[1]), total[2], total[3], total[4]) == want["total"]
    failures = [tr.cells()[:2] for tr in doc.by_id("failures").find_all("tr")[1:]]
    assert [tuple(f) for f in failures] == want["failures"]
    # every month of the table has its bars in the chart, labelled
    labels = {t.text for t in doc.find_all("svg")[0].find_all("text")}
    assert set(months) <= labels


def test_record_text_is_escaped_not_run(tmp_path):
    source = tmp_path / "export.csv"
    text = EXAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
    evil = '"<script>alert(1)</script> & <img src=x onerror=alert(2)>"'
    # line 2 changes (its name is shown in the changes table); make line 3 fail on its stage
    first = text[1].split(",")
    first[1] = evil
    second = text[2].split(",")
    second[2] = "<b>Closed</b> Whatever"
    source.write_text(text[0] + ",".join(first) + ",".join(second), encoding="utf-8")
    html = write_report(tmp_path, source)
    check_self_contained(html, raw=False)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;img src=x" in html
    assert "&lt;b&gt;Closed&lt;/b&gt; Whatever" in html


def test_an_export_with_no_rows_gives_a_report_of_zeros(tmp_path):
    source = tmp_path / "empty.csv"
    source.write_text(",".join(ref.HEADER) + "\n", encoding="utf-8")
    doc = parse(write_report(tmp_path, source))
    for ident in ("records-read", "records-changed", "records-unchanged", "records-failed"):
        assert doc.by_id(ident).text == "0"
    assert "no opportunity with a close date" in doc.find_all("svg")[0].text
    assert doc.by_id("forecast-total").cells()[1:4] == ["0", "0.00", "0.00"]


@pytest.mark.parametrize("many", [600])
def test_long_lists_are_cut_and_say_so(tmp_path, many):
    """A big export: the report lists the first 500 changes and failures, counts them all."""
    source = tmp_path / "export.csv"
    rows = [",".join(ref.HEADER)]
    for n in range(many):
        stage = "Prospecting" if n % 2 else "Nope"
        rows.append(f"X{n},Deal {n},{stage},1000,2027-01-01,,,,,,,,")
    source.write_text("\n".join(rows) + "\n", encoding="utf-8")
    doc = parse(write_report(tmp_path, source))
    assert doc.by_id("records-failed").text == str(many // 2)
    assert len(doc.by_id("failures").find_all("tr")) - 1 == min(500, many // 2)
    assert len(doc.by_id("changes").find_all("tr")) - 1 == min(500, many // 2)
