"""A record's fields as they were at any instant, from the CRM's history of changes: pure.

The CRMs keep history per field, and not for every field: Salesforce's OpportunityHistory holds
stage, amount, probability, close date and forecast category at each change of one of them;
OpportunityFieldHistory holds old and new values of the fields an admin chose to track; HubSpot
keeps each property's values with their timestamps. A field with no history keeps its earliest
known value, and is said to be approximated; so is a field before its first recorded change when
the history does not say what that change replaced.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Change:
    """A field set to `new` at `at`; `old` is what it replaced, when the history says so
    (Salesforce's field history does; OpportunityHistory and HubSpot do not)."""

    at: dt.datetime
    field: str
    new: str
    old: str | None = None


@dataclass(frozen=True)
class State:
    values: dict[str, str]
    approximated: frozenset[str]   # fields whose value then is a guess: no history says it


def as_of(known: Mapping[str, str], changes: Sequence[Change], when: dt.datetime,
          constant: Collection[str] = ()) -> State:
    """The fields at `when`. `known` holds each field's earliest known value (what fields with
    no history keep); `constant` names fields that never change (the id). Changes at one
    instant apply in the order given."""
    by_field: dict[str, list[Change]] = {}
    for change in sorted(changes, key=lambda c: c.at):
        by_field.setdefault(change.field, []).append(change)
    values = dict(known)
    guessed = set()
    for name in set(known) | set(by_field):
        history = by_field.get(name)
        if not history:
            if name not in constant:
                guessed.add(name)
            continue
        done = [c for c in history if c.at <= when]
        if done:
            values[name] = done[-1].new
        elif history[0].old is not None:
            values[name] = history[0].old
        else:
            values[name] = history[0].new
            guessed.add(name)
    return State(values, frozenset(guessed))


def timeline(known: Mapping[str, str], changes: Sequence[Change],
             constant: Collection[str] = ()) -> Iterator[tuple[dt.datetime, State]]:
    """The record's states from its first recorded change on: one at each instant where a
    change made the values differ, equal to `as_of` at that instant. One pass over the changes."""
    ordered = sorted(changes, key=lambda c: c.at)
    if not ordered:
        return
    state = as_of(known, ordered, ordered[0].at - dt.timedelta(microseconds=1), constant)
    values, guessed = dict(state.values), set(state.approximated)
    last: dict[str, str] | None = None
    i = 0
    while i < len(ordered):
        at = ordered[i].at
        while i < len(ordered) and ordered[i].at == at:
            values[ordered[i].field] = ordered[i].new
            guessed.discard(ordered[i].field)
            i += 1
        if values != last:
            last = dict(values)
            yield at, State(last, frozenset(guessed))
