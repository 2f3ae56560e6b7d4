"""What a snapshot history holds for the analyses, and the reference way to read it.

A history is the SPEC 8 snapshot CSV: the mapping's CRM fields (the id included) plus `as_of`,
one row per version of a deal. Each row is typed into a `Snap`: when (`ts`, UTC), closed or not,
its factor combination (value indices, best first), amount, close date and the CRM's own
probability. A row that cannot be typed fails alone (counted, with a sample of the reasons).

A deal's snapshots are ordered by day, then open before closed (a closing snapshot is dated on
the midnight of its close date, and is still the day's last word), then instant, then the
record's modification stamp (the mapping's `modified` column, where there is one). A deal
with two rows equal on all four cannot be ordered, so it is left out whole.

`read_reference` types one row at a time with the mapping's own parsers and the factors' own
`index_of`; `connector.history.engine` must give the same rows, so the tests compare the two.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

from connector.core.findings import did_you_mean
from connector.core.mapping import ID
from connector.core.ruleset import CLOSED_WON, RuleSet
from connector.core.table import DecisionTable
from connector.core.values import parse_datetime
from connector.errors import ConfigurationError, RecordError, Text
from connector.export import Export
from connector.formatting import listed
from connector.history.snapshots import AS_OF

MODIFIED = "modified"  # the key columns_of gives the mapping's modification stamp
WON, LOST = "won", "lost"
SAMPLE = 5  # reasons kept per kind of failure
EPOCH = dt.datetime(1970, 1, 1)


class Snap(NamedTuple):
    id: str
    ts: dt.datetime                  # naive, UTC
    state: str | None                # 'won', 'lost', or None while open
    combo: tuple[int, ...] | None    # factor value indices; None when closed
    amount: Decimal | None
    close: dt.date | None
    crm: Decimal | None              # the CRM's own probability, 0..100
    modified: dt.datetime | None = None  # the record's modification stamp, naive UTC

    @property
    def order(self) -> tuple[dt.date, bool, dt.datetime, dt.datetime]:
        """See the module's docstring; `engine.ORDER` is the same in SQL."""
        return (self.ts.date(), self.state is not None, self.ts,
                self.modified if self.modified is not None and self.modified > EPOCH else EPOCH)


@dataclass
class Failures:
    """Rows that could not be typed and deals that could not be ordered."""

    rows: int = 0
    deals: int = 0
    reasons: list[str] = field(default_factory=list)

    def row(self, reason: str) -> None:
        self.rows += 1
        if len(self.reasons) < SAMPLE:
            self.reasons.append(reason)

    def as_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "deals": self.deals, "reasons": self.reasons}


@dataclass(frozen=True)
class Plan:
    """The rules the history is judged by, and which canonical fields the analyses read."""

    rules: RuleSet
    table: DecisionTable
    amount: str | None
    close: str | None
    crm: str | None

    @property
    def names(self) -> list[str]:
        """The canonical fields read, in the mapping's order, so a bad row reports its first."""
        closed = self.rules.closed
        wanted = {f.field for f in self.rules.factors} | {closed.field if closed else ""}
        wanted |= {n for n in (self.amount, self.close, self.crm) if n}
        return [n for n in self.rules.mapping.fields if n in wanted]

    def probability(self, combo: tuple[int, ...]) -> Decimal:
        """The current rules' probability for a combination (0..100)."""
        hits = self.table.match(combo)
        if len(hits) != 1:
            raise ConfigurationError(Text("the rules are not exclusive and complete: run "
                                          "'check'"))
        p = self.rules.workflows[hits[0]].probability
        assert p is not None  # plan_for refuses formulas
        return p

    def workflow(self, combo: tuple[int, ...]) -> int:
        return self.table.match(combo)[0]


def plan_for(rules: RuleSet) -> Plan:
    """Refuses, with what to do, a rule set the analyses cannot judge."""
    mapping = rules.mapping
    if rules.closed is None:
        raise ConfigurationError(Text("the rules name no 'closed:' states, so no deal is ever won "
                                      "or lost: add them to the factors file"))
    computed = [f.field for f in rules.factors if f.field not in mapping.fields]
    if computed:
        raise ConfigurationError(Text("history analyses need factors on CRM fields; these are "
                                      "computed: {fields}", fields=", ".join(computed)))
    formulas = [w.name for w in rules.workflows if w.probability is None]
    if formulas:
        raise ConfigurationError(Text("history analyses need a number as each workflow's "
                                      "probability; these compute it: {workflows}",
                                      workflows=", ".join(formulas)))

    def mapped(name: str) -> str | None:
        return name if name in mapping.fields else None

    return Plan(rules, DecisionTable(rules), mapped("amount"), mapped("close_date"),
                mapped("probability"))


def columns_of(plan: Plan, header: list[str], path: Path) -> dict[str, int]:
    """Canonical name (and `id`, `as_of`) -> its column; a missing one is refused by name."""
    found = plan.rules.mapping.columns(header)
    found[AS_OF] = next((i for i, h in enumerate(header) if h.casefold() == AS_OF), None)
    needed = [ID, AS_OF, *plan.names]
    missing = [n for n in needed if found.get(n) is None]
    modified = plan.rules.mapping.modified_field.casefold()
    found[MODIFIED] = next((i for i, h in enumerate(header) if h.casefold() == modified), None)
    if missing:
        crm = [AS_OF if n == AS_OF else plan.rules.mapping.crm_field(n) for n in missing]
        raise ConfigurationError(Text("{file}: no column {columns}; found {found}",
                                      file=str(path), columns=listed([Text(
                                          "{column}{hint}", column=c,
                                          hint=did_you_mean(c, header)) for c in crm]),
                                      found=", ".join(header)))
    return {n: i for n in [*needed, MODIFIED] if (i := found[n]) is not None}


def utc(ts: dt.datetime) -> dt.datetime:
    """A naive UTC date-time: an offset is applied, a naive time is taken as UTC."""
    if ts.tzinfo is None:
        return ts
    return ts.astimezone(dt.UTC).replace(tzinfo=None)


def read_reference(plan: Plan, path: Path, failures: Failures) -> list[Snap]:
    """Every typed row of the CSV, one at a time; failures counted in `failures`."""
    rules = plan.rules
    closed = rules.closed
    assert closed is not None
    out: list[Snap] = []
    with Export(path) as export:
        header = export.read_header()
        cols = columns_of(plan, header, path)
        reader = rules.mapping.row_reader(header, plan.names)
        at, stamp = cols[AS_OF], cols.get(MODIFIED)
        for line, cells, values, reason in export.records(reader):
            if values is None:
                failures.row(Text("line {line}: {reason}", line=line, reason=reason))
                continue
            try:
                ts = parse_datetime(cells[at], AS_OF)
                if ts is None:
                    raise RecordError(Text("as_of is empty"))
                state = closed.state(values.get(closed.field))
                combo = None if state is not None else tuple(
                    f.index_of(values.get(f.field)) for f in rules.factors)
            except RecordError as exc:
                failures.row(Text("line {line}: {reason}", line=line, reason=exc.text))
                continue
            out.append(Snap(
                str(values[ID]), utc(ts),
                None if state is None else (WON if state == CLOSED_WON else LOST), combo,
                values.get(plan.amount) if plan.amount else None,
                values.get(plan.close) if plan.close else None,
                values.get(plan.crm) if plan.crm else None,
                None if stamp is None else _stamp(cells[stamp])))
    return out


def _stamp(text: str) -> dt.datetime | None:
    """A modification stamp orders rows; one that cannot be read orders as none."""
    try:
        moment = parse_datetime(text, MODIFIED)
    except RecordError:
        return None
    return None if moment is None else utc(moment)


def deals(snaps: Iterable[Snap], failures: Failures) -> Iterator[list[Snap]]:
    """Each deal's snapshots in order (see the module's docstring). A deal with two rows that
    order alike is left out: which came last cannot be told."""
    by_id: dict[str, list[Snap]] = {}
    for s in snaps:
        by_id.setdefault(s.id, []).append(s)
    for rows in by_id.values():
        rows.sort(key=lambda s: s.order)
        if any(a.order == b.order for a, b in itertools.pairwise(rows)):
            failures.deals += 1
            continue
        yield rows


def state_at(rows: list[Snap], day: dt.date) -> Snap | None:
    """The deal as it was at the end of `day`: its last snapshot dated that day or before."""
    found = None
    for s in rows:
        if s.ts.date() > day:
            break
        found = s
    return found


@dataclass
class Reference:
    """A history read the reference way: every typed row in memory (for tests and small
    histories; `engine.History` is the same for millions of rows)."""

    plan: Plan
    deals: list[list[Snap]]  # each deal's snapshots in time order
    failures: Failures


def reference(plan: Plan, path: Path) -> Reference:
    failures = Failures()
    snaps = read_reference(plan, path, failures)
    return Reference(plan, list(deals(snaps, failures)), failures)
