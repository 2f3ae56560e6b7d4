"""What `check` reports: one finding per problem, with where it is and, for gaps and
overlaps, a concrete example combination."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from connector.errors import Text

Severity = Literal["error", "warning"]
Kind = Literal[
    "schema", "reference", "overlap", "gap", "unreachable", "monotonicity", "cycle",
    "expression", "template",
]


@dataclass(frozen=True)
class Where:
    """A place in a YAML file; both parts may be unknown (a generated workflow)."""

    file: str | None = None
    line: int | None = None


NOWHERE = Where()


@dataclass(frozen=True)
class Finding:
    severity: Severity
    kind: Kind
    message: str
    file: str | None = None
    line: int | None = None
    rules: tuple[str, ...] = ()
    example: dict[str, str] | None = field(default=None, hash=False)

    @classmethod
    def at(cls, where: Where, severity: Severity, kind: Kind, message: str,
           rules: tuple[str, ...] = (), example: dict[str, str] | None = None) -> Finding:
        return cls(severity, kind, message, where.file, where.line, rules, example)

    def as_json(self) -> dict[str, object]:
        return {
            "severity": self.severity, "kind": self.kind, "message": self.message,
            "file": self.file, "line": self.line, "rules": list(self.rules),
            "example": self.example,
        }

    @property
    def where(self) -> str:
        """`file:line: `, `file: ` or nothing."""
        if not self.file:
            return ""
        return f"{self.file}:{self.line}: " if self.line else f"{self.file}: "

    @property
    def located(self) -> Text:
        """The message after its `file:line: `, as an error that lists findings shows it."""
        return Text("{where}{message}", where=self.where, message=self.message)

    def __str__(self) -> str:
        return f"{self.where}{self.severity}: {self.message}"


def did_you_mean(word: str, choices: object) -> str:
    """' (did you mean 'stage'?)' when a close choice exists, else '' (a value of a message:
    `Text("unknown factor '{name}'{hint}", name=..., hint=did_you_mean(...))`)."""
    import difflib

    names = [str(c) for c in choices]  # type: ignore[attr-defined]
    close = difflib.get_close_matches(str(word), names, n=1, cutoff=0.6)
    if not close:
        lowered = {n.casefold(): n for n in names}
        hit = lowered.get(str(word).casefold())
        close = [hit] if hit else []
    return Text(" (did you mean '{name}'?)", name=close[0]) if close else ""


Rewording = tuple[str, Callable[[re.Match[str]], Text]]


def reworded(said: str, known: Iterable[Rewording]) -> str:
    """Another program's words (PyYAML's, Python's) as our Text when they fully match one of
    `known` (a pattern, and the Text saying the same), so that they can be said in the person's
    language; as they are (English) otherwise. The English never changes."""
    for pattern, text in known:
        if m := re.fullmatch(pattern, said):
            return text(m)
    return said
