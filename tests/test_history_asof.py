"""As-of reconstruction (connector.history.asof), by properties: from a record's true past,
the changes a CRM would keep give back the record as it was at every instant; fields without
history are flagged approximated; the timeline is `as_of` at each of its instants."""

from __future__ import annotations

import datetime as dt
import itertools

from hypothesis import given
from hypothesis import strategies as st

from connector.history.asof import Change, as_of, timeline

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
FIELDS = ["StageName", "Amount", "Custom__c", "Owner.Name"]
values = st.sampled_from(["a", "b", "c", ""])
states = st.fixed_dictionaries({f: values for f in FIELDS})
# A record's true past: states at strictly increasing instants (minutes after T0).
pasts = st.lists(st.tuples(st.integers(1, 500), states), min_size=1, max_size=12).map(
    lambda steps: [(T0 + dt.timedelta(minutes=sum(s for s, _ in steps[:i + 1])), state)
                   for i, (_, state) in enumerate(steps)])


def truth(past, when):
    return [state for at, state in past if at <= when][-1]


def instants(past):
    """Each instant of the past, a moment after it, and one long after."""
    for at, _ in past:
        yield at
        yield at + dt.timedelta(seconds=30)
    yield past[-1][0] + dt.timedelta(days=900)


def field_history(past, tracked):
    """Salesforce OpportunityFieldHistory: old and new value of each tracked field changed."""
    return [Change(at, f, state[f], before[f])
            for (_, before), (at, state) in itertools.pairwise(past)
            for f in tracked if state[f] != before[f]]


def full_rows(past, tracked):
    """OpportunityHistory and HubSpot: each tracked field's value at every change, no old."""
    return [Change(at, f, state[f]) for at, state in past for f in tracked]


@given(pasts, st.sets(st.sampled_from(FIELDS)))
def test_field_history_gives_back_every_tracked_field_at_every_instant(past, tracked):
    current = {**past[-1][1], "Id": "006A"}
    changes = field_history(past, sorted(tracked))
    changed = {c.field for c in changes}
    for when in instants(past):
        got = as_of(current, changes, when, constant={"Id"})
        expected = truth(past, when)
        assert got.values["Id"] == "006A"
        for f in tracked:
            assert got.values[f] == expected[f]
        assert got.approximated == set(FIELDS) - changed
        for f in set(FIELDS) - changed:  # no history: its earliest known value, flagged
            assert got.values[f] == current[f]


@given(pasts, st.sets(st.sampled_from(FIELDS)))
def test_full_rows_give_back_every_tracked_field_from_the_first_row_on(past, tracked):
    current = dict(past[-1][1])
    changes = full_rows(past, sorted(tracked))
    for when in instants(past):
        got = as_of(current, changes, when)
        for f in tracked:
            assert got.values[f] == truth(past, when)[f]
        assert got.approximated == set(FIELDS) - tracked


@given(pasts, st.sets(st.sampled_from(FIELDS), min_size=1))
def test_before_the_first_row_a_field_without_old_values_is_approximated(past, tracked):
    changes = full_rows(past, sorted(tracked))
    got = as_of(dict(past[-1][1]), changes, past[0][0] - dt.timedelta(seconds=1))
    assert got.approximated == set(FIELDS)
    assert all(got.values[f] == past[0][1][f] for f in tracked)  # the earliest known value


changes_st = st.lists(st.builds(
    Change, st.integers(0, 30).map(lambda m: T0 + dt.timedelta(minutes=m)),
    st.sampled_from(FIELDS), values, st.none() | values), max_size=25)


@given(states, changes_st)
def test_the_timeline_is_as_of_at_each_of_its_instants_and_between(known, changes):
    steps = list(timeline(known, changes))
    assert [at for at, _ in steps] == sorted({at for at, _ in steps})
    for (at, state), nxt in zip(steps, [*steps[1:], None], strict=False):
        assert as_of(known, changes, at) == state
        if nxt is not None:
            assert nxt[1].values != state.values   # a snapshot only where the values changed
            between = at + (nxt[0] - at) / 2
            assert as_of(known, changes, between).values == state.values
    if changes:
        assert steps, "a record with history has at least one state"
        last = as_of(known, changes, T0 + dt.timedelta(days=1))
        assert steps[-1][1].values == last.values
    else:
        assert steps == []
