"""The dry run's report opened in a real browser: Debian's headless Chromium, driven through the
DevTools protocol over `--remote-debugging-pipe` (no extra Python package: the protocol is JSON
messages ended by a NUL byte on file descriptors 3 and 4).

Checked: the page loads with no console message, no script error and no failed or attempted
fetch of anything (the only request the Network domain sees is the page itself: no font, image
or stylesheet from anywhere); the rendered page shows the model's numbers; and a screenshot is a
real picture (a PNG of the requested size, not blank, with the chart's two bar colours in it).

Skipped only when /usr/bin/chromium is absent; where it is installed, a browser that does not
start is a failure.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import select
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from test_report import CONFIG, EXAMPLE, expected_numbers

from connector.cli import main

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps", "--mute-audio",
         "--hide-scrollbars", "--remote-debugging-pipe"]
WIDTH, HEIGHT = 1280, 900
TIMEOUT = 60.0
AMOUNT_BAR, WEIGHTED_BAR = (0xB8, 0xC7, 0xDC), (0x2F, 0x5D, 0x8A)  # connector/chart.py


class Browser:
    """One headless Chromium and one page in it, spoken to over the DevTools pipe."""

    def __init__(self, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def pipes_on_3_and_4() -> None:  # in the child, before exec
            a, b = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.process = subprocess.Popen(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            pass_fds=(3, 4), preexec_fn=pipes_on_3_and_4)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the browser did not answer")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError("the browser closed the pipe: "
                                       + self.process.stderr.read().decode()[-2000:])  # type: ignore[union-attr]
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)  # type: ignore[no-any-return]

    def send(self, method: str, session: bool = True, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == ident:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})  # type: ignore[no-any-return]
            self.events.append(answer)

    def wait_for(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read_message(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", session=False, url="about:blank")
        attached = self.send("Target.attachToTarget", session=False,
                             targetId=target["targetId"], flatten=True)
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
                  deviceScaleFactor=1, mobile=False)
        self.send("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Console messages, uncaught errors and browser log entries (failed loads, blocked
        requests) that the page caused."""
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled":
                out.append(f"console.{params['type']}: "
                           + " ".join(str(a.get("value", a.get("description")))
                                      for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                out.append(f"exception: {details.get('text')} "
                           f"{details.get('exception', {}).get('description', '')}")
            elif method == "Log.entryAdded":
                entry = params["entry"]
                out.append(f"log {entry['level']} ({entry['source']}): {entry['text']}")
        return out

    def requests(self) -> list[str]:
        """Every URL the page asked for, the page itself first (any scheme: file:// too)."""
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"]

    def screenshot(self) -> bytes:
        shot = self.send("Page.captureScreenshot", format="png")
        return base64.b64decode(shot["data"])

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        if self.process.stderr:
            self.process.stderr.close()


@pytest.fixture
def browser(tmp_path):  # type: ignore[no-untyped-def]
    b = Browser(tmp_path / "profile")
    yield b
    b.close()
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


# --- PNG, read with the standard library only ---------------------------------------------------

def png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Width, height and RGB pixels of an 8-bit RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert header is not None
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * channels
    previous = bytearray(stride)
    pixels = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else
                                      up if pb <= pc else corner)) & 255
        pixels += [tuple(line[i:i + 3]) for i in range(0, stride, channels)]
        previous = line
    return width, height, pixels  # type: ignore[return-value]


# --- the tests ----------------------------------------------------------------------------------

def test_the_harness_sees_console_errors_and_fetches(tmp_path, browser):
    """The checks below can fail: a page with a console error, a script error and an image to
    fetch is caught by each of them."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><p id="n">7</p><img src="missing.png">'
                    '<script>console.error("boom"); undefined_function();</script>'
                    "</body></html>", encoding="utf-8")
    browser.open(page.as_uri())
    time.sleep(0.5)  # the failed image load is reported a moment after the load event
    browser.send("Runtime.evaluate", expression="1")  # drain the events that came meanwhile
    problems = browser.problems()
    assert any("boom" in p for p in problems), problems
    assert any("undefined_function" in p for p in problems), problems
    assert any("missing.png" in p or "ERR_FILE_NOT_FOUND" in p for p in problems), problems
    assert browser.requests() == [page.as_uri(), page.with_name("missing.png").as_uri()]
    assert browser.evaluate("document.getElementById('n').textContent") == "7"


def test_the_report_opens_in_chromium_with_the_right_numbers(tmp_path, browser):
    report = tmp_path / "report.html"
    assert main(["simulate", str(EXAMPLE), "--report", str(report), *CONFIG]) == 1
    browser.open(report.as_uri())
    shown = browser.evaluate("""(() => {
        const text = id => document.getElementById(id).textContent.trim();
        const cells = tr => [...tr.children].map(c => c.textContent.trim());
        const svg = document.querySelector('svg').getBoundingClientRect();
        return {
          title: document.title,
          read: text('records-read'), changed: text('records-changed'),
          unchanged: text('records-unchanged'), failed: text('records-failed'),
          workflows: Object.fromEntries(
              [...document.querySelectorAll('#workflows tr[data-workflow]')]
              .map(tr => [tr.dataset.workflow, cells(tr).at(-1)])),
          months: Object.fromEntries([...document.querySelectorAll('#forecast tr[data-month]')]
              .map(tr => [tr.dataset.month, cells(tr).slice(1, 5)])),
          total: cells(document.getElementById('forecast-total')).slice(1, 5),
          failures: [...document.querySelectorAll('#failures tbody tr')]
              .map(tr => cells(tr).slice(0, 2)),
          chart: [svg.width, svg.height],
          bars: document.querySelectorAll('svg rect').length,
          cardsVisible: [...document.querySelectorAll('.card b')].every(b => b.offsetWidth > 0),
          fonts: [...document.fonts].filter(f => f.status !== 'unloaded').length,
        };
    })()""")
    assert browser.problems() == []
    assert browser.requests() == [report.as_uri()]  # nothing else fetched, from anywhere
    assert shown["fonts"] == 0  # no web font
    want = expected_numbers()
    assert shown["title"] == f"Dry run: {EXAMPLE.name}"
    assert (shown["read"], shown["changed"], shown["unchanged"], shown["failed"]) == (
        str(want["read"]), str(want["changed"]), str(want["unchanged"]), str(want["failed"]))
    assert {k: int(v) for k, v in shown["workflows"].items()} == {
        k: want["per_workflow"].get(k, 0) for k in shown["workflows"]}  # type: ignore[attr-defined]
    assert {k: (int(v[0]), *v[1:]) for k, v in shown["months"].items()} == want["months"]
    assert (int(shown["total"][0]), *shown["total"][1:]) == want["total"]
    assert [tuple(f) for f in shown["failures"]] == want["failures"]
    assert shown["chart"][0] >= 700 and shown["chart"][1] == 320
    # three per month (open pipeline, won, weighted), four in the legend (and overdue)
    assert shown["bars"] == 3 * len(shown["months"]) + 4
    assert shown["cardsVisible"]


def test_a_screenshot_of_the_report_is_a_real_picture(tmp_path, browser):
    report = tmp_path / "report.html"
    main(["simulate", str(EXAMPLE), "--report", str(report), *CONFIG])
    browser.open(report.as_uri())
    # scroll the chart into view: the screenshot is of the viewport
    top = browser.evaluate("document.querySelector('svg').getBoundingClientRect().top")
    browser.evaluate(f"window.scrollTo(0, {max(0, top - 200)})")
    data = browser.screenshot()
    (tmp_path / "report.png").write_bytes(data)  # kept with the test's files, to look at
    width, height, pixels = png_pixels(data)
    assert (width, height) == (WIDTH, HEIGHT)
    colours = set(pixels)
    white = sum(1 for p in pixels if p == (255, 255, 255))
    assert len(colours) > 20, "a blank or nearly blank picture"
    assert white < 0.97 * len(pixels)
    assert AMOUNT_BAR in colours and WEIGHTED_BAR in colours, "the chart's bars are not drawn"
    assert browser.problems() == []


def test_today_is_shown_in_the_report(tmp_path, browser):
    report = tmp_path / "report.html"
    main(["simulate", str(EXAMPLE), "--report", str(report), *CONFIG])
    browser.open(report.as_uri())
    text = browser.evaluate("document.body.innerText")
    assert f"today = {dt.date(2026, 11, 26).isoformat()}" in text
    assert "Nothing was written to the CRM" in text


@pytest.mark.parametrize("width", [1400, 390])
def test_nothing_overflows_on_a_desktop_or_a_phone(tmp_path, browser, width):
    report = tmp_path / "report.html"
    main(["simulate", str(EXAMPLE), "--report", str(report), *CONFIG])
    browser.open(report.as_uri())
    browser.send("Emulation.setDeviceMetricsOverride", width=width, height=HEIGHT,
                 deviceScaleFactor=1, mobile=width < 600)
    sizes = browser.evaluate("""(() => ({
        page: document.documentElement.scrollWidth, view: window.innerWidth,
        body: document.body.scrollWidth,
        wide: [...document.body.querySelectorAll('*')]
            .filter(e => !e.closest('.scroll'))
            .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
            .map(e => e.tagName + (e.id ? '#' + e.id : '')).slice(0, 5),
        previewsOpen: [...document.querySelectorAll('#previews details')]
            .filter(d => d.open).length,
        previews: document.querySelectorAll('#previews details').length,
    }))()""")
    data = browser.screenshot()
    (tmp_path / f"report-{width}.png").write_bytes(data)
    assert png_pixels(data)[0] == width
    assert sizes["view"] == width
    assert sizes["page"] <= width and sizes["body"] <= width, sizes
    assert sizes["wide"] == [], sizes
    assert sizes["previews"] > 0 and sizes["previewsOpen"] == 0  # collapsed by default
    assert browser.problems() == []


def test_tables_sort_and_filter_and_a_record_says_why(tmp_path, browser):
    report = tmp_path / "report.html"
    main(["simulate", str(EXAMPLE), "--report", str(report), *CONFIG])
    browser.open(report.as_uri())
    lines = "[...document.querySelectorAll('#changes tbody tr')].map(r => +r.cells[0].dataset.sort)"
    first = browser.evaluate(lines)
    assert first == sorted(first) and len(first) > 10
    sort = "document.querySelector('#changes thead th').getAttribute('aria-sort')"
    browser.evaluate("document.querySelector('#changes thead th').click()")
    assert browser.evaluate(lines) == sorted(first)  # ascending (already was)
    assert browser.evaluate(sort) == "ascending"      # so the click did sort
    browser.evaluate("document.querySelector('#changes thead th').click()")
    assert browser.evaluate(lines) == sorted(first, reverse=True)
    assert browser.evaluate(sort) == "descending"
    # filter by typing, as a person would
    shown = browser.evaluate("""(() => {
        const input = document.getElementById('changes-filter');
        input.value = 'p90';
        input.dispatchEvent(new Event('input'));
        const rows = [...document.querySelectorAll('#changes tbody tr')];
        const has = r => r.textContent.toLowerCase().includes('p90');
        return {visible: rows.filter(r => !r.hidden).map(r => r.dataset.rule),
                wrong: rows.filter(r => r.hidden === has(r)).length,
                count: document.getElementById('changes-shown').textContent};
    })()""")
    assert "p90" in shown["visible"] and shown["wrong"] == 0
    assert shown["count"] == str(len(shown["visible"]))
    # a workflow's count in the decision table filters the changes to its records
    picked = browser.evaluate("""(() => {
        document.querySelector('#workflows a[data-rule="p20"]').click();
        return [...document.querySelectorAll('#changes tbody tr')]
            .filter(r => !r.hidden).map(r => r.dataset.rule);
    })()""")
    assert picked and set(picked) == {"p20"}
    # why: the factor values that matched and the workflow's file:line
    why = browser.evaluate("""[...document.querySelectorAll('#changes tbody tr')]
        .find(r => r.dataset.rule === 'p90').querySelector('.why').textContent""")
    assert "stage=Negotiation/Review" in why and "proposal=Firm" in why
    assert "probability.yaml:4" in why
    assert browser.problems() == []
