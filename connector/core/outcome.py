"""What evaluating one record answers: the Outcome, the actions due in it (with the steps of an
escalation), and the line that explains its probability. Both ways of evaluating (the plain
one in connector/core/evaluate.py and the fast path in connector/core/_fast.py) give these."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from connector.core.ruleset import CLOSED_LOST, CLOSED_WON, RuleSet
from connector.errors import Text


@dataclass(frozen=True)
class ActionDue:
    """An action whose condition holds now; `source` says which: 'workflow:p90',
    'trigger:<name>' or, for an escalation step, 'trigger:<name>:day<n>'. The ledger turns these
    into rising edges, one per `key`: the action, or the step (each step fires once per episode
    even when two steps share an action)."""

    action: str
    source: str
    step: bool = False

    @cached_property  # read per record by a dry run: worked out once per ActionDue
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


def explanation(rules: RuleSet, rule: str, factors: Mapping[str, str]) -> str:
    """Why a record has its probability, in a line a sales rep reads in the CRM:
    `p60: stage=Proposal/Price Quote, proposal=Firm · rules 344c5c68ec2a`."""
    shown = ", ".join(f"{k}={v}" for k, v in factors.items())
    head = f"{rule}: {shown}" if shown else rule
    return f"{head} · {rules.explanation_label} {rules.version}"


def no_single_workflow(taking: list[str], factors: Mapping[str, str]) -> Text:
    """Why a record's factor values route it nowhere, or to more than one workflow (the
    rules prove neither happens; `check` finds where they do)."""
    shown = ", ".join(f"{k}={v}" for k, v in factors.items())
    if not taking:
        return Text("no workflow matches {values}: run 'check' to find the gap", values=shown)
    return Text("workflows {names} all match {values}: run 'check' to find the overlap",
                names=", ".join(taking), values=shown)


def steps_due(start: Any, today: dt.date,
              steps: tuple[tuple[int, tuple[ActionDue, ...]], ...]) -> tuple[ActionDue, ...]:
    """An escalation's steps whose day has come, counting from `start` (a blank start counts
    nothing)."""
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
