"""The one retry policy for every remote call (Salesforce, the ERP, HTTP actions).

A call that raises a `RetriableError` (429, 5xx, a timeout, a locked row) is tried again after an
exponential backoff with jitter, or after exactly the delay the server asked for when the error
carries one (`retry_after`, from HTTP `Retry-After`). Retries stop after `attempts` tries, or when
the next wait would pass the deadline (`time_left`, e.g. a Lambda's remaining time; else
`budget` seconds from the first try): then the last error is raised as it was. Any other error
is raised at once.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import tenacity

from connector.errors import RetriableError

log = logging.getLogger(__name__)

T = TypeVar("T")


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """HTTP `Retry-After` in seconds: either delta-seconds ('120') or an HTTP date
    (RFC 9110, section 10.2.3). None when absent or unreadable."""
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def deadline_in(seconds: float, clock: Callable[[], float] = time.monotonic
                ) -> Callable[[], float]:
    """A `time_left` for a deadline `seconds` from now."""
    end = clock() + seconds
    return lambda: end - clock()


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5            # tries in all, the first included
    base: float = 1.0            # the first backoff, in seconds; it doubles each time
    cap: float = 60.0            # no backoff is longer, but for jitter (Retry-After may be)
    jitter: float = 1.0          # up to this many seconds added at random, so clients spread out
    budget: float = 300.0        # seconds for all tries and waits, when `time_left` is not given
    time_left: Callable[[], float] | None = None   # seconds to the caller's deadline
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def call(self, fn: Callable[[], T]) -> T:
        """`fn()`, tried again on RetriableError as the policy allows."""
        time_left = self.time_left or deadline_in(self.budget, self.clock)

        def stop(state: tenacity.RetryCallState) -> bool:
            return state.attempt_number >= self.attempts or state.upcoming_sleep > time_left()

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(RetriableError),
            wait=self._wait,
            stop=stop,
            sleep=self.sleep,
            before_sleep=self._log,
            reraise=True,
        )
        return retrying(fn)

    def with_deadline(self, time_left: Callable[[], float]) -> RetryPolicy:
        """The same policy, bounded by the caller's deadline."""
        return replace(self, time_left=time_left)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        asked = getattr(error, "retry_after", None)
        if isinstance(asked, (int, float)) and not isinstance(asked, bool) and asked >= 0:
            return float(asked)  # the server knows best when it will take us again
        # Jitter on top of the capped backoff, so that clients waiting at the cap still spread.
        backoff = min(self.cap, self.base * 2 ** (state.attempt_number - 1))
        return backoff + random.uniform(0.0, self.jitter)

    def _log(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning("%s; retrying in %.1f s (attempt %d of %d)", error, state.upcoming_sleep,
                    state.attempt_number + 1, self.attempts)


__all__ = ["RetryPolicy", "deadline_in", "retry_after_seconds"]
