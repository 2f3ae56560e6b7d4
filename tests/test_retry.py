"""The one retry policy: which errors it retries, how long it waits (backoff with jitter, or
the server's Retry-After), and when it gives up (attempts, deadline). No real waiting."""

import logging
from datetime import UTC, datetime

import pytest

from connector.errors import FatalError, RetriableError
from connector.retry import RetryPolicy, deadline_in, retry_after_seconds


class FakeTime:
    """A clock that only moves when the policy sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def failing(*errors: Exception, result: str = "done"):
    """A call that raises the given errors in turn, then returns `result`."""
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    call.calls = calls  # type: ignore[attr-defined]
    return call


def policy(time: FakeTime, **options) -> RetryPolicy:
    return RetryPolicy(sleep=time.sleep, clock=time.clock, **options)


def test_a_retriable_error_is_retried_until_it_passes():
    time = FakeTime()
    call = failing(RetriableError("503"), RetriableError("timeout"))
    assert policy(time).call(call) == "done"
    assert len(call.calls) == 3 and len(time.sleeps) == 2


def test_backoff_doubles_up_to_the_cap():
    time = FakeTime()
    call = failing(*[RetriableError("busy")] * 5)
    policy(time, attempts=6, base=1.0, cap=10.0, jitter=0.0).call(call)
    assert time.sleeps == [1.0, 2.0, 4.0, 8.0, 10.0]


def test_the_first_wait_is_the_base_plus_jitter():
    for _ in range(20):
        time = FakeTime()
        policy(time, base=1.0, jitter=1.0).call(failing(RetriableError("busy")))
        assert 1.0 <= time.sleeps[0] <= 2.0


def test_jitter_spreads_the_waits():
    time = FakeTime()
    policy(time, attempts=40, base=0.5, cap=0.5, jitter=1.0, budget=1e9).call(
        failing(*[RetriableError("busy")] * 39))
    assert all(0.5 <= s <= 1.5 for s in time.sleeps)
    assert len(set(time.sleeps)) > 1             # not all the same wait, even at the cap


def test_retry_after_is_honoured_exactly():
    time = FakeTime()
    call = failing(RetriableError("429", retry_after=7.0), RetriableError("503", retry_after=0.0))
    policy(time).call(call)
    assert time.sleeps == [7.0, 0.0]


def test_any_retriable_error_with_retry_after_is_honoured():
    class ErpBusy(RetriableError):
        pass

    time = FakeTime()
    policy(time).call(failing(ErpBusy("ERP busy", retry_after=12.5)))
    assert time.sleeps == [12.5]


def test_it_gives_up_after_the_attempts_with_the_last_error():
    time = FakeTime()
    last = RetriableError("still down")
    call = failing(RetriableError("down"), RetriableError("down"), last)
    with pytest.raises(RetriableError) as caught:
        policy(time, attempts=3).call(call)
    assert caught.value is last
    assert len(call.calls) == 3 and len(time.sleeps) == 2


def test_it_never_waits_past_the_deadline():
    time = FakeTime()
    call = failing(RetriableError("429", retry_after=30.0))
    with pytest.raises(RetriableError):
        policy(time, time_left=lambda: 10.0).call(call)
    assert time.sleeps == [] and len(call.calls) == 1


def test_the_budget_bounds_the_time_spent_waiting():
    time = FakeTime()
    call = failing(*[RetriableError("busy")] * 9)
    with pytest.raises(RetriableError):
        policy(time, attempts=10, base=1.0, jitter=0.0, budget=10.0).call(call)
    assert time.sleeps == [1.0, 2.0, 4.0]          # the next 8 s would end past 10 s
    assert time.now <= 10.0


def test_a_deadline_counts_down_with_the_clock():
    time = FakeTime()
    left = deadline_in(5.0, time.clock)
    assert left() == 5.0
    time.sleep(2.0)
    assert left() == 3.0
    bounded = policy(time, jitter=0.0).with_deadline(left)
    with pytest.raises(RetriableError):
        bounded.call(failing(*[RetriableError("busy")] * 4))
    assert time.sleeps == [2.0, 1.0, 2.0]          # 2 s already gone, then 1 + 2, not 4


@pytest.mark.parametrize("error", [FatalError("quota"), ValueError("bug"), KeyError("x")])
def test_other_errors_are_raised_at_once(error):
    time = FakeTime()
    call = failing(error)
    with pytest.raises(type(error)):
        policy(time).call(call)
    assert len(call.calls) == 1 and time.sleeps == []


def test_each_retry_is_logged(caplog):
    caplog.set_level(logging.WARNING, logger="connector.retry")
    time = FakeTime()
    policy(time, jitter=0.0).call(failing(RetriableError("Salesforce is busy (HTTP 503)")))
    assert caplog.messages == ["Salesforce is busy (HTTP 503); retrying in 1.0 s "
                               "(attempt 2 of 5)"]


@pytest.mark.parametrize(("header", "seconds"), [
    ("120", 120.0),
    (" 2.5 ", 2.5),
    ("-3", 0.0),
    ("Thu, 26 Nov 2026 10:01:30 GMT", 90.0),
    ("Thu, 26 Nov 2026 09:59:00 GMT", 0.0),
    ("soon", None),
    ("", None),
    (None, None),
    ("inf", None),
])
def test_retry_after_reads_seconds_and_dates(header, seconds):
    now = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
    assert retry_after_seconds(header, now) == seconds
