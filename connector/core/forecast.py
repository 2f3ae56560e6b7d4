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


def total(buckets: Iterable[Bucket]) -> Bucket:
    out = Bucket("total")
    for b in buckets:
        out.opportunities += b.opportunities
        out.amount += b.amount
        out.weighted_amount += b.weighted_amount
    return out
