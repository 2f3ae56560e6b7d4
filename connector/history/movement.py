"""`movement --from D1 --to D2`: what moved the open pipeline of each close month, with each
deal in exactly one bucket, and start + changes = end to the cent.

A deal is taken as it was at the end of each date (its last snapshot dated that day or
before). Its value in a month's pipeline is its amount, or for the weighted view its amount
times the probability the record had then (as the rules in force wrote it, or the CRM's own),
each rounded to the cent first, so every sum below is exact. A blank amount or probability
counts 0. Only the reading of the two states differs between the engine and the reference;
the buckets are decided here, once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple

from connector.core.forecast import month_of
from connector.history.engine import History
from connector.history.source import Reference, Snap, state_at
from connector.i18n import gettext as _

BUCKETS = ("won", "lost", "new", "pulled_in", "pushed_in", "pushed_out", "pulled_out",
           "amount_up", "amount_down", "probability_up", "probability_down", "unchanged")
CENT = Decimal("0.01")


def bucket_label(bucket: str) -> str:
    """A bucket, or a probability move's cause, as a person reads it (CSV and JSON keep
    the key)."""
    labels = {
        "won": _("won"), "lost": _("lost"), "new": _("new"), "pulled_in": _("pulled in"),
        "pushed_in": _("pushed in"), "pushed_out": _("pushed out"),
        "pulled_out": _("pulled out"), "amount_up": _("amount up"),
        "amount_down": _("amount down"), "probability_up": _("probability up"),
        "probability_down": _("probability down"), "unchanged": _("unchanged"),
        "rules": _("rules"), "factors": _("factors"), "start": _("start"), "end": _("end")}
    return labels.get(bucket) or bucket.replace("_", " ")


class Side(NamedTuple):
    """A deal as it was at one date."""

    state: str | None
    close: dt.date | None
    amount: Decimal | None
    crm: Decimal | None
    combo: tuple[int, ...] | None

    @property
    def month(self) -> str | None:
        """The close month whose open pipeline holds the deal, if any."""
        return month_of(self.close) if self.state is None and self.close is not None else None

    @property
    def value(self) -> Decimal:
        return (self.amount or Decimal(0)).quantize(CENT, ROUND_HALF_UP)

    @property
    def weighted(self) -> Decimal:
        return ((self.amount or Decimal(0)) * (self.crm or Decimal(0)) / 100).quantize(
            CENT, ROUND_HALF_UP)


def _side(s: Snap | None) -> Side | None:
    return None if s is None else Side(s.state, s.close, s.amount, s.crm, s.combo)


def states_reference(ref: Reference, first: dt.date, second: dt.date
                     ) -> Iterator[tuple[str, Side | None, Side | None]]:
    for rows in ref.deals:
        a, b = _side(state_at(rows, first)), _side(state_at(rows, second))
        if (a is not None and a.state is None) or (b is not None and b.state is None):
            yield rows[0].id, a, b


def states_engine(history: History, first: dt.date, second: dt.date
                  ) -> Iterator[tuple[str, Side | None, Side | None]]:
    """Both states of every deal in one pass: its last row by each date (arg_max by order)."""
    n = len(history.plan.rules.factors)
    row = "[" + ", ".join(["CAST(state AS VARCHAR)", "CAST(close AS VARCHAR)",
                           "CAST(amount AS VARCHAR)", "CAST(crm AS VARCHAR)",
                           *(f"CAST(f{j} AS VARCHAR)" for j in range(n))]) + "]"
    cursor = history.con.execute(
        f"SELECT id, arg_max({row}, o) FILTER (WHERE day <= DATE '{first.isoformat()}') AS a, "
        f"arg_max({row}, o) AS b FROM typed WHERE day <= DATE '{second.isoformat()}' "
        "GROUP BY id HAVING (a IS NOT NULL AND a[1] IS NULL) OR b[1] IS NULL")
    while rows := cursor.fetchmany(10_000):
        for deal, a, b in rows:
            yield deal, _side_of(a, n), _side_of(b, n)


def _side_of(cells: list[str | None] | None, n: int) -> Side | None:
    """A state from its texts (a list is one type in SQL): DuckDB wrote them, exactly."""
    if cells is None:  # no snapshot yet at that date
        return None
    state, close, amount, crm = cells[:4]
    return Side(state, None if close is None else dt.date.fromisoformat(close),
                None if amount is None else Decimal(amount),
                None if crm is None else Decimal(crm),
                None if state is not None else tuple(int(c) for c in cells[4:4 + n]))  # type: ignore[arg-type]


@dataclass
class View:
    """One month's pipeline in one view (unweighted or weighted)."""

    start: Decimal = Decimal("0.00")
    end: Decimal = Decimal("0.00")
    changes: dict[str, Decimal] = field(default_factory=lambda: dict.fromkeys(BUCKETS,
                                                                              Decimal("0.00")))

    def as_json(self, deals: dict[str, int]) -> dict[str, Any]:
        return {"start": str(self.start), **{b: str(v) for b, v in self.changes.items()},
                "end": str(self.end), "deals": dict(deals)}


@dataclass
class Month:
    unweighted: View = field(default_factory=View)
    weighted: View = field(default_factory=View)
    deals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BUCKETS, 0))
    causes: dict[str, int] = field(default_factory=lambda: {"rules": 0, "factors": 0})


@dataclass(frozen=True)
class Detail:
    month: str
    bucket: str
    id: str
    cause: str          # for probability moves: 'rules' (same factor values) or 'factors'
    unweighted: Decimal
    weighted: Decimal
    before: Side | None
    after: Side | None


def bucket(month: str, a: Side | None, b: Side | None) -> str:
    """The one bucket of a deal in `month`'s pipeline at either date, by the SPEC's
    precedence."""
    m1 = a.month if a is not None else None
    m2 = b.month if b is not None else None
    if m1 == month:
        if b is not None and b.state is not None:
            return b.state  # won or lost between the dates
        if m2 == month:
            assert a is not None and b is not None
            if a.value != b.value:
                return "amount_up" if b.value > a.value else "amount_down"
            before, after = a.crm or Decimal(0), b.crm or Decimal(0)
            if before != after:
                return "probability_up" if after > before else "probability_down"
            return "unchanged"
        return "pulled_out" if m2 is not None and m2 < month else "pushed_out"
    if m1 is None:
        return "new"
    return "pulled_in" if m1 > month else "pushed_in"


@dataclass
class Movement:
    first: dt.date
    second: dt.date
    months: dict[str, Month] = field(default_factory=dict)
    details: list[Detail] = field(default_factory=list)

    def add(self, deal: str, a: Side | None, b: Side | None, keep: bool) -> None:
        m1 = a.month if a is not None else None
        m2 = b.month if b is not None else None
        for month in {m for m in (m1, m2) if m is not None}:
            mo = self.months.setdefault(month, Month())
            name = bucket(month, a, b)
            before = (a.value, a.weighted) if a is not None and m1 == month else (0, 0)
            after = (b.value, b.weighted) if b is not None and m2 == month else (0, 0)
            du, dw = after[0] - before[0], after[1] - before[1]
            mo.unweighted.start += before[0]
            mo.weighted.start += before[1]
            mo.unweighted.end += after[0]
            mo.weighted.end += after[1]
            mo.unweighted.changes[name] += du
            mo.weighted.changes[name] += dw
            mo.deals[name] += 1
            cause = ""
            if name.startswith("probability_"):
                assert a is not None and b is not None
                cause = "rules" if a.combo == b.combo else "factors"
                mo.causes[cause] += 1
            if keep:
                self.details.append(Detail(month, name, deal, cause, Decimal(du), Decimal(dw),
                                           a, b))

    def as_json(self) -> dict[str, Any]:
        return {"from": self.first.isoformat(), "to": self.second.isoformat(), "months": [
            {"month": m, "unweighted": mo.unweighted.as_json(mo.deals),
             "weighted": mo.weighted.as_json(mo.deals), "probability_moves": dict(mo.causes)}
            for m, mo in sorted(self.months.items())]}


def movement(source: History | Reference, first: dt.date, second: dt.date,
             details: bool = False) -> Movement:
    states = (states_reference(source, first, second) if isinstance(source, Reference)
              else states_engine(source, first, second))
    result = Movement(first, second)
    for deal, a, b in states:
        result.add(deal, a, b, details)
    result.details.sort(key=lambda d: (d.month, BUCKETS.index(d.bucket), d.id))
    return result
