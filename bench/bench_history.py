"""calibrate, movement and accuracy over a 10,000,000-row snapshot history, against DuckDB's
bare read-and-group-by of the same file, in the same run.

The history (SPEC 8 CSV, the bundled Salesforce mapping's columns plus `as_of`) is generated
by DuckDB itself into a temporary folder: 1,000,000 deals of 10 snapshots each, stage,
proposal and relationship moving from one snapshot to the next, amounts from 1,000 to 401,000,
the close date pushed once in a while, the CRM's probability on every row, and 7 deals in 10
closed by their last snapshot (dated on the close date).

Each command runs in a fresh process (`python -m connector ... --input FILE`, the DuckDB engine)
that reports its wall time and peak resident memory (`ru_maxrss` of the child); the peer is a
fresh process that only reads the file with DuckDB and groups it by the three factor columns.
Targets (issues 16 and 17): each command under 60 s and under 1 GB. Before timing, the same
generator writes a 20,000-row file on which the DuckDB engine must agree exactly with the
pure-Python reference (exit 1 if not); timing never changes the exit status.

    .venv/bin/python bench/bench_history.py [--rows 10000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ["--rules", str(ROOT / "rules"), "--mappings", str(ROOT / "mappings")]
SNAPSHOTS = 10

GENERATE = """
COPY (
  WITH r AS (SELECT i, i // {k} AS d, i % {k} AS s FROM range({rows}) t(i)),
  g AS (SELECT *, hash(d) AS h, (hash(d) % 10) < 7 AND s = {k} - 1 AS closing FROM r)
  SELECT 'D' || lpad(CAST(d AS VARCHAR), 8, '0') AS "Id",
    'Deal ' || d AS "Name",
    CASE WHEN closing THEN (CASE WHEN h % 3 = 0 THEN 'Closed Won' ELSE 'Closed Lost' END)
         ELSE ['Prospecting', 'Qualification', 'Needs Analysis', 'Value Proposition',
               'Proposal/Price Quote', 'Negotiation/Review'][1 + (s * 6) // {k}] END
      AS "StageName",
    CAST(1000 + (h // 7) % 400000 + (CASE WHEN s > 6 THEN 500 ELSE 0 END) AS VARCHAR)
      AS "Amount",
    strftime(DATE '2024-01-01' + CAST(h % 700 + 40 + (s // 5) * 20 AS INTEGER), '%Y-%m-%d')
      AS "CloseDate",
    ['Firm', 'Budgetary', ''][1 + CAST(hash(i) % 3 AS INTEGER)] AS "Proposal_Type__c",
    ['Strategic', 'Trusted', 'Known', 'New', ''][1 + CAST(hash(i + 1) % 5 AS INTEGER)]
      AS "Relationship_Level__c",
    'Owner ' || (h % 50) AS "Owner.Name", 'owner' || (h % 50) || '@example.com' AS "Owner.Email",
    'Account ' || (h % 5000) AS "Account.Name",
    CAST(CASE WHEN closing THEN (CASE WHEN h % 3 = 0 THEN 100 ELSE 0 END)
         ELSE 10 * (1 + s) END AS VARCHAR) AS "Probability",
    '' AS "Weighted_Amount__c", '' AS "Probability_Rule__c",
    CASE WHEN closing
         THEN strftime(DATE '2024-01-01' + CAST(h % 700 + 40 + (s // 5) * 20 AS INTEGER),
                       '%Y-%m-%dT00:00:00')
         ELSE strftime(TIMESTAMP '2024-01-01' + to_days(CAST(h % 700 AS INTEGER))
                       + to_hours(CAST(s * 90 AS INTEGER)), '%Y-%m-%dT%H:%M:%S') END AS as_of
  FROM g
) TO '{path}' (HEADER, DELIMITER ',')
"""

BARE = """
import duckdb, json, sys
from bench.peak import peak_kib
con = duckdb.connect(config={"memory_limit": "600MB"})
rows = con.execute("SELECT StageName, Proposal_Type__c, Relationship_Level__c, count(*) "
                   "FROM read_csv(?, header=true, all_varchar=true) GROUP BY ALL",
                   [sys.argv[1]]).fetchall()
print(json.dumps({"groups": len(rows), "peak_mb": peak_kib() / 1024}))
"""


def generate(path: Path, rows: int) -> None:
    duckdb.connect().execute(GENERATE.format(rows=rows, k=SNAPSHOTS, path=path))


def run(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak MB of a fresh process (which prints its own peak last)."""
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):
        sys.exit(f"{' '.join(argv)} failed: {done.stderr}")
    return wall, json.loads(done.stdout.splitlines()[-1])["peak_mb"]


COMMANDS = {
    "calibrate": ["calibrate", "--format", "json"],
    "movement": ["movement", "--from", "2024-06-01", "--to", "2024-09-01", "--format", "json"],
    "accuracy": ["accuracy", "--lags", "30,60,90", "--format", "json"],
}


def agree(folder: Path) -> bool:
    """The DuckDB engine and the Python reference on a small file from the same generator."""
    small = folder / "small.csv"
    generate(small, 20_000)
    ok = True
    for name, args in COMMANDS.items():
        outs = []
        for engine in ("duckdb", "python"):
            done = subprocess.run([sys.executable, "-m", "connector", *args, "--input",
                                   str(small), "--engine", engine, *CONFIG],
                                  capture_output=True, text=True, cwd=ROOT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
            outs.append(json.loads(done.stdout))
        same = outs[0] == outs[1]
        ok &= same
        print(f"{name:9s} engine = reference on 20,000 rows: {'yes' if same else 'NO'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        folder = Path(tmp)
        ok = agree(folder)
        path = folder / "history.csv"
        start = time.perf_counter()
        generate(path, args.rows)
        print(f"generated {args.rows:,} rows ({path.stat().st_size / 1e9:.2f} GB) in "
              f"{time.perf_counter() - start:.1f} s")
        # each measurement in its own process, so each peak is its own
        bare, bare_mb = run([sys.executable, "-c", BARE, str(path)])
        print(f"{'duckdb bare':12s} {bare:6.1f} s  {bare_mb:6.0f} MB  (read + group by)")
        for name, cmd in COMMANDS.items():
            wall, peak = run([sys.executable, "-c", _MEASURED, *cmd, "--input", str(path),
                              *CONFIG])
            met = "met" if wall < 60 and peak < 1024 else "MISSED"
            print(f"{name:12s} {wall:6.1f} s  {peak:6.0f} MB  {wall / bare:4.1f}x bare  "
                  f"(target < 60 s, < 1 GB: {met})")
    return 0 if ok else 1


# A child that runs the command and prints its own peak memory last (see bench/peak.py: not
# ru_maxrss, which a child takes over from its parent, this script, grown by DuckDB)
_MEASURED = """
import io, json, sys, contextlib
from bench.peak import peak_kib
from connector.cli import main
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "peak_mb": peak_kib() / 1024}))
"""

if __name__ == "__main__":
    sys.exit(main())
