"""Every message a person reads exists in Spanish, with the same placeholders; the language
comes from --lang, CRM_AUTOMATION_LANG or LANG."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from connector.cli import main
from connector.errors import Text
from connector.i18n import choose_language, set_language

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "connector"
SPANISH = PACKAGE / "locale" / "es" / "LC_MESSAGES" / "messages.po"
KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2), "translate": (2,), "Text": None}


def _marked() -> set[str | tuple[str, str]]:
    """Every message the code marks for translation, read from the code itself (so a new
    `_("...")` without its Spanish fails here, whether or not scripts/messages was run)."""
    found: set[str | tuple[str, str]] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(PACKAGE), method_map=[("**.py", "python")], keywords=KEYWORDS):
        found.add(message if isinstance(message, str) else tuple(message))
    return found


def _spanish() -> dict[str | tuple[str, str], object]:
    with SPANISH.open("rb") as f:
        catalog = read_po(f, locale="es")
    return {m.id if isinstance(m.id, str) else tuple(m.id): m for m in catalog if m.id}


def _placeholders(text: str) -> set[str]:
    return {name for _lit, name, _spec, _conv in string.Formatter().parse(text)
            if name is not None}


def test_every_marked_message_has_a_spanish_translation() -> None:
    marked, spanish = _marked(), _spanish()
    assert marked, "the code marks its messages"
    missing = []
    for msgid in sorted(marked, key=str):
        entry = spanish.get(msgid)
        strings = [] if entry is None else (
            list(entry.string) if isinstance(entry.string, (list, tuple)) else [entry.string])
        if entry is None or not all(strings) or entry.fuzzy:
            missing.append(msgid)
    assert not missing, f"no Spanish for: {missing} (run scripts/messages, then translate)"


def test_the_catalog_compiles_as_pybabel_compiles_it() -> None:
    """`scripts/setup` runs `pybabel compile`, which refuses a catalog whose checks fail (a
    `%`-style placeholder a translation lost): the same checks here, so the setup never is."""
    with SPANISH.open("rb") as f:
        catalog = read_po(f, locale="es")
    problems = [(message.id, [str(e) for e in errors]) for message, errors in catalog.check()]
    assert not problems


def test_translations_keep_their_placeholders() -> None:
    lost = []
    for msgid, entry in _spanish().items():
        sources = [msgid] if isinstance(msgid, str) else list(msgid)
        wanted = set().union(*(_placeholders(s) for s in sources))
        strings = entry.string if isinstance(entry.string, (list, tuple)) else [entry.string]
        for text in strings:
            if text and _placeholders(text) != wanted:
                lost.append((msgid, text))
    assert not lost


@pytest.mark.parametrize(("option", "env", "expected"), [
    ("es", {"LANG": "en_US.UTF-8"}, "es"),
    (None, {"CRM_AUTOMATION_LANG": "es", "LANG": "en_US.UTF-8"}, "es"),
    (None, {"LANG": "es_CO.UTF-8"}, "es"),
    (None, {"LANG": "fr_FR.UTF-8"}, "en"),
    (None, {}, "en"),
    ("en", {"CRM_AUTOMATION_LANG": "es"}, "en"),
])
def test_the_language_is_chosen_in_order(option, env, expected) -> None:
    assert choose_language(option, env) == expected


def test_check_speaks_spanish_and_keeps_its_exit_codes(capsys, monkeypatch) -> None:
    monkeypatch.setenv("LANG", "es_CO.UTF-8")
    monkeypatch.delenv("CRM_AUTOMATION_LANG", raising=False)
    assert main(["check", "--rules", str(ROOT / "rules"), "--mappings",
                 str(ROOT / "mappings")]) == 0
    out = capsys.readouterr().out
    assert "exactamente un" in out and "combinaciones" in out
    assert main(["check", "--lang", "en", "--rules", str(ROOT / "rules"), "--mappings",
                 str(ROOT / "mappings")]) == 0
    assert "exactly one" in capsys.readouterr().out
    broken = ROOT / "tests" / "broken" / "unknown-action-in-workflow"
    assert main(["--lang", "es", "check", "--rules", str(broken / "rules"), "--mappings",
                 str(broken / "mappings")]) == 1
    text = capsys.readouterr().out
    assert "error" in text and "probability.yaml:" in text  # file:line kept in Spanish too


def test_the_spanish_example_rules_are_proved(capsys) -> None:
    spanish = ROOT / "examples" / "es"
    assert main(["check", "--lang", "es", "--rules", str(spanish / "rules"), "--mappings",
                 str(spanish / "mappings")]) == 0
    assert "exactamente un flujo aplica a cada combinación" in capsys.readouterr().out


def test_no_message_is_marked_inside_an_f_string() -> None:
    """Babel cannot see `_("...")` inside an f-string (one token before Python 3.12): such a
    message would never reach the catalog and would show in English whatever the language."""
    import io
    import tokenize

    found = []
    for path in PACKAGE.rglob("*.py"):
        tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
        for tok in tokens:
            text = tok.string
            is_f_string = tok.type == tokenize.STRING and text.lstrip("rbRB")[:1] in "fF"
            if is_f_string and any(f"{p}{call}(" in text for p in "{ (,+"
                                   for call in ("_", "N_", "ngettext", "translate")):
                found.append(f"{path.relative_to(ROOT)}:{tok.start[0]}")
    assert not found, found


def test_the_main_job_in_spanish_end_to_end(tmp_path, monkeypatch, capsys) -> None:
    """What `LANG=es_CO.UTF-8 scripts/try` runs: Spanish messages, money as Bogotá writes it,
    the same exit codes as in English."""
    import re as regex

    monkeypatch.delenv("CRM_AUTOMATION_LANG", raising=False)
    example = ROOT / "examples" / "opportunities.csv"
    config = ["--rules", str(ROOT / "rules"), "--mappings", str(ROOT / "mappings"),
              "--today", "2026-11-26"]
    codes = {}
    for lang in ("en_US.UTF-8", "es_CO.UTF-8"):
        monkeypatch.setenv("LANG", lang)
        codes[lang] = (
            main(["check", "--rules", str(ROOT / "rules"), "--mappings", str(ROOT / "mappings")]),
            main(["simulate", str(example), "--report", str(tmp_path / f"{lang}.html"),
                  *config]),
            main(["forecast", str(example), *config]))
        out = capsys.readouterr().out
        if lang.startswith("es"):
            assert "cambiarían" in out and "con error" in out and "Forecast por mes" in out
            assert regex.search(r"total +│ \d+ +│ \d{1,3}(\.\d{3})+,\d{2} ", out), "es_CO money"
            html = (tmp_path / f"{lang}.html").read_text(encoding="utf-8")
            assert '<html lang="es">' in html and "Tabla de decisión" in html
            assert regex.search(r">\d{1,3}(\.\d{3})+,\d{2}<", html)
        else:
            assert "would change" in out
            assert regex.search(r"total +│ \d+ +│ \d{1,3}(,\d{3})+\.\d{2} ", out), "en_US money"
    assert codes["en_US.UTF-8"] == codes["es_CO.UTF-8"] == (0, 1, 1)


def test_no_module_that_translates_assigns_the_name_of_gettext() -> None:
    """`_ = something` (or `for _ in`) in a module that translates with `_` makes the next
    message call that something: the bug is silent until that line runs."""
    import ast

    found = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        translates = any(isinstance(node, ast.ImportFrom) and any(
            a.asname == "_" for a in node.names) for node in ast.walk(tree))
        if translates:
            found += [f"{path.relative_to(ROOT)}:{node.lineno}" for node in ast.walk(tree)
                      if isinstance(node, ast.Name) and node.id == "_"
                      and isinstance(node.ctx, ast.Store)]
    assert not found, found


def test_a_text_is_english_until_it_is_said_in_spanish() -> None:
    import pickle

    from connector.errors import RecordError, RuleFileError, Text
    from connector.i18n import say, say_error

    inner = Text("the rules define no 'workflows' and no 'probability' weights: add one of them")
    text = Text("{file}: {reason}", file="rules/a.yaml", reason=inner)
    assert text == "rules/a.yaml: " + inner
    assert pickle.loads(pickle.dumps(text)).values == text.values
    spanish = say(inner, "es")
    assert spanish != inner and spanish == _spanish()[inner.template].string  # type: ignore
    assert say(text, "es") == "rules/a.yaml: " + spanish
    assert say("CRM text {stays}", "es") == "CRM text {stays}"
    set_language("es")
    try:
        assert say_error(RuleFileError(inner, "rules/a.yaml", 7)) == "rules/a.yaml:7: " + spanish
        assert say_error(RecordError(inner)) == spanish
        assert str(RecordError(inner)) == inner  # logs and str() stay English
    finally:
        set_language("en")


def test_a_long_list_of_messages_is_said_whole() -> None:
    """A broken rule set with thousands of problems is one error listing them all: each
    still in Spanish, and saying it does not run out of stack."""
    from connector.core.findings import Finding
    from connector.formatting import listed
    from connector.i18n import say

    inner = Text("the rules define no 'workflows' and no 'probability' weights: add one of them")
    findings = [Finding("error", "schema", inner, "rules/a.yaml", n) for n in range(1, 5001)]
    said = say(listed([f.located for f in findings], "\n"), "es").split("\n")
    assert said == [f"rules/a.yaml:{n}: {say(inner, 'es')}" for n in range(1, 5001)]
    assert listed([]) == ""
