"""One record in, one Outcome out: the values after the rules, the workflow that fired, what
would change in the CRM, and the actions whose conditions are true now. Nothing is performed
here; the pipeline decides what to do with the outcome (rising edges, write-back, outbox).

`evaluate` below states the behaviour as a plain interpreter of the rule set, in the order
docs/SPEC.md gives it. `Evaluator` answers the same through the fast path
(connector/core/_fast.py: routes prepared once per combination of factor values, formulas
compiled), which is what the pipeline, `simulate`, `forecast` and `rules diff` call;
tests/test_evaluate.py checks on random rule sets and records that the two agree exactly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from connector.core._fast import Decide, Names, Route, Routes, Verdict, field_failed
from connector.core.expressions import Formula
from connector.core.mapping import ID
from connector.core.outcome import (
    ActionDue,
    Outcome,
    explanation,
    no_single_workflow,
    steps_due,
)
from connector.core.ruleset import (
    CLOSED_LOST,
    CLOSED_PROBABILITY,
    CLOSED_WON,
    EXPLANATION,
    PROBABILITY,
    RuleSet,
    Workflow,
    evaluation_order,
    probability_name,
    read_by_factors,
)
from connector.core.values import TEXT, for_write, same
from connector.errors import RecordError

__all__ = ["ActionDue", "Decide", "Evaluator", "Names", "Outcome", "Route", "Verdict", "evaluate",
           "explanation"]


def evaluate(rules: RuleSet, record: Mapping[str, Any], today: dt.date) -> Outcome:
    """The rules applied to one record (canonical typed values, as `Mapping.read` gives them).
    Raises RecordError naming what failed: a factor's value, the workflow, a formula."""
    values: dict[str, Any] = {**record, "today": today}
    closed = rules.closed

    # 1. The computed fields a factor reads come first: the workflow depends on them. They may
    #    read `won` and `lost`, known before them unless the closed state is one of them.
    early = read_by_factors(rules)
    if early and closed is not None and closed.field not in early:
        state = closed.state(values.get(closed.field))
        values["won"], values["lost"] = state == CLOSED_WON, state == CLOSED_LOST
    for name in early:
        values[name] = _compute(name, rules.computed[name], values)

    # 2. A closed deal takes 100 or 0; an open one the workflow its factors' values fall into.
    state = closed.state(values.get(closed.field)) if closed is not None else None
    factors: dict[str, str] = {}
    actions: tuple[str, ...] = ()
    if state is not None:
        rule, sets = state, {PROBABILITY: CLOSED_PROBABILITY[state]}
    else:
        combo = tuple(f.index_of(values.get(f.field)) for f in rules.factors)
        factors = {f.name: f.values[i] for f, i in zip(rules.factors, combo)}
        workflow = _workflow_of(rules, combo, factors)
        rule, sets, actions = workflow.name, workflow.sets, workflow.actions
        values.update(factors)
    values.update(rule=rule, won=state == CLOSED_WON, lost=state == CLOSED_LOST)
    if EXPLANATION in rules.mapping.fields:  # unless the workflow sets its own, below
        values[EXPLANATION] = explanation(rules, rule, factors)

    # 3. The workflow's `set` and the other computed fields, each after the names it reads.
    steps: dict[str, Any] = {n: f for n, f in rules.computed.items() if n not in early}
    steps.update(sets)
    reads = {n: set(s.names) if isinstance(s, Formula) else set() for n, s in steps.items()}
    for name in evaluation_order(reads):
        step = steps[name]
        values[name] = _compute(name, step, values) if isinstance(step, Formula) else step

    # 4. The writeback fields as they would be written (rounded to their field's scale), and
    #    those whose value would change in the CRM.
    writeback = rules.mapping.writeback
    for name in writeback:
        if name in values:
            values[name] = for_write(values[name], rules.mapping.type_of(name) or TEXT)
    changes = {name: values[name] for name in writeback
               if name in values and not same(record.get(name), values[name])}

    # 5. The actions due: the workflow's, each trigger's whose condition holds, in file order,
    #    then each escalation's steps whose day has come while its condition holds.
    due = tuple(ActionDue(action, f"workflow:{rule}") for action in actions)
    for t in rules.triggers:
        if not t.steps and t.condition.evaluate(values):
            due += tuple(ActionDue(action, f"trigger:{t.name}") for action in t.actions)
    for t in rules.triggers:
        if t.steps and t.since is not None and t.condition.evaluate(values):
            steps_of = tuple((after, tuple(ActionDue(action, f"trigger:{t.name}:day{after}", True)
                                           for action in names)) for after, names in t.steps)
            due += steps_due(t.since.evaluate(values), today, steps_of)
    return Outcome(record.get(ID), values, rule, factors, changes, due)


class Evaluator:
    """Evaluates records against one rule set as `evaluate` does, through the fast path:
    prepared once, then a few microseconds per record."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        # What `evaluate` answers as a plain tuple (see Verdict), for loops that read a few
        # parts of it per record: `decide = Evaluator(rules).decide`, then once per record.
        self.decide: Decide = Routes(rules).decide

    def evaluate(self, record: Mapping[str, Any], today: dt.date) -> Outcome:
        """`record` holds canonical typed values (Mapping.read). Raises RecordError."""
        values, route, changes, due = self.decide(record, today)
        return Outcome(record.get(ID), values, route.rule, dict(route.factors), changes, due)


def _workflow_of(rules: RuleSet, combo: tuple[int, ...], factors: Mapping[str, str]
                 ) -> Workflow:
    """The one workflow a combination of factor values (their indices) falls into."""
    if rules.weights is not None:
        name = probability_name(rules.weights.probability(combo, rules.sizes))
        taking = [w for w in rules.workflows if w.name == name]
    else:  # a cube allows a combination when it allows each factor's value
        taking = [w for w in rules.workflows
                  if any(all(allowed >> i & 1 for allowed, i in zip(cube, combo))
                         for cube in w.cubes)]
    if len(taking) == 1:
        return taking[0]
    raise RecordError(no_single_workflow([w.name for w in taking], factors))


def _compute(name: str, formula: Formula, values: Mapping[str, Any]) -> Any:
    try:
        return formula.evaluate(values)
    except RecordError as exc:
        raise RecordError(field_failed(name, exc)) from None
