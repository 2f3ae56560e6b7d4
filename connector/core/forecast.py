"""The revenue forecast: weighted amounts (amount x probability / 100) summed per expected
close month, owner or stage. Sums are exact; money is rounded to cents only when shown."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

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
            key = close_date.strftime("%Y-%m")
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
