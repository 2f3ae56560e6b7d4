"""The fast path: what connector/core/evaluate.py states as a plain interpreter, computed at the
speed a dry run of a million rows needs. `Evaluator`, `simulate`, `forecast` and `rules diff`
evaluate through here; tests/test_evaluate.py checks on random rule sets and records that it
answers exactly as `evaluate.evaluate` does. Nothing outside connector/core imports it.

Two parts:

1. Formulas compiled to Python code objects. `expressions.parse_formula` has already refused
   everything outside the formula language: the tree holds only names the rules know,
   literals, our own functions, arithmetic, comparisons, `and`/`or`/`not`, `x if c else y`
   and literal lists. No attribute, subscript, lambda, comprehension or import can be in it.
   Here every operator becomes a call to the same blank-propagating function simpleeval uses
   (behind an inline fast path for the cases records meet most, see below), calls of our
   functions on literals are computed once, and the tree is compiled once and evaluated with
   no builtins. The result equals `Formula.evaluate`'s on every formula (tests/test_simulate.py
   checks it on random formulas and values) at a small fraction of the cost.
2. Routes: what follows from each combination of factor values (the workflow, its values,
   the triggers it settles), prepared once, with the rest of a record's evaluation on that
   route written out as one generated function (`_finisher`); `decide` takes a record along
   its route, remembering the picklist texts and bands it has seen.
"""

from __future__ import annotations

import ast
import copy
import datetime as dt
import operator as op
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal, DivisionByZero
from operator import itemgetter
from typing import Any

from connector.core.expressions import (
    FUNCTIONS,
    OPERATORS,
    ExpressionError,
    Formula,
    _plain,
    _short,
)
from connector.core.mapping import ID
from connector.core.outcome import ActionDue, explanation, no_single_workflow, steps_due
from connector.core.ruleset import (
    CLOSED_LOST,
    CLOSED_PROBABILITY,
    CLOSED_WON,
    EXPLANATION,
    PROBABILITY,
    Closed,
    Factor,
    RuleSet,
    evaluation_order,
    read_by_factors,
)
from connector.core.table import DecisionTable
from connector.core.values import TEXT, Cells, parse_cache, same, writer_for
from connector.errors import RecordError, Text

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
#  - days_between of two dates is their difference in days;
#  - `not` is written out: blank stays blank, anything else is Python's `not`.
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


def _is_decimal(value: ast.expr) -> ast.expr:
    return ast.Compare(left=_call("_type", value), ops=[ast.Is()], comparators=[_load("_Decimal")])


def _is_not_blank(value: ast.expr) -> ast.expr:
    return ast.Compare(left=value, ops=[ast.IsNot()], comparators=[ast.Constant(None)])


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
        # a OP b if (type(a := left) is Decimal) & (type(b := right) is Decimal) [and b]
        #   else _op(a, b); a literal's test is made here, once
        guarded = self._guarded(node.left, node.right, _is_decimal,
                                lambda value: type(value) is Decimal)
        if guarded is None:  # a literal that is no Decimal: the fast path never applies
            return _call(slow, node.left, node.right)
        test, (a, b) = guarded
        if isinstance(node.op, _NONZERO_DIVISOR):
            known, divisor = self._literal(node.right)
            if known and not divisor:
                return _call(slow, node.left, node.right)
            if not known:
                test = b if test is None else ast.BoolOp(op=ast.And(), values=[test, b])
        fast = ast.BinOp(left=a, op=node.op, right=b)
        return fast if test is None else ast.IfExp(test=test, body=fast, orelse=_call(slow, a, b))

    def _guarded(self, left: ast.expr, right: ast.expr, test: Callable[[ast.expr], ast.expr],
                 holds: Callable[[Any], bool]
                 ) -> tuple[ast.expr | None, tuple[ast.expr, ast.expr]] | None:
        """The test both operands must pass for the fast path (`test` of each, left first, both
        evaluated), and the operands to compute with: a literal is tested here (`holds`) and
        used as it is, anything else is tested as it is computed, into a temporary. None when
        a literal fails: the fast path never applies."""
        tests: list[ast.expr] = []
        operands: list[ast.expr] = []
        for side in (left, right):
            known, value = self._literal(side)
            if known:
                if not holds(value):
                    return None
                operands.append(side)
                continue
            target, temp = self._temp()
            tests.append(test(ast.NamedExpr(target=target, value=side)))
            operands.append(temp)
        both = None if not tests else tests[0] if len(tests) == 1 else _both(*tests)
        return both, (operands[0], operands[1])

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.Not):  # None if (a := operand) is None else not a
            target, a = self._temp()
            return ast.IfExp(test=ast.Compare(
                left=ast.NamedExpr(target=target, value=node.operand), ops=[ast.Is()],
                comparators=[ast.Constant(None)]), body=ast.Constant(None),
                orelse=ast.UnaryOp(op=ast.Not(), operand=a))
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
        # a OP b if ((a := left) is not None) & ((b := right) is not None) else _op(a, b)
        guarded = self._guarded(left, right, _is_not_blank, lambda value: value is not None)
        if guarded is None:  # a blank literal: the operator function decides
            return _call(_OP_NAMES[kind], left, right)
        test, (a, b) = guarded
        fast = ast.Compare(left=a, ops=[operator], comparators=[b])
        return fast if test is None else ast.IfExp(test=test, body=fast,
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
            return RecordError(Text("{reason}, in '{formula}'", reason=exc.text,
                                    formula=source))
        if isinstance(exc, (ZeroDivisionError, DivisionByZero)):
            return RecordError(Text("division by zero in '{formula}'", formula=source))
        return RecordError(Text("cannot compute '{formula}': {reason}", formula=source,
                                reason=_plain(exc)))

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
        raise ExpressionError(Text("formula '{formula}' is too complex to compile: split it "
                                   "into computed fields", formula=_short(formula.source))
                              ) from None


Finish = Callable[[Names, Mapping[str, Any]], tuple[dict[str, Any], tuple[ActionDue, ...]]]


@dataclass(frozen=True, eq=False)  # a route is itself: it can key a dict by identity
class Route:
    """What follows from a record's workflow (or closed state), prepared once per factor
    combination: the values it assigns, the formulas it computes in order, the actions it
    names, or why no single workflow takes the combination."""

    rule: str
    assign: dict[str, Any]                        # factor names, rule, won, lost, literals
    formulas: tuple[tuple[str, Formula], ...]     # (name, formula), in order
    factors: dict[str, str]
    due: tuple[ActionDue, ...]
    error: Text | None = None
    # writeback fields the route assigns a literal to (and no formula recomputes): their
    # value as written, rounded once here; and the other writeback fields that need rounding
    written: dict[str, Any] = field(default_factory=dict)
    rewrite: tuple[tuple[str, Callable[[Any], Any]], ...] = ()
    # the triggers, in order; a condition that only reads what the route fixes (probability
    # >= 60 on a route that sets 60) is decided here: None when it always holds, left out
    # when it never does
    triggers: tuple[tuple[Formula | None, tuple[ActionDue, ...]], ...] = ()
    # the rest of a record's evaluation on this route as one function: formulas, rounding,
    # changes, actions due (see _finisher), written by _with_writes
    finish: Finish = field(default=lambda values, record: ({}, ()), repr=False)


# What `decide` answers for a record: (values, route, changes, due), as a plain tuple; the rule
# is `route.rule`. A dry run reads a few of these per record, and would spend more on building
# an Outcome than on some of the rules themselves.
Verdict = tuple[Names, Route, dict[str, Any], tuple[ActionDue, ...]]
Decide = Callable[[Mapping[str, Any], dt.date], Verdict]


_CACHE_LIMIT = 10_000  # distinct picklist texts remembered per factor
_UNSEEN = object()


class Routes:
    """A rule set prepared for records: plans once per workflow, what follows from a
    combination of factor values once per combination (its route), and `decide`, which takes a
    record along its route."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.table = DecisionTable(rules)
        # Computed fields the factors read must be known before the workflow is chosen.
        self._early = [(n, compile_formula(rules.computed[n])) for n in read_by_factors(rules)]
        early = {n for n, _ in self._early}
        # The closed state is read before the early fields unless it is one of them.
        self._state_first = (rules.closed is not None and bool(self._early)
                             and rules.closed.field not in early)
        self._plans: dict[str, list[tuple[str, Any]]] = {}
        for w in rules.workflows:
            self._plans[w.name] = self._plan(w.sets, early)
        self._closed_plan = self._plan({}, early)
        # None: the value is written as it is (no rounding), so there is nothing to call
        self._writeback = [(n, None if (t := rules.mapping.type_of(n) or TEXT).write_scale
                            is None else writer_for(t)) for n in rules.mapping.writeback]
        self._writeback_names = tuple(rules.mapping.writeback)
        self._scales = {n: scale for n in rules.mapping.writeback
                        if (scale := (rules.mapping.type_of(n) or TEXT).write_scale) is not None}
        self._action_sources = {
            w.name: tuple(ActionDue(a, f"workflow:{w.name}") for a in w.actions)
            for w in rules.workflows}
        self._triggers = [(compile_formula(t.condition), t.condition,
                           tuple(ActionDue(a, f"trigger:{t.name}") for a in t.actions))
                          for t in rules.triggers if not t.steps]
        # Escalations: while the condition holds, each step whose day has come is due.
        self._escalations = [
            (compile_formula(t.condition), compile_formula(t.since),
             tuple((after, tuple(ActionDue(a, f"trigger:{t.name}:day{after}", True)
                                 for a in actions)) for after, actions in t.steps))
            for t in rules.triggers if t.steps and t.since is not None]
        # Picklist texts repeat from record to record: remember their index (or the error).
        self._factors: list[tuple[str, dict[str, int | RecordError] | None, Factor]] = [
            (f.field, None if f.bands is not None else {}, f) for f in rules.factors]
        self._closed_seen: dict[str, str | None] = {}
        # `decide` finds a record's route by its picklist factors' raw values (picked in one
        # call) and its band factors' band indices
        text_fields = [f.field for f in rules.factors if f.bands is None]
        self._pick_texts: Callable[[Mapping[str, Any]], tuple[Any, ...]] = (
            itemgetter(*text_fields) if len(text_fields) > 1 else
            lambda values: tuple(values.get(f) for f in text_fields))
        self._band_factors = [f for f in rules.factors if f.bands is not None]
        self._routed: dict[tuple[Any, ...], Route] = {}
        self._routes: dict[tuple[int, ...], Route] = {}
        # one compiled `finish` per route shape (formulas are the rule set's own objects,
        # which live as long as these routes, so their ids name them)
        self._finishers: dict[tuple[Any, ...], Callable[..., Finish]] = {}
        # the explanation is the route's own text: written like a literal, when it is mapped
        # and the workflow does not set its own
        self._explains = EXPLANATION in rules.mapping.fields
        self._closed_routes = {state: self._closed_route(state) for state in CLOSED_PROBABILITY}
        self.decide = _decide_along(self)

    def _plan(self, sets: Mapping[str, Any], early: set[str]) -> list[tuple[str, Any]]:
        """The order in which a workflow's `set` and the computed fields are evaluated."""
        formulas: dict[str, set[str]] = {
            n: set(f.names) for n, f in self.rules.computed.items() if n not in early}
        for k, v in sets.items():
            formulas[k] = set(v.names) if isinstance(v, Formula) else set()
        steps: list[tuple[str, Any]] = []
        for name in evaluation_order(formulas):
            step = sets[name] if name in sets else self.rules.computed[name]
            steps.append((name, step))
        return steps

    def _split(self, plan: list[tuple[str, Any]]) -> tuple[dict[str, Any],
                                                           tuple[tuple[str, Any], ...]]:
        """A plan as its literals and its formulas. Assigning every literal first gives the
        same values as the plan's own order: a formula comes after each name it reads."""
        literals = {name: step for name, step in plan if not isinstance(step, Formula)}
        return literals, tuple((name, step) for name, step in plan if isinstance(step, Formula))

    def _closed_route(self, state: str) -> Route:
        literals, formulas = self._split(self._closed_plan)
        assign = {PROBABILITY: CLOSED_PROBABILITY[state], "rule": state,
                  "won": state == CLOSED_WON, "lost": state == CLOSED_LOST, **literals}
        if self._explains:
            assign.setdefault(EXPLANATION, explanation(self.rules, state, {}))
        return self._with_writes(Route(state, assign, formulas, {}, ()))

    def _with_writes(self, route: Route) -> Route:
        """The route with what it settles for every record it takes, worked out once: its
        writeback literals as written (rounded), and the triggers whose condition it decides."""
        computed = {name for name, _ in route.formulas}
        written: dict[str, Any] = {}
        rewrite: list[tuple[str, Callable[[Any], Any]]] = []
        for name, write in self._writeback:
            if name in route.assign and name not in computed:
                try:
                    value = route.assign[name]
                    written[name] = value if write is None else write(value)
                    continue
                except ArithmeticError:  # let it fail as it would, record by record
                    pass
            if write is not None:
                rewrite.append((name, write))
        # what a trigger may read as fixed: the route's literals and its rounded writeback
        # values, but nothing a formula or a record's own value decides
        fixed = _Fixed({**route.assign, **written})
        for name in (*computed, *(n for n, _ in rewrite)):
            fixed.pop(name, None)
        triggers: list[tuple[Formula | None, tuple[ActionDue, ...]]] = []
        for condition, formula, actions in self._triggers:
            try:
                holds = condition(fixed)
            except (_NotFixed, RecordError):  # it reads the record, or fails record by record
                triggers.append((formula, actions))
                continue
            if holds:
                triggers.append((None, actions))
        # the triggers that always hold before the first that depends on the record are due
        # with the workflow's own actions, in the same order: one tuple, not one per record
        due = route.due
        while triggers and triggers[0][0] is None:
            due += triggers.pop(0)[1]
        route = replace(route, due=due, written=written, rewrite=tuple(rewrite),
                        triggers=tuple(triggers))
        return replace(route, finish=self._finish(route))

    def _finish(self, route: Route) -> Finish:
        """The route's `finish` function (see _finisher): the code of its shape, run with
        the route's own values."""
        shape = (tuple((name, id(f)) for name, f in route.formulas),
                 tuple(name for name, _ in route.rewrite), bool(route.written),
                 tuple(None if c is None else id(c) for c, _ in route.triggers))
        make = self._finishers.get(shape)
        if make is None:
            make = self._finishers[shape] = _finisher(route, self._writeback_names,
                                                      self._scales)
        return make(route.written, route.due, *(actions for _, actions in route.triggers))

    def _route(self, combo: tuple[int, ...]) -> Route:
        rules = self.rules
        factors = {f.name: f.values[i] for f, i in zip(rules.factors, combo)}
        hits = self.table.match(combo)
        if len(hits) != 1:
            error = no_single_workflow([rules.workflows[k].name for k in hits], factors)
            return Route("", {}, (), factors, (), error)
        workflow = rules.workflows[hits[0]]
        literals, formulas = self._split(self._plans[workflow.name])
        assign = {**factors, "rule": workflow.name, "won": False, "lost": False, **literals}
        if self._explains:
            assign.setdefault(EXPLANATION, explanation(rules, workflow.name, factors))
        route = self._with_writes(Route(workflow.name, assign, formulas, factors,
                                         self._action_sources[workflow.name]))
        if len(self._routes) < 1_000_000:
            self._routes[combo] = route
        return route

    def _route_of(self, values: Mapping[str, Any], key: tuple[Any, ...] | None) -> Route:
        """The route of a record whose key was not seen: each factor's value index, in the
        factors' order (so the first bad value is the one reported), then the combination's
        route. Remembered by `key` when the key is made of texts (or blanks) and known bands
        only: as dict keys, 1, True and Decimal(1) are one key but not one factor value."""
        indices = [self._index(seen, factor, values.get(field))
                   for field, seen, factor in self._factors]
        combo = tuple(indices)
        route = self._routes.get(combo) or self._route(combo)
        known_bands = key is not None and (key[1] != -1 if type(key[1]) is int
                                           else -1 not in key[1])
        if (key is not None and known_bands and len(self._routed) < 100_000
                and all(t is None or type(t) is str for t in key[0])):
            self._routed[key] = route
        return route

    def _index(self, seen: dict[str, int | RecordError] | None, factor: Factor,
               value: Any) -> int:
        # Only text is remembered: as dict keys 1, True and Decimal(1) are one key, but
        # their texts ('1', 'true') are not one factor value.
        if seen is None or type(value) is not str:
            return factor.index_of(value)
        hit = seen.get(value)
        if hit is None:
            try:
                hit = factor.index_of(value)
            except RecordError as exc:
                hit = exc
            if len(seen) < _CACHE_LIMIT:
                seen[value] = hit
        if isinstance(hit, RecordError):
            raise RecordError(hit.text)
        return hit

    def _state(self, closed: Closed, value: Any) -> str | None:
        if type(value) is not str:
            return closed.state(value)
        try:
            return self._closed_seen[value]
        except KeyError:
            state = closed.state(value)
            if len(self._closed_seen) < _CACHE_LIMIT:
                self._closed_seen[value] = state
            return state


def _decide_along(routes: Routes) -> Decide:
    """`decide` for these routes, with every table it reads bound once as a local of its
    closure: it runs once per record, and looking each one up on an object cost a fifth of its
    time."""
    closed = routes.rules.closed
    closed_field = closed.field if closed is not None else ""
    closed_seen = routes._closed_seen
    state_of = routes._state
    early_steps = routes._early
    state_first = routes._state_first
    closed_routes = routes._closed_routes
    pick_texts = routes._pick_texts
    bands = routes._band_factors
    one_band = bands[0] if len(bands) == 1 else None
    band_field = one_band.field if one_band is not None else ""
    band_seen: dict[Decimal, int] = {}  # amount -> its band: amounts repeat too
    routed = routes._routed
    route_of = routes._route_of
    escalations = routes._escalations

    def decide(record: Mapping[str, Any], today: dt.date) -> Verdict:
        values = Names(record)
        values["today"] = today
        state = None
        if early_steps:
            if state_first:
                # 'won' and 'lost' are known before the workflow: a computed field a factor
                # reads may use them, and must not see them blank on a closed deal.
                state = state_of(closed, values.get(closed_field))  # type: ignore[arg-type]
                values["won"] = state == CLOSED_WON
                values["lost"] = state == CLOSED_LOST
            for name, early in early_steps:
                values[name] = _step(name, early, values)
        if closed is not None and not state_first:
            value = values.get(closed_field)
            seen: Any = closed_seen.get(value, _UNSEEN) if type(value) is str else _UNSEEN
            state = state_of(closed, value) if seen is _UNSEEN else seen
        if state is not None:
            route = closed_routes[state]
        else:
            # The route by the factors' own texts and bands, as seen on an earlier record:
            # one lookup instead of one per factor (see _route_of).
            key: tuple[Any, ...]
            try:
                if one_band is not None:
                    number = values.get(band_field)
                    band = band_seen.get(number) if type(number) is Decimal else None
                    if band is None:
                        band = _band(one_band, number)
                        if type(number) is Decimal and len(band_seen) < _CACHE_LIMIT:
                            band_seen[number] = band
                    key = (pick_texts(values), band)
                else:
                    key = (pick_texts(values),
                           tuple([_band(f, values.get(f.field)) for f in bands]))
                route = routed.get(key) or route_of(values, key)
            except TypeError:  # an unhashable value (a list from JSON): the long way
                route = route_of(values, None)
            if route.error is not None:
                raise RecordError(route.error)
        values.update(route.assign)
        changes, due = route.finish(values, record)
        for condition, since, steps in escalations:
            if condition(values):
                due += steps_due(since(values), today, steps)
        return values, route, changes, due

    return decide


def _finisher(route: Route, writeback: tuple[str, ...], scales: dict[str, int]
              ) -> Callable[..., Finish]:
    """What follows the route's assignments for a record, written out as one function: the
    route's formulas in order, inlined (a failure names the field, as the formula would), its
    values rounded as written, the writeback fields that would change, and the actions due:
    the steps loops over the route's tables would take, without the loops and with no call
    per formula, because this runs once per record (a dry run of 100,000 rows ran 4 % fewer
    instructions). Field names are written as literals (repr); the formulas are the checked
    trees compiled above.

    Returns a maker of that function for the routes of one shape (formulas, rounding and
    trigger conditions), given a route's own values (`_written`, `_due`, the triggers'
    actions): compiling costs a millisecond, and a table has a route per combination of
    factor values. The routes of a shape share the code and its globals, which lets Python
    specialise the code once for all of them."""
    inline = Inliner()
    scope = inline.scope
    # Every name the code binds starts with an underscore, as no function of the formula
    # language does (a formula reads fields as _v['name']): an inlined formula cannot see one.
    scope.update({"_str": str, "_int": int, "_HALF_UP": ROUND_HALF_UP,
                  "_RecordError": RecordError, "_field_failed": field_failed,
                  "_differs": _differs})
    actions = [f"_a{i}" for i in range(len(route.triggers))]
    # A field the route computes or writes is in `_v` for every record: no test for it.
    present = {name for name, _ in route.formulas} | set(route.written)

    def when_present(name: str, block: list[str]) -> list[str]:
        """`block` (written for inside `if name in _v:`), unless the field is always there."""
        if name not in present:
            return [f"    if {name!r} in _v:", *block]
        return [line[4:] for line in block]

    lines = [f"def _make(_written, _due, {', '.join(actions)}):",
             " def _finish(_v, _record):"]
    for i, (name, formula) in enumerate(route.formulas):
        scope[f"_fail{i}"] = failure(formula.source)
        lines += ["    try:",
                  f"        _v[{name!r}] = {inline.expression(formula)}",
                  "    except _ERRORS as _exc:",
                  f"        raise _RecordError(_field_failed({name!r}, _fail{i}(_exc))) from None"]
    if route.written:
        lines.append("    _v.update(_written)")
    for i, (name, write) in enumerate(route.rewrite):
        # a Decimal is rounded here, as `write` would round it; anything else goes to `write`
        scope[f"_w{i}"], scope[f"_step{i}"] = write, Decimal(1).scaleb(-scales[name])
        rounded = f"_x.quantize(_step{i}, _HALF_UP)"
        lines += when_present(name, [
            f"        _x = _v[{name!r}]",
            f"        _v[{name!r}] = ({f'_int({rounded})' if scales[name] == 0 else rounded}"
            f" if _type(_x) is _Decimal else _w{i}(_x))"])
    lines.append("    _changes = {}")
    for name in writeback:
        # The cases a dry run meets on nearly every record are settled without a call: a
        # blank field getting a value (blank over blank is no change; `!=` would try both
        # sides' methods on None), and two equal values, such as a percent read as Decimal
        # and written as int. `_differs` is asked only about unequal ones.
        lines += when_present(name, [
            f"        _new = _v[{name!r}]",
            f"        _old = _record.get({name!r})",
            "        if _old is None:",
            "            if _new is not None and (_type(_new) is not _str or _new):",
            f"                _changes[{name!r}] = _new",
            "        elif _old is not _new and _old != _new and _differs(_old, _new):",
            f"            _changes[{name!r}] = _new"])
    lines.append("    _fired = _due")
    for i, (condition, _) in enumerate(route.triggers):
        if condition is None:
            lines.append(f"    _fired += _a{i}")
            continue
        scope[f"_failc{i}"] = failure(condition.source)
        lines += ["    try:",
                  f"        _holds = {inline.expression(condition)}",
                  "    except _ERRORS as _exc:",
                  f"        raise _failc{i}(_exc) from None",
                  "    if _holds:",
                  f"        _fired += _a{i}"]
    lines += ["    return _changes, _fired", " return _finish"]
    exec(compile("\n".join(lines), "<route>", "exec"), scope)
    return scope["_make"]  # type: ignore[no-any-return]


class _NotFixed(Exception):
    """A formula read a name whose value depends on the record."""


class _Fixed(dict):  # type: ignore[type-arg]
    """The values a route fixes; reading any other name raises _NotFixed."""

    def __missing__(self, key: str) -> Any:
        raise _NotFixed(key)


def _band(factor: Factor, value: Any) -> int:
    """The band of a number, or -1 where `Factor.index_of` would refuse it (or the field is
    blank: the long way then says what the factor does with a blank)."""
    if type(value) is Decimal or type(value) is int:
        for bound, i in factor._by_bound:  # type: ignore[attr-defined]
            if value >= bound:
                return i  # type: ignore[no-any-return]
    elif value is None and factor.empty is not None:
        return factor.empty
    return -1


_NUMBER_TYPES = (int, Decimal)  # two numbers (never bool), or two texts, differ when unequal


def _differs(old: Any, new: Any) -> bool:
    """Given old != new: whether writing `new` over `old` changes something. `same` decides;
    the cases a dry run meets on nearly every record are answered first without it."""
    old_type, new_type = type(old), type(new)
    if old_type in _NUMBER_TYPES and new_type in _NUMBER_TYPES:
        return True  # two numbers (never bool): unequal is different
    if old_type is str and new_type is str:
        return True  # '' and 'x', or two texts: different
    if old is None:
        return new != ""  # blank over blank is no change
    return not same(old, new)


def _step(name: str, formula: Any, values: Names) -> Any:
    try:
        return formula(values)
    except RecordError as exc:
        raise RecordError(field_failed(name, exc)) from None


def field_failed(name: str, exc: RecordError) -> Text:
    """A field's formula failed: the field, then why."""
    return Text("{field}: {reason}", field=name, reason=exc.text)


def row_reader(mapping: Any, header: list[str], names: Collection[str] | None,
               cells: Cells) -> Callable[[list[str]], dict[str, Any]]:
    """`Mapping.row_reader` (see there): the reader written out as one dict display."""
    columns = mapping.columns(header)
    id_index = columns.pop(ID)
    scope: dict[str, Any] = {"__builtins__": {}}
    entries = [f"{ID!r}: {'None' if id_index is None else f'cells[{id_index}]'}"]
    for name, index in columns.items():
        if names is not None and name not in names:
            continue
        if index is None:
            entries.append(f"{name!r}: None")
            continue
        cache = f"_c{len(scope)}"
        scope[cache] = parse_cache(mapping.types.get(name), name, cells=cells)
        entries.append(f"{name!r}: {cache}[cells[{index}]]")  # a miss parses (__missing__)
    source = "def read(cells):\n    return {" + ", ".join(entries) + "}"
    exec(compile(source, "<row reader>", "exec"), scope)  # names as literals (repr)
    return scope["read"]  # type: ignore[no-any-return]
