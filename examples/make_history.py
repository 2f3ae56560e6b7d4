"""Writes examples/history.csv: a year of snapshot history (SPEC 8) for the bundled rules and
the Salesforce mapping, for `calibrate`, `movement` and `accuracy` to be tried on.

300 invented deals opened through 2026: each moves up the stages in one to four snapshots
(proposal and relationship firm up, amounts are revised, close dates slip), with the CRM's own
stage-default probability on every row, and most close, won more often the further they got,
in a closing snapshot dated on the close date. Standard library only, one random.Random(2026):
the same bytes every time.

    python examples/make_history.py
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from pathlib import Path

HEADER = ["Id", "Name", "StageName", "Amount", "CloseDate", "Proposal_Type__c",
          "Relationship_Level__c", "Owner.Name", "Owner.Email", "Account.Name", "Probability",
          "Weighted_Amount__c", "Probability_Rule__c", "SystemModstamp", "as_of"]
STAGES = [("Prospecting", 10), ("Qualification", 20), ("Needs Analysis", 30),
          ("Value Proposition", 40), ("Proposal/Price Quote", 60), ("Negotiation/Review", 80)]
OWNERS = ["Ana Ruiz", "Ben Okafor", "Chen Li", "Dora Silva"]


def deals(rng: random.Random) -> list[list[str]]:
    rows = []
    for n in range(300):
        deal = f"006HIST{n:011d}"
        owner = rng.choice(OWNERS)
        account = f"Account {rng.randrange(40):02d}"
        day = dt.date(2026, 1, 1) + dt.timedelta(days=rng.randrange(330))
        close = day + dt.timedelta(days=rng.randint(30, 120))
        amount = rng.choice([4_000, 12_000, 25_000, 60_000, 150_000, 300_000])
        stage = rng.randrange(3)
        proposal, relationship = "", rng.choice(["New", "Known", "Trusted", "Strategic"])
        for _ in range(rng.randint(1, 4)):
            name, crm = STAGES[stage]
            at = dt.datetime.combine(day, dt.time(9 + rng.randrange(8)))
            rows.append([deal, f"{account} deal {n}", name, str(amount), close.isoformat(),
                         proposal, relationship, owner,
                         owner.lower().replace(" ", ".") + "@example.com", account, str(crm),
                         "", "", at.isoformat(), at.isoformat()])
            day += dt.timedelta(days=rng.randint(7, 30))
            stage = min(stage + rng.randint(0, 2), len(STAGES) - 1)
            proposal = rng.choice(["Firm", "Budgetary"]) if stage >= 4 else ""
            if rng.random() < 0.2:
                amount = round(amount * rng.choice([0.8, 1.25]))
            if rng.random() < 0.2 or day >= close:
                close = max(close, day) + dt.timedelta(days=rng.randint(10, 45))
        if close > dt.date(2026, 12, 31) or rng.random() < 0.15:
            continue  # still open
        won = rng.random() < 0.15 + 0.12 * stage
        rows.append([deal, f"{account} deal {n}", "Closed Won" if won else "Closed Lost",
                     str(amount), close.isoformat(), proposal, relationship, owner,
                     owner.lower().replace(" ", ".") + "@example.com", account,
                     "100" if won else "0", "", "", close.isoformat() + "T00:00:00",
                     close.isoformat() + "T00:00:00"])
    return rows


def main() -> None:
    path = Path(__file__).resolve().parent / "history.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(deals(random.Random(2026)))


if __name__ == "__main__":
    main()
