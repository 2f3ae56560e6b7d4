"""The corpus of broken rule sets: `check` names every problem at its file and line, all at once.

Each folder under tests/broken/ is one rule set (its own `rules/` and `mappings/`, copied from the
example and broken) with an `expected.yaml`:

    about: what is broken
    exit: 1                      # the exit code check must return
    findings:                    # every one must be reported...
      - file: rules/probability.yaml   # relative to the case folder; null for a gap
        line: 14
        kind: reference                # optional
        severity: error                # optional, error by default
        message: "unknown factor 'stge'"   # a substring, or a list of substrings of one finding
        rules: [p60]                   # optional: the workflows the finding names
        example: {stage: Prospecting}  # optional: part of the example combination
    xfail: "why"                 # optional: a known bug, the case must still fail (strict)

...and no error may be reported that the list does not account for: a flood of follow-on errors
hides the real one as surely as a missing error does.
"""

from __future__ import annotations

import json
import os
import re
import string
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector import cli
from connector.cli import main
from connector.errors import Text
from connector.i18n import say, set_language

CORPUS = Path(__file__).parent / "broken"
CASES = sorted(p for p in CORPUS.iterdir() if p.is_dir())
KINDS = {"schema", "reference", "overlap", "gap", "unreachable", "monotonicity", "cycle",
         "expression", "template"}


@dataclass(frozen=True)
class Expected:
    file: str | None
    line: int | None
    messages: tuple[str, ...]
    kind: str | None = None
    severity: str = "error"
    rules: tuple[str, ...] | None = None
    example: dict[str, str] | None = None

    def matches(self, f: dict[str, Any]) -> bool:
        return (f["file"] == self.file and f["line"] == self.line
                and f["severity"] == self.severity
                and (self.kind is None or f["kind"] == self.kind)
                and all(m in f["message"] for m in self.messages)
                and (self.rules is None or set(f["rules"]) == set(self.rules))
                and (self.example is None or (f["example"] is not None and all(
                    f["example"].get(k) == v for k, v in self.example.items()))))

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.severity}: {' ... '.join(self.messages)}"


@dataclass(frozen=True)
class Case:
    folder: Path
    exit: int
    findings: tuple[Expected, ...]
    xfail: str | None


def read_case(folder: Path) -> Case:
    doc = yaml.safe_load((folder / "expected.yaml").read_text(encoding="utf-8"))
    findings = []
    for f in doc["findings"]:
        messages = f["message"] if isinstance(f["message"], list) else [f["message"]]
        findings.append(Expected(
            f["file"], f["line"], tuple(messages), f.get("kind"), f.get("severity", "error"),
            tuple(f["rules"]) if "rules" in f else None, f.get("example")))
    return Case(folder, doc["exit"], tuple(findings), doc.get("xfail"))


def params() -> list[Any]:
    out = []
    for folder in CASES:
        case = read_case(folder)
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        out.append(pytest.param(case, id=folder.name, marks=marks))
    return out


def run_check(case: Case, fmt: str, capsys: pytest.CaptureFixture[str],
              monkeypatch: pytest.MonkeyPatch, lang: str = "en") -> tuple[int, str, str]:
    monkeypatch.chdir(case.folder)  # so that files are named as in expected.yaml
    monkeypatch.delenv("CRM_AUTOMATION_DEBUG", raising=False)
    code = main(["check", "--lang", lang, "--rules", "rules", "--mappings", "mappings",
                 "--format", fmt])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def unexpected_errors(case: Case, findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in findings
            if f["severity"] == "error" and not any(e.matches(f) for e in case.findings)]


# --- the corpus itself ----------------------------------------------------------------------

def test_the_corpus_covers_enough_cases() -> None:
    assert len(CASES) >= 25
    for folder in CASES:
        case = read_case(folder)
        assert list((folder / "rules").glob("*.yaml")), folder.name
        assert list((folder / "mappings").glob("*.yaml")), folder.name
        assert case.exit in (1, 2), folder.name
        assert case.findings, folder.name
        for e in case.findings:
            assert e.kind is None or e.kind in KINDS, (folder.name, e)
            assert e.file is None or (folder / e.file).is_file(), (folder.name, e.file)
            assert e.file is None or e.line is not None, (folder.name, e)


def test_the_corpus_covers_every_kind_of_mistake_the_issue_lists() -> None:
    kinds = {e.kind for folder in CASES for e in read_case(folder).findings}
    assert {"schema", "reference", "expression", "cycle", "overlap", "gap",
            "unreachable"} <= kinds
    several = [read_case(f) for f in CASES if len({e.line for e in read_case(f).findings}) >= 5]
    assert any(len({e.file for e in c.findings}) == 1 for c in several), \
        "one case must hold several errors in one file"


def test_the_matcher_can_fail() -> None:
    """A wrong line, file, kind or message must not pass for the right one."""
    finding = {"severity": "error", "kind": "reference", "file": "rules/probability.yaml",
               "line": 19, "message": "workflow 'p60': unknown factor 'stge'", "rules": ["p60"],
               "example": None}
    right = Expected("rules/probability.yaml", 19, ("unknown factor 'stge'",), "reference")
    assert right.matches(finding)
    for wrong in (Expected("rules/probability.yaml", 18, right.messages),
                  Expected("rules/factors.yaml", 19, right.messages),
                  Expected("rules/probability.yaml", 19, right.messages, "schema"),
                  Expected("rules/probability.yaml", 19, right.messages, severity="warning"),
                  Expected("rules/probability.yaml", 19, ("unknown factor 'stage'",)),
                  Expected("rules/probability.yaml", 19, right.messages, rules=("p50",)),
                  Expected("rules/probability.yaml", 19, right.messages,
                           example={"stage": "Prospecting"})):
        assert not wrong.matches(finding), wrong


# --- check --format json --------------------------------------------------------------------

@pytest.mark.parametrize("case", params())
def test_check_json_reports_every_expected_finding(case: Case, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run_check(case, "json", capsys, monkeypatch)
    assert "Traceback" not in out + err
    assert "unexpected error" not in err
    report = json.loads(out)
    assert code == case.exit
    assert report["ok"] is False
    findings = report["findings"]
    for f in findings:
        assert set(f) == {"severity", "kind", "message", "file", "line", "rules", "example"}
        assert f["severity"] in ("error", "warning") and f["kind"] in KINDS
        assert f["line"] is None or (isinstance(f["line"], int) and f["line"] >= 1)
    missing = [str(e) for e in case.findings if not any(e.matches(f) for f in findings)]
    assert not missing, "not reported:\n" + "\n".join(missing) + "\n\nreported:\n" + "\n".join(
        f"{f['file']}:{f['line']}: {f['severity']}: {f['message']}" for f in findings)
    extra = unexpected_errors(case, findings)
    assert not extra, "errors the case does not expect (follow-on noise?):\n" + "\n".join(
        f"{f['file']}:{f['line']}: {f['message']}" for f in extra)
    keys = [json.dumps(f, sort_keys=True) for f in findings]
    assert len(keys) == len(set(keys)), "a finding is reported twice"


# --- check (text) ----------------------------------------------------------------------------

@pytest.mark.parametrize("case", params())
def test_check_text_reports_every_expected_finding(case: Case, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run_check(case, "text", capsys, monkeypatch)
    assert code == case.exit
    text = out + err
    assert "Traceback" not in text
    assert "unexpected error" not in text
    lines = text.splitlines()
    for e in case.findings:
        prefix = f"{e.file}:{e.line}: {e.severity}: " if e.file else f"{e.severity}: "
        assert any(line.startswith(prefix) and all(m in line for m in e.messages)
                   for line in lines), f"no line '{prefix}...{e.messages}' in:\n{text}"
    errors = sum(1 for line in lines if re.match(r"^(\S+:\d+: )?error: ", line))
    assert re.search(rf"^{errors} errors?$", text, re.M), text


# --- a real process ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_real_process_prints_no_traceback(fmt: str) -> None:
    case = read_case(CORPUS / "several-errors-in-one-file")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent))
    env.pop("CRM_AUTOMATION_DEBUG", None)
    done = subprocess.run(
        [sys.executable, "-m", "connector", "check", "--rules", "rules", "--mappings",
         "mappings", "--format", fmt],
        cwd=case.folder, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == case.exit
    assert "Traceback" not in done.stderr + done.stdout
    if fmt == "json":
        findings = json.loads(done.stdout)["findings"]
        assert all(any(e.matches(f) for f in findings) for e in case.findings)
    else:
        for e in case.findings:
            assert f"{e.file}:{e.line}: error: " in done.stdout


# --- check --lang es -----------------------------------------------------------------------------

@pytest.fixture
def messages(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """The messages check hands to `say`, as the findings hold them."""
    said: list[Any] = []

    def spy(message: Any, code: str | None = None) -> str:
        said.append(message)
        return say(message, code)
    monkeypatch.setattr(cli, "say", spy)
    yield said
    set_language("en")


def english_phrases(text: Text) -> Iterator[str]:
    """The words of a message's English templates (its own and its values'), between their
    placeholders: none of them may be left in a translation."""
    for literal, *_ in string.Formatter().parse(text.template):
        if len(re.findall(r"(?<!\w)[A-Za-z]{2,}(?!\w)", literal)) >= 2:  # words, not code
            yield literal.strip()
    for value in text.values.values():
        if isinstance(value, Text):
            yield from english_phrases(value)


def assert_said_in_spanish(english: list[Any], spanish: list[str]) -> None:
    assert len(spanish) == len(english)
    for text, message in zip(english, spanish):
        assert isinstance(text, Text), f"not translatable: {text!r}"
        assert message == say(text, "es") != str(text)
        kept = [p for p in english_phrases(text) if p in message]
        assert not kept, f"English left in {message!r}: {kept}"


@pytest.mark.parametrize("case", params())
def test_check_json_says_every_finding_in_spanish(
        case: Case, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        messages: list[Any]) -> None:
    """The same findings in both languages (count, file:line, severity, kind): only the
    message changes, to its Spanish."""
    code, out, _ = run_check(case, "json", capsys, monkeypatch)
    english = json.loads(out)["findings"]
    texts = list(messages)
    assert code == case.exit and [f["message"] for f in english] == [str(t) for t in texts]
    code, out, _ = run_check(case, "json", capsys, monkeypatch, lang="es")
    spanish = json.loads(out)["findings"]
    assert code == case.exit
    assert [{**f, "message": None} for f in spanish] == [{**f, "message": None} for f in english]
    assert_said_in_spanish(texts, [f["message"] for f in spanish])


FINDING_LINE = re.compile(r"^((?:\S+:\d+: |\S+: )?)(error|warning|advertencia): (.*)$")


@pytest.mark.parametrize("case", params())
def test_check_text_says_every_finding_in_spanish(
        case: Case, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        messages: list[Any]) -> None:
    """Each line keeps its file:line and its severity (said in Spanish) in the same order."""
    code, out, err = run_check(case, "text", capsys, monkeypatch)
    english = [m.groups() for m in map(FINDING_LINE.match, (out + err).splitlines()) if m]
    texts = list(messages)
    code_es, out, err = run_check(case, "text", capsys, monkeypatch, lang="es")
    spanish = [m.groups() for m in map(FINDING_LINE.match, (out + err).splitlines()) if m]
    assert code_es == code == case.exit
    assert english and len(spanish) == len(english)
    severity = {"error": "error", "warning": "advertencia"}
    assert [(where, severity[s]) for where, s, _ in english] == \
        [(where, s) for where, s, _ in spanish]
    assert_said_in_spanish(texts, [message for *_, message in spanish])
