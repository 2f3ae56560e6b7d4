"""`--help` and the framework's usage errors follow --lang as every other message does: each
command's and option's help text in the catalog and shown in Spanish, English unchanged."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st
from typer import rich_utils

from connector.cli import app, main
from connector.cli_help import USAGE_ERRORS, said_usage_error
from connector.i18n import set_language, translate

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _english_after(monkeypatch) -> Iterator[None]:
    monkeypatch.delenv("CRM_AUTOMATION_LANG", raising=False)
    monkeypatch.setenv("LANG", "en_US.UTF-8")
    yield
    set_language("en")


def _flat(text: str) -> str:
    """What the help says, without rich's frames and line breaks (which depend on the width)."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def _commands() -> list[tuple[list[str], object]]:
    """Every command of the command line with the words that call it, as typer builds it."""
    found = []

    def walk(path: list[str], command) -> None:
        found.append((path, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk([*path, name], sub)

    walk([], typer.main.get_command(app))
    return found


def _help_texts(command) -> list[str]:
    """The command's help, then each option's and argument's (the help option's too)."""
    help_option = command.get_help_option(typer.Context(command))
    return [command.help, *(getattr(p, "help", None) for p in [*command.params, help_option])]


def _help(capsys, *args: str) -> str:
    assert main([*args, "--help"]) == 0
    return _flat(capsys.readouterr().out)


def test_every_command_and_option_has_a_help_text_and_its_spanish() -> None:
    missing, untranslated = [], []
    for path, command in _commands():
        for text in _help_texts(command):
            if not text:
                missing.append(" ".join(path))
            elif translate("es", text) == text:
                untranslated.append(text)
    assert not missing, f"a command or option without help in: {missing}"
    assert not untranslated, f"no Spanish for: {untranslated} (run scripts/messages)"


def test_the_whole_help_is_in_spanish_with_lang_es(capsys) -> None:
    for path, command in _commands():
        shown = _help(capsys, "--lang", "es", *path)
        assert shown.startswith(" ".join(["Uso: crm-automation", *path, "[OPCIONES]"]))
        assert "Opciones" in shown
        assert "Options" not in shown and "OPTIONS" not in shown and "Usage" not in shown
        for text in _help_texts(command):
            assert _flat(translate("es", text)) in shown, (path, text)
            assert _flat(text) not in shown, (path, text)


def test_simulate_help_in_spanish(capsys, monkeypatch) -> None:
    monkeypatch.setenv("LANG", "es_CO.UTF-8")
    shown = _help(capsys, "simulate")
    assert "Simulación sobre un export: qué flujo recibe cada registro" in shown
    assert "La carpeta de reglas. [predeterminado: rules]" in shown
    assert "Argumentos" in shown and "Arguments" not in shown
    assert "Muestra este mensaje y termina." in shown
    assert "Dry run" not in shown and "The rules folder" not in shown
    top = _help(capsys, "--lang", "es")
    assert "Comandos" in top and "Valida cada archivo" in top and "Commands" not in top


def test_english_help_is_as_written(capsys, monkeypatch) -> None:
    monkeypatch.setenv("LANG", "es_CO.UTF-8")
    _help(capsys, "simulate")  # a Spanish run first: nothing of it stays for the next
    for path, command in _commands():
        shown = _help(capsys, "--lang", "en", *path)
        assert shown.startswith("Usage: crm-automation") and "Options" in shown
        assert "Opciones" not in shown
        for text in _help_texts(command):
            assert _flat(text) in shown, (path, text)
    assert rich_utils.OPTIONS_PANEL_TITLE == "Options"


@pytest.mark.parametrize(("args", "spanish", "english"), [
    (["simulate"], "Falta el argumento 'input'.", "Missing argument 'input'."),
    (["diff", str(ROOT / "examples" / "opportunities.csv")], "Falta la opción '--before'.",
     "Missing option '--before'."),
    (["check", "--bogus"], "No existe la opción --bogus", "No such option: --bogus"),
    (["check", "--format", "xml"],
     "Valor no válido para '--format': 'xml' no está entre 'text', 'json'.",
     "Invalid value for '--format': Value error, 'xml' is not one of 'text', 'json'."),
    (["simulate", str(ROOT / "no-such-export.csv")], "el archivo", "does not exist"),
    (["serve", "--port", "abc"], "debe ser un número entero", "Input should be a valid integer"),
    (["history", "nope"], "No existe el comando 'nope'.", "No such command 'nope'."),
    (["check", "--rules", str(ROOT / "no-such-folder")], "Valor no válido para --rules: ",
     "Invalid value for --rules: "),
])
def test_usage_errors_in_spanish_exit_2(capsys, args, spanish, english) -> None:
    assert main(["--lang", "es", *args]) == 2
    said = _flat(capsys.readouterr().err)
    assert spanish in said and english not in said
    assert said.startswith("Uso: crm-automation") and "Para ver la ayuda, use" in said
    assert main(["--lang", "en", *args]) == 2
    said = _flat(capsys.readouterr().err)
    assert english in said and spanish not in said and said.startswith("Usage: crm-automation")


def test_the_exit_codes_stay(capsys) -> None:
    assert main(["--lang", "es"]) == 2  # no command: the help, as a usage error
    assert "Comandos" in capsys.readouterr().out
    assert main(["--lang", "es", "check", "--rules", str(ROOT / "rules"), "--mappings",
                 str(ROOT / "mappings")]) == 0
    broken = ROOT / "tests" / "broken" / "unknown-action-in-workflow"
    assert main(["--lang", "es", "check", "--rules", str(broken / "rules"), "--mappings",
                 str(broken / "mappings")]) == 1


_VALUE = st.text(st.characters(whitelist_categories=("L", "N"), whitelist_characters="'-_"),
                 min_size=1, max_size=12)


@given(st.sampled_from(USAGE_ERRORS), st.data())
def test_a_usage_error_is_said_with_its_values(template, data) -> None:
    names = re.findall(r"{(\w+)}", template)
    values = {name: data.draw(_VALUE, label=name) for name in names}
    english = template.format(**values)
    set_language("es")
    try:
        assert said_usage_error(english) == translate("es", template).format(**values)
    finally:
        set_language("en")
    assert said_usage_error(english) == english


@given(st.text(max_size=60))
def test_in_english_any_message_stays_as_written(message) -> None:
    assert said_usage_error(message) == message


def test_a_message_it_does_not_list_stays_as_written() -> None:
    set_language("es")
    try:
        for message in ("no existe la carpeta /tmp/x", "Error: something else entirely."):
            assert said_usage_error(message) == message
    finally:
        set_language("en")
