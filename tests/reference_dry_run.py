"""An independent model of what `simulate` and `forecast` must give for the bundled rules.

Written from docs/SPEC.md and the rule files in rules/ (factors.yaml, probability.yaml,
computed.yaml, actions.yaml) and mappings/salesforce.yaml, read by a person, not by the
connector: nothing here imports `connector`. The tests compare the connector's output with this
model row by row, so a bug in the evaluator, the mapping or the export reader shows up as a
difference instead of being copied into the expected values.

If the bundled rules change, this model must be changed with them (the test that checks the
model's decision table against `crm-automation table` says so).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

# rules/factors.yaml, best first
STAGES = ["Negotiation/Review", "Proposal/Price Quote", "Value Proposition", "Needs Analysis",
          "Qualification", "Prospecting"]
PROPOSALS = ["Firm", "Budgetary"]
RELATIONSHIPS = ["Strategic", "Trusted", "Known", "New"]
WON, LOST = ["Closed Won"], ["Closed Lost", "Cancelled"]

# rules/probability.yaml, transcribed as a table: (stage, proposal, relationship) -> p.
# The size factor is in the rules but no workflow depends on it.
_CLOSE = ("Strategic", "Trusted")


def probability_of(stage: str, proposal: str, relationship: str) -> int:
    firm = proposal == "Firm"
    close = relationship in _CLOSE
    if stage == "Negotiation/Review":
        if firm:
            return 90 if close else 80
        return 70 if close else 60
    if stage == "Proposal/Price Quote":
        if firm:
            return {"Strategic": 70, "Trusted": 60, "Known": 60, "New": 50}[relationship]
        return 50 if close else 40
    if stage == "Value Proposition":
        return 40 if close else 30
    if stage == "Needs Analysis":
        return 30 if close else 20
    if stage == "Qualification":
        return 20
    assert stage == "Prospecting"
    return 10


# mappings/salesforce.yaml: canonical name -> CRM column, in the file's order
COLUMNS = {"name": "Name", "stage": "StageName", "amount": "Amount", "close_date": "CloseDate",
           "proposal_type": "Proposal_Type__c", "relationship_level": "Relationship_Level__c",
           "owner_name": "Owner.Name", "owner_email": "Owner.Email",
           "account_name": "Account.Name", "probability": "Probability",
           "weighted_amount": "Weighted_Amount__c", "rule": "Probability_Rule__c"}
HEADER = ["Id", *COLUMNS.values()]
WRITEBACK = ["probability", "weighted_amount", "rule"]
NUMBERS = {"amount", "probability", "weighted_amount"}   # money, percent, money
DATES = {"close_date"}
ERP_FROM = dt.date(2026, 11, 1)   # rules/actions.yaml: won and close_date >= date('2026-11-01')


class Refused(Exception):
    """The record fails; `field` and `value` say what the reason must name."""

    def __init__(self, field: str, value: str) -> None:
        super().__init__(field, value)
        self.field = field
        self.value = value


def _number(text: str, name: str) -> Decimal | None:
    """Plain decimals, optionally with comma thousands groups ('1,234.50') and a '%'."""
    t = text.strip()
    if not t:
        return None
    if t.endswith("%"):
        t = t[:-1].strip()
    body = t[1:] if t[:1] in "+-" else t
    whole, dot, cents = body.partition(".")
    groups = whole.split(",")
    ok = (all(g.isdecimal() for g in groups) and (not dot or cents.isdecimal())
          and (len(groups) == 1 or (1 <= len(groups[0]) <= 3 and groups[0][0] != "0"
                                    and all(len(g) == 3 for g in groups[1:]))))
    # without a locale, 1,500 and 1.500 are refused: each reads as 1500 and as 1.5
    two_ways = (len(groups) == 2 and not dot) or (
        len(groups) == 1 and len(cents) == 3 and 1 <= len(whole) <= 3 and whole[0] != "0")
    if not ok or two_ways:
        raise Refused(name, text.strip())
    try:
        return Decimal(t.replace(",", ""))
    except InvalidOperation:  # pragma: no cover - refused above
        raise Refused(name, text.strip()) from None


def _date(text: str, name: str) -> dt.date | None:
    t = text.strip()
    if not t:
        return None
    try:
        return dt.date.fromisoformat(t[:10]) if len(t) == 10 else \
            dt.datetime.fromisoformat(t.replace("Z", "+00:00")).date()
    except ValueError:
        raise Refused(name, t) from None


def _key(text: str | None) -> str:
    return (text or "").strip().casefold()


def _pick(text: str | None, values: list[str], factor: str, empty: str | None) -> str:
    if not _key(text):
        if empty is None:
            raise Refused(factor, "empty")
        return empty
    for v in values:
        if _key(v) == _key(text):
            return v
    raise Refused(factor, (text or "").strip())


def half_up(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def shown(value: object) -> str:
    """A value as the output CSV shows it."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


@dataclass
class Expected:
    line: int
    record_id: str
    error: Refused | None = None
    read_ok: bool = False            # the values could be read (the as-is forecast has it)
    rule: str = ""
    written: dict[str, object] = field(default_factory=dict)  # writeback name -> new value
    changed: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    amount: Decimal | None = None
    close_date: dt.date | None = None
    probability: int | None = None   # the rules' probability
    old_probability: Decimal | None = None
    owner: str | None = None
    stage: str | None = None


def expect(line: int, row: dict[str, str], today: dt.date) -> Expected:
    """What the dry run must say about one CSV row (a dict by the header above)."""
    out = Expected(line, (row.get("Id") or "").strip())
    try:
        values: dict[str, object] = {}
        for name, column in COLUMNS.items():
            raw = row.get(column) or ""
            if name in NUMBERS:
                values[name] = _number(raw, name)
            elif name in DATES:
                values[name] = _date(raw, name)
            else:
                values[name] = raw.strip() or None
        out.read_ok = True
        out.amount = values["amount"]  # type: ignore[assignment]
        out.close_date = values["close_date"]  # type: ignore[assignment]
        out.old_probability = values["probability"]  # type: ignore[assignment]
        # grouping by owner takes the owner's name, else the e-mail
        out.owner = values["owner_name"] or values["owner_email"]  # type: ignore[assignment]
        out.stage = values["stage"]  # type: ignore[assignment]
        stage_key = _key(values["stage"])  # type: ignore[arg-type]
        workflow_actions: list[str] = []
        if stage_key in {_key(s) for s in WON}:
            rule, p = "closed-won", 100
        elif stage_key in {_key(s) for s in LOST}:
            rule, p = "closed-lost", 0
        else:
            stage = _pick(values["stage"], STAGES, "stage", None)  # type: ignore[arg-type]
            proposal = _pick(values["proposal_type"], PROPOSALS, "proposal",  # type: ignore[arg-type]
                             "Budgetary")
            relationship = _pick(values["relationship_level"],  # type: ignore[arg-type]
                                 RELATIONSHIPS, "relationship", "New")
            amount = values["amount"]
            if isinstance(amount, Decimal) and amount < 0:
                raise Refused("size", shown(amount))
            p = probability_of(stage, proposal, relationship)
            rule = f"p{p}"
            if rule == "p90":
                workflow_actions.append("notify-director")
        amount = values["amount"]
        weighted = None if amount is None else half_up(amount * p / 100, 2)  # type: ignore[operator]
        if values["close_date"] is None:
            raise Refused("close_date", "empty")  # days_to_close = days_between(today, ...)
        out.rule, out.probability = rule, p
        out.written = {"probability": p, "weighted_amount": weighted, "rule": rule}
        for name in WRITEBACK:
            old, new = values[name], out.written[name]
            if isinstance(new, int):
                differs = old is None or Decimal(new) != old
            elif isinstance(new, Decimal):
                differs = old is None or new != old
            else:
                differs = (shown(old) if old is not None else None) != new
            if differs:
                out.changed.append(name)
        triggers = []
        if amount is not None and amount >= 100000 and p >= 70 and rule != "closed-won":  # type: ignore[operator]
            triggers.append("notify-director")              # likely, not already won
        if p >= 60:
            triggers.append("push-marketing")
        if rule == "closed-won" and values["close_date"] >= ERP_FROM:  # type: ignore[operator]
            triggers.append("erp-order")
        # An action fires once per record however many conditions name it (the ledger keys
        # its rising edges by action).
        out.actions = list(dict.fromkeys(workflow_actions + triggers))
    except Refused as exc:
        out.error = exc
        out.rule = ""
    return out


@dataclass
class Totals:
    opportunities: int = 0
    amount: Decimal = Decimal(0)
    weighted: Decimal = Decimal(0)


def month(d: dt.date) -> str:
    return f"{d.year:04d}-{d.month:02d}"


def forecast(expected: list[Expected], by: str = "month", as_is: bool = False,
             today: dt.date | None = None) -> tuple[dict[str, Totals], Counter[str]]:
    """Per month (or owner, or stage): count, amount, amount x probability / 100, unrounded;
    and why the others were left out (SPEC 6.1): lost deals are not in the pipeline; an open
    deal due before `today` is in one "overdue" row (by month)."""
    buckets: dict[str, Totals] = {}
    left: Counter[str] = Counter()
    for e in expected:
        if not e.read_ok or (not as_is and e.error is not None):
            left["failed"] += 1
            continue
        stage_key = _key(e.stage)
        if stage_key in {_key(s) for s in LOST}:
            left["lost"] += 1
            continue
        p = e.old_probability if as_is else e.probability
        if by == "month":
            if e.close_date is None:
                left["without a close date"] += 1
                continue
            is_open = stage_key not in {_key(s) for s in WON}
            overdue = is_open and today is not None and e.close_date < today
            key = "overdue" if overdue else month(e.close_date)
        else:
            key = (e.owner if by == "owner" else e.stage) or ""
            if not key:
                left["without an owner" if by == "owner" else "without a stage"] += 1
                continue
        if e.amount is None:
            left["without an amount"] += 1
            continue
        if p is None:
            left["without a probability"] += 1
            continue
        t = buckets.setdefault(key, Totals())
        t.opportunities += 1
        t.amount += e.amount
        t.weighted += e.amount * Decimal(p) / 100
    return buckets, left


def read_csv_with_lines(text: str) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV text by the header, with the line each starts on; blank lines skipped.
    Only for the files the tests write: no quoted newline inside a field."""
    lines = text.replace("\r\n", "\n").lstrip("\ufeff").split("\n")
    import csv

    header = next(csv.reader([lines[0]]))
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip(" ,"):
            continue
        cells = next(csv.reader([line]))
        rows.append((number, dict(zip(header, cells))))
    return rows


def write_export(path: Path, rows: list[dict[str, str]]) -> None:
    """A CSV export with HEADER and `rows` (a field a row lacks is blank)."""
    import csv

    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows([row.get(h, "") for h in HEADER] for row in rows)
