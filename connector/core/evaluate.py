"""One record in, one Outcome out: the values after the rules, the workflow that fired, what
would change in the CRM, and the actions whose conditions are true now. Nothing is performed
here; the pipeline decides what to do with the outcome (rising edges, write-back, outbox)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from operator import itemgetter
from typing import Any

from connector.core.compiled import Inliner, Names, compile_formula, failure
from connector.core.expressions import Formula
from connector.core.mapping import ID
from connector.core.ruleset import (
    CLOSED_LOST,
    CLOSED_WON,
    EXPLANATION,
    PROBABILITY,
    Closed,
    Factor,
    RuleSet,
    evaluation_order,
)
from connector.core.table import DecisionTable
from connector.core.values import TEXT, same, writer_for
from connector.errors import RecordError

# Decimal, as the workflows' own probabilities are: formulas then take their fast path.
_CLOSED_PROBABILITY = {CLOSED_WON: Decimal(100), CLOSED_LOST: Decimal(0)}


@dataclass(frozen=True)
class ActionDue:
    """An action whose condition holds now; `source` says which: 'workflow:p90',
    'trigger:<name>' or, for an escalation step, 'trigger:<name>:day<n>'. The ledger turns these
    into rising edges, one per `key`: the action, or the step (each step fires once per episode
    even when two steps share an action)."""

    action: str
    source: str
    step: bool = False

    @property
    def key(self) -> str:
        return f"{self.action}@{self.source}" if self.step else self.action


@dataclass(frozen=True)
class Outcome:
    record_id: Any
    values: dict[str, Any]           # every canonical and computed value after the rules
    rule: str                        # the workflow that fired, or closed-won / closed-lost
    factors: dict[str, str]          # factor -> value (empty for closed deals)
    changes: dict[str, Any]          # writeback fields whose value would change -> new value
    due: tuple[ActionDue, ...]       # actions whose condition is true now

    @property
    def won(self) -> bool:
        return self.rule == CLOSED_WON

    @property
    def lost(self) -> bool:
        return self.rule == CLOSED_LOST


Finish = Callable[[Names, Mapping[str, Any]], tuple[dict[str, Any], tuple[ActionDue, ...]]]


@dataclass(frozen=True, eq=False)  # a route is itself: it can key a dict by identity
class _Route:
    """What follows from a record's workflow (or closed state), prepared once per factor
    combination: the values it assigns, the formulas it computes in order, the actions it
    names, or why no single workflow takes the combination."""

    rule: str
    assign: dict[str, Any]                        # factor names, rule, won, lost, literals
    formulas: tuple[tuple[str, Formula], ...]     # (name, formula), in order
    factors: dict[str, str]
    due: tuple[ActionDue, ...]
    error: str | None = None
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


_CACHE_LIMIT = 10_000  # distinct picklist texts remembered per factor
_UNSEEN = object()


class Evaluator:
    """Evaluates records against one rule set. Plans are prepared once per workflow, and what
    follows from a combination of factor values once per combination."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.table = DecisionTable(rules)
        factor_fields = {f.field for f in rules.factors}
        deps = {n: set(f.names) for n, f in rules.computed.items()}
        # Computed fields the factors read must be known before the workflow is chosen.
        early: set[str] = set()
        todo = [n for n in factor_fields if n in rules.computed]
        while todo:
            n = todo.pop()
            if n not in early:
                early.add(n)
                todo.extend(m for m in deps[n] if m in rules.computed)
        self._early = [(n, compile_formula(rules.computed[n]))
                       for n in evaluation_order(deps) if n in early]
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
        # decide() finds a record's route by its picklist factors' raw values (picked in one
        # call) and its band factors' band indices
        text_fields = [f.field for f in rules.factors if f.bands is None]
        self._pick_texts: Callable[[Mapping[str, Any]], tuple[Any, ...]] = (
            itemgetter(*text_fields) if len(text_fields) > 1 else
            lambda values: tuple(values.get(f) for f in text_fields))
        self._band_factors = [f for f in rules.factors if f.bands is not None]
        self._routed: dict[tuple[Any, ...], _Route] = {}
        self._routes: dict[tuple[int, ...], _Route] = {}
        # one compiled `finish` per route shape (formulas are the rule set's own objects,
        # which live as long as this evaluator, so their ids name them)
        self._finishers: dict[tuple[Any, ...], Callable[..., Finish]] = {}
        # the explanation is the route's own text: written like a literal, when it is mapped
        self._explains = EXPLANATION in rules.mapping.fields
        self._closed_routes = {state: self._closed_route(state) for state in _CLOSED_PROBABILITY}
        self._decide = self._decider()

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

    def _closed_route(self, state: str) -> _Route:
        literals, formulas = self._split(self._closed_plan)
        assign = {PROBABILITY: _CLOSED_PROBABILITY[state], "rule": state,
                  "won": state == CLOSED_WON, "lost": state == CLOSED_LOST, **literals}
        if self._explains:
            assign[EXPLANATION] = explanation(self.rules, state, {})
        return self._with_writes(_Route(state, assign, formulas, {}, ()))

    def _with_writes(self, route: _Route) -> _Route:
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

    def _finish(self, route: _Route) -> Finish:
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

    def _route(self, combo: tuple[int, ...]) -> _Route:
        rules = self.rules
        factors = {f.name: f.values[i] for f, i in zip(rules.factors, combo)}
        hits = self.table.match(combo)
        if len(hits) != 1:
            shown = ", ".join(f"{k}={v}" for k, v in factors.items())
            if not hits:
                error = f"no workflow matches {shown}: run 'check' to find the gap"
            else:
                names = ", ".join(rules.workflows[k].name for k in hits)
                error = f"workflows {names} all match {shown}: run 'check' to find the overlap"
            return _Route("", {}, (), factors, (), error)
        workflow = rules.workflows[hits[0]]
        literals, formulas = self._split(self._plans[workflow.name])
        assign = {**factors, "rule": workflow.name, "won": False, "lost": False, **literals}
        if self._explains:
            assign[EXPLANATION] = explanation(rules, workflow.name, factors)
        route = self._with_writes(_Route(workflow.name, assign, formulas, factors,
                                         self._action_sources[workflow.name]))
        if len(self._routes) < 1_000_000:
            self._routes[combo] = route
        return route

    def _route_of(self, values: Mapping[str, Any], key: tuple[Any, ...] | None) -> _Route:
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
            raise RecordError(str(hit))
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

    def evaluate(self, record: Mapping[str, Any], today: dt.date) -> Outcome:
        """`record` holds canonical typed values (Mapping.read). Raises RecordError."""
        values, route, changes, due = self.decide(record, today)
        return Outcome(record.get(ID), values, route.rule, dict(route.factors), changes, due)

    def decide(self, record: Mapping[str, Any], today: dt.date) -> Decision:
        """What `evaluate` answers, as a plain tuple: (values, route, changes, due); the rule
        is `route.rule`. For the dry run's loop, which reads a few of these per record and
        would spend more on building an Outcome than on some of the rules themselves."""
        return self._decide(record, today)

    def decider(self) -> Callable[[Mapping[str, Any], dt.date], Decision]:
        """`decide` itself, to call once per record without the method call around it."""
        return self._decide

    def _decider(self) -> Callable[[Mapping[str, Any], dt.date], Decision]:
        """The function `decide` calls, with every table it reads bound once as a local of
        its closure: it runs once per record, and looking each one up on `self` cost a fifth
        of its time."""
        closed = self.rules.closed
        closed_field = closed.field if closed is not None else ""
        closed_seen = self._closed_seen
        state_of = self._state
        early_steps = self._early
        state_first = self._state_first
        closed_routes = self._closed_routes
        pick_texts = self._pick_texts
        bands = self._band_factors
        one_band = bands[0] if len(bands) == 1 else None
        band_field = one_band.field if one_band is not None else ""
        band_seen: dict[Decimal, int] = {}  # amount -> its band: amounts repeat too
        routed = self._routed
        route_of = self._route_of
        escalations = self._escalations

        def decide(record: Mapping[str, Any], today: dt.date) -> Decision:
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
                    due += _steps_due(since(values), today, steps)
            return values, route, changes, due

        return decide


Decision = tuple[Names, _Route, dict[str, Any], tuple[ActionDue, ...]]


def explanation(rules: RuleSet, rule: str, factors: Mapping[str, str]) -> str:
    """Why a record has its probability, in a line a sales rep reads in the CRM:
    `p60: stage=Proposal/Price Quote, proposal=Firm · rules 344c5c68ec2a`."""
    shown = ", ".join(f"{k}={v}" for k, v in factors.items())
    head = f"{rule}: {shown}" if shown else rule
    return f"{head} · {rules.explanation_label} {rules.version}"


def _finisher(route: _Route, writeback: tuple[str, ...], scales: dict[str, int]
              ) -> Callable[..., Finish]:
    """What follows the route's assignments for a record, written out as one function: the
    route's formulas in order, inlined (a failure names the field, as the formula would), its
    values rounded as written, the writeback fields that would change, and the actions due:
    the steps loops over the route's tables would take, without the loops and with no call
    per formula, because this runs once per record (a dry run of 100,000 rows ran 4 % fewer
    instructions). Field names are written as literals (repr); the formulas are the checked
    trees of connector/core/compiled.py.

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
                  "_RecordError": RecordError, "_PLAIN_TYPES": _PLAIN_TYPES,
                  "_differs": _differs})
    actions = [f"_a{i}" for i in range(len(route.triggers))]
    lines = [f"def _make(_written, _due, {', '.join(actions)}):",
             " def _finish(_v, _record):"]
    for i, (name, formula) in enumerate(route.formulas):
        scope[f"_fail{i}"] = failure(formula.source)
        lines += ["    try:",
                  f"        _v[{name!r}] = {inline.expression(formula)}",
                  "    except _ERRORS as _exc:",
                  f"        raise _RecordError({name + ': '!r} + _str(_fail{i}(_exc))) from None"]
    if route.written:
        lines.append("    _v.update(_written)")
    for i, (name, write) in enumerate(route.rewrite):
        # a Decimal is rounded here, as `write` would round it; anything else goes to `write`
        scope[f"_w{i}"], scope[f"_step{i}"] = write, Decimal(1).scaleb(-scales[name])
        rounded = f"_x.quantize(_step{i}, _HALF_UP)"
        lines += [f"    if {name!r} in _v:",
                  f"        _x = _v[{name!r}]",
                  f"        _v[{name!r}] = ({f'_int({rounded})' if scales[name] == 0 else rounded}"
                  f" if _type(_x) is _Decimal else _w{i}(_x))"]
    lines.append("    _changes = {}")
    for name in writeback:
        # the cases a dry run meets on nearly every record come first: two numbers or two
        # texts of one type, and a blank field getting a value; `_differs` answers the rest
        lines += [f"    if {name!r} in _v:",
                  f"        _new = _v[{name!r}]",
                  f"        _old = _record.get({name!r})",
                  "        if _old is not _new:",
                  "            _kind = _type(_old)",
                  "            if _kind is _type(_new) and _kind in _PLAIN_TYPES:",
                  "                if _old != _new:",
                  f"                    _changes[{name!r}] = _new",
                  "            elif _old is None:",
                  "                if _type(_new) is not _str or _new:  # blank over blank: none",
                  f"                    _changes[{name!r}] = _new",
                  "            elif _old != _new and _differs(_old, _new):",
                  f"                _changes[{name!r}] = _new"]
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


def _steps_due(start: Any, today: dt.date,
               steps: tuple[tuple[int, tuple[ActionDue, ...]], ...]) -> tuple[ActionDue, ...]:
    """The steps whose day has come, counting from `start` (a blank start counts nothing)."""
    if isinstance(start, dt.datetime):
        start = start.date()
    if not isinstance(start, dt.date):
        return ()
    days = (today - start).days
    due: tuple[ActionDue, ...] = ()
    for after, actions in steps:
        if days >= after:
            due += actions
    return due


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


_NUMBER_TYPES = (int, Decimal)
_PLAIN_TYPES = (int, Decimal, str)  # two values of one of these types differ when unequal


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
        raise RecordError(f"{name}: {exc}") from None
