"""Writes the SPEC 8 snapshot history of the CRM sales-opportunities dataset (8,800 deals,
2016-10 to 2017-12), for `calibrate`, `movement` and `accuracy` with the rules beside it.

    python examples/crm-sales-opportunities/make_history.py DATASET_FOLDER OUT.csv

The dataset has no field history, so each deal becomes at most two snapshots, by SPEC 8's rule
for fields with no history (they keep the earliest known value):
- engaged (on engage_date): stage Engaging, the amount at the product's list price, the factors
  (product, the account's sector and employees, the agent's regional office), and the close date
  the deal in fact got, which a rep would only have estimated;
- closed (on close_date, Won or Lost): the amount actually closed.
Prospecting deals have no engage date: no snapshot can be dated, so they are left out. Standard
library only.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

HEADER = ["opportunity_id", "modified", "deal_stage", "amount", "close_date", "product",
          "sector", "regional_office", "employees", "probability", "as_of"]


def rows(folder: Path) -> list[list[str]]:
    def table(name: str, key: str) -> dict[str, dict[str, str]]:
        with (folder / name).open(encoding="utf-8", newline="") as f:
            return {r[key]: r for r in csv.DictReader(f)}

    accounts = table("accounts.csv", "account")
    teams = table("sales_teams.csv", "sales_agent")
    prices = {k.replace(" ", ""): v["sales_price"] for k, v in table("products.csv",
                                                                     "product").items()}
    out: list[list[str]] = []
    with (folder / "sales_pipeline.csv").open(encoding="utf-8", newline="") as f:
        for deal in csv.DictReader(f):
            if not deal["engage_date"]:
                continue
            account = accounts.get(deal["account"], {})
            office = teams.get(deal["sales_agent"], {}).get("regional_office", "")
            common = [deal["close_date"], deal["product"], account.get("sector", ""), office,
                      account.get("employees", "")]
            price = prices.get(deal["product"].replace(" ", ""), "")
            engaged = deal["engage_date"] + "T09:00:00"
            out.append([deal["opportunity_id"], engaged, "Engaging", price, *common, "",
                        engaged])
            if deal["deal_stage"] in ("Won", "Lost"):
                closed = deal["close_date"] + "T18:00:00"
                out.append([deal["opportunity_id"], closed, deal["deal_stage"],
                            deal["close_value"], *common, "", closed])
    return out


def main(folder: Path, target: Path) -> int:
    with target.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(rows(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
