"""Big histories on DuckDB: the snapshot CSV typed as `source.read_reference` types it, then
read and aggregated in SQL, so Python only sees small results.

How a row is typed, and why it is the reference's typing: every column the rules compare as
text (the closed field, the picklist factors, the close date) has few distinct values, so
those are typed once each, in Python, by the mapping's own parsers and the factors' own
`index_of`, into small tables DuckDB joins. Numbers (amount, probability, banded fields) are
cast by DuckDB when they are plain digits (`392000`, `1234.50`: read exactly as `Decimal`
reads them); any other text is typed in Python the same way. Bands are compared in SQL against
the factor's own bounds. The rules are then evaluated once per distinct factor combination,
by the decision table, after the aggregation.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from connector.core.mapping import ID
from connector.core.ruleset import CLOSED_LOST, CLOSED_WON, Factor
from connector.core.values import parse_cache
from connector.errors import ConfigurationError, RecordError
from connector.export import Export
from connector.history.source import AS_OF, LOST, WON, Failures, Plan, columns_of

NUMERIC = ("number", "money", "percent", "integer")
PLAIN = r"[0-9]{1,18}(\.[0-9]{1,10})?"
MEMORY = "600MB"  # DuckDB spills to disk beyond this, so a run stays under 1 GB


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class History:
    """A snapshot CSV opened on DuckDB. `typed` is a view of the rows that could be typed, with
    columns id, ts, day, state ('won'/'lost'/NULL), f0..fn (factor indices, NULL when closed),
    amount, close, crm; deals with two rows at one instant are left out (`failures`)."""

    def __init__(self, plan: Plan, path: Path, con: duckdb.DuckDBPyConnection) -> None:
        self.plan = plan
        self.con = con
        self.failures = Failures()
        with Export(path) as export:
            header = export.read_header()
        self.cols = columns_of(plan, header, path)
        columns = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(header)))
        con.execute(
            f"CREATE TEMP VIEW raw AS SELECT * FROM read_csv({_q(str(path))}, header=true, "
            f"columns={{{columns}}}, delim=',', quote='\"', escape='\"', auto_detect=false)")
        self._build()

    def _col(self, name: str) -> str:
        return f"coalesce(c{self.cols[name]}, '')"

    def _text_dictionary(self, name: str, table: str, factors: list[Factor], closed: bool
                         ) -> None:
        """One field's distinct texts typed in Python: `bad` (the text does not parse), the
        closed state, the index for each factor on the field (-1: not one of its values)."""
        mapping = self.plan.rules.mapping
        parse = parse_cache(mapping.type_of(name), name, limit=0)
        rows: list[tuple[Any, ...]] = []
        texts = self.con.execute(f"SELECT DISTINCT {self._col(name)} FROM raw").fetchall()
        for (text,) in texts:
            try:
                value = parse[text]
            except RecordError as exc:
                self._reason(str(exc))
                rows.append((text, True, None, *(-1 for _ in factors)))
                continue
            state = None
            if closed:
                assert self.plan.rules.closed is not None
                st = self.plan.rules.closed.state(value)
                state = WON if st == CLOSED_WON else LOST if st == CLOSED_LOST else None
            indices = []
            for f in factors:
                try:
                    indices.append(f.index_of(value))
                except RecordError as exc:
                    if state is None:  # a closed deal's stage is no factor value, rightly
                        self._reason(str(exc))
                    indices.append(-1)
            rows.append((text, False, state, *indices))
        extra = "".join(f", i{k} INTEGER" for k in range(len(factors)))
        self.con.execute(f"CREATE TEMP TABLE {table} (t VARCHAR, bad BOOLEAN, st VARCHAR{extra})")
        if rows:
            marks = ", ".join("?" for _ in rows[0])
            self.con.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)

    def _number_dictionary(self, name: str, table: str) -> None:
        """The texts of a numeric field that are not plain digits, typed in Python."""
        parse = parse_cache(self.plan.rules.mapping.type_of(name), name, limit=0)
        rows: list[tuple[str, Decimal | None, bool]] = []
        texts = self.con.execute(
            f"SELECT DISTINCT {self._col(name)} AS t FROM raw "
            f"WHERE NOT regexp_full_match(t, {_q(PLAIN)})").fetchall()
        for (text,) in texts:
            try:
                value = parse[text]
            except RecordError as exc:
                self._reason(str(exc))
                rows.append((text, None, True))
                continue
            if value is not None and not isinstance(value, Decimal):
                self._reason(f"{name}: {text!r} is not a number")
                rows.append((text, None, True))
            else:
                rows.append((text, value, False))
        self.con.execute(f"CREATE TEMP TABLE {table} (t VARCHAR, v DECIMAL(38,10), bad BOOLEAN)")
        if rows:
            self.con.executemany(f"INSERT INTO {table} VALUES (?, ?, ?)", rows)

    def _reason(self, text: str) -> None:
        if len(self.failures.reasons) < 5 and text not in self.failures.reasons:
            self.failures.reasons.append(text)

    def _build(self) -> None:
        plan, rules = self.plan, self.plan.rules
        closed = rules.closed
        assert closed is not None
        numeric = {n for n in (plan.amount, plan.crm) if n}
        numeric |= {f.field for f in rules.factors if f.bands is not None}
        joins: list[str] = []
        bad: list[str] = ["ts IS NULL"]
        select = [f"{self._col(ID)} AS id",
                  f"TRY_CAST(NULLIF(trim({self._col(AS_OF)}), '') AS TIMESTAMPTZ)::TIMESTAMP AS ts"]
        value_of: dict[str, str] = {}
        for k, name in enumerate(sorted(numeric)):
            table = f"n{k}"
            self._number_dictionary(name, table)
            text = self._col(name)
            joins.append(f"LEFT JOIN {table} ON {table}.t = {text}")
            value_of[name] = (f"CASE WHEN regexp_full_match({text}, {_q(PLAIN)}) "
                              f"THEN CAST({text} AS DECIMAL(38,10)) ELSE {table}.v END")
            bad.append(f"coalesce({table}.bad, false)")
        index_of: dict[int, str] = {}
        texts = [n for n in plan.names if n not in numeric and n != plan.close]
        for k, name in enumerate(texts):
            table = f"d{k}"
            on_field = [(j, f) for j, f in enumerate(rules.factors)
                        if f.field == name and f.bands is None]
            self._text_dictionary(name, table, [f for _, f in on_field], name == closed.field)
            joins.append(f"LEFT JOIN {table} ON {table}.t = {self._col(name)}")
            bad.append(f"{table}.bad")
            for m, (j, _) in enumerate(on_field):
                index_of[j] = f"{table}.i{m}"
            if name == closed.field:
                select.append(f"{table}.st AS state")
        if plan.close:
            # a date column has few distinct texts: typed in Python like the picklists
            self._date_dictionary(plan.close)
            joins.append(f"LEFT JOIN dd ON dd.t = {self._col(plan.close)}")
            bad.append("dd.bad")
            value_of[plan.close] = "dd.v"
        for j, f in enumerate(rules.factors):
            if f.bands is not None:
                index_of[j] = _band_sql(f, value_of[f.field])
            select.append(f"{index_of[j]} AS f{j}")
        for alias, field in (("amount", plan.amount), ("close", plan.close), ("crm", plan.crm)):
            select.append(f"{value_of[field]} AS {alias}" if field else f"NULL AS {alias}")
        open_bad = " OR ".join(f"f{j} < 0" for j in range(len(rules.factors))) or "false"
        self.con.execute(
            "CREATE TEMP VIEW parsed AS SELECT " + ", ".join(select) + ", ("
            + " OR ".join(bad) + ") AS bad FROM raw " + " ".join(joins))
        factors = ", ".join(f"CASE WHEN state IS NULL THEN f{j} END AS f{j}"
                            for j in range(len(rules.factors)))
        self.con.execute(
            "CREATE TEMP VIEW good AS SELECT id, ts, CAST(ts AS DATE) AS day, state, "
            f"{factors + ', ' if factors else ''}amount, close, crm FROM parsed "
            f"WHERE NOT bad AND (state IS NOT NULL OR NOT ({open_bad}))")
        # Deals with two rows at one instant cannot be ordered: left out whole.
        self.con.execute(
            "CREATE TEMP TABLE tied AS SELECT DISTINCT id FROM "
            "(SELECT id, ts, count(*) OVER (PARTITION BY id, ts) AS n FROM good) WHERE n > 1")
        self.con.execute("CREATE TEMP VIEW typed AS SELECT * FROM good ANTI JOIN tied USING (id)")
        total, good = self.con.execute(
            "SELECT (SELECT count(*) FROM raw), (SELECT count(*) FROM good)").fetchone() or (0, 0)
        self.failures.rows = total - good
        (self.failures.deals,) = self.con.execute("SELECT count(*) FROM tied").fetchone() or (0,)
        if self.failures.rows and not self.failures.reasons:
            self.failures.reasons.append("as_of is not an ISO date-time")

    def _date_dictionary(self, name: str) -> None:
        parse = parse_cache(self.plan.rules.mapping.type_of(name), name, limit=0)
        rows: list[tuple[str, dt.date | None, bool]] = []
        for (text,) in self.con.execute(f"SELECT DISTINCT {self._col(name)} FROM raw").fetchall():
            try:
                value = parse[text]
            except RecordError as exc:
                self._reason(str(exc))
                rows.append((text, None, True))
                continue
            if isinstance(value, dt.datetime):
                value = value.date()
            ok = value is None or isinstance(value, dt.date)
            if not ok:
                self._reason(f"{name}: {text!r} is not a date")
            rows.append((text, value if ok else None, not ok))
        self.con.execute("CREATE TEMP TABLE dd (t VARCHAR, v DATE, bad BOOLEAN)")
        if rows:
            self.con.executemany("INSERT INTO dd VALUES (?, ?, ?)", rows)


def _band_sql(f: Factor, value: str) -> str:
    """The factor's band index of a number, as `Factor.index_of` finds it: the first band,
    by bound descending, whose lower bound the number reaches; -1 below every band."""
    assert f.bands is not None
    order = sorted(range(len(f.bands)), key=lambda i: f.bands[i][1], reverse=True)  # type: ignore[index]
    whens = " ".join(f"WHEN {value} >= {f.bands[i][1]} THEN {i}" for i in order)
    empty = -1 if f.empty is None else f.empty
    return f"(CASE WHEN {value} IS NULL THEN {empty} {whens} ELSE -1 END)"


@contextmanager
def opened(plan: Plan, path: Path) -> Iterator[History]:
    """The history on a fresh in-memory DuckDB that spills to a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="crm-history-") as spill:
        # without the ICU extension, DuckDB keeps every time in UTC, as the reference does
        con = duckdb.connect(config={"memory_limit": MEMORY, "temp_directory": spill})
        try:
            yield History(plan, path, con)
        except duckdb.Error as exc:
            raise ConfigurationError(f"{path}: cannot read the history: {exc}") from None
        finally:
            con.close()
