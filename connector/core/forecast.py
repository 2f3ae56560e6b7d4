"""The revenue forecast: weighted amounts (amount x probability / 100) summed per expected
close month, owner or stage. Sums are exact; money is rounded to cents only when shown."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

CENT = Decimal("0.01")


@dataclass
class Bucket:
    key: str
    opportunities: int = 0
    amount: Decimal = Decimal(0)
    weighted_amount: Decimal = Decimal(0)

    def as_json(self, by: str) -> dict[str, object]:
        return {by: self.key, "opportunities": self.opportunities,
                "amount": money(self.amount), "weighted_amount": money(self.weighted_amount)}


_MONTHS: dict[dt.date, str] = {}


def month_of(day: dt.date) -> str:
    """'YYYY-MM' of a date. Remembered by date (a pipeline has a few hundred distinct close
    dates): strftime per record was a tenth of a dry run's time."""
    key = _MONTHS.get(day)
    if key is None:
        key = f"{day.year:04d}-{day.month:02d}"
        if len(_MONTHS) < 100_000:
            _MONTHS[day] = key
    return key


def as_decimal(value: Any) -> Decimal | None:
    """A number as Decimal (int too, never bool); None for anything else."""
    if type(value) is Decimal:
        return value
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    return None


def money(value: Decimal) -> str:
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


@dataclass
class Forecast:
    """Buckets by key, and the opportunities that could not be placed in one, by reason."""

    by: str = "month"
    buckets: dict[str, Bucket] = field(default_factory=dict)
    no_close_date: int = 0
    no_amount: int = 0
    no_probability: int = 0
    no_key: int = 0

    def add(self, amount: Decimal | None, probability: Decimal | int | None,
            close_date: dt.date | None, key: str | None = None) -> None:
        """One opportunity. `key` is the owner or stage when grouping by them."""
        if self.by == "month":
            if close_date is None:
                self.no_close_date += 1
                return
            key = month_of(close_date)
        elif not key:
            self.no_key += 1
            return
        if amount is None:
            self.no_amount += 1
            return
        if probability is None:
            self.no_probability += 1
            return
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = Bucket(key)
        bucket.opportunities += 1
        bucket.amount += amount
        bucket.weighted_amount += amount * Decimal(probability) / 100

    def month_adder(self) -> Callable[[Mapping[str, Any]], None]:
        """`add` by month, for a record's canonical values (`amount`, `probability`,
        `close_date`), in one call: a dry run adds every record to two forecasts, and the
        calls to pick the values apart cost more than the sums themselves."""
        assert self.by == "month"
        buckets = self.buckets

        def add(values: Mapping[str, Any]) -> None:
            close_date = values.get("close_date")
            if not isinstance(close_date, dt.date):
                self.no_close_date += 1
                return
            amount = values.get("amount")
            if type(amount) is not Decimal:
                amount = as_decimal(amount)
                if amount is None:
                    self.no_amount += 1
                    return
            probability = values.get("probability")
            if type(probability) is not Decimal and type(probability) is not int:
                # (an int as it is: Decimal x int is Decimal x Decimal(int), exactly)
                probability = as_decimal(probability)
                if probability is None:
                    self.no_probability += 1
                    return
            key = _MONTHS.get(close_date) or month_of(close_date)
            bucket = buckets.get(key)
            if bucket is None:
                bucket = buckets[key] = Bucket(key)
            bucket.opportunities += 1
            bucket.amount += amount
            bucket.weighted_amount += amount * probability / 100

        return add

    def add_sum(self, opportunities: int, amount: Decimal, probability: Any,
                close_date: Any) -> None:
        """`opportunities` records by month at once: their summed `amount`, one probability
        and one close date, weighted once."""
        if not isinstance(close_date, dt.date):
            self.no_close_date += opportunities
            return
        if type(probability) is not Decimal and type(probability) is not int:
            probability = as_decimal(probability)
            if probability is None:
                self.no_probability += opportunities
                return
        key = month_of(close_date)
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = Bucket(key)
        bucket.opportunities += opportunities
        bucket.amount += amount
        bucket.weighted_amount += amount * probability / 100

    def rows(self) -> list[Bucket]:
        return [self.buckets[k] for k in sorted(self.buckets)]

    def total(self) -> Bucket:
        return total(self.rows())

    @property
    def left_out(self) -> dict[str, int]:
        reasons = {"without a close date": self.no_close_date, "without an amount": self.no_amount,
                   "without a probability": self.no_probability,
                   f"without an {self.by}" if self.by == "owner" else f"without a {self.by}":
                   self.no_key}
        return {k: v for k, v in reasons.items() if v}


_NUMBERS = (Decimal, int)  # never bool: as keys 1 and True are one, but True is no probability
# Sums kept at most (a few MB): past that, a record of a new (close date, probabilities) is
# added the long way, so memory does not grow with an export whose probabilities all differ.
_PAIRS_LIMIT = 50_000


class MonthPairs:
    """A dry run's two forecasts by month, one on each record's values after the rules and one
    on its values as read, filled at once. Amounts are summed per (close date, probability
    after, probability as read) and each sum is weighted once, in `close`: the totals are the
    same (amount x probability / 100 and the sums are exact while an amount's digits and the
    probability's fit in Decimal's 28, as money and a percent with a few decimals do), at a
    third of the cost of adding each record to each forecast. A record whose values do not
    take this path (an amount or close date the rules changed or rounded, a probability that
    is not a number) is added to each forecast the long way."""

    def __init__(self, after: Forecast, as_is: Forecast) -> None:
        self.after, self.as_is = after, as_is
        self._sums: dict[tuple[Any, Any, Any], list[Any]] = {}

    def adder(self) -> Callable[[Mapping[str, Any], Mapping[str, Any]], None]:
        sums = self._sums
        add_after, add_as_is = self.after.month_adder(), self.as_is.month_adder()

        def add(after: Mapping[str, Any], read: Mapping[str, Any]) -> None:
            amount = read.get("amount")
            close_date = read.get("close_date")
            probability, read_probability = after.get("probability"), read.get("probability")
            if (type(amount) is Decimal and type(probability) in _NUMBERS
                    and (type(read_probability) in _NUMBERS or read_probability is None)
                    and after.get("amount") is amount and after.get("close_date") is close_date):
                key = (close_date, probability, read_probability)
                total = sums.get(key)
                if total is not None:
                    total[0] += 1
                    total[1] += amount
                    return
                if len(sums) < _PAIRS_LIMIT:
                    sums[key] = [1, amount]
                    return
            add_after(after)
            add_as_is(read)

        return add

    def close(self) -> None:
        """Weights the sums into the two forecasts."""
        for (close_date, probability, read_probability), (n, amount) in self._sums.items():
            self.after.add_sum(n, amount, probability, close_date)
            self.as_is.add_sum(n, amount, read_probability, close_date)
        self._sums.clear()


def total(buckets: Iterable[Bucket]) -> Bucket:
    out = Bucket("total")
    for b in buckets:
        out.opportunities += b.opportunities
        out.amount += b.amount
        out.weighted_amount += b.weighted_amount
    return out
