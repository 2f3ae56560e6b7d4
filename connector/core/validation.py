"""Pydantic's validation errors in an admin's words (and so in Spanish too): what a value of
the wrong type was expected to be, and what a constraint wants. Used for the rule and mapping
files and for the settings."""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from typing import Any

from connector.errors import Text

__all__ = ["EXPECTED", "constraint", "either"]

# What each pydantic type error expects, in an admin's words.
EXPECTED = {
    "string_type": Text("text"), "bool_type": Text("true/false"),
    "bool_parsing": Text("true/false"), "int_type": Text("a number"),
    "int_parsing": Text("a number"), "float_type": Text("a number"),
    "float_parsing": Text("a number"), "decimal_type": Text("a number"),
    "decimal_parsing": Text("a number"), "dict_type": Text("a set of keys"),
    "list_type": Text("a list"), "model_type": Text("a set of keys"),
    "model_attributes_type": Text("a set of keys"),
}


def either(words: Sequence[str]) -> str:
    """'text, true/false or a number', with the 'or' in the language it is said in."""
    if len(words) == 1:
        return words[0]
    listed = reduce(lambda a, b: Text("{first}, {then}", first=a, then=b), words[:-1])
    return Text("{some} or {last}", some=listed, last=words[-1])


def constraint(kind: str, ctx: dict[str, Any]) -> Text | None:
    """What a constraint of the schema wants, for the error types the rule and mapping files
    can meet; None for another type (its message is pydantic's, in English)."""
    if kind == "greater_than":
        return Text("must be greater than {limit}", limit=_plain(ctx["gt"]))
    if kind == "greater_than_equal":
        return Text("must be {limit} or more", limit=_plain(ctx["ge"]))
    if kind == "less_than":
        return Text("must be less than {limit}", limit=_plain(ctx["lt"]))
    if kind == "less_than_equal":
        return Text("must be {limit} or less", limit=_plain(ctx["le"]))
    if kind in ("too_short", "string_too_short") and ctx.get("min_length") == 1:
        return Text("is empty: give at least one")
    if kind in ("too_short", "string_too_short"):
        return Text("needs at least {count}, not {actual}", count=ctx["min_length"],
                    actual=ctx.get("actual_length", "?"))
    if kind in ("too_long", "string_too_long"):
        return Text("takes at most {count}, not {actual}", count=ctx["max_length"],
                    actual=ctx.get("actual_length", "?"))
    if kind == "finite_number":
        return Text("must be a finite number")
    if kind == "int_from_float":
        return Text("must be a whole number")
    if kind == "value_error":  # our validators' own words (schema.py raises them as Text)
        reason = getattr(ctx.get("error"), "args", None) or (None,)
        return reason[0] if isinstance(reason[0], Text) else None
    return None


def _plain(limit: Any) -> Any:
    """100 rather than 100.0: a float field's bound as a person writes it."""
    return int(limit) if isinstance(limit, float) and limit.is_integer() else limit
