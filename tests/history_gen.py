"""Seeded snapshot histories (SPEC 8 CSV) for the example rules in rules/ and the Salesforce
mapping, with what is true by construction: each deal's true win probability, its moves."""

from __future__ import annotations

import csv
import datetime as dt
import random
from collections.abc import Iterable
from pathlib import Path

from connector.core.table import DecisionTable
from connector.files import load

ROOT = Path(__file__).resolve().parent.parent
HEADER = ["Id", "Name", "StageName", "Amount", "CloseDate", "Proposal_Type__c",
          "Relationship_Level__c", "Owner.Name", "Owner.Email", "Account.Name", "Probability",
          "Weighted_Amount__c", "Probability_Rule__c", "as_of"]
AMOUNTS = {0: (100_000, 500_000), 1: (20_000, 99_999), 2: (1_000, 19_999)}  # by size band


def example_rules():  # type: ignore[no-untyped-def]
    loaded = load(ROOT / "rules", ROOT / "mappings")
    assert loaded.rules is not None
    return loaded.rules


def combos_by_workflow() -> dict[str, list[tuple[str, ...]]]:
    out: dict[str, list[tuple[str, ...]]] = {}
    for values, ws in DecisionTable(example_rules()).rows():
        out.setdefault(ws[0].name, []).append(values)
    return out


def row(deal: str, at: dt.datetime | dt.date, stage: str, amount: object, close: dt.date,
        proposal: str = "Firm", relationship: str = "Known", probability: object = "",
        rule: str = "") -> list[str]:
    return [deal, f"Deal {deal}", stage, str(amount), close.isoformat(), proposal, relationship,
            "Ann Owner", "ann@example.com", "Acme", str(probability), "", rule, at.isoformat()]


def write(path: Path, rows: Iterable[list[str]], header: list[str] = HEADER) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


def calibration_history(path: Path, seed: int, truth: dict[str, float], per_workflow: int,
                        start: dt.date = dt.date(2024, 1, 1), days: int = 720) -> Path:
    """Deals that keep one factor combination while open (1 to 4 snapshots) and are won with
    the true probability of their workflow, `truth[name]` (0..1)."""
    rng = random.Random(seed)
    combos = combos_by_workflow()
    rows: list[list[str]] = []
    n = 0
    for name, p in truth.items():
        for _ in range(per_workflow):
            n += 1
            stage, proposal, relationship, size = rng.choice(combos[name])
            band = ["large", "medium", "small"].index(size)
            opened = start + dt.timedelta(days=rng.randrange(days))
            close = opened + dt.timedelta(days=rng.randint(10, 90))
            k = rng.randint(1, 4)
            moments = sorted(rng.sample(range(0, (close - opened).days * 24), k))
            amount = rng.randint(*AMOUNTS[band])
            for hour in moments:
                at = dt.datetime.combine(opened, dt.time()) + dt.timedelta(hours=hour)
                rows.append(row(f"D{n:06d}", at, stage, amount, close, proposal, relationship,
                                probability=rng.choice([10, 25, 50, 75])))
            won = rng.random() < p
            rows.append(row(f"D{n:06d}", close, "Closed Won" if won else "Closed Lost", amount,
                            close, proposal, relationship, probability=100 if won else 0))
    rng.shuffle(rows)  # the engine must not rely on the file's order
    return write(path, rows)
