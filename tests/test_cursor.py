"""The poll cursor's arithmetic (connector.state.cursor), as plain functions: a cursor read
back starts the next poll `OVERLAP` earlier, moves only to a committed batch's newest version,
never past the run's start and never back. Both stores keep it the same way: see
tests/test_state_contract.py."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from connector.pipeline import OVERLAP
from connector.state.cursor import after_batch, later, read_from

INSTANTS = st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 1, 1),
                        timezones=st.just(dt.UTC))
STAMPS = INSTANTS.map(lambda t: t.isoformat())


def test_no_cursor_reads_everything_and_a_cursor_reads_from_the_overlap_before_it():
    assert read_from(None, OVERLAP) is None
    assert read_from("2026-11-26T09:00:00+00:00", OVERLAP) == \
        dt.datetime(2026, 11, 26, 8, 55, tzinfo=dt.UTC)


@given(cursor=st.none() | STAMPS, versions=st.lists(st.none() | STAMPS, max_size=5),
       started=INSTANTS)
def test_a_batch_moves_the_cursor_forward_to_its_newest_version_never_past_the_start(
        cursor, versions, started):
    moved = after_batch(cursor, versions, started)
    stamps = [dt.datetime.fromisoformat(v) for v in versions if v is not None]
    if moved is None:       # it stays: nothing stamped, or nothing newer than the cursor
        assert not stamps or (cursor is not None and
                              min(max(stamps), started) <= dt.datetime.fromisoformat(cursor))
        return
    assert dt.datetime.fromisoformat(moved) == min(max(stamps), started)
    assert cursor is None or dt.datetime.fromisoformat(moved) > dt.datetime.fromisoformat(cursor)
    assert later(cursor, moved) == moved


@given(a=STAMPS, b=STAMPS)
def test_texts_compare_as_the_instants_do(a, b):
    """`later` compares texts: right only because they are written one way (+00:00)."""
    assert (later(a, b) == b) == (dt.datetime.fromisoformat(b) >= dt.datetime.fromisoformat(a))
