"""Rule and mapping file problems in Spanish: pydantic's errors are said by their type in our
own words, file:line kept, the same problems found in both languages."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from connector.cli import main
from connector.errors import Text
from connector.files import _either
from connector.i18n import say

ROOT = Path(__file__).resolve().parent.parent

# (file, the text replaced, its replacement): one mistake of each kind pydantic reports.
MISTAKES = [
    ("rules/factors.yaml", "[Firm, Budgetary]", "[Firm, [Budgetary]]"),      # no type fits
    ("rules/actions.yaml", "      method: POST\n", "      method: POTS\n"),  # not a choice
    ("rules/actions.yaml", "      json: {", "      jsn: {"),                  # unknown key
    # below a bound, an empty list, our own validator, a missing key:
    ("rules/actions.yaml", """\
  - name: late-stage
    when: probability >= 60
    do: [push-marketing]""", """\
  - name: late-stage
    when: probability >= 60
    since: close_date
    steps:
      - {after_days: -1, do: [push-marketing]}
      - {after_days: 3, do: []}
  - name: both
    when: won
    do: [erp-order]
    steps: [{after_days: 1, do: [erp-order]}]
  - do: [erp-order]"""),
    ("mappings/salesforce.yaml", "crm: salesforce", "crm: salesfroce"),
]

SPANISH = """\
mappings/salesforce.yaml:2: error: crm: debe ser 'salesforce' o 'hubspot' (se recibió \
'salesfroce') (¿quiso decir 'salesforce'?)
rules/factors.yaml:14: error: factors.proposal.values[1]: se esperaba texto, true/false o un \
número (se recibió ['Budgetary'])
rules/actions.yaml:11: error: actions.push-marketing.http.method: debe ser 'POST', 'PUT', \
'PATCH', 'DELETE' o 'GET' (se recibió 'POTS') (¿quiso decir 'POST'?)
rules/actions.yaml:13: error: clave desconocida 'jsn' (¿quiso decir 'json'?); aquí se \
permiten: method, url, json, headers
rules/actions.yaml:25: error: triggers[1].steps[0].after_days: debe ser 0 o más
rules/actions.yaml:26: error: triggers[1].steps[1].do: está vacío: indique al menos uno
rules/actions.yaml:27: error: triggers[2]: un disparador lleva 'do' (acciones) o 'steps' \
(escalamiento): uno de los dos, no ambos ni ninguno
rules/actions.yaml:31: error: triggers[3]: falta 'when'
8 errores
"""


@pytest.fixture
def broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for folder in ("rules", "mappings"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    for name, old, new in MISTAKES:
        path = tmp_path / name
        text = path.read_text(encoding="utf-8")
        assert old in text, (name, old)
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_pydantic_errors_are_said_in_spanish_at_their_line(
        broken: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--lang", "es", "--rules", "rules", "--mappings", "mappings"]) == 1
    assert capsys.readouterr().out == SPANISH
    assert main(["check", "--lang", "en", "--rules", "rules", "--mappings", "mappings"]) == 1
    english = capsys.readouterr().out.splitlines()
    assert len(english) == len(SPANISH.splitlines())
    for line, spanish in zip(english[:-1], SPANISH.splitlines()):
        where = spanish.split(" error: ")[0]
        assert line.startswith(where + " error: ") and line != spanish


def test_a_list_of_what_would_fit_ends_with_or_in_each_language() -> None:
    words = [Text("text"), Text("true/false"), Text("a number")]
    assert _either(words) == "text, true/false or a number"
    assert say(_either(words), "es") == "texto, true/false o un número"
    assert say(_either(words[1:]), "es") == "true/false o un número"
    assert _either(words[:1]) is words[0]
