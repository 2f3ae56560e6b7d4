"""Write the example Salesforce Opportunity export: examples/opportunities.csv and .json.

    python examples/make_opportunities.py

Deterministic: one `random.Random(2026)` drives everything, so running it again gives the same
bytes. The data is invented (accounts, people, deals); only its shape is Salesforce's:

* the CSV is what a report or Data Loader export gives, its header the API names that
  mappings/salesforce.yaml uses;
* the JSON is the same rows as REST query records (`attributes`, nested `Owner` and `Account`).

The Probability column is what salespeople typed (Salesforce's stage default or a guess), so a
dry run has changes to show. About one row in five was already written by an earlier run of the
connector: most of those are still right, the rest went stale (the deal moved on a stage, or its
amount changed). Six rows are deliberately bad; see BAD_ROWS and examples/README.md.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import random
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

SEED = 2026
HERE = Path(__file__).resolve().parent
API = "/services/data/v62.0/sobjects"

HEADER = ["Id", "Name", "StageName", "Amount", "CloseDate", "Proposal_Type__c",
          "Relationship_Level__c", "Owner.Name", "Owner.Email", "Account.Name", "Probability",
          "Weighted_Amount__c", "Probability_Rule__c"]

# How many rows of each stage (400 in all, before six of them are damaged).
STAGE_COUNTS = {
    "Prospecting": 56,
    "Qualification": 52,
    "Needs Analysis": 48,
    "Value Proposition": 45,
    "Proposal/Price Quote": 46,
    "Negotiation/Review": 38,
    "Closed Won": 62,
    "Closed Lost": 47,
    "Cancelled": 6,
}
OPEN_STAGES = ["Prospecting", "Qualification", "Needs Analysis", "Value Proposition",
               "Proposal/Price Quote", "Negotiation/Review"]  # in pipeline order

# Salesforce's default probability per stage (Setup > Opportunity Stages); Cancelled is a
# custom closed/lost stage.
STAGE_DEFAULT = {"Prospecting": 10, "Qualification": 10, "Needs Analysis": 20,
                 "Value Proposition": 50, "Proposal/Price Quote": 75, "Negotiation/Review": 90,
                 "Closed Won": 100, "Closed Lost": 0, "Cancelled": 0}

# Open deals close sooner the further they are: months after 2026-12 (0 = Dec 2026, 8 = Aug 2027).
CLOSE_MONTHS = {"Negotiation/Review": (0, 3), "Proposal/Price Quote": (0, 4),
                "Value Proposition": (1, 5), "Needs Analysis": (2, 7),
                "Qualification": (3, 8), "Prospecting": (3, 8)}

# Proposal_Type__c by stage: (blank, Budgetary, Firm) weights.
PROPOSAL_WEIGHTS = {"Prospecting": (95, 5, 0), "Qualification": (92, 8, 0),
                    "Needs Analysis": (80, 20, 0), "Value Proposition": (40, 50, 10),
                    "Proposal/Price Quote": (5, 45, 50), "Negotiation/Review": (0, 30, 70),
                    "Closed Won": (0, 15, 85), "Closed Lost": (10, 40, 50),
                    "Cancelled": (30, 50, 20)}

OWNERS = [("Maria Gonzalez", "maria.gonzalez@example.com"),
          ("James Okafor", "james.okafor@example.com"),
          ("Priya Raman", "priya.raman@example.com"),
          ("Tom Becker", "tom.becker@example.com"),
          ("Chen Wei", "chen.wei@example.com"),
          ("Laura Whitfield", "laura.whitfield@example.com"),
          ("Diego Martins", "diego.martins@example.com"),
          ("Sophie Laurent", "sophie.laurent@example.com")]

# Invented accounts, each with the relationship the account team has built with it.
ACCOUNTS = [
    ("Acme Corp", "Strategic"), ("Blue Harbor Logistics", "Trusted"),
    ("Cedar Ridge Health", "Known"), ("Brightwater Utilities", "Trusted"),
    ("Summit Engineering Group", "Known"), ("Redwood Capital Partners", "New"),
    ("Lakeside School District", "Trusted"), ("Ironbridge Manufacturing", "Strategic"),
    ("Golden Valley Foods", "Known"), ("Silverline Telecom", "New"),
    ("Pinecrest Hotels", "Known"), ("Northgate Insurance", "Trusted"),
    ("Harborview Hospital", "Strategic"), ("Meridian Retail Group", "Known"),
    ("Falcon Aerospace Supply", "New"), ("Granite State Bank", "Trusted"),
    ("Horizon Energy Services", "Known"), ("Oakwood University", "Strategic"),
    ("Riverbend County", "Known"), ("Sterling Pharma Labs", "New"),
    ("Clearwater Municipal Water", "Trusted"), ("Evergreen Property Management", "Known"),
    ("Atlas Freight Lines", "New"), ("Copperfield Mining", "Known"),
    ("Bayside Credit Union", "Trusted"), ("Keystone Construction", "New"),
    ("Maple Leaf Dental Group", "Known"), ("Orion Data Systems", "Strategic"),
    ("Prairie Wind Farms", "New"), ("Quantum Print Works", "Known"),
    ("Sunrise Senior Living", "Trusted"), ("Tidewater Shipping", "Known"),
    ("Union Street Legal, LLP", "New"), ("Vantage Media Group", "Known"),
    ("Westfield Auto Parts", "Trusted"), ("Willow Creek Vineyards", "New"),
    ("Zenith Robotics", "Strategic"), ("Crescent City Transit", "Known"),
    ("Müller-Lindqvist Engineering", "New"), ("Lumière Hospitality Group", "Trusted"),
]

# Hardware sold by the unit (name, list price), and services sold as one amount.
PRODUCTS = [("Laptops", 1250), ("Desktop Workstations", 1850), ('27" Monitors', 320),
            ("Tablets", 640), ("Docking Stations", 210), ("Servers", 9800),
            ("Storage Arrays", 42000), ("Network Switches", 3400), ("Wi-Fi Access Points", 480),
            ("Firewalls", 6500), ("IP Phones", 190), ("Conference Room Kits", 4200),
            ("Rugged Handhelds", 1450), ("Label Printers", 780), ("Multifunction Printers", 2900)]
SERVICES = ["Managed Print Services (3 yr)", "Network Refresh", "Data Center Migration",
            "Microsoft 365 Migration", "Security Assessment", "Helpdesk Support Renewal",
            "Cloud Backup (annual)", "Site Survey and Cabling"]

MIN_AMOUNT, MAX_AMOUNT = 2000, 450000
CENT = Decimal("0.01")


def rule_for(stage: str, proposal: str, relationship: str) -> tuple[str, int]:
    """The workflow and probability rules/probability.yaml gives an open deal (a copy, so the
    example stays fixed when the rules change). Blank proposal = Budgetary, blank relationship
    = New, as rules/factors.yaml says."""
    firm = proposal == "Firm"
    close = (relationship or "New") in ("Strategic", "Trusted")
    if stage == "Negotiation/Review":
        p = (90 if close else 80) if firm else (70 if close else 60)
    elif stage == "Proposal/Price Quote":
        if firm:
            p = {"Strategic": 70, "Trusted": 60, "Known": 60}.get(relationship, 50)
        else:
            p = 50 if close else 40
    elif stage == "Value Proposition":
        p = 40 if close else 30
    elif stage == "Needs Analysis":
        p = 30 if close else 20
    elif stage == "Qualification":
        p = 20
    else:
        p = 10
    return f"p{p}", p


def salesforce_id(rng: random.Random, prefix: str, seen: set[str]) -> str:
    """An 18-character id: key prefix, pod, zeros, a unique part, then the case-safe suffix."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    while True:
        short = prefix + "Dn00000" + "".join(rng.choice(alphabet) for _ in range(5))
        if short not in seen:
            seen.add(short)
            break
    suffix = ""
    for chunk in (short[0:5], short[5:10], short[10:15]):
        bits = sum(1 << i for i, c in enumerate(chunk) if c.isupper())
        suffix += "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits]
    return short + suffix


def pick_amount(rng: random.Random) -> tuple[str, Decimal]:
    """A product line for the opportunity name and its amount; about one in five over 100,000."""
    target = math.exp(math.log(MIN_AMOUNT)
                      + (math.log(MAX_AMOUNT) - math.log(MIN_AMOUNT)) * rng.random() ** 1.5)
    if rng.random() < 0.25:
        return rng.choice(SERVICES), Decimal(round(target, -2 if target < 50000 else -3))
    # A product that makes the amount with a believable quantity (at most 300 units).
    product, price = rng.choice([(n, p) for n, p in PRODUCTS if 1 <= target / p <= 300])
    qty = max(1, round(target / price))
    if qty > 100:
        qty = round(qty, -1)
    elif qty > 20:
        qty = 5 * round(qty / 5)
    while qty * price > MAX_AMOUNT:
        qty -= 1
    while qty * price < MIN_AMOUNT:
        qty += 1
    return f"{qty} {product}", Decimal(qty * price)


def day_in_month(rng: random.Random, year: int, month: int) -> dt.date:
    """Salespeople like the last day of the month; otherwise any day."""
    last = (dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)).day
    return dt.date(year, month, last if rng.random() < 0.35 else rng.randint(1, last))


def close_date(rng: random.Random, stage: str) -> dt.date:
    if stage in CLOSE_MONTHS:  # open: 2026-12 .. 2027-08
        offset = rng.randint(*CLOSE_MONTHS[stage])
        return day_in_month(rng, 2026 + (11 + offset) // 12, (11 + offset) % 12 + 1)
    # closed: 2026-06 .. 2026-11, no later than the day of the export (2026-11-26)
    date = day_in_month(rng, 2026, rng.randint(6, 11))
    return min(date, dt.date(2026, 11, 25))


def weighted(amount: Decimal, probability: int) -> Decimal:
    return (amount * probability / 100).quantize(CENT, rounding=ROUND_HALF_UP)


def make_rows(rng: random.Random) -> list[dict]:
    """Typed rows (Decimal amounts, dates), keyed by the CSV header."""
    seen: set[str] = set()
    owners = [(name, email, salesforce_id(rng, "005", seen)) for name, email in OWNERS]
    accounts = [(name, level, salesforce_id(rng, "001", seen)) for name, level in ACCOUNTS]
    stages = [stage for stage, n in STAGE_COUNTS.items() for _ in range(n)]
    rng.shuffle(stages)
    rows = []
    for stage in stages:
        account, level, account_id = rng.choice(accounts)
        owner, email, owner_id = rng.choice(owners)
        product, amount = pick_amount(rng)
        if rng.random() < 0.07:  # a negotiated discount leaves cents
            discounted = amount * Decimal(rng.choice(["0.965", "0.925", "0.885"]))
            amount = max(discounted.quantize(CENT), Decimal(MIN_AMOUNT))
        proposal = rng.choices(["", "Budgetary", "Firm"], PROPOSAL_WEIGHTS[stage])[0]
        relationship = "" if rng.random() < 0.1 else level
        row = {
            "Id": salesforce_id(rng, "006", seen), "Name": f"{account} - {product}",
            "StageName": stage, "Amount": amount, "CloseDate": close_date(rng, stage),
            "Proposal_Type__c": proposal, "Relationship_Level__c": relationship,
            "Owner.Name": owner, "Owner.Email": email, "Account.Name": account,
            "Weighted_Amount__c": None, "Probability_Rule__c": "",
            "_owner_id": owner_id, "_account_id": account_id,
        }
        fill_probability(rng, row)
        rows.append(row)
    return rows


def fill_probability(rng: random.Random, row: dict) -> None:
    """Probability as typed, and the write-back fields as an earlier run may have left them."""
    stage, amount = row["StageName"], row["Amount"]
    if stage in OPEN_STAGES:
        rule, p = rule_for(stage, row["Proposal_Type__c"], row["Relationship_Level__c"])
    else:
        rule, p = ("closed-won", 100) if stage == "Closed Won" else ("closed-lost", 0)
    history = rng.random()
    if history < 0.12:  # written by an earlier run and still right: nothing to change
        row.update({"Probability": p, "Weighted_Amount__c": weighted(amount, p),
                    "Probability_Rule__c": rule})
    elif history < 0.16:  # written by an earlier run, then the amount was re-quoted
        old = (amount * Decimal(rng.choice(["0.8", "0.9", "1.1"]))).quantize(Decimal(100))
        row.update({"Probability": p, "Weighted_Amount__c": weighted(old, p),
                    "Probability_Rule__c": rule})
    elif history < 0.21:  # written by an earlier run, one stage ago
        if stage == "Prospecting":
            before = "Qualification"  # qualified once, then sent back to prospecting
        elif stage in OPEN_STAGES:
            before = OPEN_STAGES[OPEN_STAGES.index(stage) - 1]
        else:
            before = "Negotiation/Review"  # closed since
        old_rule, old_p = rule_for(before, row["Proposal_Type__c"], row["Relationship_Level__c"])
        # Salesforce resets Probability to the stage default when the stage changes.
        row.update({"Probability": STAGE_DEFAULT[stage],
                    "Weighted_Amount__c": weighted(amount, old_p),
                    "Probability_Rule__c": old_rule})
    elif stage in OPEN_STAGES and rng.random() < 0.45:  # the salesperson's own guess
        guess = p + rng.choice([-20, -10, -10, -5, 0, 5, 10, 10, 15, 25])
        row["Probability"] = min(95, max(5, guess))
    else:  # Salesforce's default for the stage
        row["Probability"] = STAGE_DEFAULT[stage]


# The deliberately bad rows: what is done to one open deal, and why the connector refuses it.
BAD_ROWS = [
    ("Negotiation/Review", "StageName", "Negotiaton/Review", "unknown stage (a typo)"),
    ("Qualification", "Amount", "abc", "amount is not a number"),
    ("Value Proposition", "Amount", "european", "amount written the European way"),
    ("Proposal/Price Quote", "CloseDate", None, "open deal without a close date"),
    ("Needs Analysis", "Relationship_Level__c", "Champion", "unknown relationship level"),
    ("Prospecting", "StageName", "", "empty stage"),
]


def damage(rng: random.Random, rows: list[dict]) -> list[tuple[str, str]]:
    """Spoil one deal per entry of BAD_ROWS; returns (Id, what is wrong)."""
    bad = []
    for stage, field, value, why in BAD_ROWS:
        row = rng.choice([r for r in rows if r["StageName"] == stage and "_bad" not in r])
        if value == "european":  # 48500 -> '48.500,00'
            value = f"{row['Amount']:,.2f}".translate(str.maketrans(",.", ".,"))
        row.update({field: value, "Weighted_Amount__c": None, "Probability_Rule__c": "",
                    "_bad": why})
        bad.append((row["Id"], f"{why}: {field} = {value!r}"))
    return bad


def text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def number(value: object) -> object:
    """JSON numbers for good values; a bad amount stays the text it is."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def write_csv(rows: list[dict], path: Path, comma_rows: set[str]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(HEADER)
        for row in rows:
            line = {k: text(row[k]) for k in HEADER}
            if row["Id"] in comma_rows:  # '12,500.00': a report with thousands separators
                line["Amount"] = f"{row['Amount']:,.2f}"
            out.writerow(line[k] for k in HEADER)


def write_json(rows: list[dict], path: Path) -> None:
    records = []
    for row in rows:
        records.append({
            "attributes": {"type": "Opportunity", "url": f"{API}/Opportunity/{row['Id']}"},
            "Id": row["Id"],
            "Name": row["Name"],
            "StageName": row["StageName"] or None,
            "Amount": number(row["Amount"]),
            "CloseDate": text(row["CloseDate"]) or None,
            "Proposal_Type__c": row["Proposal_Type__c"] or None,
            "Relationship_Level__c": row["Relationship_Level__c"] or None,
            "Owner": {"attributes": {"type": "User", "url": f"{API}/User/{row['_owner_id']}"},
                      "Name": row["Owner.Name"], "Email": row["Owner.Email"]},
            "Account": {"attributes": {"type": "Account",
                                       "url": f"{API}/Account/{row['_account_id']}"},
                        "Name": row["Account.Name"]},
            "Probability": row["Probability"],
            "Weighted_Amount__c": number(row["Weighted_Amount__c"]),
            "Probability_Rule__c": row["Probability_Rule__c"] or None,
        })
    path.write_text(json.dumps(records, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> None:
    rng = random.Random(SEED)
    rows = make_rows(rng)
    bad = damage(rng, rows)
    good = [r for r in rows if "_bad" not in r and isinstance(r["Amount"], Decimal)]
    comma_rows = {r["Id"] for r in rng.sample([r for r in good if r["Amount"] >= 1000], 5)}
    write_csv(rows, HERE / "opportunities.csv", comma_rows)
    write_json(rows, HERE / "opportunities.json")
    print(f"{len(rows)} opportunities -> examples/opportunities.csv, examples/opportunities.json")
    for row_id, why in bad:
        print(f"  bad: {row_id}  {why}")


if __name__ == "__main__":
    main()
