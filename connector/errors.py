"""The connector's errors, grouped by what the caller should do about them.

    ConnectorError
    ├── ConfigurationError   settings or rule files are wrong: stop, tell the admin (exit 2 / 1)
    │   └── RuleFileError    one problem in a YAML file, with file, line and a hint
    ├── RecordError          this record alone fails; the others go on
    ├── RetriableError       may pass: back off and try again (after `retry_after`, if given)
    ├── FatalError           stop the run cleanly and keep the cursor where it is
    └── RefusedInput         a request or message from outside is refused (forged, stale,
                             malformed): answer 4xx or dead-letter it, process nothing

Messages say what to do, and never carry a secret. A message a person reads is a `Text`: its
English words are what `str()`, logs and tests see, and `connector.i18n.say` puts it in the
person's language (Spanish or English) where it is shown.
"""

from __future__ import annotations

import json
from typing import Any


class Text(str):
    """A message to a person: the English text, with its template and values kept apart so that
    it can be said in another language (`connector.i18n.say`). Marked for the catalogs like
    `_()`: `Text("'{field}' is empty", field=name)`. A value may itself be a Text (a reason
    inside a message); it is translated with it. Joining Texts with `+` gives plain English:
    put the parts in the values instead."""

    template: str
    values: dict[str, Any]

    def __new__(cls, template: str, /, **values: Any) -> Text:
        text = super().__new__(cls, template.format(**values) if values else template)
        text.template, text.values = template, values
        return text

    def __reduce__(self) -> tuple[Any, ...]:  # pickled with its template (worker processes)
        return _text, (self.template, self.values)


def _text(template: str, values: dict[str, Any]) -> Text:
    return Text(template, **values)


# A stored message that keeps its template starts with this character, which no person types.
_STORED = "\x1f"
_SCALARS = (str, int, float, bool, type(None))


def stored(message: str) -> str:
    """A message as a state store keeps it (an outbox item's reason): a Text with its
    template and values, so that whoever reads it later reads it in their own language; any
    other text, or a Text whose values are not plain text and numbers, as its English."""
    if isinstance(message, Text):
        plain = _plain(message)
        if plain is not None:
            text = _STORED + json.dumps(plain, ensure_ascii=False, separators=(",", ":"))
            if restored(text) == message:  # the same English words once read back
                return text
    return str(message)


def restored(text: str) -> str:
    """A message as `stored` kept it: the Text again (its English as before), or the text."""
    if not text.startswith(_STORED):
        return text
    try:
        return _built(json.loads(text[1:]))
    except (ValueError, KeyError, TypeError, IndexError):  # not ours after all: as it is
        return text


def _plain(message: Text) -> dict[str, Any] | None:
    values: dict[str, Any] = {}
    for key, value in message.values.items():
        if isinstance(value, Text):
            value = _plain(value)
            if value is None:
                return None
        elif type(value) not in _SCALARS:
            return None
        values[key] = value
    return {"t": message.template, "v": values}


def _built(data: dict[str, Any]) -> Text:
    return Text(data["t"], **{k: _built(v) if isinstance(v, dict) else v
                              for k, v in data["v"].items()})


class ConnectorError(Exception):
    """The root of every error the connector raises on purpose."""

    @property
    def text(self) -> str:
        """The message as raised: a Text when it can be said in the person's language."""
        first = self.args[0] if self.args else ""
        return first if isinstance(first, str) and len(self.args) == 1 else str(self)


class ConfigurationError(ConnectorError):
    """The settings or the files are wrong; nothing can run until an admin fixes them."""


class RuleFileError(ConfigurationError):
    """One problem in a rule or mapping file."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line

    @property
    def where(self) -> str:
        """`file:line: `, `file: ` or nothing: error messages keep it in every language."""
        return f"{self.file}:{self.line}: " if self.file and self.line else (
            f"{self.file}: " if self.file else "")

    def __str__(self) -> str:
        return f"{self.where}{self.message}"


class RecordError(ConnectorError):
    """This record cannot be computed (unknown stage, bad amount, no workflow matches)."""


class RetriableError(ConnectorError):
    """A failure that may pass: a 5xx, a timeout, a locked row, a server that is down.
    `retry_after` is the delay the server asked for (HTTP Retry-After), in seconds, if any."""

    def __init__(self, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FatalError(ConnectorError):
    """The run must stop now (API allowance used up, credentials refused); the cursor is kept."""


class RefusedInput(ConnectorError):
    """A webhook delivery, an approval link or a queue message that is not what it claims to be
    or cannot be read: refuse it, process nothing; trying it again cannot help."""


__all__ = ["ConfigurationError", "ConnectorError", "FatalError", "RecordError", "RefusedInput",
           "RetriableError", "RuleFileError", "Text", "restored", "stored"]
