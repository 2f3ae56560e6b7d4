"""One record in, one Outcome out: the values after the rules, the workflow that fired, what
would change in the CRM, and the actions whose conditions are true now. Nothing is performed
here; the pipeline decides what to do with the outcome (rising edges, write-back, outbox)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connector.core.expressions import Formula
from connector.core.mapping import ID
from connector.core.ruleset import (
    CLOSED_LOST,
    CLOSED_WON,
    PROBABILITY,
    RuleSet,
    Workflow,
    evaluation_order,
)
from connector.core.table import DecisionTable
from connector.core.values import TEXT, for_write, same
from connector.errors import RecordError

_CLOSED_PROBABILITY = {CLOSED_WON: 100, CLOSED_LOST: 0}


@dataclass(frozen=True)
class ActionDue:
    """An action whose condition holds now; `source` says which: 'workflow:p90' or
    'trigger:<name>'. The ledger turns these into rising edges."""

    action: str
    source: str


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


class Evaluator:
    """Evaluates records against one rule set. Plans are prepared once per workflow."""

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
        self._early = [n for n in evaluation_order(deps) if n in early]
        self._plans: dict[str, list[tuple[str, Any]]] = {}
        for w in rules.workflows:
            self._plans[w.name] = self._plan(w.sets, early)
        self._closed_plan = self._plan({}, early)
        self._writeback = [(n, rules.mapping.type_of(n) or TEXT)
                           for n in rules.mapping.writeback]
        self._action_sources = {
            w.name: tuple(ActionDue(a, f"workflow:{w.name}") for a in w.actions)
            for w in rules.workflows}

    def _plan(self, sets: Mapping[str, Any], early: set[str]) -> list[tuple[str, Any]]:
        """The order in which a workflow's `set` and the computed fields are evaluated."""
        formulas: dict[str, set[str]] = {
            n: set(f.names) for n, f in self.rules.computed.items() if n not in early}
        for k, v in sets.items():
            formulas[k] = set(v.names) if isinstance(v, Formula) else set()
        steps = []
        for name in evaluation_order(formulas):
            steps.append((name, sets[name] if name in sets else self.rules.computed[name]))
        return steps

    def evaluate(self, record: Mapping[str, Any], today: dt.date) -> Outcome:
        """`record` holds canonical typed values (Mapping.read). Raises RecordError."""
        rules = self.rules
        values: dict[str, Any] = dict(record)
        values["today"] = today
        for name in self._early:
            values[name] = rules.computed[name].evaluate(values)
        state = rules.closed.state(values.get(rules.closed.field)) if rules.closed else None
        factors: dict[str, str] = {}
        if state is not None:
            rule = state
            values[PROBABILITY] = _CLOSED_PROBABILITY[state]
            plan = self._closed_plan
            workflow: Workflow | None = None
        else:
            combo = tuple(f.index_of(values.get(f.field)) for f in rules.factors)
            hits = self.table.match(combo)
            for f, i in zip(rules.factors, combo):
                factors[f.name] = f.values[i]
                values[f.name] = f.values[i]
            if len(hits) != 1:
                shown = ", ".join(f"{k}={v}" for k, v in factors.items())
                if not hits:
                    raise RecordError(f"no workflow matches {shown}: run 'check' to find the gap")
                names = ", ".join(rules.workflows[k].name for k in hits)
                raise RecordError(f"workflows {names} all match {shown}: run 'check' to find "
                                  "the overlap")
            workflow = rules.workflows[hits[0]]
            rule = workflow.name
            plan = self._plans[rule]
        values["rule"] = rule
        values["won"] = state == CLOSED_WON
        values["lost"] = state == CLOSED_LOST
        for name, step in plan:
            values[name] = step.evaluate(values) if isinstance(step, Formula) else step
        changes: dict[str, Any] = {}
        for name, ftype in self._writeback:
            if name in values:
                new = for_write(values[name], ftype)
                values[name] = new
                if not same(record.get(name), new):
                    changes[name] = new
        due: list[ActionDue] = list(self._action_sources[rule]) if workflow else []
        for t in rules.triggers:
            if t.condition.evaluate(values):
                due.extend(ActionDue(a, f"trigger:{t.name}") for a in t.actions)
        return Outcome(record.get(ID), values, rule, factors, changes, tuple(due))
