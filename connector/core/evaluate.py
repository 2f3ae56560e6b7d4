"""One record in, one Outcome out: the values after the rules, the workflow that fired, what
would change in the CRM, and the actions whose conditions are true now. Nothing is performed
here; the pipeline decides what to do with the outcome (rising edges, write-back, outbox)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connector.core.compiled import Names, compile_formula
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
        self._early = [(n, compile_formula(rules.computed[n]))
                       for n in evaluation_order(deps) if n in early]
        self._plans: dict[str, list[tuple[str, Any]]] = {}
        for w in rules.workflows:
            self._plans[w.name] = self._plan(w.sets, early)
        self._closed_plan = self._plan({}, early)
        self._writeback = [(n, rules.mapping.type_of(n) or TEXT)
                           for n in rules.mapping.writeback]
        self._action_sources = {
            w.name: tuple(ActionDue(a, f"workflow:{w.name}") for a in w.actions)
            for w in rules.workflows}
        self._triggers = [(compile_formula(t.condition),
                           tuple(ActionDue(a, f"trigger:{t.name}") for a in t.actions))
                          for t in rules.triggers]
        # Picklist values repeat from record to record: remember their index (or the error).
        self._seen: list[dict[Any, int | RecordError] | None] = [
            None if f.bands is not None else {} for f in rules.factors]
        self._closed_seen: dict[Any, str | None] = {}

    def _plan(self, sets: Mapping[str, Any], early: set[str]) -> list[tuple[str, Any]]:
        """The order in which a workflow's `set` and the computed fields are evaluated."""
        formulas: dict[str, set[str]] = {
            n: set(f.names) for n, f in self.rules.computed.items() if n not in early}
        for k, v in sets.items():
            formulas[k] = set(v.names) if isinstance(v, Formula) else set()
        steps: list[tuple[str, Any]] = []
        for name in evaluation_order(formulas):
            step = sets[name] if name in sets else self.rules.computed[name]
            steps.append((name, compile_formula(step) if isinstance(step, Formula) else step))
        return steps

    def _index(self, k: int, value: Any) -> int:
        seen = self._seen[k]
        factor = self.rules.factors[k]
        if seen is None:
            return factor.index_of(value)
        hit = seen.get(value)
        if hit is None:
            try:
                hit = factor.index_of(value)
            except RecordError as exc:
                hit = exc
            if len(seen) < 10_000:
                seen[value] = hit
        if isinstance(hit, RecordError):
            raise RecordError(str(hit))
        return hit

    def _state(self, value: Any) -> str | None:
        closed = self.rules.closed
        if closed is None:
            return None
        try:
            return self._closed_seen[value]
        except KeyError:
            state = self._closed_seen[value] = closed.state(value)
            return state

    def evaluate(self, record: Mapping[str, Any], today: dt.date) -> Outcome:
        """`record` holds canonical typed values (Mapping.read). Raises RecordError."""
        rules = self.rules
        values = Names(record)
        values["today"] = today
        for name, early in self._early:
            values[name] = _step(name, early, values)
        state = self._state(values.get(rules.closed.field)) if rules.closed else None
        factors: dict[str, str] = {}
        if state is not None:
            rule = state
            values[PROBABILITY] = _CLOSED_PROBABILITY[state]
            plan = self._closed_plan
            workflow: Workflow | None = None
        else:
            combo = tuple(self._index(k, values.get(f.field))
                          for k, f in enumerate(rules.factors))
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
            values[name] = _step(name, step, values) if callable(step) else step
        changes: dict[str, Any] = {}
        for name, ftype in self._writeback:
            if name in values:
                new = for_write(values[name], ftype)
                values[name] = new
                old = record.get(name)
                if old != new and not same(old, new):
                    changes[name] = new
        due: list[ActionDue] = list(self._action_sources[rule]) if workflow else []
        for condition, actions in self._triggers:
            if condition(values):
                due.extend(actions)
        return Outcome(record.get(ID), values, rule, factors, changes, tuple(due))


def _step(name: str, formula: Any, values: Names) -> Any:
    try:
        return formula(values)
    except RecordError as exc:
        raise RecordError(f"{name}: {exc}") from None
