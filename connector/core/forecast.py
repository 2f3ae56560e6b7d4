"""The revenue forecast: weighted amounts (amount x probability / 100) summed per expected
close month, owner or stage. Sums are exact; money is rounded to cents only when shown.

What the forecast counts (SPEC 6.1): open and won deals; lost ones weigh nothing and are left
out under `lost`; an open deal whose close date is before today is `overdue`, one row, not in
its past month; amounts are in the corporate currency, and a currency without a rate is never
summed into another: its records are left out, by currency. Every record left out is counted
by its reason."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

from connector.errors import Text

CENT = Decimal("0.01")
OVERDUE = "overdue"
LEFT_OUT = "left out"
OPEN, WON, LOST = "open", "won", "lost"  # a deal's status, from the rules' closed states
FAILED = Text("failed")
# Why records were left out, said to a person as counted here (built once, not per record)
_LEFT_LOST = Text("lost")
_NO_CLOSE_DATE = Text("without a close date")
_NO_KEY = {"owner": Text("without an owner"), "stage": Text("without a stage")}
_NO_AMOUNT = Text("without an amount")
_NO_PROBABILITY = Text("without a probability")
_NO_CURRENCY = Text("without a currency")


class Rates(Protocol):
    """Amounts in other currencies to the corporate one (connector.currency)."""

    @property
    def corporate(self) -> str | None:
        """The currency amounts are converted to."""

    def to_corporate(self, amount: Decimal, currency: str, day: dt.date | None
                     ) -> Decimal | None:
        """The amount in the corporate currency, or None without a rate."""


@dataclass
class Bucket:
    key: str
    opportunities: int = 0
    amount: Decimal = Decimal(0)
    weighted_amount: Decimal = Decimal(0)
    won: Decimal = Decimal(0)  # the part of `amount` already won (the chart shows it apart)

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
    """Buckets by key, and the opportunities that could not be placed in one, by reason.
    Open deals due before `due_by` (the run's today) are overdue (by month only); `rates`
    converts amounts whose `currency` is given; `order` lists keys that come first, in that
    order (stages in pipeline order); the other keys follow sorted."""

    by: str = "month"
    due_by: dt.date | None = None
    rates: Rates | None = None
    order: tuple[str, ...] = ()
    buckets: dict[str, Bucket] = field(default_factory=dict)
    left: Counter[str] = field(default_factory=Counter)
    currency: str | None = None  # what the amounts are in, when a currency field is mapped

    def __post_init__(self) -> None:
        if self.rates is not None:
            self.currency = self.rates.corporate

    def add(self, amount: Decimal | None, probability: Decimal | int | None,
            close_date: dt.date | None, key: str | None = None, status: str = OPEN,
            currency: str | None = None, opportunities: int = 1) -> None:
        """`opportunities` records at once (their summed `amount`, one probability, one close
        date and status). `key` is the owner or stage when grouping by them."""
        left = self.left
        if status == LOST:
            left[_LEFT_LOST] += opportunities
            return
        if self.by == "month":
            if not isinstance(close_date, dt.date):
                left[_NO_CLOSE_DATE] += opportunities
                return
            due_by = self.due_by
            if status == OPEN and due_by is not None and close_date < due_by:
                key = OVERDUE
            else:
                key = month_of(close_date)
        elif not key:
            left[_NO_KEY.get(self.by) or Text("without a {group}", group=self.by)
                 ] += opportunities
            return
        if amount is None:
            left[_NO_AMOUNT] += opportunities
            return
        if type(probability) is not Decimal and type(probability) is not int:
            # (an int as it is: Decimal x int is Decimal x Decimal(int), exactly)
            probability = as_decimal(probability)
            if probability is None:
                left[_NO_PROBABILITY] += opportunities
                return
        if currency is not None:  # a currency field is mapped
            if not currency:
                left[_NO_CURRENCY] += opportunities
                return
            rates = self.rates
            if rates is None:  # no rates: the first currency met is summed, no other
                self.currency = self.currency or currency
                converted: Decimal | None = amount if currency == self.currency else None
            else:
                converted = rates.to_corporate(amount, currency, close_date)
            if converted is None:
                left[Text("no rate for {currency}", currency=currency)] += opportunities
                return
            amount = converted
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = Bucket(key)
        bucket.opportunities += opportunities
        bucket.amount += amount
        bucket.weighted_amount += amount * probability / 100
        if status == WON:
            bucket.won += amount

    def month_adder(self, deal: DealFields | None = None) -> Callable[[Mapping[str, Any]], None]:
        """`add` by month, for a record's canonical values (`amount`, `probability`,
        `close_date`, and the status and currency `deal` says where to find)."""
        assert self.by == "month"
        add = self.add
        deal = deal or DealFields()
        status_field, status, currency = deal.status_field, deal.status, deal.currency

        def add_values(values: Mapping[str, Any]) -> None:
            amount = values.get("amount")
            add(amount if type(amount) is Decimal else as_decimal(amount),
                values.get("probability"), values.get("close_date"), None,
                status(values.get(status_field)),
                _currency(values.get(currency)) if currency else None)

        return add_values

    def fail(self, opportunities: int = 1) -> None:
        """Records the rules or the reading refused: left out under `failed`."""
        self.left[FAILED] += opportunities

    def rows(self) -> list[Bucket]:
        rank = {k: i for i, k in enumerate((OVERDUE, *self.order))}
        last = len(rank)
        return sorted(self.buckets.values(), key=lambda b: (rank.get(b.key, last), b.key))

    def total(self) -> Bucket:
        return total(self.rows())

    @property
    def left_out(self) -> dict[str, int]:
        """Reason -> records left out, failures last."""
        reasons = {k: v for k, v in self.left.items() if v and k != FAILED}
        if self.left[FAILED]:
            reasons[FAILED] = self.left[FAILED]
        return reasons

    def left_out_json(self) -> dict[str, object]:
        return {self.by: LEFT_OUT, "opportunities": sum(self.left.values()),
                "reasons": self.left_out}


def _open(_value: Any) -> str:
    return OPEN


@dataclass(frozen=True)
class DealFields:
    """Where a record's forecast status and currency are: `status` reads the value of
    `status_field` (the rules' closed field) as OPEN, WON or LOST; `currency` is the canonical
    field of the currency ('' when none is mapped: one currency); `written` the fields the
    rules may change (the others are, after the rules, what was read)."""

    status_field: str = ""
    status: Callable[[Any], str] = _open
    currency: str = ""
    written: frozenset[str] = frozenset({"amount", "close_date"})


def _currency(code: Any) -> str:
    """A record's ISO code; '' when it is blank."""
    if code is None:
        return ""
    return code.strip().upper() if isinstance(code, str) else str(code)


_NUMBERS = (Decimal, int)  # never bool: as keys 1 and True are one, but True is no probability
# Sums kept at most (a few MB): past that, a record of a new (close date, probabilities) is
# added the long way, so memory does not grow with an export whose probabilities all differ.
_PAIRS_LIMIT = 50_000


class MonthPairs:
    """A dry run's two forecasts by month, one on each record's values after the rules and one
    on its values as read, filled at once. Amounts are summed per (close date, probability
    after, probability as read, status field after and as read, currency) and each sum is
    weighted once, in `close`: the totals are the same (amount x probability / 100 and the
    sums are exact while an amount's digits and the probability's fit in Decimal's 28, as
    money and a percent with a few decimals do), at a third of the cost of adding each record
    to each forecast. A record whose values do not take this path (an amount or close date the
    rules changed or rounded, a probability that is not a number) is added to each forecast
    the long way."""

    def __init__(self, after: Forecast, as_is: Forecast, deal: DealFields | None = None
                 ) -> None:
        self.after, self.as_is = after, as_is
        self.deal = deal or DealFields()
        self._sums: dict[tuple[Any, ...], list[Any]] = {}

    def adder(self) -> Callable[[Mapping[str, Any], Mapping[str, Any]], None]:
        sums = self._sums
        deal = self.deal
        add_after, add_as_is = self.after.month_adder(deal), self.as_is.month_adder(deal)
        status, currency = deal.status_field, deal.currency
        stage_written = status in deal.written
        stable = not {"amount", "close_date"} & deal.written

        def add(after: Mapping[str, Any], read: Mapping[str, Any]) -> None:
            amount = read.get("amount")
            close_date = read.get("close_date")
            probability, read_probability = after.get("probability"), read.get("probability")
            if (type(amount) is Decimal and type(probability) in _NUMBERS
                    and (type(read_probability) in _NUMBERS or read_probability is None)
                    and (stable or (after.get("amount") is amount
                                    and after.get("close_date") is close_date))):
                key = (close_date, probability, read_probability, read.get(status),
                       after.get(status) if stage_written else None,
                       read.get(currency) if currency else None)
                try:
                    total = sums.get(key)
                except TypeError:  # an unhashable value (a list from JSON): the long way
                    add_after(after)
                    add_as_is(read)
                    return
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
        status = self.deal.status
        for key, (n, amount) in self._sums.items():
            close_date, probability, read_probability, read_stage, stage, code = key
            if self.deal.status_field not in self.deal.written:
                stage = read_stage
            currency = _currency(code) if self.deal.currency else None
            self.after.add(amount, probability, close_date, None, status(stage), currency, n)
            self.as_is.add(amount, read_probability, close_date, None, status(read_stage),
                           currency, n)
        self._sums.clear()


def total(buckets: Iterable[Bucket]) -> Bucket:
    out = Bucket("total")
    for b in buckets:
        out.opportunities += b.opportunities
        out.amount += b.amount
        out.weighted_amount += b.weighted_amount
        out.won += b.won
    return out
