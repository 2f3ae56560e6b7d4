"""The state store's contract, run against every backend (SQLite here; DynamoDB joins with its
adapter). What the pipeline relies on: atomic commits, idempotent outbox keys, duplicate
notifications refused, claims exclusive until their lease ends, parked items kept with reasons."""

from __future__ import annotations

import datetime as dt
import functools
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.core.edges import LedgerState
from connector.errors import Text
from connector.i18n import say
from connector.pipeline import BACKFILL_DONE, BACKFILL_RUNNING
from connector.state import Commit, OutboxItem, cursor
from connector.state.sqlite import SqliteState

T0 = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(minutes=10)


def sqlite_store(tmp_path):
    return SqliteState(tmp_path / "state.db")


def dynamodb_store(tmp_path):
    from tests.test_lambda_harness import moto_state  # a moto table, as serverless.yml has it

    return moto_state()


BACKENDS = {"sqlite": sqlite_store, "dynamodb": dynamodb_store}


@pytest.fixture(params=sorted(BACKENDS))
def store(request, tmp_path):
    s = BACKENDS[request.param](tmp_path)
    yield s
    s.close()


def item(key, record="r1", kind="email", **kw):
    return OutboxItem(key, record, "notify", kind, {"values": {"amount": {"$decimal": "1.50"}}},
                      **kw)


def test_the_cursor_starts_empty_and_keeps_the_last_value(store):
    assert store.get_cursor("salesforce:Opportunity") is None
    store.set_cursor("salesforce:Opportunity", "2026-11-26T09:00:00+00:00")
    store.set_cursor("salesforce:Opportunity", "2026-11-26T09:05:00+00:00")
    assert store.get_cursor("salesforce:Opportunity") == "2026-11-26T09:05:00+00:00"
    assert store.get_cursor("hubspot:deals") is None


# Cursors as the pipeline writes them (`datetime.isoformat` in UTC: microseconds only when not
# zero), and the backfill marker's values.
CURSORS = st.one_of(
    st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 1, 1),
                 timezones=st.just(dt.UTC)).map(lambda t: t.isoformat()),
    st.sampled_from([BACKFILL_RUNNING, f"{BACKFILL_DONE} 2026-11-26T09:00:00+00:00"]))
NAMES = itertools.count()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(CURSORS, min_size=1, max_size=6))
def test_a_cursor_never_moves_back_in_either_store(store, values):
    """Runs that finish in any order: the store holds what `cursor.later` says, the latest."""
    name = f"cursor-{next(NAMES)}"
    for value in values:
        store.set_cursor(name, value)
    assert store.get_cursor(name) == functools.reduce(cursor.later, values, None) \
        == max(values)


def test_the_backfill_marker_rises_from_running_to_done(store):
    store.set_cursor("backfill:x", BACKFILL_RUNNING)
    done = f"{BACKFILL_DONE} 2026-11-26T09:00:00+00:00"
    store.set_cursor("backfill:x", done)
    store.set_cursor("backfill:x", BACKFILL_RUNNING)      # a poll that started before it
    assert store.get_cursor("backfill:x") == done


def test_a_commit_records_versions_ledger_and_outbox_together(store):
    store.commit([Commit("r1", "v1", {"notify": LedgerState(True, 1)}, [item("r1:notify:1")]),
                  Commit("r2", "v7")], T0)
    assert store.handled([("r1", "v1"), ("r1", "v2"), ("r2", "v7")]) == {("r1", "v1"),
                                                                        ("r2", "v7")}
    assert store.ledger("r1") == {"notify": LedgerState(True, 1)}
    assert store.ledger("r2") == {}
    [due] = store.due(T0)
    assert due.key == "r1:notify:1" and due.payload["values"]["amount"] == {"$decimal": "1.50"}


def test_a_failed_commit_leaves_nothing(store):
    class Broken(OutboxItem):
        @property
        def payload(self):  # type: ignore[override]
            raise RuntimeError("crash while writing")

        @payload.setter
        def payload(self, value):
            pass

    bad = Broken("r2:x:1", "r2", "x", "email", {})
    with pytest.raises(RuntimeError):
        store.commit([Commit("r1", "v1", {"notify": LedgerState(True, 1)}, [item("r1:n:1")]),
                      Commit("r2", "v1", {}, [bad])], T0)
    assert store.handled([("r1", "v1")]) == set()
    assert store.ledger("r1") == {} and store.items() == []


def test_an_outbox_key_is_taken_once(store):
    store.commit([Commit("r1", "v1", outbox=[item("k")])], T0)
    store.claim("k", T0, LEASE)
    store.done("k", T0)
    store.commit([Commit("r1", "v2", outbox=[item("k")])], T0)   # the same edge again
    [only] = store.items()
    assert only.status == "done"
    assert store.due(T0 + dt.timedelta(hours=1)) == []


def test_notifications_are_remembered(store):
    assert store.remember_notification("sf:04l5g00002RsNbTAAV", T0) is True
    assert store.remember_notification("sf:04l5g00002RsNbTAAV", T0) is False
    assert store.remember_notification("sf:other", T0) is True


def test_a_claim_is_exclusive_until_its_lease_ends(store):
    store.commit([Commit("r1", "v1", outbox=[item("k")])], T0)
    assert store.claim("k", T0, LEASE) is True
    assert store.claim("k", T0 + dt.timedelta(minutes=1), LEASE) is False
    assert store.due(T0 + dt.timedelta(minutes=1)) == []
    later = T0 + LEASE + dt.timedelta(seconds=1)
    assert [i.key for i in store.due(later)] == ["k"]        # the worker died: it lapses
    assert store.claim("k", later, LEASE) is True
    assert store.items()[0].attempts == 2


def test_retry_later_park_release_and_drop(store):
    store.commit([Commit("r1", "v1", outbox=[item("a"), item("b"), item("c")])], T0)
    store.claim("a", T0, LEASE)
    store.retry_later("a", "HTTP 503", T0 + dt.timedelta(minutes=5))
    assert [i.key for i in store.due(T0 + dt.timedelta(minutes=1))] == ["b", "c"]
    assert "a" in [i.key for i in store.due(T0 + dt.timedelta(minutes=5))]
    store.claim("b", T0, LEASE)
    store.park("b", "HTTP 422: bad stage", T0)
    [parked] = store.items("parked")
    assert parked.key == "b" and parked.reason == "HTTP 422: bad stage"
    assert store.release(None, T0) == 2          # every item that waits: parked and retrying
    assert {i.key for i in store.due(T0)} == {"a", "b", "c"}
    assert store.drop(["c"]) == 1
    assert {i.key for i in store.items()} == {"a", "b"}


# A reason as the pipeline gives it: a Text, perhaps holding another, with the words of a
# server (braces, quotes, the separator character a stored Text starts with) as values.
WORDS = st.text(max_size=40)
REASONS = st.recursive(
    st.builds(lambda w: Text("{code}: {reason}", code="HTTP_422", reason=w), WORDS),
    lambda inner: st.builds(lambda r, n: Text("gave up after {n} tries: {reason}", n=n,
                                              reason=r), inner, st.integers(0, 9)),
    max_leaves=3)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reason=st.one_of(REASONS, WORDS))
def test_a_reason_is_kept_with_its_template_and_reads_the_same(store, reason):
    """Stored and read back, a reason is the same English text, and a Text is still one (an
    admin who reads `outbox list` in Spanish reads it in Spanish); plain text stays text."""
    key = f"k{abs(hash(reason))}"
    store.commit([Commit("r1", None, outbox=[item(key, status="parked", reason=reason)])], T0)
    for step in ("commit", "park", "retry_later", "wait"):
        if step == "park":
            store.park(key, reason, T0)
        elif step == "retry_later":
            store.retry_later(key, reason, T0)
        elif step == "wait":
            store.wait(key, reason, T0)
        got = store.item(key).reason
        assert got == reason and isinstance(got, Text) == isinstance(reason, Text), step
        if isinstance(reason, Text):
            assert say(got, "es") == say(reason, "es")


def test_done_items_are_never_released_or_dropped(store):
    store.commit([Commit("r1", "v1", outbox=[item("a")])], T0)
    store.claim("a", T0, LEASE)
    store.done("a", T0)
    assert store.release(["a"], T0) == 0 and store.drop(["a"]) == 0
    assert store.items()[0].status == "done"


def test_parked_items_can_be_committed_directly(store):
    store.commit([Commit("r9", "v1", outbox=[item("record:r9:v1", kind="record",
                                                    status="parked", reason="unknown stage")])],
                 T0)
    assert store.due(T0) == [] and store.items("parked")[0].reason == "unknown stage"


def test_a_claim_names_its_holder_and_only_that_holder_is_reclaimed(store):
    store.commit([Commit("r1", "v1", outbox=[item("a"), item("b")])], T0)
    assert store.claim("a", T0, LEASE, "host#1 pid 41 started 9") is True
    [flying] = store.in_flight(T0 + dt.timedelta(minutes=1))
    assert (flying.key, flying.holder, flying.lease_until) == ("a", "host#1 pid 41 started 9",
                                                               T0 + LEASE)
    assert store.in_flight(T0 + LEASE) == []                # a lease that ended is not in flight
    assert store.reclaim("a", "host#1 pid 42 started 9", T0) is False   # not its holder
    assert store.reclaim("b", "", T0) is False                          # not leased at all
    assert store.reclaim("a", "host#1 pid 41 started 9", T0) is True
    assert {i.key for i in store.due(T0)} == {"a", "b"} and store.in_flight(T0) == []
    store.claim("a", T0, LEASE, "host#1 pid 43 started 9")
    store.done("a", T0)
    assert store.in_flight(T0) == [] and store.item("a").lease_until is None


def decision(request, value, follow=()):
    return [OutboxItem(f"{request}:decision", "r1", "approve-it", "decision",
                       {"field": "approval_status", "value": value})] + [
        OutboxItem(f"{request}:{value}:{name}", "r1", name, "email", {}) for name in follow]


def test_the_first_decision_is_recorded_whole_and_a_second_changes_nothing(store):
    store.commit([Commit("r1", "v1", outbox=[item("r1:approve-it:1", kind="approval")])], T0)
    store.wait("r1:approve-it:1", "awaiting the decision", T0)
    assert store.record_verdict("r1:approve-it:1", decision("r1:approve-it:1", "Approved",
                                                    ["erp-order", "tell-owner"]), T0) is True
    assert store.record_verdict("r1:approve-it:1", decision("r1:approve-it:1", "Rejected",
                                                    ["tell-owner"]), T0) is False
    items = {i.key: i for i in store.items()}
    assert items["r1:approve-it:1"].status == "done"
    assert items["r1:approve-it:1:decision"].payload["value"] == "Approved"
    assert sorted(k for k in items if ":Rejected:" in k) == []
    assert {i.key for i in store.due(T0)} == {"r1:approve-it:1:decision",
                                              "r1:approve-it:1:Approved:erp-order",
                                              "r1:approve-it:1:Approved:tell-owner"}


def test_state_url_is_read_in_one_place():
    from pathlib import Path

    from connector.errors import ConfigurationError
    from connector.state import StateUrl

    assert StateUrl.parse("sqlite:///data/state.db") == StateUrl("sqlite", "data/state.db")
    assert StateUrl.parse("sqlite:///data/state.db").folder == Path("data")
    assert StateUrl.parse("sqlite:///").where == ":memory:"
    assert StateUrl.parse("dynamodb://crm-state") == StateUrl("dynamodb", "crm-state")
    assert StateUrl.parse("dynamodb://crm-state").folder is None
    with pytest.raises(ConfigurationError, match="neither sqlite:///PATH nor dynamodb://TABLE"):
        StateUrl.parse("postgres://db/state")
