"""Snapshots in the state store, on every backend (SQLite and DynamoDB on moto): appended with
the commit of their batch and only when the values changed; a failed commit leaves none; a
commit done again, or history pulled twice, adds none; read back by record, then instant."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.core.edges import LedgerState
from connector.state import Commit, OutboxItem, Snapshot, pack_values, unpack_values, utc_text
from tests.test_state_contract import BACKENDS

T0 = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)


@pytest.fixture(params=sorted(BACKENDS))
def store(request, tmp_path):
    s = BACKENDS[request.param](tmp_path)
    yield s
    s.close()


def snap(record, stage, at, modified=None):
    modified = modified or at
    fields = {"Id": record, "SystemModstamp": modified.isoformat(), "StageName": stage}
    return Snapshot(record, utc_text(at), tuple(fields), list(fields.values()), f"d-{stage}",
                    utc_text(modified))


def stages(store, record=None):
    return [(r["Id"], r["StageName"], r["as_of"]) for r in store.read_snapshots()
            if record is None or r["Id"] == record]


def test_only_changed_values_are_appended(store):
    hour = dt.timedelta(hours=1)
    for i, stage in enumerate(["Prospecting", "Prospecting", "Negotiation", "Prospecting"]):
        store.commit([Commit("r1", f"v{i}", snapshot=snap("r1", stage, T0 + i * hour))], T0)
    assert stages(store) == [("r1", "Prospecting", utc_text(T0)),
                             ("r1", "Negotiation", utc_text(T0 + 2 * hour)),
                             ("r1", "Prospecting", utc_text(T0 + 3 * hour))]


def test_a_snapshot_is_committed_with_its_batch_or_not_at_all(store):
    class Unwritable(OutboxItem):
        def __getattribute__(self, name):
            if name == "payload":
                raise RuntimeError("crash while writing")
            return super().__getattribute__(name)

    with pytest.raises(RuntimeError):
        store.commit([Commit("r1", "v1", snapshot=snap("r1", "Prospecting", T0)),
                      Commit("r2", "v1", {}, [Unwritable("r2:x:1", "r2", "x", "email", {})])], T0)
    assert stages(store) == []
    store.commit([Commit("r1", "v1", {"notify": LedgerState(True, 1)},
                         snapshot=snap("r1", "Prospecting", T0))], T0)
    store.commit([Commit("r1", "v1", {"notify": LedgerState(True, 1)},
                         snapshot=snap("r1", "Prospecting", T0))], T0)  # the batch redone
    assert stages(store) == [("r1", "Prospecting", utc_text(T0))]


def test_snapshots_read_back_by_record_then_instant(store):
    day = dt.timedelta(days=1)
    store.commit([Commit("b", "1", snapshot=snap("b", "Prospecting", T0 + day)),
                  Commit("a", "1", snapshot=snap("a", "Qualification", T0 + 2 * day))], T0)
    store.commit([Commit("a", "2", snapshot=snap("a", "Closed Won", T0 + 3 * day)),
                  Commit("b", "2", snapshot=snap("b", "Closed Lost", T0))], T0)
    assert stages(store) == [("a", "Qualification", utc_text(T0 + 2 * day)),
                             ("a", "Closed Won", utc_text(T0 + 3 * day)),
                             ("b", "Closed Lost", utc_text(T0)),
                             ("b", "Prospecting", utc_text(T0 + day))]
    [row, *_] = store.read_snapshots()
    assert set(row) == {"Id", "SystemModstamp", "StageName", "as_of"}


def test_snapshots_at_one_instant_follow_their_modification_stamps(store):
    close = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)  # both dated on the deal's close date
    store.commit([Commit("r1", "v2", snapshot=snap("r1", "Closed Won", close, T0))], T0)
    store.commit([Commit("r1", "v1", snapshot=snap("r1", "Closed", close, T0 - dt.timedelta(
        minutes=5)))], T0)
    assert [s for _, s, _ in stages(store)] == ["Closed", "Closed Won"]


def test_pulled_history_is_added_once_and_never_becomes_the_last(store):
    day = dt.timedelta(days=1)
    store.commit([Commit("r1", "v9", snapshot=snap("r1", "Negotiation", T0))], T0)
    past = [snap("r1", "Prospecting", T0 - 9 * day), snap("r1", "Negotiation", T0 - 5 * day),
            snap("r2", "Prospecting", T0 - 3 * day)]
    assert store.add_snapshots(past) == 3
    assert store.add_snapshots(past) == 0
    # The latest is still the synced one: the same values read again add nothing.
    store.commit([Commit("r1", "v10", snapshot=snap("r1", "Negotiation", T0 + day))], T0)
    assert [s for _, s, _ in stages(store, "r1")] == ["Prospecting", "Negotiation",
                                                      "Negotiation"]
    store.commit([Commit("r2", "v1", snapshot=snap("r2", "Qualification", T0))], T0)
    assert [s for _, s, _ in stages(store, "r2")] == ["Prospecting", "Qualification"]


def test_many_records_in_one_commit(store):
    commits = [Commit(f"r{i:03d}", "v1", {"n": LedgerState(False, 0)},
                      snapshot=snap(f"r{i:03d}", "Prospecting", T0)) for i in range(250)]
    store.commit(commits, T0)
    store.commit(commits, T0 + dt.timedelta(minutes=1))
    assert len(stages(store)) == 250


def test_any_text_is_read_back_as_it_was_stored(store):
    odd = ["", "[1, 2]", '{"a": 1}', "a\0b", "\0", "naïve ☃", "x" * 5000]
    commits = [Commit(f"r{i}", "v1", snapshot=Snapshot(
        f"r{i}", utc_text(T0), ("Id", "Name", "Other"), [f"r{i}", value, "\0" + value],
        f"d{i}")) for i, value in enumerate(odd)]
    store.commit(commits, T0)
    rows = {r["Id"]: r for r in store.read_snapshots()}
    for i, value in enumerate(odd):
        assert rows[f"r{i}"] == {"Id": f"r{i}", "Name": value, "Other": "\0" + value,
                                 "as_of": utc_text(T0)}


@given(st.lists(st.text()))
def test_packed_values_unpack_to_themselves(values):
    assert unpack_values(pack_values(values)) == values
