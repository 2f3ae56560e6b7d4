"""`accuracy --lags 30,60,90`: for each past close month, what the weighted forecast said that
many days before the month began, against the amount won in it.

The forecast is the current rules evaluated on each deal as it was at the lag date (its last
snapshot dated that day or before, open, expected to close in the month); `forecast_crm` the
CRM's own probability recorded then. Sums are exact and rounded to the cent when shown. A deal
is won in the month of its close date (its closing snapshot's date when the close date is
blank). Months are listed from the first with a forecast or a win to the last one the history
covers to its last day, empty months included.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from connector.core.forecast import money, month_of
from connector.history.engine import History
from connector.history.source import WON, Plan, Reference, state_at

CENT = Decimal("0.01")
# (month, lag, combination, CRM probability) -> summed amount; and month -> amount won
Sums = dict[tuple[str, int, tuple[int, ...], Decimal | None], Decimal]


def first_day(month: str) -> dt.date:
    return dt.date(int(month[:4]), int(month[5:]), 1)


def last_day(month: str) -> dt.date:
    first = first_day(month)
    return (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)


def sums_reference(ref: Reference, lags: Iterable[int]
                   ) -> tuple[Sums, dict[str, Decimal], dt.date | None]:
    months = {month_of(s.close) for rows in ref.deals for s in rows if s.close is not None}
    sums: Sums = defaultdict(Decimal)
    won: dict[str, Decimal] = defaultdict(Decimal)
    latest = max((rows[-1].ts.date() for rows in ref.deals), default=None)
    for rows in ref.deals:
        last = rows[-1]
        if last.state == WON:
            won[month_of(last.close or last.ts.date())] += last.amount or Decimal(0)
        for month in months:
            for lag in lags:
                s = state_at(rows, first_day(month) - dt.timedelta(days=lag))
                if s is None or s.state is not None or s.close is None:
                    continue
                if month_of(s.close) == month:
                    assert s.combo is not None
                    sums[(month, lag, s.combo, s.crm)] += s.amount or Decimal(0)
    return dict(sums), dict(won), latest


def sums_engine(history: History, lags: Iterable[int]
                ) -> tuple[Sums, dict[str, Decimal], dt.date | None]:
    con = history.con
    n = len(history.plan.rules.factors)
    factors = "".join(f"f{j}, " for j in range(n))
    lag_list = ", ".join(str(int(lag)) for lag in lags)
    rows = con.execute(
        # a snapshot is the deal's state from its day until the next one's (closed or not)
        "WITH spans AS (SELECT *, lead(day) OVER (PARTITION BY id ORDER BY o) AS until "
        "FROM typed), iv AS (SELECT *, CAST(date_trunc('month', close) AS DATE) AS m "
        "FROM spans WHERE state IS NULL AND close IS NOT NULL), "
        f"lags AS (SELECT unnest([{lag_list}]) AS lag) "
        f"SELECT strftime(m, '%Y-%m'), lag, {factors}crm, sum(coalesce(amount, 0)) "
        "FROM iv, lags WHERE m - lag >= day AND (until IS NULL OR m - lag < until) "
        "GROUP BY ALL").fetchall()
    sums: Sums = {(r[0], r[1], tuple(r[2:2 + n]), r[2 + n]): r[3 + n] for r in rows}
    won = dict(con.execute(
        "WITH last AS (SELECT id, max(o) AS o FROM typed GROUP BY id) "
        "SELECT strftime(coalesce(close, day), '%Y-%m'), sum(coalesce(amount, 0)) "
        "FROM typed JOIN last USING (id, o) WHERE state = 'won' GROUP BY 1").fetchall())
    (latest,) = con.execute("SELECT max(day) FROM typed").fetchone() or (None,)
    return sums, won, latest


@dataclass(frozen=True)
class Line:
    month: str
    lag: int
    forecast: Decimal
    forecast_crm: Decimal | None
    won: Decimal

    @property
    def error(self) -> Decimal:
        return self.forecast - self.won

    def as_json(self) -> dict[str, Any]:
        return {"month": self.month, "lag": self.lag, "forecast": money(self.forecast),
                "forecast_crm": None if self.forecast_crm is None else money(self.forecast_crm),
                "won": money(self.won), "error": money(self.error)}


def accuracy(source: History | Reference, plan: Plan, lags: list[int]) -> list[Line]:
    sums, won, latest = (sums_reference(source, lags) if isinstance(source, Reference)
                         else sums_engine(source, lags))
    has_crm = plan.crm is not None
    forecast: dict[tuple[str, int], Decimal] = defaultdict(Decimal)
    crm: dict[tuple[str, int], Decimal] = defaultdict(Decimal)
    with localcontext() as ctx:
        ctx.prec = 60  # exact: amounts times percents, summed
        for (month, lag, combo, p), amount in sums.items():
            forecast[(month, lag)] += amount * plan.probability(combo) / 100
            crm[(month, lag)] += amount * (p or Decimal(0)) / 100
    seen = sorted({m for m, _ in forecast} | set(won))
    past: list[str] = []  # every month from the first seen to the last the history covers
    if seen and latest is not None:
        step = seen[0]
        while last_day(step) <= latest:
            past.append(step)
            step = month_of(last_day(step) + dt.timedelta(days=1))
    return [Line(m, lag, forecast.get((m, lag), Decimal(0)),
                 crm.get((m, lag), Decimal(0)) if has_crm else None, won.get(m, Decimal(0)))
            for m in past for lag in lags]


@dataclass(frozen=True)
class Summary:
    lag: int
    months: int
    mape: Decimal | None   # mean of |error| / won over the months something was won, in %
    bias: Decimal          # mean error: above 0, the forecast said more than was won
    mape_crm: Decimal | None
    bias_crm: Decimal | None


def summaries(lines: list[Line], lags: list[int]) -> list[Summary]:
    out = []
    for lag in lags:
        these = [x for x in lines if x.lag == lag]
        scored = [x for x in these if x.won]
        n = len(these)

        def mape(errors: list[Decimal], base: list[Decimal]) -> Decimal | None:
            if not base:
                return None
            return (sum((abs(e) / w for e, w in zip(errors, base)), Decimal(0)) * 100
                    / len(base)).quantize(Decimal("0.1"), ROUND_HALF_UP)

        crm_known = all(x.forecast_crm is not None for x in these)
        out.append(Summary(
            lag, n, mape([x.error for x in scored], [x.won for x in scored]),
            (sum((x.error for x in these), Decimal(0)) / n).quantize(CENT) if n else Decimal(0),
            mape([x.forecast_crm - x.won for x in scored if x.forecast_crm is not None],
                 [x.won for x in scored]) if crm_known else None,
            (sum((x.forecast_crm - x.won for x in these if x.forecast_crm is not None),
                 Decimal(0)) / n).quantize(CENT) if crm_known and n else None))
    return out
