"""Evaluation throughput: our Evaluator against GoRules zen-engine, on the same table, same run.

The table: 4 factors (stage, proposal, relationship, size banded on the amount), 9 workflows
with `any:` blocks, closed won / lost outside the workflows, and 2 computed fields
(weighted_amount = amount * probability / 100, commission = round(weighted_amount * 0.05, 2)).
It is written as YAML rule files plus a Salesforce mapping in a temporary folder and loaded
through `connector.files.load`. The zen-engine side is the SAME table translated from the loaded
rule set into a JDM decision: a decision table (hitPolicy first, passThrough, closed rows first,
one row per workflow cube) and an expression node (passThrough) for the 2 computed fields.

Timed over 100,000 generated opportunities, in interleaved chunks so load on the machine falls
on both sides alike:
  ours      `Evaluator(rules).evaluate(record, today)`, `record` already canonical and typed
            (what `rules.mapping.read(raw)` returns, read before the clock starts);
  ours+read `Evaluator(rules).evaluate(rules.mapping.read(raw), today)`, from the raw CRM row
            (the Salesforce API shape, nested Owner);
  zen       `decision.evaluate(context)`, context = the canonical record as JSON values.

Rates are given by wall clock (the target's measure) and by this process's CPU time (zen-engine
runs each evaluation in the calling process too; CPU time is steadier on a busy machine).
Checked on every record: same probability, same weighted amount (zen's, rounded half up to the
cents as we write it), same workflow and same commission. Any mismatch exits 1.
The issue's target (issue 2, item 9): ours at least 5x zen-engine's records per second.

    .venv/bin/python bench/bench_evaluate.py [--records 100000] [--seed 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import itertools
import json
import random
import sys
import tempfile
import time
from decimal import ROUND_HALF_UP, Decimal
from importlib.metadata import version
from pathlib import Path
from typing import Any

import zen

from connector.core.evaluate import Evaluator
from connector.core.proof import prove
from connector.core.ruleset import CLOSED_LOST, CLOSED_WON, Factor, RuleSet
from connector.files import load

TARGET_RATIO = 5.0
TODAY = dt.date(2026, 11, 26)
CHUNK = 10_000
CENT = Decimal("0.01")

RULES = {
    "factors.yaml": """\
factors:
  stage:
    field: stage
    values: [Negotiation/Review, Proposal/Price Quote, Value Proposition, Needs Analysis,
             Qualification, Prospecting]
  proposal:
    field: proposal_type
    values: [Firm, Budgetary]
    empty: Budgetary
  relationship:
    field: relationship_level
    values: [Strategic, Trusted, Known, New]
    empty: New
  size:
    field: amount
    bands: {large: 100000, medium: 20000, small: 0}
closed:
  field: stage
  won: [Closed Won]
  lost: [Closed Lost, Cancelled]
""",
    "probability.yaml": """\
workflows:
  - name: p90
    when: {stage: Negotiation/Review, proposal: Firm, relationship: [Strategic, Trusted]}
    set: {probability: 90}
  - name: p80
    when: {stage: Negotiation/Review, proposal: Firm, relationship: [Known, New]}
    set: {probability: 80}
  - name: p70
    when:
      any:
        - {stage: Negotiation/Review, proposal: Budgetary, relationship: [Strategic, Trusted]}
        - {stage: Proposal/Price Quote, proposal: Firm, relationship: Strategic}
        - {stage: Proposal/Price Quote, proposal: Firm, relationship: Trusted, size: large}
    set: {probability: 70}
  - name: p60
    when:
      any:
        - {stage: Negotiation/Review, proposal: Budgetary, relationship: [Known, New]}
        - {stage: Proposal/Price Quote, proposal: Firm, relationship: Trusted,
           size: [medium, small]}
        - {stage: Proposal/Price Quote, proposal: Firm, relationship: Known}
    set: {probability: 60}
  - name: p50
    when:
      any:
        - {stage: Proposal/Price Quote, proposal: Firm, relationship: New}
        - {stage: Proposal/Price Quote, proposal: Budgetary, relationship: [Strategic, Trusted]}
    set: {probability: 50}
  - name: p40
    when:
      any:
        - {stage: Proposal/Price Quote, proposal: Budgetary, relationship: [Known, New]}
        - {stage: Value Proposition, relationship: [Strategic, Trusted]}
    set: {probability: 40}
  - name: p30
    when:
      any:
        - {stage: Value Proposition, relationship: [Known, New]}
        - {stage: Needs Analysis, relationship: [Strategic, Trusted]}
    set: {probability: 30}
  - name: p20
    when:
      any:
        - {stage: Needs Analysis, relationship: [Known, New]}
        - {stage: Qualification}
    set: {probability: 20}
  - name: p10
    when: {stage: Prospecting}
    set: {probability: 10}
""",
    "computed.yaml": """\
computed:
  weighted_amount: amount * probability / 100
  commission: round(weighted_amount * 0.05, 2)
""",
}

MAPPING = """\
crm: salesforce
object: Opportunity
id: Id
modified: SystemModstamp
fields:
  name: Name
  stage: StageName
  amount: Amount
  close_date: CloseDate
  proposal_type: Proposal_Type__c
  relationship_level: Relationship_Level__c
  owner_email: Owner.Email
  probability: Probability
  weighted_amount: Weighted_Amount__c
  rule: Probability_Rule__c
writeback: [probability, weighted_amount, rule]
types:
  amount: money
  close_date: date
  probability: percent
  weighted_amount: money
"""

ZEN_COMPUTED = [("weighted_amount", "amount * probability / 100"),
                ("commission", "round($.weighted_amount * 0.05, 2)")]


# --- the same table as a JDM decision ---------------------------------------------------------

def _text_test(factor: Factor, mask: int) -> str:
    """A unary test for a text factor's allowed values ('' when every value is allowed)."""
    if mask == factor.full:
        return ""
    listed = ", ".join(json.dumps(v) for i, v in enumerate(factor.values) if mask >> i & 1)
    if factor.empty is not None and mask >> factor.empty & 1:
        # Left to right, no precedence: "a or b" is safe, longer chains would not be.
        return f"$ == null or $ in [{listed}]"
    return f"$ in [{listed}]"


def _band_test(factor: Factor, mask: int) -> str:
    """A unary test for the allowed bands: comma-separated intervals, adjacent ones merged."""
    if mask == factor.full:
        return ""
    assert factor.bands is not None
    ranked = sorted(range(len(factor.bands)), key=lambda i: factor.bands[i][1])  # type: ignore[index]
    intervals: list[list[Decimal | None]] = []
    for pos, i in enumerate(ranked):
        if not mask >> i & 1:
            continue
        low = factor.bands[i][1]
        high = factor.bands[ranked[pos + 1]][1] if pos + 1 < len(ranked) else None
        if intervals and intervals[-1][1] == low:
            intervals[-1][1] = high
        else:
            intervals.append([low, high])
    return ", ".join(f">= {lo}" if hi is None else f"[{lo}..{hi})" for lo, hi in intervals)


def jdm_decision(rules: RuleSet) -> str:
    """The rule set as a JDM decision: input -> decision table -> expression node -> output."""
    assert rules.closed is not None
    fields = list(dict.fromkeys([*(f.field for f in rules.factors), rules.closed.field]))
    inputs = [{"id": f"in_{name}", "name": name, "field": name} for name in fields]
    outputs = [{"id": "out_probability", "name": "probability", "field": "probability"},
               {"id": "out_rule", "name": "rule", "field": "rule"}]
    rows: list[dict[str, str]] = []

    def row(tests: dict[str, str], probability: object, rule: str) -> None:
        r = {"_id": f"r{len(rows) + 1}", "out_probability": str(probability),
             "out_rule": json.dumps(rule)}
        r.update({f"in_{name}": tests.get(name, "") for name in fields})
        rows.append(r)

    # Closed deals first: with hitPolicy "first" they win over the workflows, as in ours.
    # The rule set keeps closed states case-folded, and compares them so: lower($) does too.
    for state, values, p in ((CLOSED_WON, rules.closed.won, 100),
                             (CLOSED_LOST, rules.closed.lost, 0)):
        listed = ", ".join(json.dumps(v) for v in sorted(values))
        row({rules.closed.field: f"lower($) in [{listed}]"}, p, state)
    for w in rules.workflows:
        for cube in w.cubes:
            tests = {f.field: (_band_test if f.bands else _text_test)(f, m)
                     for f, m in zip(rules.factors, cube)}
            row(tests, w.probability, w.name)

    def node(id_: str, kind: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
        n: dict[str, Any] = {"id": id_, "name": id_, "type": kind, "position": {"x": 0, "y": 0}}
        if content is not None:
            n["content"] = content
        return n

    transform = {"passThrough": True, "inputField": None, "outputPath": None,
                 "executionMode": "single"}
    nodes = [
        node("request", "inputNode"),
        node("probability", "decisionTableNode",
             {"hitPolicy": "first", "inputs": inputs, "outputs": outputs, "rules": rows,
              **transform}),
        node("computed", "expressionNode",
             {"expressions": [{"id": f"e{i}", "key": k, "value": v}
                              for i, (k, v) in enumerate(ZEN_COMPUTED)], **transform}),
        node("response", "outputNode"),
    ]
    chain = ["request", "probability", "computed", "response"]
    edges = [{"id": f"edge{i}", "sourceId": a, "targetId": b, "type": "edge"}
             for i, (a, b) in enumerate(itertools.pairwise(chain))]
    return json.dumps({"nodes": nodes, "edges": edges})


# --- the records -----------------------------------------------------------------------------

def raw_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Opportunities as the Salesforce API returns them (JSON numbers, a nested Owner)."""
    rng = random.Random(seed)
    stages = ["Negotiation/Review", "Proposal/Price Quote", "Value Proposition",
              "Needs Analysis", "Qualification", "Prospecting", "Closed Won", "Closed Lost",
              "Cancelled"]
    stage_weights = [8, 12, 14, 16, 18, 14, 9, 7, 2]
    rows = []
    for i in range(n):
        r = rng.random()
        if r < 0.02:
            amount: int | float = rng.choice([0, 20000, 100000])  # the band bounds themselves
        elif r < 0.6:
            amount = int(10 ** rng.uniform(3, 6))
        else:
            amount = round(10 ** rng.uniform(3, 6), 2)
        rows.append({
            "Id": f"006{i:012d}",
            "Name": f"Opportunity {i}",
            "StageName": rng.choices(stages, stage_weights)[0],
            "Amount": amount,
            "CloseDate": (TODAY + dt.timedelta(days=rng.randrange(-90, 365))).isoformat(),
            "Proposal_Type__c": rng.choice(["Firm", "Budgetary", None]),
            "Relationship_Level__c": rng.choice(["Strategic", "Trusted", "Known", "New", None]),
            "Owner": {"Email": f"rep{rng.randrange(40)}@example.com"},
            "Probability": rng.choice([None, 10, 20, 50]),
            "Weighted_Amount__c": None,
            "Probability_Rule__c": None,
        })
    return rows


def as_json(value: Any) -> Any:
    """A canonical value as the JSON zen-engine is given."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(repr(value)) if isinstance(value, float) \
        else Decimal(value)


# --- run -------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as tmp:
        rules_dir, mappings_dir = Path(tmp, "rules"), Path(tmp, "mappings")
        rules_dir.mkdir()
        mappings_dir.mkdir()
        for name, text in RULES.items():
            (rules_dir / name).write_text(text, encoding="utf-8")
        (mappings_dir / "salesforce.yaml").write_text(MAPPING, encoding="utf-8")
        loaded = load(rules_dir, mappings_dir)
    if not loaded.ok or loaded.rules is None:
        for f in loaded.findings:
            print(f)
        print("the bench's rule files do not load")
        return 1
    rules = loaded.rules
    if any(f.severity == "error" for f in prove(rules)):
        print("the bench's table is not exclusive and complete")
        return 1
    evaluator = Evaluator(rules)
    decision = zen.ZenEngine().create_decision(jdm_decision(rules))

    raws = raw_rows(args.records, args.seed)
    read = rules.mapping.read
    records = [read(r) for r in raws]
    contexts = [{k: as_json(v) for k, v in rec.items()} for rec in records]
    cubes = sum(len(w.cubes) for w in rules.workflows)
    print(f"table: {len(rules.factors)} factors, {len(rules.workflows)} workflows ({cubes} "
          f"cubes, {cubes + 2} zen rows), {len(rules.computed)} computed fields; "
          f"{len(records):,} records")

    # The prepared records are the bench's, not the work's: keep the garbage collector from
    # scanning them again and again (it would tax whichever side allocates more).
    gc.collect()
    gc.freeze()
    ours, zen_eval = evaluator.evaluate, decision.evaluate
    today = TODAY
    for i in range(min(1000, len(records))):  # warm up both sides
        ours(records[i], today)
        zen_eval(contexts[i])

    spent = {"ours": 0.0, "ours+read": 0.0, "zen": 0.0}  # wall-clock seconds
    cpu_spent = dict(spent)                               # this process's CPU seconds
    mismatches = {"probability": 0, "weighted_amount": 0, "rule": 0, "commission": 0,
                  "ours vs ours+read": 0}
    shown = 0
    for start in range(0, len(records), CHUNK):
        recs = records[start:start + CHUNK]
        rows = raws[start:start + CHUNK]
        ctxs = contexts[start:start + CHUNK]

        t0, c0 = time.perf_counter(), time.process_time()
        z_out = [zen_eval(c) for c in ctxs]
        t1, c1 = time.perf_counter(), time.process_time()
        o_out = [ours(r, today) for r in recs]
        t2, c2 = time.perf_counter(), time.process_time()
        r_out = [ours(read(r), today) for r in rows]
        t3, c3 = time.perf_counter(), time.process_time()
        for side, wall, cpu in (("zen", t1 - t0, c1 - c0), ("ours", t2 - t1, c2 - c1),
                                ("ours+read", t3 - t2, c3 - c2)):
            spent[side] += wall
            cpu_spent[side] += cpu

        for k, (z, o, rr) in enumerate(zip(z_out, o_out, r_out)):
            zr, ov = z["result"], o.values
            weighted = _dec(zr.get("weighted_amount"))
            checks = {
                "probability": _dec(zr.get("probability")) == _dec(ov["probability"]),
                "weighted_amount": ov["weighted_amount"] == (
                    None if weighted is None else weighted.quantize(CENT, ROUND_HALF_UP)),
                "rule": zr.get("rule") == o.rule,
                "commission": _dec(zr.get("commission")) == ov["commission"],
                "ours vs ours+read": (rr.rule, rr.values["weighted_amount"])
                == (o.rule, ov["weighted_amount"]),
            }
            for what, same in checks.items():
                if not same:
                    mismatches[what] += 1
                    if shown < 5:
                        shown += 1
                        print(f"  mismatch ({what}) on record {start + k}: ours "
                              f"{o.rule} {ov['probability']} {ov['weighted_amount']} "
                              f"{ov['commission']}, zen {zr.get('rule')} "
                              f"{zr.get('probability')} {zr.get('weighted_amount')} "
                              f"{zr.get('commission')}")

    n = len(records)
    rate = {k: n / v for k, v in spent.items()}
    cpu_rate = {k: n / max(v, 1e-9) for k, v in cpu_spent.items()}
    print(f"{'records/s':34} {'wall clock':>12} {'ours/zen':>9} {'CPU time':>12} {'ours/zen':>9}")
    for side, label in (("zen", f"zen-engine {version('zen-engine')}, JDM decision"),
                        ("ours", "ours, canonical records"),
                        ("ours+read", "ours, mapping.read + evaluate")):
        print(f"{label:34} {rate[side]:12,.0f} {rate[side] / rate['zen']:8.1f}x "
              f"{cpu_rate[side]:12,.0f} {cpu_rate[side] / cpu_rate['zen']:8.1f}x")
    ratio = rate["ours"] / rate["zen"]
    print(f"target: ours at least {TARGET_RATIO:.0f}x zen-engine: "
          f"{'met' if ratio >= TARGET_RATIO else 'NOT met'} ({ratio:.1f}x wall clock, "
          "canonical records)")
    print("mismatches: " + ", ".join(f"{k} {v}" for k, v in mismatches.items()))
    if any(mismatches.values()):
        print("WRONG ANSWER: the two engines disagree")
        return 1
    print(f"all {n:,} records agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
