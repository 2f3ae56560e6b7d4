"""The optional `explanation` field: why a record has its probability, written back beside it."""

from __future__ import annotations

import csv
import datetime as dt
import shutil
from pathlib import Path

import yaml

from connector.cli import main
from connector.core.evaluate import Evaluator
from connector.files import load

ROOT = Path(__file__).resolve().parent.parent
EXPORT = ROOT / "examples" / "opportunities.csv"


def _mappings_with_explanation(tmp: Path) -> Path:
    folder = tmp / "mappings"
    shutil.copytree(ROOT / "mappings", folder)
    path = folder / "salesforce.yaml"
    text = path.read_text()
    text = text.replace("  rule: Probability_Rule__c",
                        "  rule: Probability_Rule__c\n  explanation: Probability_Why__c")
    text = text.replace("writeback: [probability, weighted_amount, rule]",
                        "writeback: [probability, weighted_amount, rule, explanation]")
    path.write_text(text)
    return folder


def test_each_record_says_which_factor_values_chose_its_workflow(tmp_path: Path) -> None:
    mappings = _mappings_with_explanation(tmp_path)
    loaded = load(ROOT / "rules", mappings)
    assert loaded.ok, loaded.findings
    rules = loaded.rules
    assert rules is not None
    out = tmp_path / "out.csv"
    assert main(["simulate", str(EXPORT), "--rules", str(ROOT / "rules"), "--mappings",
                 str(mappings), "--out", str(out), "--today", "2026-12-01"]) == 1
    with out.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if not r["_error"]]
    factors = yaml.safe_load((ROOT / "rules" / "factors.yaml").read_text())["factors"]
    evaluator = Evaluator(rules)
    for row in rows:
        why = row["Probability_Why__c"]
        rule = row["_rule"]
        assert why.startswith(f"{rule}") and why.endswith(f" · rules {rules.version}"), why
        if rule.startswith("closed"):
            continue
        # the factor values named are the record's own, for every factor, in the rules' order
        shown = dict(part.split("=", 1) for part in why.split(": ", 1)[1].split(" · ")[0]
                     .split(", "))
        assert list(shown) == list(factors)
        record = rules.mapping.read({k: v for k, v in row.items() if not k.startswith("_")})
        outcome = evaluator.evaluate(record, dt.date(2026, 12, 1))
        assert shown == outcome.factors
        assert "explanation" in row["_changed"].split(";")


def test_without_the_field_nothing_is_written(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    main(["simulate", str(EXPORT), "--rules", str(ROOT / "rules"), "--mappings",
          str(ROOT / "mappings"), "--out", str(out), "--today", "2026-12-01"])
    with out.open(newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert "Probability_Why__c" not in header
