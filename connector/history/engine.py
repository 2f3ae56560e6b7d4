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
from connector.errors import ConfigurationError, RecordError, Text
from connector.export import Export
from connector.history.source import (
    AS_OF,
    LOST,
    MODIFIED,
    WON,
    Failures,
    Plan,
    columns_of,
)

PLAIN = r"[0-9]{1,18}(\.[0-9]{1,10})?"
MEMORY = "600MB"  # DuckDB spills to disk beyond this, so a run stays under 1 GB
# `Snap.order` as one number: day, closed after open, microsecond of the day, modification
# stamp (microseconds since 1970; none or earlier: 0), each in bits of its own
ORDER = ("(((CAST(epoch_us(ts) // 86400000000 AS HUGEINT) * 2 + CAST(state IS NOT NULL AS INT))"
         " * 137438953472 + epoch_us(ts) % 86400000000) * 9007199254740992"
         " + greatest(coalesce(epoch_us(modified), 0), 0))")


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class History:
    """A snapshot CSV opened on DuckDB. `typed` is a view of the rows that could be typed, with
    columns id, ts, day, o (the rows' order, `ORDER`), state ('won'/'lost'/NULL), f0..fn
    (factor indices, NULL when closed), amount, close, crm; deals with two rows that order alike
    are left out (`failures`)."""

    def __init__(self, plan: Plan, path: Path, con: duckdb.DuckDBPyConnection) -> None:
        self.plan = plan
        self.con = con
        self.failures = Failures()
        with Export(path) as export:
            header = export.read_header()
        self.cols = columns_of(plan, header, path)
        columns = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(header)))
        every = ", ".join(f"c{i}" for i in range(len(header)))
        # blank lines (',,,' from a spreadsheet too) are no rows, as the reference reads them;
        # only a row whose first cell is blank is looked at whole
        con.execute(
            f"CREATE TEMP VIEW raw AS SELECT * FROM read_csv({_q(str(path))}, header=true, "
            f"columns={{{columns}}}, delim=',', quote='\"', escape='\"', auto_detect=false) "
            "WHERE CASE WHEN trim(coalesce(c0, '')) <> '' THEN true "
            f"ELSE trim(concat_ws('', {every})) <> '' END")
        self._build()

    def _col(self, name: str) -> str:  # a canonical name, ID, AS_OF or MODIFIED
        return f"coalesce(c{self.cols[name]}, '')"

    def _distinct(self, column: str, where: str = "") -> list[str]:
        return [t for (t,) in self.con.execute(
            f"SELECT DISTINCT {column} FROM cells {where}").fetchall()]

    def _insert(self, table: str, columns: str, rows: list[tuple[Any, ...]]) -> None:
        self.con.execute(f"CREATE TEMP TABLE {table} ({columns})")
        if rows:
            marks = ", ".join("?" for _ in rows[0])
            self.con.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)

    def _text_dictionary(self, name: str, texts: list[str], table: str, factors: list[Factor],
                         closed: bool) -> None:
        """One field's distinct texts typed in Python: `bad` (the text does not parse), the
        closed state, the index for each factor on the field (-1: not one of its values)."""
        parse = parse_cache(self.plan.rules.mapping.type_of(name), name, limit=0)
        rows: list[tuple[Any, ...]] = []
        for text in texts:
            try:
                value = parse[text]
            except RecordError as exc:
                self._reason(exc.text)
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
                        self._reason(exc.text)
                    indices.append(-1)
            rows.append((text, False, state, *indices))
        extra = "".join(f", i{k} INTEGER" for k in range(len(factors)))
        self._insert(table, f"t VARCHAR, bad BOOLEAN, st VARCHAR{extra}", rows)

    def _value_dictionary(self, name: str, texts: list[str], table: str, kind: str) -> None:
        """Texts of a number or date field typed in Python: the value, or `bad`."""
        parse = parse_cache(self.plan.rules.mapping.type_of(name), name, limit=0)
        wanted, sql = (Decimal, "DECIMAL(38,10)") if kind == "number" else (dt.date, "DATE")
        rows: list[tuple[Any, ...]] = []
        for text in texts:
            try:
                value = parse[text]
            except RecordError as exc:
                self._reason(exc.text)
                rows.append((text, None, True))
                continue
            if isinstance(value, dt.datetime) and kind == "date":
                value = value.date()
            ok = value is None or isinstance(value, wanted)
            if not ok:
                self._reason(Text("{field}: {value} is not a date", field=name, value=repr(text))
                             if kind == "date" else
                             Text("{field}: {value} is not a number", field=name,
                                  value=repr(text)))
            rows.append((text, value if ok else None, not ok))
        self._insert(table, f"t VARCHAR, v {sql}, bad BOOLEAN", rows)

    def _reason(self, text: str) -> None:
        if len(self.failures.reasons) < 5 and text not in self.failures.reasons:
            self.failures.reasons.append(text)

    def _build(self) -> None:
        plan, rules = self.plan, self.plan.rules
        closed = rules.closed
        assert closed is not None
        numeric = sorted({n for n in (plan.amount, plan.crm) if n}
                         | {f.field for f in rules.factors if f.bands is not None})
        texts = [n for n in plan.names if n not in numeric and n != plan.close]
        # The one read of the file: the cells the analyses need, numbers cast where plain.
        cells = [f"{self._col(ID)} AS id", f"{_timestamp(self._col(AS_OF))} AS ts",
                 (f"{_timestamp(self._col(MODIFIED))} AS modified" if MODIFIED in self.cols
                  else "CAST(NULL AS TIMESTAMP) AS modified")]
        cells += [f"{self._col(n)} AS t{k}" for k, n in enumerate(texts)]
        if plan.close:
            cells.append(f"{self._col(plan.close)} AS tc")
        for k, name in enumerate(numeric):
            text = self._col(name)
            plain = f"regexp_full_match({text}, {_q(PLAIN)})"
            cells.append(f"CASE WHEN {plain} THEN CAST({text} AS DECIMAL(38,10)) END AS v{k}")
            cells.append(f"CASE WHEN {plain} THEN NULL ELSE {text} END AS x{k}")
        self.con.execute("CREATE TABLE cells AS SELECT " + ", ".join(cells) + " FROM raw")
        joins: list[str] = []
        bad: list[str] = ["ts IS NULL"]
        select = ["id", "ts", "modified"]
        value_of: dict[str, str] = {}
        for k, name in enumerate(numeric):
            table = f"n{k}"
            self._value_dictionary(name, self._distinct(f"x{k}", f"WHERE x{k} IS NOT NULL"),
                                   table, "number")
            joins.append(f"LEFT JOIN {table} ON {table}.t = x{k}")
            value_of[name] = f"coalesce(v{k}, {table}.v)"
            bad.append(f"coalesce({table}.bad, false)")
        index_of: dict[int, str] = {}
        for k, name in enumerate(texts):
            table = f"d{k}"
            on_field = [(j, f) for j, f in enumerate(rules.factors)
                        if f.field == name and f.bands is None]
            self._text_dictionary(name, self._distinct(f"t{k}"), table,
                                  [f for _, f in on_field], name == closed.field)
            joins.append(f"LEFT JOIN {table} ON {table}.t = t{k}")
            bad.append(f"{table}.bad")
            for m, (j, _) in enumerate(on_field):
                index_of[j] = f"{table}.i{m}"
            if name == closed.field:
                select.append(f"{table}.st AS state")
        if plan.close:
            # a date column has few distinct texts: typed in Python like the picklists
            self._value_dictionary(plan.close, self._distinct("tc"), "dd", "date")
            joins.append("LEFT JOIN dd ON dd.t = tc")
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
            # the day and the order are computed here once, not by every query after
            f"CREATE TABLE parsed AS SELECT * EXCLUDE (modified), CAST(ts AS DATE) AS day, "
            f"{ORDER} AS o FROM (SELECT " + ", ".join(select) + ", ("
            + " OR ".join(bad) + ") AS bad FROM cells " + " ".join(joins) + ")")
        self.con.execute("DROP TABLE cells")
        factors = ", ".join(f"CASE WHEN state IS NULL THEN f{j} END AS f{j}"
                            for j in range(len(rules.factors)))
        self.con.execute(
            "CREATE VIEW good AS SELECT id, ts, day, o, state, "
            f"{factors + ', ' if factors else ''}amount, close, crm FROM parsed "
            f"WHERE NOT bad AND (state IS NOT NULL OR NOT ({open_bad}))")
        # Deals with two rows that order alike cannot be ordered: left out whole.
        self.con.execute("CREATE TABLE tied AS SELECT DISTINCT id FROM good "
                         "GROUP BY id, o HAVING count(*) > 1")
        self.con.execute("CREATE VIEW typed AS SELECT * FROM good ANTI JOIN tied USING (id)")
        total, good = self.con.execute("SELECT (SELECT count(*) FROM parsed), "
                                       "(SELECT count(*) FROM good)").fetchone() or (0, 0)
        self.failures.rows = total - good
        (self.failures.deals,) = self.con.execute("SELECT count(*) FROM tied").fetchone() or (0,)
        if self.failures.rows and not self.failures.reasons:
            self.failures.reasons.append(Text("as_of is not an ISO date-time"))


def _timestamp(text: str) -> str:
    """`as_of` as a UTC time. The cast with an offset costs twice the plain one, so it is
    used only where there may be one (a '+', or a '-' after the date)."""
    return (f"CASE WHEN contains({text}, '+') OR contains(substr({text}, 11), '-') "
            f"THEN TRY_CAST({text} AS TIMESTAMPTZ)::TIMESTAMP "
            f"ELSE TRY_CAST({text} AS TIMESTAMP) END")


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
    """The history on a fresh DuckDB database in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="crm-history-") as spill:
        # on disk, compressed, so the typed history need not fit in memory; without the ICU
        # extension DuckDB keeps every time in UTC, as the reference does
        # (and no progress bar: it would be written into the command's own output)
        con = duckdb.connect(str(Path(spill) / "history.duckdb"),
                             config={"memory_limit": MEMORY, "temp_directory": spill})
        con.execute("SET enable_progress_bar = false")
        try:
            yield History(plan, path, con)
        except duckdb.Error as exc:
            raise ConfigurationError(Text("{file}: cannot read the history: {reason}",
                                          file=str(path), reason=str(exc))) from None
        finally:
            con.close()
