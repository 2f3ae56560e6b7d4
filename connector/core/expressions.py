"""The safe formula language of `computed`, `set: "= ..."` and trigger conditions.

A formula is parsed and checked once, when the rule files load (unknown names, unknown functions
and anything beyond the small language are load errors), then evaluated many times by
`simpleeval` over the names we allow. Python's `ast` gives the parse; our own walk refuses every
node outside the language before simpleeval ever sees it, so `__import__('os')` or
`amount.__class__` never reach an evaluator.

Numbers are `Decimal` (literals too), so money never passes through float. A blank value
propagates as blank through arithmetic and comparisons; the date helpers need a date and fail
the record without one (wrap the argument in `coalesce(...)` to choose a default instead).
"""

from __future__ import annotations

import ast
import datetime as dt
import math
import operator as op
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, DivisionByZero, InvalidOperation
from typing import Any

from simpleeval import SimpleEval

from connector.core.findings import Rewording, did_you_mean, reworded
from connector.errors import RecordError, Text

RESERVED = frozenset({"rule", "won", "lost", "today"})

# How large a formula may be. Deeper nesting than this is unreadable and, compiled for the hot
# path, would exceed Python's own limits (60 terms of `a + b + ...` did); a longer formula
# belongs in several computed fields.
MAX_DEPTH = 32          # operators and calls nested in one another
MAX_NODES = 2000        # names, literals, operators and calls in all
MAX_LENGTH = 20_000     # characters


class ExpressionError(ValueError):
    """A formula that cannot be accepted; the message says why and what to write instead."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text  # said in the person's language where it is shown


# --- blank-propagating operators -------------------------------------------------------------

def _number(x: Any) -> Any:
    """Python numbers as Decimal: a record read from JSON may carry an int or a float, and
    neither may meet text (`'ab' * 10**9` would build a string of a billion characters) nor
    bring float error into money."""
    if isinstance(x, bool):
        return x
    if isinstance(x, int):
        return Decimal(x)
    if isinstance(x, float):
        return Decimal(repr(x))
    return x


def _arithmetic(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Blank in, blank out; numbers as Decimal."""
    def apply(a: Any, b: Any) -> Any:
        if a is None or b is None:
            return None
        return fn(_number(a), _number(b))
    return apply


def _blank_safe(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if a is None or b is None:
            return None
        return fn(a, b)
    return apply


def _div(a: Any, b: Any) -> Any:
    if isinstance(b, Decimal) and b == 0:
        raise ZeroDivisionError  # Decimal says InvalidOperation for 0 / 0; it is the same error
    return a / b


def _mod(a: Any, b: Any) -> Any:
    if isinstance(a, str):  # `'%999999999s' % x` would be printf formatting, not a remainder
        raise TypeError("unsupported operand type(s) for %: text")
    if isinstance(b, Decimal) and b == 0:
        raise ZeroDivisionError
    return a % b


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, dt.date) and isinstance(b, (int, Decimal)):
        return a + dt.timedelta(days=int(b))
    return a + b


def _sub(a: Any, b: Any) -> Any:
    if isinstance(a, dt.date) and isinstance(b, (int, Decimal)):
        return a - dt.timedelta(days=int(b))
    if isinstance(a, dt.date) and isinstance(b, dt.date):
        return (a - b).days
    return a - b


def _contains(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    return a in b


def _not_contains(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    return a not in b


def _not(a: Any) -> Any:
    return None if a is None else not a


def _neg(a: Any) -> Any:
    return None if a is None else -_number(a)


OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: _arithmetic(_add),
    ast.Sub: _arithmetic(_sub),
    ast.Mult: _arithmetic(op.mul),
    ast.Div: _arithmetic(_div),
    ast.Mod: _arithmetic(_mod),
    ast.Eq: op.eq,
    ast.NotEq: op.ne,
    ast.Lt: _blank_safe(op.lt),
    ast.LtE: _blank_safe(op.le),
    ast.Gt: _blank_safe(op.gt),
    ast.GtE: _blank_safe(op.ge),
    ast.In: _contains,
    ast.NotIn: _not_contains,
    ast.Not: _not,
    ast.USub: _neg,
    ast.UAdd: lambda a: a,
}


# --- functions --------------------------------------------------------------------------------

def _need_date(value: Any, fname: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if value is None:
        raise RecordError(Text("{function}() needs a date and got an empty value",
                               function=fname))
    raise RecordError(Text("{function}() needs a date and got {value!r}", function=fname,
                           value=value))


def _round(x: Any, places: Any = 0) -> Any:
    if x is None:
        return None
    x, places = _number(x), _number(places)
    if not isinstance(x, Decimal):
        raise RecordError(Text("round() needs a number and got {value!r}", value=x))
    if not isinstance(places, Decimal) or places != places.to_integral_value():
        raise RecordError(Text("round(x, places): places must be a whole number, not {places!r}",
                               places=places))
    try:
        return x.quantize(Decimal(1).scaleb(-int(places)), rounding=ROUND_HALF_UP)
    except InvalidOperation:  # more digits than Decimal keeps (28)
        raise RecordError(Text("round(): cannot keep {places} decimal places of {value}",
                               places=int(places), value=x)) from None


def _min(*xs: Any) -> Any:
    present = [x for x in xs if x is not None]
    return min(present) if present else None


def _max(*xs: Any) -> Any:
    present = [x for x in xs if x is not None]
    return max(present) if present else None


def _abs(x: Any) -> Any:
    return None if x is None else abs(_number(x))


def _coalesce(*xs: Any) -> Any:
    for x in xs:
        if x is not None and x != "":
            return x
    return None


def _date(text: Any) -> dt.date:
    try:
        return dt.date.fromisoformat(str(text))
    except ValueError:
        raise RecordError(Text("date({text!r}): expected 'YYYY-MM-DD'", text=text)) from None


def _days_between(a: Any, b: Any) -> int:
    return (_need_date(b, "days_between") - _need_date(a, "days_between")).days


def _month(d: Any) -> str:
    return _need_date(d, "month").strftime("%Y-%m")


def _business_days_between(a: Any, b: Any) -> int:
    """Monday-to-Friday days from a to b (b excluded), negative when b is before a."""
    start, end = _need_date(a, "business_days_between"), _need_date(b, "business_days_between")
    sign = 1
    if end < start:
        start, end, sign = end, start, -1
    days = (end - start).days
    weeks, rest = divmod(days, 7)
    count = weeks * 5
    for i in range(rest):
        if (start.weekday() + i) % 7 < 5:
            count += 1
    return sign * count


@dataclass(frozen=True)
class _Function:
    fn: Callable[..., Any]
    min_args: int
    max_args: int | None  # None: any number


FUNCTIONS: dict[str, _Function] = {
    "round": _Function(_round, 1, 2),
    "min": _Function(_min, 1, None),
    "max": _Function(_max, 1, None),
    "abs": _Function(_abs, 1, 1),
    "coalesce": _Function(_coalesce, 1, None),
    "date": _Function(_date, 1, 1),
    "days_between": _Function(_days_between, 2, 2),
    "business_days_between": _Function(_business_days_between, 2, 2),
    "month": _Function(_month, 1, 1),
    # Shorthands for escalation rules, rewritten at parse time to read `today`:
    # days_since(d) is days_between(d, today); business_days_since(d) likewise.
    "days_since": _Function(_days_between, 1, 1),
    "business_days_since": _Function(_business_days_between, 1, 1),
}
_SINCE = {"days_since": "days_between", "business_days_since": "business_days_between"}

CONSTANTS: dict[str, Any] = {"true": True, "false": False, "True": True, "False": False,
                             "none": None, "None": None, "null": None}


# --- parse and check once -----------------------------------------------------------------------

_ALLOWED = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Name,
    ast.Constant, ast.Call, ast.List, ast.Tuple, ast.Load,
    *OPERATORS.keys(), ast.And, ast.Or,
)

_WHY_NOT = {
    ast.Attribute: Text("attribute access ('.') is not allowed"),
    ast.Subscript: Text("subscripts ('[...]') are not allowed"),
    ast.Lambda: Text("lambda is not allowed"),
    ast.Pow: Text("'**' is not allowed; multiply instead"),
    ast.FloorDiv: Text("'//' is not allowed; use round(a / b)"),
    ast.Is: Text("'is' is not allowed; use '=='"),
    ast.IsNot: Text("'is not' is not allowed; use '!='"),
    ast.NamedExpr: Text("':=' is not allowed"),
}


class _Evaluator(SimpleEval):  # type: ignore[misc]
    """simpleeval with our operators and functions, and literal lists for `in [...]`."""

    def __init__(self) -> None:
        super().__init__(operators=OPERATORS,
                         functions={n: f.fn for n, f in FUNCTIONS.items()}, names={})
        self.nodes[ast.List] = self._eval_sequence
        self.nodes[ast.Tuple] = self._eval_sequence

    def _eval_sequence(self, node: ast.List | ast.Tuple) -> tuple[Any, ...]:
        return tuple(self._eval(e) for e in node.elts)


class _OrBlank:
    """A record's values where a name it lacks is blank. Every name was checked against the
    rule set when the formula loaded, so a missing one is a field this record has no value for
    (one that only another workflow sets), not a typo."""

    __slots__ = ("values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = values

    def __getitem__(self, name: str) -> Any:
        return self.values.get(name)


_local = threading.local()


def _evaluator() -> _Evaluator:
    ev = getattr(_local, "evaluator", None)
    if ev is None:
        ev = _local.evaluator = _Evaluator()
    return ev


@dataclass(frozen=True, eq=False)
class Formula:
    """A checked formula: evaluate it as often as you like."""

    source: str
    names: frozenset[str]
    _tree: ast.AST

    def evaluate(self, names: Mapping[str, Any]) -> Any:
        ev = _evaluator()
        ev.names = _OrBlank(names)
        try:
            return ev.eval(self.source, previously_parsed=self._tree)
        except RecordError as exc:  # a function refused a value: say in which formula
            raise RecordError(Text("{reason}, in '{formula}'", reason=exc.text,
                                   formula=self.source)) from None
        except (ZeroDivisionError, DivisionByZero):
            raise RecordError(Text("division by zero in '{formula}'",
                                   formula=self.source)) from None
        except (TypeError, InvalidOperation, ValueError, ArithmeticError) as exc:
            raise RecordError(Text("cannot compute '{formula}': {reason}", formula=self.source,
                                   reason=_plain(exc))) from None

    @property
    def uses_today(self) -> bool:
        return "today" in self.names


def _plain(exc: Exception) -> str:
    text = str(exc)
    if any(phrase in text for phrase in ("unsupported operand", "not supported between",
                                         "can only concatenate", "can't multiply sequence")):
        return Text("a value has the wrong type (text where a number or date is needed?)")
    return text


def parse_formula(source: str, known: Iterable[str]) -> Formula:
    """Parse and check a formula; `known` are the names it may read. Raises ExpressionError."""
    text = source.strip()
    if text.startswith("="):
        text = text[1:].strip()
    if not text:
        raise ExpressionError(Text("the formula is empty"))
    if len(text) > MAX_LENGTH:
        raise _too_large(text, Text("{length} characters long; the limit is {limit}",
                                    length=len(text), limit=MAX_LENGTH))
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        problem = reworded(exc.msg, _PYTHON_SAYS)
        if exc.offset:
            raise ExpressionError(Text("formula '{formula}' does not parse at column {column}: "
                                       "{problem}", formula=_short(text), column=exc.offset,
                                       problem=problem)) from None
        raise ExpressionError(Text("formula '{formula}' does not parse: {problem}",
                                   formula=_short(text), problem=problem)) from None
    except (RecursionError, MemoryError):
        raise _too_large(text, Text("nested too deep to read; the limit is {limit}",
                                    limit=MAX_DEPTH)) from None
    _check_size(tree, text)
    known_set = set(known)
    used: set[str] = set()
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        _check_node(node, text, known_set, used, called)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id in _SINCE:
            node.func.id = _SINCE[node.func.id]
            node.args.append(ast.Name(id="today", ctx=ast.Load()))
            used.add("today")
    body = _decimal_literals(tree.body)
    return Formula(text, frozenset(used), body)


# Python's words for why a formula does not parse, for the mistakes a formula has; another
# stays in Python's English.
_PYTHON_SAYS: tuple[Rewording, ...] = (
    (r"invalid syntax", lambda m: Text("invalid syntax")),
    (r"invalid syntax\. Perhaps you forgot a comma\?",
     lambda m: Text("invalid syntax. Perhaps you forgot a comma?")),
    (r"'(.)' was never closed", lambda m: Text("'{bracket}' was never closed", bracket=m[1])),
    (r"unmatched '(.)'", lambda m: Text("unmatched '{bracket}'", bracket=m[1])),
    (r"closing parenthesis '(.)' does not match opening parenthesis '(.)'",
     lambda m: Text("closing parenthesis '{closing}' does not match opening parenthesis "
                    "'{opening}'", closing=m[1], opening=m[2])),
    (r"unterminated string literal \(detected at line (\d+)\)",
     lambda m: Text("unterminated string literal (detected at line {line})", line=m[1])),
    (r"invalid decimal literal", lambda m: Text("invalid decimal literal")),
    (r"invalid character '(.)' \((U\+[0-9A-F]+)\)",
     lambda m: Text("invalid character '{character}' ({code})", character=m[1], code=m[2])),
    (r"expected 'else' after 'if' expression",
     lambda m: Text("expected 'else' after 'if' expression")),
)


def _short(text: str) -> str:
    return text if len(text) <= 80 else f"{text[:60]}...{text[-15:]}"


def _too_large(text: str, why: Text) -> ExpressionError:
    return ExpressionError(Text("formula '{formula}' is {why}: split it into computed fields",
                                formula=_short(text), why=why))


def _check_size(tree: ast.AST, text: str) -> None:
    """Refuse a formula beyond MAX_DEPTH or MAX_NODES, walking it without recursion (the
    checks and rewrites after this one recurse)."""
    nodes = 0
    todo: list[tuple[ast.AST, int]] = [(tree, 0)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, ast.expr):
            depth += 1
            nodes += 1
            if depth > MAX_DEPTH:
                raise _too_large(text, Text("nested more than {limit} deep", limit=MAX_DEPTH))
            if nodes > MAX_NODES:
                raise _too_large(text, Text("more than {limit} terms", limit=MAX_NODES))
        todo.extend((child, depth) for child in ast.iter_child_nodes(node))


def _check_node(node: ast.AST, text: str, known: set[str], used: set[str],
                called: set[int]) -> None:
    if not isinstance(node, _ALLOWED):
        why = _WHY_NOT.get(type(node)) or Text("'{node}' is not part of the formula language",
                                               node=type(node).__name__)
        raise ExpressionError(_formula_problem(text, why))
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) and type(node.func) in _WHY_NOT:
            # `__import__('os').system(...)`, `(lambda: 1)()`: say what is wrong with the callee
            raise ExpressionError(_formula_problem(text, _WHY_NOT[type(node.func)]))
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise ExpressionError(_formula_problem(text, Text(
                "unknown function '{name}'{hint}; the functions are {functions}", name=name,
                hint=did_you_mean(name, FUNCTIONS), functions=", ".join(sorted(FUNCTIONS)))))
        if node.keywords:
            raise ExpressionError(_formula_problem(text, Text(
                "{function}() takes no named arguments", function=node.func.id)))
        spec = FUNCTIONS[node.func.id]
        n = len(node.args)
        if n < spec.min_args or (spec.max_args is not None and n > spec.max_args):
            want = (Text("{function}() takes {count} arguments, got {got}", count=spec.min_args,
                         function=node.func.id, got=n) if spec.max_args == spec.min_args else
                    Text("{function}() takes {count} or more arguments, got {got}",
                         count=spec.min_args, function=node.func.id, got=n)
                    if spec.max_args is None else
                    Text("{function}() takes {least} to {most} arguments, got {got}",
                         least=spec.min_args, most=spec.max_args, function=node.func.id, got=n))
            raise ExpressionError(_formula_problem(text, want))
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise ExpressionError(_formula_problem(text, Text("'*' arguments are not allowed")))
    elif isinstance(node, ast.Name):
        if id(node) in called:
            return  # the Call branch has checked it
        if node.id in CONSTANTS:
            return
        if node.id.startswith("_") or node.id not in known:
            raise ExpressionError(_formula_problem(text, Text(
                "unknown name '{name}'{hint}", name=node.id, hint=did_you_mean(node.id, known))))
        used.add(node.id)
    elif (isinstance(node, ast.Constant) and node.value is not None
          and not isinstance(node.value, (str, int, float, bool))):
        raise ExpressionError(_formula_problem(text, Text("literal {value!r} is not allowed",
                                                          value=node.value)))
    elif isinstance(node, ast.Constant) and isinstance(node.value, float) and (
            not math.isfinite(node.value)):
        raise ExpressionError(_formula_problem(text, Text(
            "a number is too large to compute with")))


def _formula_problem(text: str, why: Text) -> Text:
    return Text("formula '{formula}': {why}", formula=_short(text), why=why)


def _decimal_literals(node: ast.expr) -> ast.expr:
    """Turn float literals into Decimal (0.1 stays exactly 0.1) and constants into values."""

    class Rewrite(ast.NodeTransformer):
        def visit_Constant(self, n: ast.Constant) -> ast.AST:
            if isinstance(n.value, float):
                return ast.copy_location(ast.Constant(Decimal(repr(n.value))), n)  # type: ignore[arg-type]
            if isinstance(n.value, int) and not isinstance(n.value, bool):
                return ast.copy_location(ast.Constant(Decimal(n.value)), n)  # type: ignore[arg-type]
            return n

        def visit_Name(self, n: ast.Name) -> ast.AST:
            if n.id in CONSTANTS:
                return ast.copy_location(ast.Constant(CONSTANTS[n.id]), n)
            return n

    return Rewrite().visit(node)  # type: ignore[no-any-return]
