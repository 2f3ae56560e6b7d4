"""How much of what was read the pipeline commits at once (connector.pipeline.full_calls): only
whole write calls while pages keep coming, and never a record out of read order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connector.pipeline import full_calls


@given(st.lists(st.booleans(), max_size=300), st.integers(min_value=1, max_value=40))
def test_the_batch_is_the_longest_prefix_of_whole_write_calls(changed, write_size):
    cut = full_calls(changed, write_size)
    prefix = changed[:cut]
    assert 0 <= cut <= len(changed)
    # Whole calls only, as many as the changes read so far can fill.
    assert sum(prefix) % write_size == 0
    assert sum(prefix) == sum(changed) // write_size * write_size
    # Unchanged records cost no call: a batch runs on to the next change that waits.
    if cut:
        assert cut == len(changed) or changed[cut]


def test_examples():
    assert full_calls([True, False, True, False, False, True], 2) == 5
    assert full_calls([True, False, False], 2) == 0
    assert full_calls([False, True, True, False], 2) == 4
