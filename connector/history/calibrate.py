"""`calibrate`: does a workflow that says 70 % win about 70 % of the time?

Each closed deal is judged as it was while open: by default every open snapshot, a deal with k
of them adding 1/k per snapshot (each deal weighs 1 in total); with a horizon, the one snapshot
in force at the end of the day that many days before it closed (the closing snapshot aside).
Both paths (reference and DuckDB) reduce a history to
the same `Counts`: how many snapshots share a factor combination, a CRM probability, an outcome,
a side of the backtest date and a k. Everything here is computed from those, exactly, in
fractions, and rounded only when shown.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any

from connector.history.engine import History
from connector.history.source import WON, Failures, Plan, Reference, state_at

# (combination, CRM probability, won, closed before the backtest date (None: no backtest), k)
Key = tuple[tuple[int, ...], Decimal | None, bool, bool | None, int]
Counts = Counter[Key]

MINIMUM_DEALS = 10  # fewer deals than this in a workflow: its interval is shown, no verdict
LEVEL = 0.95


def counts_reference(ref: Reference, horizon: int | None = None,
                     since: dt.date | None = None, split: dt.date | None = None) -> Counts:
    out: Counts = Counter()
    for rows in ref.deals:
        last = rows[-1]
        if last.state is None:
            continue
        closed_on = last.ts.date()  # the closing snapshot is dated on the close date
        if since is not None and closed_on < since:
            continue
        fit = None if split is None else closed_on < split
        won = last.state == WON
        if horizon is None:
            opens = [s for s in rows if s.state is None]
            for s in opens:
                assert s.combo is not None
                out[(s.combo, s.crm, won, fit, len(opens))] += 1
        else:
            # as it was that many days before, the closing snapshot itself aside
            then = state_at(rows[:-1], closed_on - dt.timedelta(days=horizon))
            if then is not None and then.state is None:
                assert then.combo is not None
                out[(then.combo, then.crm, won, fit, 1)] += 1
    return out


def counts(source: History | Reference, horizon: int | None = None,
           since: dt.date | None = None, split: dt.date | None = None) -> Counts:
    if isinstance(source, Reference):
        return counts_reference(source, horizon, since, split)
    return counts_engine(source, horizon, since, split)


def counts_engine(history: History, horizon: int | None = None, since: dt.date | None = None,
                  split: dt.date | None = None) -> Counts:
    n = len(history.plan.rules.factors)
    factors = "".join(f"t.f{j}, " for j in range(n))
    since_sql = f"AND t.day >= DATE '{since.isoformat()}'" if since else ""
    fit = f"c.closed_on < DATE '{split.isoformat()}'" if split else "NULL"
    # one pass per deal for its last snapshot and its number of open ones (k)
    closing = (
        "WITH per AS (SELECT id, max(o) AS closed_at, arg_max_null(state, o) AS final, "
        "arg_max(day, o) AS closed_on, count(*) FILTER (WHERE state IS NULL) AS k "
        "FROM typed GROUP BY id), "
        "closing AS (SELECT id, closed_at, closed_on, final = 'won' AS won, k FROM per t "
        f"WHERE final IS NOT NULL {since_sql.replace('t.day', 'closed_on')}) ")
    if horizon is None:
        sql = (closing + f"SELECT {factors}t.crm, c.won, {fit} AS fit, c.k "
               "FROM typed t JOIN closing c USING (id) WHERE t.state IS NULL")
    else:
        sql = (closing + ", pick AS (SELECT t.id, max(t.o) AS o FROM typed t JOIN closing c "
               f"USING (id) WHERE t.day <= c.closed_on - {int(horizon)} AND t.o < c.closed_at "
               "GROUP BY t.id) "
               f"SELECT {factors}t.crm, c.won, {fit} AS fit, 1 AS k FROM typed t "
               "JOIN pick USING (id, o) JOIN closing c USING (id) WHERE t.state IS NULL")
    rows = history.con.execute(f"SELECT *, count(*) FROM ({sql}) GROUP BY ALL").fetchall()
    return Counter({(tuple(r[:n]), r[n], r[n + 1], r[n + 2], r[n + 3]): r[n + 4]
                    for r in rows})


@dataclass(frozen=True)
class Score:
    """A Brier score with its Murphy decomposition (bins: the distinct forecast values, so
    brier = reliability - resolution + uncertainty exactly) and the expected calibration
    error over the same bins."""

    deals: Fraction
    brier: Fraction
    reliability: Fraction
    resolution: Fraction
    uncertainty: Fraction
    ece: Fraction


def score(pairs: Iterable[tuple[Fraction, bool, Fraction]]) -> Score | None:
    """(forecast 0..1, won, weight) -> the score, or None when there is nothing to score."""
    bins: dict[Fraction, list[Fraction]] = {}  # forecast -> [weight, weighted wins]
    total = wins = brier = Fraction(0)
    for p, won, w in pairs:
        b = bins.setdefault(p, [Fraction(0), Fraction(0)])
        b[0] += w
        total += w
        if won:
            b[1] += w
            wins += w
        brier += w * (p - won) ** 2
    if total == 0:
        return None
    base = wins / total
    rel = res = ece = Fraction(0)
    for p, (w, x) in bins.items():
        if w:
            rel += w * (p - x / w) ** 2
            res += w * (x / w - base) ** 2
            ece += w * abs(p - x / w)
    return Score(total, brier / total, rel / total, res / total, base * (1 - base), ece / total)


def weight(key: Key, count: int) -> Fraction:
    return Fraction(count, key[4])


def rules_score(counts: Counts, forecast: Callable[[tuple[int, ...]], Fraction]) -> Score | None:
    return score((forecast(k[0]), k[2], weight(k, n)) for k, n in counts.items())


def crm_score(counts: Counts) -> Score | None:
    """The CRM's own probability as it was, on the snapshots that carried one."""
    return score((Fraction(k[1]) / 100, k[2], weight(k, n))
                 for k, n in counts.items() if k[1] is not None)


def base_rate(counts: Counts) -> Fraction:
    total = sum((weight(k, n) for k, n in counts.items()), Fraction(0))
    won = sum((weight(k, n) for k, n in counts.items() if k[2]), Fraction(0))
    return won / total if total else Fraction(0)


def wilson(wins: Fraction, deals: Fraction, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval. Whole counts go to scipy's; weighted counts (1/k per
    snapshot) are not counts scipy accepts, so the same formula is written out for them."""
    from scipy.stats import binomtest, norm

    if deals == 0:
        return 0.0, 1.0
    if wins.denominator == 1 and deals.denominator == 1:
        ci = binomtest(int(wins), int(deals)).proportion_ci(level, method="wilson")
        return float(ci.low), float(ci.high)
    z = float(norm.ppf(1 - (1 - level) / 2))
    n, p = float(deals), float(wins / deals)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class WorkflowFit:
    workflow: str
    probability: Decimal
    deals: Fraction
    wins: Fraction
    low: float
    high: float

    @property
    def observed(self) -> Fraction | None:
        return self.wins / self.deals if self.deals else None

    @property
    def inside(self) -> bool:
        return self.low <= float(self.probability) / 100 <= self.high

    @property
    def verdict(self) -> str:
        if self.deals < MINIMUM_DEALS:
            return "too few"
        return "inside" if self.inside else "outside"


def per_workflow(plan: Plan, counts: Counts) -> list[WorkflowFit]:
    sums: dict[int, list[Fraction]] = {k: [Fraction(0), Fraction(0)]
                                       for k in range(len(plan.rules.workflows))}
    for key, n in counts.items():
        s = sums[plan.workflow(key[0])]
        s[0] += weight(key, n)
        if key[2]:
            s[1] += weight(key, n)
    out = []
    for k, w in enumerate(plan.rules.workflows):
        deals, wins = sums[k]
        low, high = wilson(wins, deals)
        assert w.probability is not None
        out.append(WorkflowFit(w.name, w.probability, deals, wins, low, high))
    return out


def rate(x: Fraction | float) -> str:
    """A rate as the SPEC shows it: a decimal string with four places."""
    if isinstance(x, float):
        return str(Decimal(repr(x)).quantize(Decimal("0.0001"), ROUND_HALF_EVEN))
    return str((Decimal(x.numerator) / Decimal(x.denominator)).quantize(Decimal("0.0001"),
                                                                         ROUND_HALF_EVEN))


def number(x: Fraction) -> int | float:
    """A weighted count: whole when it is, else to four places."""
    return int(x) if x.denominator == 1 else round(float(x), 4)


@dataclass(frozen=True)
class Calibration:
    rules: Score | None
    crm: Score | None
    base: Score | None
    deals: int
    workflows: list[WorkflowFit]
    failures: Failures

    def as_json(self) -> dict[str, Any]:
        def part(s: Score | None) -> dict[str, str] | None:
            return None if s is None else {
                "brier": rate(s.brier), "reliability": rate(s.reliability),
                "resolution": rate(s.resolution), "uncertainty": rate(s.uncertainty),
                "ece": rate(s.ece)}

        return {
            "brier": rate(self.rules.brier) if self.rules else None,
            "brier_crm": rate(self.crm.brier) if self.crm else None,
            "brier_base_rate": rate(self.base.brier) if self.base else None,
            "ece": rate(self.rules.ece) if self.rules else None,
            "deals": self.deals,
            "minimum_deals": MINIMUM_DEALS,
            "rules": part(self.rules), "crm": part(self.crm), "base_rate": part(self.base),
            "workflows": [{
                "workflow": w.workflow, "probability": int(w.probability)
                if w.probability == w.probability.to_integral_value() else str(w.probability),
                "deals": number(w.deals), "wins": number(w.wins),
                "observed": rate(w.observed) if w.observed is not None else None,
                "low": rate(w.low), "high": rate(w.high), "inside": w.inside,
                "verdict": w.verdict} for w in self.workflows],
            "failed": self.failures.as_json(),
        }


def current_forecast(plan: Plan) -> Callable[[tuple[int, ...]], Fraction]:
    memo: dict[tuple[int, ...], Fraction] = {}

    def forecast(combo: tuple[int, ...]) -> Fraction:
        p = memo.get(combo)
        if p is None:
            p = memo[combo] = Fraction(plan.probability(combo)) / 100
        return p

    return forecast


def calibrate(plan: Plan, counts: Counts, failures: Failures) -> Calibration:
    base = base_rate(counts)
    return Calibration(
        rules_score(counts, current_forecast(plan)), crm_score(counts),
        score((base, k[2], weight(k, n)) for k, n in counts.items()),
        deals_in(counts), per_workflow(plan, counts), failures)


def deals_in(counts: Counts) -> int:
    """How many deals the counts hold: each weighs 1 in total."""
    return int(sum((weight(k, n) for k, n in counts.items()), Fraction(0)))
