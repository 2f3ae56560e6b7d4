"""The template helpers: native values for single expressions, strict variables, a sandbox
that keeps templates away from Python internals, and the variables `check` reports."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from connector.errors import ConfigurationError, RecordError
from connector.i18n import say_error, set_language
from connector.templates import (
    InvalidTemplate,
    TemplateRenderError,
    make_environment,
    render_structure,
    render_value,
    template_variables,
)

VALUES = {"id": "006A", "name": "Big deal", "amount": Decimal("1234.50"),
          "close_date": dt.date(2026, 12, 31), "probability": 90, "owner_email": None,
          "tags": ["a", "b"]}


@pytest.mark.parametrize(("template", "expected"), [
    ("{{ amount }}", Decimal("1234.50")),
    ("  {{ amount }} ", Decimal("1234.50")),
    ("{{- amount -}}", Decimal("1234.50")),
    ("{{ amount * 2 }}", Decimal("2469.00")),
    ("{{ close_date }}", dt.date(2026, 12, 31)),
    ("{{ probability }}", 90),
    ("{{ owner_email }}", None),
    ("{{ tags }}", ["a", "b"]),
])
def test_a_single_expression_keeps_its_native_type(template: str, expected: object) -> None:
    result = render_value(template, VALUES)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(("template", "expected"), [
    ("{{ name }} ({{ amount }})", "Big deal (1234.50)"),
    ("Closes {{ close_date }}", "Closes 2026-12-31"),
    ("{{ amount | string }}", "1234.50"),
    ("to: {{ owner_email }}.", "to: ."),  # a blank field is empty text, not "None"
    ("plain text", "plain text"),
    ("{% for t in tags %}{{ t }}{% endfor %}", "ab"),
])
def test_anything_else_renders_to_text(template: str, expected: str) -> None:
    assert render_value(template, VALUES) == expected


@pytest.mark.parametrize("template", ["{{ amont }}", "Deal {{ amont }}"])
def test_an_unknown_variable_is_an_error_naming_the_template(template: str) -> None:
    with pytest.raises(TemplateRenderError) as caught:
        render_value(template, VALUES)
    assert isinstance(caught.value, RecordError)
    assert repr(template) in str(caught.value)
    assert "'amont' is undefined" in str(caught.value)


@pytest.mark.parametrize("template", [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "x {{ amount.__class__.__init__ }}",
    "{{ name.__class__.__base__ }}",
    "{{ lipsum.__globals__ }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ tags.append('c') }}",  # templates must not change the record the next action reads
])
def test_the_sandbox_refuses_python_internals(template: str) -> None:
    with pytest.raises(TemplateRenderError, match="is unsafe") as caught:
        render_value(template, VALUES)
    assert VALUES["tags"] == ["a", "b"]
    assert "no es seguro" in _spanish(caught.value)  # what an admin who reads Spanish reads


@pytest.mark.parametrize(("template", "spanish"), [
    ("{{ amont }}", "'amont' no está definido"),
    ("{{ owner.title }}", "no tiene el atributo 'title'"),
])
def test_why_a_template_fails_for_a_record_is_said_in_spanish(template, spanish) -> None:
    with pytest.raises(TemplateRenderError) as caught:
        render_value(template, {**VALUES, "owner": {"name": "Ana"}})
    assert spanish not in str(caught.value) and spanish in _spanish(caught.value)


def _spanish(exc: Exception) -> str:
    set_language("es")
    try:
        return say_error(exc)
    finally:
        set_language("en")


def test_a_failing_expression_is_a_record_error() -> None:
    with pytest.raises(TemplateRenderError, match="division by zero"):
        render_value("{{ amount / 0 }}", VALUES)


def test_a_template_that_does_not_parse_is_a_configuration_error() -> None:
    with pytest.raises(InvalidTemplate, match="line 2") as caught:
        render_value("Hello\n{{ name ", VALUES)
    assert isinstance(caught.value, ConfigurationError)
    with pytest.raises(InvalidTemplate):
        template_variables("{% if %}")


def test_render_structure_renders_every_string_and_keeps_the_rest() -> None:
    shape = {"reference": "{{ id }}", "lines": [{"quantity": 1, "unit_price": "{{ amount }}",
                                                 "flags": (True, None)}],
             "note": "{{ name }}!"}

    assert render_structure(shape, VALUES) == {
        "reference": "006A", "note": "Big deal!",
        "lines": [{"quantity": 1, "unit_price": Decimal("1234.50"), "flags": [True, None]}]}


def test_template_variables_are_what_the_template_reads() -> None:
    source = ("{{ name }} {% for t in tags %}{{ t }}{{ loop.index }}{% endfor %}"
              "{% set x = amount %}{{ x }}{{ range(3) | list }}{{ stage | default('?') }}")
    assert template_variables(source) == {"name", "tags", "amount", "stage"}


def test_html_files_are_autoescaped_and_text_is_not(tmp_path: Path) -> None:
    (tmp_path / "mail.html").write_text("<p>{{ name }}</p>")
    (tmp_path / "mail.txt").write_text("{{ name }}")
    env = make_environment(tmp_path)
    values = {"name": "<b>R&D</b>"}

    assert env.get_template("mail.html").render(values) == "<p>&lt;b&gt;R&amp;D&lt;/b&gt;</p>"
    assert env.get_template("mail.txt").render(values) == "<b>R&D</b>"
    assert render_value("{{ name }} x", values) == "<b>R&D</b> x"
