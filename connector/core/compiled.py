"""Formulas compiled to Python code objects, for the hot path.

`expressions.parse_formula` has already refused everything outside the formula language: the
tree holds only names the rules know, literals, our own functions, arithmetic, comparisons,
`and`/`or`/`not`, `x if c else y` and literal lists. No attribute, subscript, lambda,
comprehension or import can be in it. Here every operator becomes a call to the same
blank-propagating function simpleeval uses (behind an inline fast path for the cases records
meet most, see below), calls of our functions on literals are computed once, and the tree is
compiled once and evaluated with no builtins. The result equals simpleeval's on every formula
(tests/test_simulate.py checks it on random formulas and values; a RecordError's message also
names the formula) at a small fraction of the cost, which is what lets a dry run keep pace
with reading the CSV.
"""

from __future__ import annotations

import ast
import copy
import datetime as dt
import operator as op
from collections.abc import Callable, Mapping
from decimal import Decimal, DivisionByZero
from typing import Any

from connector.core.expressions import (
    FUNCTIONS,
    OPERATORS,
    ExpressionError,
    Formula,
    _plain,
    _short,
)
from connector.errors import RecordError

_OP_NAMES = {op: f"_op_{op.__name__}" for op in OPERATORS}
_GLOBALS: dict[str, Any] = {"__builtins__": {}, "_type": type, "_Decimal": Decimal,
                            "_date": dt.date}
_GLOBALS.update({name: OPERATORS[op] for op, name in _OP_NAMES.items()})
_GLOBALS.update({name: f.fn for name, f in FUNCTIONS.items()})

# Fast paths, compiled inline in front of the operator call for the cases a record meets on
# nearly every evaluation; anything else goes to the operator function as before.
#  - arithmetic on two Decimals is plain Decimal arithmetic (the operator functions only add
#    blank propagation, int/float -> Decimal, date arithmetic, and division by zero as
#    ZeroDivisionError, none of which applies; a zero divisor takes the slow path);
#  - an ordering comparison of two non-blank values is the plain comparison;
#  - == and != are Python's own while the operator table says so;
#  - days_between of two dates is their difference in days.
# tests/test_simulate.py checks compiled formulas against `Formula.evaluate` on random formulas
# and values, so a change to the operators' meaning that these paths would miss shows there.
_DECIMAL_ARITHMETIC = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Mod)
_NONZERO_DIVISOR = (ast.Div, ast.Mod)
_ORDERING = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_PLAIN: dict[type, Callable[[Any, Any], Any]] = {ast.Eq: op.eq, ast.NotEq: op.ne}


class Names(dict):  # type: ignore[type-arg]
    """A record's values; a name the record lacks (a field another workflow sets) is blank."""

    def __missing__(self, key: str) -> Any:
        return None


def _call(name: str, *args: ast.expr) -> ast.Call:
    return ast.Call(func=ast.Name(id=name, ctx=ast.Load()), args=list(args), keywords=[])


def _load(name: str) -> ast.Name:
    return ast.Name(id=name, ctx=ast.Load())


def _both(a: ast.expr, b: ast.expr) -> ast.expr:
    """`a & b` on two booleans: unlike `and`, both sides are evaluated, left first, as the
    arguments of the operator call they stand in for would be."""
    return ast.BinOp(left=a, op=ast.BitAnd(), right=b)


class _Lower(ast.NodeTransformer):
    """Operators -> calls of the blank-propagating functions (with the fast paths above); a
    record's name `x` -> `_v['x']` (the formula's only argument), so functions stay plain
    globals."""

    def __init__(self) -> None:
        self.constants: dict[str, Any] = {}
        self.temps = 0

    def _temp(self) -> tuple[ast.Name, ast.Name]:
        """A fresh local, as an assignment target and as a value."""
        self.temps += 1
        name = f"_t{self.temps}"
        return ast.Name(id=name, ctx=ast.Store()), _load(name)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.Subscript(value=_load("_v"), slice=ast.Constant(node.id), ctx=ast.Load())

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        slow = _OP_NAMES[type(node.op)]
        if not isinstance(node.op, _DECIMAL_ARITHMETIC):
            return _call(slow, node.left, node.right)
        (a_set, a), (b_set, b) = self._temp(), self._temp()
        # a OP b if (type(a := left) is Decimal) & (type(b := right) is Decimal) [and b]
        #   else _op(a, b)
        test: ast.expr = _both(
            ast.Compare(left=_call("_type", ast.NamedExpr(target=a_set, value=node.left)),
                        ops=[ast.Is()], comparators=[_load("_Decimal")]),
            ast.Compare(left=_call("_type", ast.NamedExpr(target=b_set, value=node.right)),
                        ops=[ast.Is()], comparators=[_load("_Decimal")]))
        if isinstance(node.op, _NONZERO_DIVISOR):
            test = ast.BoolOp(op=ast.And(), values=[test, b])
        return ast.IfExp(test=test, body=ast.BinOp(left=a, op=node.op, right=b),
                         orelse=_call(slow, a, b))

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        return _call(_OP_NAMES[type(node.op)], node.operand)

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        left = node.left
        parts: list[ast.expr] = []
        for operator, right in zip(node.ops, node.comparators):
            parts.append(self._compare(operator, left, right))
            left = right
        return parts[0] if len(parts) == 1 else ast.BoolOp(op=ast.And(), values=parts)

    def _compare(self, operator: ast.cmpop, left: ast.expr, right: ast.expr) -> ast.expr:
        kind = type(operator)
        if kind in _PLAIN and OPERATORS[kind] is _PLAIN[kind]:
            return ast.Compare(left=left, ops=[operator], comparators=[right])
        if not isinstance(operator, _ORDERING):
            return _call(_OP_NAMES[kind], left, right)
        (a_set, a), (b_set, b) = self._temp(), self._temp()
        # a OP b if ((a := left) is not None) & ((b := right) is not None) else _op(a, b)
        test = _both(ast.Compare(left=ast.NamedExpr(target=a_set, value=left),
                                 ops=[ast.IsNot()], comparators=[ast.Constant(None)]),
                     ast.Compare(left=ast.NamedExpr(target=b_set, value=right),
                                 ops=[ast.IsNot()], comparators=[ast.Constant(None)]))
        return ast.IfExp(test=test, body=ast.Compare(left=a, ops=[operator], comparators=[b]),
                         orelse=_call(_OP_NAMES[kind], a, b))

    def visit_Call(self, node: ast.Call) -> ast.AST:
        node.args = [self.visit(a) for a in node.args]  # the function's own name stays global
        folded = self._fold(node)
        if folded is not None:
            return folded
        if (isinstance(node.func, ast.Name) and node.func.id == "days_between"
                and len(node.args) == 2):
            # days_between(a, b) of two dates (not datetimes) is (b - a).days
            (a_set, a), (b_set, b) = self._temp(), self._temp()
            test = _both(
                ast.Compare(left=_call("_type", ast.NamedExpr(target=a_set, value=node.args[0])),
                            ops=[ast.Is()], comparators=[_load("_date")]),
                ast.Compare(left=_call("_type", ast.NamedExpr(target=b_set, value=node.args[1])),
                            ops=[ast.Is()], comparators=[_load("_date")]))
            days = ast.Attribute(value=ast.BinOp(left=b, op=ast.Sub(), right=a), attr="days",
                                 ctx=ast.Load())
            return ast.IfExp(test=test, body=days, orelse=_call("days_between", a, b))
        return node

    def _fold(self, node: ast.Call) -> ast.AST | None:
        # A call of one of our (pure) functions on literals, `date('2026-11-01')`, has the
        # same value for every record: it is computed once, here. One that fails stays a call,
        # to fail each record as it did.
        literal = [self._literal(a) for a in node.args]
        if isinstance(node.func, ast.Name) and all(ok for ok, _ in literal):
            try:
                value = FUNCTIONS[node.func.id].fn(*(v for _, v in literal))
            except Exception:
                return None
            return self.visit_Constant(ast.Constant(value))
        return None

    def _literal(self, node: ast.expr) -> tuple[bool, Any]:
        if isinstance(node, ast.Constant):
            return True, node.value
        if isinstance(node, ast.Name) and node.id in self.constants:
            return True, self.constants[node.id]
        return False, None

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        # Decimal literals cannot live in a code object's constants; keep them as globals.
        if isinstance(node.value, (str, bool)) or node.value is None:
            return node
        name = f"_k{len(self.constants)}"
        self.constants[name] = node.value
        return _load(name)


# The function each formula becomes. The error handling is compiled into it rather than wrapped
# around it: a formula runs several times per record, and a second Python call per run costs
# more than the formula's own arithmetic.
_TEMPLATE = ast.parse("""
def formula(_v):
    try:
        return _BODY
    except _ERRORS as _e:
        raise _fail(_e) from None
""")
_ERRORS = (RecordError, TypeError, ValueError, ArithmeticError)  # ArithmeticError: Decimal's


def compile_formula(formula: Formula) -> Callable[[Mapping[str, Any]], Any]:
    """A function of a record's values (a `Names`) giving the formula's value or raising
    RecordError, exactly as `Formula.evaluate` would."""
    lower = _Lower()
    body = lower.visit(copy.deepcopy(formula._tree))
    tree = copy.deepcopy(_TEMPLATE)
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef) and isinstance(function.body[0], ast.Try)
    returned = function.body[0].body[0]
    assert isinstance(returned, ast.Return)
    returned.value = body
    tree = ast.fix_missing_locations(tree)
    scope = dict(_GLOBALS, **lower.constants, _ERRORS=_ERRORS, _fail=failure(formula.source))
    exec(compile(tree, f"<formula {formula.source!r}>", "exec"), scope)  # a checked tree
    return scope["formula"]  # type: ignore[no-any-return]


def failure(source: str) -> Callable[[Exception], RecordError]:
    """What a formula raises when its evaluation fails: a RecordError that names it."""

    def fail(exc: Exception) -> RecordError:
        if isinstance(exc, RecordError):
            return RecordError(f"{exc}, in '{source}'")
        if isinstance(exc, (ZeroDivisionError, DivisionByZero)):
            return RecordError(f"division by zero in '{source}'")
        return RecordError(f"cannot compute '{source}': {_plain(exc)}")

    return fail


class Inliner:
    """Formulas as Python expressions of `_v` (a record's values) to write into one generated
    function, with the names they need (operator functions, constants) in `scope`. One
    Inliner per function: the constants and temporaries of its formulas are numbered apart."""

    def __init__(self) -> None:
        self._lower = _Lower()
        self.scope: dict[str, Any] = dict(_GLOBALS, _ERRORS=_ERRORS)

    def expression(self, formula: Formula) -> str:
        body = self._lower.visit(copy.deepcopy(formula._tree))
        self.scope.update(self._lower.constants)
        return ast.unparse(ast.fix_missing_locations(body))


def prove_compiles(formula: Formula) -> None:
    """Compile the formula both ways the hot path does (its own function, and inlined in a
    route's function as `_finisher` writes it), so that a formula `check` accepts never fails
    to compile later. Raises ExpressionError, never RecursionError."""
    try:
        compile_formula(formula)
        inline = Inliner()
        line = f"        _v['x'] = {inline.expression(formula)}"
        compile("\n".join(["def _make():", " def _finish(_v):", "    try:", line,
                           "    except _ERRORS:", "        pass"]), "<route>", "exec")
    except (RecursionError, MemoryError, SyntaxError):
        raise ExpressionError(f"formula '{_short(formula.source)}' is too complex to compile: "
                              "split it into computed fields") from None
