"""`diff`: the effect of a rule change, checked against two independent dry runs."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from connector.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXPORT = ROOT / "examples" / "opportunities.csv"
TODAY = "2026-12-01"


def _copy_rules(tmp: Path, name: str) -> Path:
    target = tmp / name
    shutil.copytree(ROOT / "rules", target)
    return target


def _set_probability(rules: Path, workflow: str, old: int, new: int) -> None:
    """Changes one workflow's probability in the admin's own file, as an admin would."""
    path = rules / "probability.yaml"
    text = path.read_text()
    marker = f"  - name: {workflow}\n"
    start = text.index(marker)
    end = text.index("  - name:", start + len(marker)) if "  - name:" in text[
        start + len(marker):] else len(text)
    block = text[start:end]
    assert f"probability: {old}" in block
    path.write_text(text[:start] + block.replace(f"probability: {old}", f"probability: {new}")
                    + text[end:])


def _dry_run(tmp: Path, rules: Path, name: str) -> list[dict[str, str]]:
    out = tmp / f"{name}.csv"
    code = main(["simulate", str(EXPORT), "--rules", str(rules), "--mappings",
                 str(ROOT / "mappings"), "--out", str(out), "--today", TODAY])
    assert code in (0, 1)
    with out.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _weighted_by_month(rows: list[dict[str, str]]) -> dict[str, Decimal]:
    """Amount x probability / 100 per close month, from a dry run's output file alone."""
    months: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        if row["_error"] or not row["Amount"] or not row["CloseDate"]:
            continue
        amount = Decimal(row["Amount"].replace(",", ""))  # "6,400.00": grouped, unambiguous
        months[row["CloseDate"][:7]] += amount * Decimal(row["Probability"]) / 100
    return months


def test_one_workflow_changed_reports_exactly_its_records(tmp_path: Path, capsys) -> None:
    before = _copy_rules(tmp_path, "before")
    after = _copy_rules(tmp_path, "after")
    _set_probability(after, "p60", 60, 65)

    code = main(["diff", str(EXPORT), "--before", str(before), "--rules", str(after),
                 "--mappings", str(ROOT / "mappings"), "--format", "json", "--today", TODAY])
    assert code == 0
    result = json.loads(capsys.readouterr().out)

    old_rows, new_rows = _dry_run(tmp_path, before, "old"), _dry_run(tmp_path, after, "new")
    in_p60 = {r["Id"] for r in old_rows if r["_rule"] == "p60"}
    assert in_p60, "the example export has records in p60"
    assert {c["id"] for c in result["changes"]} == in_p60
    assert result["changed"] == len(in_p60)
    for change in result["changes"]:
        assert (change["from"], change["to"]) == ("p60", "p60")
        assert change["fields"]["probability"] == {"before": "60", "after": "65"}
    assert result["workflows"] == sorted(result["workflows"], key=lambda m: (m["from"], m["to"]))
    assert all(m["from"] == m["to"] for m in result["workflows"])

    old_w, new_w = _weighted_by_month(old_rows), _weighted_by_month(new_rows)
    cent = Decimal("0.01")
    for month in result["forecast"]:
        delta = (new_w[month["month"]] - old_w[month["month"]]).quantize(cent, ROUND_HALF_UP)
        assert Decimal(month["delta"]) == delta, month
    total = (sum(new_w.values()) - sum(old_w.values())).quantize(cent, ROUND_HALF_UP)
    assert Decimal(result["forecast_total"]["delta"]) == total
    assert total > 0


def test_moved_records_and_actions(tmp_path: Path, capsys) -> None:
    """Moving p90's condition into p80's: p90's records move, notify-director stops for them."""
    before = _copy_rules(tmp_path, "before")
    after = _copy_rules(tmp_path, "after")
    path = after / "probability.yaml"
    text = path.read_text()
    text = text.replace("relationship: [Strategic, Trusted]}\n    set: {probability: 90}",
                        "relationship: [Strategic]}\n    set: {probability: 90}")
    text = text.replace("relationship: [Known, New]}\n    set: {probability: 80}",
                        "relationship: [Trusted, Known, New]}\n    set: {probability: 80}")
    path.write_text(text)
    assert main(["check", "--rules", str(after), "--mappings", str(ROOT / "mappings")]) == 0
    capsys.readouterr()

    code = main(["diff", str(EXPORT), "--before", str(before), "--rules", str(after),
                 "--mappings", str(ROOT / "mappings"), "--format", "json", "--today", TODAY])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    old_rows = _dry_run(tmp_path, before, "old")
    moved = {r["Id"] for r in old_rows
             if r["_rule"] == "p90" and r["Relationship_Level__c"] == "Trusted"}
    assert moved
    assert {c["id"] for c in result["changes"]} == moved
    assert {(m["from"], m["to"]) for m in result["workflows"] if m["from"] != m["to"]} == {
        ("p90", "p80")}
    assert next(m["records"] for m in result["workflows"]
                if (m["from"], m["to"]) == ("p90", "p80")) == len(moved)
    # notify-director is p90's action: every moved record stops being due for it
    assert result["actions"]["no_longer_due"].get("notify-director") == len(moved)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_before_as_a_git_ref(tmp_path: Path, capsys) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "rules", repo / "rules")
    shutil.copytree(ROOT / "mappings", repo / "mappings")

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)

    git("init", "-q")
    git("-c", "user.email=a@example.com", "-c", "user.name=a", "add", ".")
    git("-c", "user.email=a@example.com", "-c", "user.name=a", "commit", "-qm", "rules")
    _set_probability(repo / "rules", "p10", 10, 15)

    code = main(["diff", str(EXPORT), "--before", "HEAD", "--rules", str(repo / "rules"),
                 "--mappings", str(repo / "mappings"), "--format", "json", "--today", TODAY,
                 "--report", str(tmp_path / "diff.html")])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["changed"] > 0
    assert {c["from"] for c in result["changes"]} == {"p10"}
    html = (tmp_path / "diff.html").read_text()
    assert f'id="records-changed">{result["changed"]}<' in html

    assert main(["diff", str(EXPORT), "--before", "no-such-ref", "--rules",
                 str(repo / "rules"), "--mappings", str(repo / "mappings")]) == 2
    assert "no-such-ref" in capsys.readouterr().err


def test_diff_reads_an_export_as_simulate_does(capsys) -> None:
    """A Spanish report export, read with its locale: the same records, the same failures and
    the same workflows as the dry run gives them."""
    export = ROOT / "tests" / "exports" / "sf_report_es_CO.csv"
    options = ["--mapping", str(ROOT / "tests" / "exports" / "mappings" / "report_es.yaml"),
               "--locale", "es_CO", "--rules", str(ROOT / "rules"), "--mappings",
               str(ROOT / "mappings"), "--today", TODAY]
    assert main(["diff", str(export), "--before", str(ROOT / "rules"), "--format", "json",
                 *options]) == 0
    result = json.loads(capsys.readouterr().out)
    assert main(["simulate", str(export), *options]) == 1
    printed = capsys.readouterr().out
    assert f"{result['records']} records from" in printed
    assert f"failed {result['failed']['after']}" in printed and result["changed"] == 0
    shown = {m["from"]: m["records"] for m in result["workflows"] if m["from"] != "(failed)"}
    per_workflow = printed.splitlines()[1].strip()
    assert per_workflow == ", ".join(f"{k} {v}" for k, v in sorted(shown.items()))
