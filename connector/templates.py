"""Jinja2 templates over an opportunity's canonical fields: one sandboxed environment, values
rendered with their native types kept, and the variables a template uses (for `check`).

Action emails, HTTP requests and `mappings/erp.yaml` all render through here, so the sandbox and
the strictness are decided once: an unknown variable is an error, never an empty string, and a
template cannot reach Python internals (`{{ ''.__class__ }}`).

`${NAME}` in a template's own text reads the environment variable NAME (a URL, a token). It
becomes a lookup when the template is parsed, so only what the admin wrote can name a variable:
a value rendered into the template (an opportunity named `Acme ${WEBHOOK_SECRET}`) stays text,
and the variable's value is never read as a template. Rendered without an environment (the dry
run's previews), `${NAME}` stays as written: a preview never shows a secret."""

from __future__ import annotations

import decimal
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import StrictUndefined, Undefined, meta, nodes, pass_context
from jinja2.ext import Extension
from jinja2.lexer import Token, TokenStream
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment

from connector.core.findings import Rewording, reworded
from connector.errors import ConfigurationError, RecordError, Text
from connector.formatting import format_day, format_money, format_percent_value

__all__ = [
    "ENV_REFERENCE",
    "InvalidTemplate",
    "TemplateRenderError",
    "make_environment",
    "render_context",
    "render_problem",
    "render_structure",
    "render_value",
    "resolve",
    "syntax_problem",
    "template_variables",
]


class InvalidTemplate(ConfigurationError):
    """A template that does not parse: every record would fail, so an admin must fix it."""

    def __init__(self, template: str, problem: str) -> None:
        super().__init__(Text("template {template}: {problem}", template=_short(template),
                              problem=problem))
        self.template = template
        self.problem = problem


class TemplateRenderError(RecordError):
    """A template that parses but fails for this record (a missing field, a bad value)."""

    def __init__(self, template: str, problem: str) -> None:
        super().__init__(Text("template {template}: {problem}", template=_short(template),
                              problem=problem))
        self.template = template
        self.problem = problem


def _blank_none(value: Any) -> Any:
    # A blank CRM field is None; "Approval needed: None" helps nobody, an empty string does.
    return "" if value is None else value


ENV_REFERENCE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")
_ENVIRON = "__environ__"  # the context variable `${NAME}` reads; set last, so no field hides it


class _Environ:
    """What `${NAME}` reads while rendering: the environment, or, without one, the reference
    itself."""

    def __init__(self, environ: Mapping[str, str] | None) -> None:
        self._environ = environ

    def __getitem__(self, name: str) -> str:
        if self._environ is None:
            return f"${{{name}}}"
        value = self._environ.get(name)
        if not value:
            raise ConfigurationError(Text("set {name}: the rules refer to it as ${{{name}}}",
                                          name=name))
        return value


class _EnvironReferences(Extension):
    """Turns `${NAME}` in a template's text into `{{ __environ__['NAME'] }}`, token by token,
    so `{{ "${NAME}" }}` (inside an expression) and rendered values are left alone."""

    def filter_stream(self, stream: TokenStream) -> Iterable[Token]:
        for token in stream:
            if token.type != "data" or "${" not in token.value:
                yield token
                continue
            yield from _split(token)


def _split(token: Token) -> Iterator[Token]:
    line, start = token.lineno, 0
    for match in ENV_REFERENCE.finditer(token.value):
        text = token.value[start:match.start()]
        if text:
            yield Token(line, "data", text)
            line += text.count("\n")
        yield Token(line, "variable_begin", "{{")
        yield Token(line, "name", _ENVIRON)
        yield Token(line, "lbracket", "[")
        yield Token(line, "string", match.group(1))
        yield Token(line, "rbracket", "]")
        yield Token(line, "variable_end", "}}")
        start = match.end()
    if token.value[start:]:
        yield Token(line, "data", token.value[start:])


def resolve(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`${NAME}` read from `environ` in a text that is not a template (a URL); left as
    written without an environment."""
    lookup = _Environ(environ)
    return ENV_REFERENCE.sub(lambda match: lookup[match.group(1)], text)


def render_context(values: Mapping[str, Any], environ: Mapping[str, str] | None = None
                   ) -> dict[str, Any]:
    """What a template renders over: the record's values, and where `${NAME}` reads from."""
    return {**values, _ENVIRON: _Environ(environ)}


def make_environment(search_path: Path | None = None,
                     locale: str | None = None) -> SandboxedEnvironment:
    """The one environment every template renders in. `search_path` lets file templates
    (`template: templates/approval.txt`) load; HTML files are autoescaped, text never is.
    `locale` (the mapping's) is what the `money`, `percent` and `date` filters format in."""
    # Immutable: a template must not change the record's lists and dicts that the next action
    # (or the write-back) reads.
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(search_path)) if search_path else None,
        undefined=StrictUndefined,
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "htm", "xml"), default_for_string=False, default=False),
        finalize=_blank_none,
        keep_trailing_newline=True,
        extensions=[_EnvironReferences],
    )
    env.filters.update(_filters(locale))
    # A global, so `check` does not take it for a field, and a rendering given no environment
    # shows `${NAME}` as written.
    env.globals[_ENVIRON] = _Environ(None)
    return env


def _filters(locale: str | None) -> dict[str, Callable[..., str]]:
    """`{{ amount | money }}` (in the record's `currency` when it has one, or
    `money('USD')`), `{{ probability | percent }}`, `{{ close_date | date }}` or
    `date('long')`: formatted in the mapping's locale."""

    @pass_context
    def money(context: Context, value: Any, currency: str | None = None) -> str:
        found = context.get("currency")
        return format_money(value, locale, currency or (found if isinstance(found, str) else None))

    def percent(value: Any) -> str:
        return format_percent_value(value, locale)

    def date(value: Any, style: str = "medium") -> str:
        return format_day(value, locale, style)

    return {"money": money, "percent": percent, "date": date}


@lru_cache(maxsize=16)
def _environment(locale: str | None) -> SandboxedEnvironment:
    return make_environment(locale=locale)


_ENV = _environment(None)


def _short(template: str, limit: int = 60) -> str:
    text = template if len(template) <= limit else template[: limit - 3] + "..."
    return repr(text)


# Jinja's words for why a template does not parse, for the usual mistakes; another stays in
# Jinja's English.
_JINJA_SAYS: tuple[Rewording, ...] = (
    (r"unexpected '(.+)'", lambda m: Text("unexpected '{found}'", found=m[1])),
    (r"unexpected char (.+) at (\d+)",
     lambda m: Text("unexpected char {found} at {position}", found=m[1], position=m[2])),
    (r"unexpected end of template, expected '(.+)'\.",
     lambda m: Text("unexpected end of template, expected '{expected}'.", expected=m[1])),
    (r"expected token '(.+)', got '(.+)'",
     lambda m: Text("expected token '{expected}', got '{found}'", expected=m[1], found=m[2])),
    (r"Expected an expression, got '(.+)'",
     lambda m: Text("Expected an expression, got '{found}'", found=m[1])),
    (r"Encountered unknown tag '(.+)'\.",
     lambda m: Text("Encountered unknown tag '{tag}'.", tag=m[1])),
    (r"Unexpected end of template\. Jinja was looking for the following tags: (.+)\. The "
     r"innermost block that needs to be closed is '(.+)'\.",
     lambda m: Text("Unexpected end of template. Jinja was looking for the following tags: "
                    "{tags}. The innermost block that needs to be closed is '{block}'.",
                    tags=m[1], block=m[2])),
)


def syntax_problem(exc: jinja2.TemplateSyntaxError) -> str:
    """Why a template does not parse, said in the person's language where it can be."""
    return reworded(exc.message or type(exc).__name__, _JINJA_SAYS)


# What Jinja says when a template fails for one record: a name it lacks, a refused attribute.
_JINJA_RENDER_SAYS: tuple[Rewording, ...] = (
    (r"'(.+)' is undefined", lambda m: Text("'{name}' is undefined", name=m[1])),
    (r"'(.+)' has no attribute '(.+)'",
     lambda m: Text("'{owner}' has no attribute '{name}'", owner=m[1], name=m[2])),
    (r"access to attribute '(.+)' of '(.+)' object is unsafe\.",
     lambda m: Text("access to attribute '{name}' of '{owner}' object is unsafe.", name=m[1],
                    owner=m[2])),
)


def render_problem(exc: jinja2.TemplateError) -> str:
    """Why a template fails for a record, said in the person's language where it can be."""
    return reworded(exc.message or type(exc).__name__, _JINJA_RENDER_SAYS)


def _parse(source: str) -> nodes.Template:
    try:
        return _ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise InvalidTemplate(source, Text("line {line}: {problem}", line=exc.lineno,
                                           problem=syntax_problem(exc))) from None


def _single_expression(tree: nodes.Template) -> nodes.Expr | None:
    """The expression of a template that is one `{{ ... }}` and nothing else (blank text
    around it aside), else None."""
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    parts = [n for n in tree.body[0].nodes
             if not (isinstance(n, nodes.TemplateData) and not n.data.strip())]
    if len(parts) != 1 or isinstance(parts[0], nodes.TemplateData):
        return None
    return parts[0]


@lru_cache(maxsize=1024)
def _compile(source: str, locale: str | None = None) -> Callable[[Mapping[str, Any]], Any]:
    tree = _parse(source)
    expr = _single_expression(tree)
    env = _environment(locale)
    if expr is None:
        template = env.from_string(tree)
        return lambda values: template.render(values)
    # The same trick as Environment.compile_expression: assign the expression to a variable
    # and read it back, so "{{ amount }}" yields the Decimal, not its text. It is compiled by
    # the sandboxed environment, so attribute access is checked exactly as in a rendering.
    body = [nodes.Assign(nodes.Name("result", "store"), expr, lineno=1)]
    native = env.from_string(nodes.Template(body, lineno=1))

    def evaluate(values: Mapping[str, Any]) -> Any:
        context = native.new_context(dict(values))
        for _ in native.root_render_func(context):
            pass
        result = context.vars["result"]
        if isinstance(result, Undefined):
            # StrictUndefined only raises when used; a bare assignment does not use it.
            result._fail_with_undefined_error()
        return result

    return evaluate


def render_value(template: str, values: Mapping[str, Any],
                 environ: Mapping[str, str] | None = None, locale: str | None = None) -> Any:
    """Render one template string over canonical values, `${NAME}` read from `environ` (left as
    written without it), the `money`, `percent` and `date` filters in `locale`. A template that
    is a single expression keeps its native type ("{{ amount }}" -> Decimal, "{{ close_date }}"
    -> date); anything else renders to text. Raises TemplateRenderError (this record) or
    InvalidTemplate (the template itself), both naming the template, or ConfigurationError for
    a `${NAME}` that is not set."""
    render = _compile(template, locale)
    try:
        return render(render_context(values, environ))
    except jinja2.TemplateError as exc:  # undefined variables and sandbox refusals
        raise TemplateRenderError(template, render_problem(exc)) from None
    except ZeroDivisionError:  # decimal.DivisionByZero too, whose own text is unreadable
        raise TemplateRenderError(template, Text("division by zero")) from None
    except decimal.DecimalException as exc:
        raise TemplateRenderError(template, Text("not a valid number ({error})",
                                                 error=type(exc).__name__)) from None
    except (ArithmeticError, TypeError, ValueError, LookupError) as exc:
        raise TemplateRenderError(template, f"{type(exc).__name__}: {exc}") from None


def render_structure(obj: Any, values: Mapping[str, Any],
                     environ: Mapping[str, str] | None = None, locale: str | None = None) -> Any:
    """Render every string in nested dicts and lists; keys and other scalars stay as they
    are (a YAML `quantity: 1` stays the int 1)."""
    if isinstance(obj, str):
        return render_value(obj, values, environ, locale)
    if isinstance(obj, Mapping):
        return {key: render_structure(value, values, environ, locale)
                for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [render_structure(item, values, environ, locale) for item in obj]
    return obj


def template_variables(source: str) -> set[str]:
    """The variables a template reads from the record (Jinja's own globals such as `range`
    left out). Raises InvalidTemplate when it does not parse."""
    return set(meta.find_undeclared_variables(_parse(source))) - set(_ENV.globals)
