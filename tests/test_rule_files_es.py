"""Rule and mapping file problems in Spanish: pydantic's errors are said by their type in our
own words, file:line kept, the same problems found in both languages."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from connector.cli import main
from connector.core.expressions import _PYTHON_SAYS, ExpressionError, parse_formula
from connector.core.findings import reworded
from connector.core.validation import either
from connector.errors import Text
from connector.files import _YAML_MET
from connector.i18n import say
from connector.templates import _JINJA_SAYS, InvalidTemplate, template_variables

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
    assert either(words) == "text, true/false or a number"
    assert say(either(words), "es") == "texto, true/false o un número"
    assert say(either(words[1:]), "es") == "true/false o un número"
    assert either(words[:1]) is words[0]


# What PyYAML and Python say about the mistakes a hand-edited file or formula has.
YAML_MISTAKES = ["a:\n\tb: 1\n", "a: b: c\n", "a: [1, 2}\n", "a:\n  b: 1\n c: 2\n", "a: 'abc\n",
                 "a: 1\n---\nb: 2\n", "a: *x\n", "a: {b: 1\n", 'a: "\\q"\n', "a: @x\n",
                 "a: !!python/name:os.system 1\n"]
FORMULA_MISTAKES = ["amount >= 1 and", "amount if stage", "(a + b", "a + b)", "a + (b]", "'abc",
                    "1a", "f(a b)", "a\u2026b"]


def _yaml_problem_of(text: str) -> str:
    try:
        yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return str(getattr(exc, "problem", None))
    raise AssertionError(f"{text!r} is valid YAML")


@pytest.mark.parametrize("text", YAML_MISTAKES)
def test_what_pyyaml_met_is_said_in_spanish_and_unchanged_in_english(text: str) -> None:
    problem = _yaml_problem_of(text)
    said = reworded(problem, _YAML_MET)
    assert isinstance(said, Text) and said == problem
    assert say(said, "es") != problem


@pytest.mark.parametrize("formula", FORMULA_MISTAKES)
def test_why_a_formula_does_not_parse_is_said_in_spanish(formula: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse_formula(formula, {"amount", "a", "b", "f"})
    text = caught.value.text
    assert isinstance(text, Text) and isinstance(text.values["problem"], Text)
    spanish = say(text, "es")
    assert spanish.startswith(f"la fórmula '{formula}' no se puede leer")
    assert say(text.values["problem"], "es") in spanish
    assert text.values["problem"] not in spanish


@given(st.text(max_size=80) | st.from_regex(
    r"(found character '.' that cannot start any token|expected \S+ or \S+, but got .+"
    r"|expected .+, but found .+|found undefined alias .+|unmatched '.'|unexpected '.+'"
    r"|expected token '.+', got '.+'|unexpected char .+ at \d+)", fullmatch=True))
def test_pyyaml_python_and_jinja_words_keep_their_english(problem: str) -> None:
    """Whatever PyYAML, Python or Jinja says, its English is left exactly as it was."""
    assert reworded(problem, _YAML_MET) == problem
    assert reworded(problem, _PYTHON_SAYS) == problem
    assert reworded(problem, _JINJA_SAYS) == problem


@pytest.mark.parametrize("template", ["{{ name }", "{{ name", "{{ name name }}", "{% if x %}a",
                                      "{% foo %}", "{{ a ! b }}", "{{ }}", "{% for x in y %}"])
def test_why_a_template_does_not_parse_is_said_in_spanish(template: str) -> None:
    with pytest.raises(InvalidTemplate) as caught:
        template_variables(template)
    problem = caught.value.problem
    assert isinstance(problem, Text) and isinstance(problem.values["problem"], Text)
    spanish = say(caught.value.text, "es")
    assert spanish.startswith("plantilla ") and say(problem.values["problem"], "es") in spanish
    assert problem.values["problem"] not in spanish
