"""Currencies (connector/currency.py) and the honest forecast of SPEC 6.1 on a mixed-currency,
mixed-status export: the totals against an independent computation (exact fractions, from the
rows as written here), with overdue and left-out rows."""

from __future__ import annotations

import csv
import datetime as dt
import json
import shutil
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path

import pytest
import reference_dry_run as ref

from connector.cli import main
from connector.currency import CurrencyRates, Period, rates_from_salesforce
from connector.errors import ConfigurationError, Text
from connector.files import load, load_rates

ROOT = Path(__file__).resolve().parent.parent
TODAY = dt.date(2026, 11, 26)
RATES = {"COP": Fraction(4000), "EUR": Fraction(92, 100)}  # units per USD, as in the file

# id, stage, amount, currency, close date, proposal, relationship
ROWS = [
    ("M01", "Negotiation/Review", "100000", "USD", "2027-01-15", "Firm", "Strategic"),    # p90
    ("M02", "Negotiation/Review", "400000000", "COP", "2027-01-20", "Firm", "Strategic"),  # p90
    ("M03", "Prospecting", "9200.50", "EUR", "2027-01-31", "", ""),                       # p10
    ("M04", "Qualification", "12000", "USD", "2026-09-30", "", "Known"),      # p20, overdue
    ("M05", "Value Proposition", "8000000", "COP", "2026-10-01", "", "Known"),  # p30, overdue
    ("M06", "Closed Won", "50000", "EUR", "2026-10-05", "Firm", "Known"),        # won, in 2026-10
    ("M07", "Closed Lost", "75000", "USD", "2027-02-01", "Firm", "Known"),        # lost
    ("M08", "Cancelled", "1000", "COP", "2027-02-01", "", ""),                   # lost
    ("M09", "Proposal/Price Quote", "30000", "JPY", "2027-02-10", "Firm", "New"),  # no rate
    ("M10", "Prospecting", "2500", "", "2027-02-10", "", ""),                      # no currency
    ("M11", "Prospecting", "abc", "USD", "2027-02-10", "", ""),                    # failed
    ("M12", "Prospecting", "4000", "USD", "", "", ""),                             # failed: rules
    ("M13", "Proposal/Price Quote", "20000", "USD", "2027-02-28", "Budgetary", "Trusted"),
    ("M14", "Closed Won", "1000000", "COP", "2026-11-20", "Firm", "Known"),      # won, 2026-11
    ("M15", "Needs Analysis", "5000", "USD", "2026-11-25", "", ""),              # overdue by 1 day
]


def project(tmp_path: Path, currencies: str | None) -> list[str]:
    """The bundled rules with a Salesforce mapping that reads CurrencyIsoCode, and the rates."""
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    sf = mappings / "salesforce.yaml"
    sf.write_text(sf.read_text(encoding="utf-8").replace(
        "  amount: Amount\n", "  amount: Amount\n  currency: CurrencyIsoCode\n", 1),
        encoding="utf-8")
    if currencies is not None:
        (mappings / "currencies.yaml").write_text(currencies, encoding="utf-8")
    source = tmp_path / "export.csv"
    with source.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Id", "StageName", "Amount", "CurrencyIsoCode", "CloseDate",
                         "Proposal_Type__c", "Relationship_Level__c", "Probability"])
        writer.writerows([*row, ""] for row in ROWS)
    return [str(source), "--rules", str(ROOT / "rules"), "--mappings", str(mappings),
            "--today", TODAY.isoformat()]


def expected() -> tuple[dict[str, tuple[int, Fraction, Fraction]], Counter[str]]:
    """Worked out from ROWS and the bundled rules' table (tests/reference_dry_run.py), with
    exact fractions: corporate amount = amount / rate."""
    buckets: dict[str, list] = {}
    left: Counter[str] = Counter()
    for rid, stage, amount, currency, close, proposal, relationship in ROWS:
        row = {"Id": rid, "StageName": stage, "Amount": amount, "CloseDate": close,
               "Proposal_Type__c": proposal, "Relationship_Level__c": relationship}
        e = ref.expect(2, row, TODAY)
        if e.error is not None:
            left["failed"] += 1
            continue
        if stage in ref.LOST:
            left["lost"] += 1
            continue
        if not currency:
            left["without a currency"] += 1
            continue
        if currency != "USD" and currency not in RATES:
            left[f"no rate for {currency}"] += 1
            continue
        usd = Fraction(Decimal(amount)) / RATES.get(currency, 1)
        day = dt.date.fromisoformat(close)
        key = "overdue" if stage not in ref.WON and day < TODAY else f"{day:%Y-%m}"
        n, total, weighted = buckets.get(key, (0, Fraction(0), Fraction(0)))
        buckets[key] = (n + 1, total + usd, weighted + usd * e.probability / 100)
    return buckets, left  # type: ignore[return-value]


def cents(value: Fraction) -> str:
    return str((Decimal(value.numerator) / Decimal(value.denominator)).quantize(
        Decimal("0.01"), rounding=ROUND_HALF_UP))


def test_the_forecast_is_in_the_corporate_currency_and_says_what_it_left_out(tmp_path, capsys):
    args = project(tmp_path, "corporate: USD\nrates:\n  COP: 4000\n  EUR: 0.92\n")
    assert main(["forecast", *args, "--format", "json"]) == 1  # two records failed
    *months, left_out = json.loads(capsys.readouterr().out)
    buckets, left = expected()
    assert [m["month"] for m in months] == ["overdue", "2026-10", "2026-11", "2027-01",
                                            "2027-02"]
    assert {m["month"]: (m["opportunities"], m["amount"], m["weighted_amount"])
            for m in months} == {k: (n, cents(a), cents(w)) for k, (n, a, w) in buckets.items()}
    assert left_out == {"month": "left out", "opportunities": 6, "reasons": dict(left)}
    assert dict(left) == {"lost": 2, "no rate for JPY": 1, "without a currency": 1,
                          "failed": 2}
    # 400,000,000 COP is 100,000 USD: never summed as 400,100,000 with the USD deal
    assert next(m for m in months if m["month"] == "2027-01")["amount"] == "210000.54"

    assert main(["forecast", *args, "--format", "csv"]) == 1
    rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    total = [sum(n for n, _, _ in buckets.values()), sum(a for _, a, _ in buckets.values()),
             sum(w for _, _, w in buckets.values())]
    assert rows[-1] == ["total", str(total[0]), cents(total[1]), cents(total[2])]

    assert main(["forecast", *args]) == 1
    text = capsys.readouterr().out
    assert "in USD" in text and "no rate for JPY" in text and "overdue" in text


def test_the_rates_come_from_the_mappings_folder_whichever_mapping_reads_the_export(
        tmp_path, capsys):
    args = project(tmp_path, "corporate: USD\nrates:\n  COP: 4000\n  EUR: 0.92\n")
    mappings = tmp_path / "mappings"
    elsewhere = tmp_path / "salesforce-currency.yaml"  # --mapping: a file outside mappings/
    (mappings / "salesforce.yaml").rename(elsewhere)
    main(["forecast", *args, "--mapping", str(elsewhere), "--format", "json"])
    *_, left_out = json.loads(capsys.readouterr().out)
    assert "no rate for COP" not in left_out["reasons"]
    assert left_out["reasons"]["no rate for JPY"] == 1


@pytest.mark.parametrize("command", ["simulate", "forecast"])
def test_a_bad_rates_file_stops_the_commands_that_read_an_export(tmp_path, capsys, command):
    # as `check` does (exit 1, the file and line), before any row is read
    args = project(tmp_path, "corporate: USD\nrates:\n  COP: 4000\n  EUR: 0\n")
    assert main([command, *args]) == 1
    err = capsys.readouterr().err
    assert "currencies.yaml:4:" in err and "M01" not in err


def test_without_rates_one_currency_is_summed_and_no_other(tmp_path, capsys):
    args = project(tmp_path, None)
    main(["forecast", *args, "--format", "json"])
    *months, left_out = json.loads(capsys.readouterr().out)
    # the first currency met (USD, row M01) is the one summed; COP and EUR have no rate
    reasons = left_out["reasons"]
    assert reasons["no rate for COP"] == 3 and reasons["no rate for EUR"] == 2
    assert sum(m["opportunities"] for m in months) == 4  # M01, M04, M13, M15


@pytest.mark.parametrize(("text", "message", "line"), [
    ("corporate: usd\nrates: {COP: 4000}\n", "'corporate' must be an ISO currency code", 1),
    ("corporate: USD\nrates:\n  COP: 4000\n  EUR: -1\n", "the rate of EUR must be a number above 0",
     4),
    ("corporate: USD\nrates:\n  pesos: 4000\n", "'pesos' is not an ISO currency code", 3),
    ("corporate: USD\nrate: {COP: 4000}\n", "unknown key 'rate'", 2),
    ("- USD\n- COP\n", "a currencies file is 'corporate: USD'", 1),
    ("corporate: USD\nrates: [COP: 4000\n", "not valid YAML", 3),
])
def test_a_bad_rates_file_names_its_line_and_check_reports_it(tmp_path, capsys, text, message,
                                                             line):
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    (mappings / "currencies.yaml").write_text(text, encoding="utf-8")
    rates, problems = load_rates(mappings)
    assert rates is None and [(p.line, message in p.message) for p in problems] == [(line, True)]
    assert all(isinstance(p.message, Text) for p in problems)  # said in Spanish too
    loaded = load(ROOT / "rules", mappings)
    assert not loaded.ok  # `check` refuses it with the others, once: the file is read once
    assert [f for f in loaded.findings if f.file.endswith("currencies.yaml")] == problems
    assert main(["check", "--rules", str(ROOT / "rules"), "--mappings", str(mappings)]) == 1
    assert f"currencies.yaml:{line}:" in capsys.readouterr().out


def test_a_bad_rates_file_is_said_in_spanish(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LANG", "es_CO.UTF-8")
    monkeypatch.delenv("CRM_AUTOMATION_LANG", raising=False)
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    (mappings / "currencies.yaml").write_text("corporate: USD\nrates:\n  COP: cero\n",
                                              encoding="utf-8")
    assert main(["check", "--rules", str(ROOT / "rules"), "--mappings", str(mappings)]) == 1
    assert ("currencies.yaml:3: error: la tasa de COP debe ser un número mayor que 0 (unidades "
            "de COP por un USD), no 'cero'") in capsys.readouterr().out


def _records(soql: str) -> list[dict]:
    """Records as Salesforce's REST query returns them (each with its `attributes`)."""
    if "FROM CurrencyType" in soql:
        return [
            {"attributes": {"type": "CurrencyType", "url": "/services/data/v61.0/sobjects/"
                            "CurrencyType/01L000000000001"},
             "IsoCode": "USD", "ConversionRate": 1.0, "IsCorporate": True},
            {"attributes": {"type": "CurrencyType", "url": "/services/data/v61.0/sobjects/"
                            "CurrencyType/01L000000000002"},
             "IsoCode": "COP", "ConversionRate": 4100.0, "IsCorporate": False},
        ]
    assert "FROM DatedConversionRate" in soql
    return [
        {"attributes": {"type": "DatedConversionRate", "url": "/services/data/v61.0/sobjects/"
                        "DatedConversionRate/04w000000000001"},
         "IsoCode": "COP", "ConversionRate": 3900.0, "StartDate": "0001-01-01",
         "NextStartDate": "2027-01-01"},
        {"attributes": {"type": "DatedConversionRate", "url": "/services/data/v61.0/sobjects/"
                        "DatedConversionRate/04w000000000002"},
         "IsoCode": "COP", "ConversionRate": 4200.0, "StartDate": "2027-01-01",
         "NextStartDate": None},
    ]


def test_rates_online_from_currency_type_and_dated_conversion_rate():
    queries: list[str] = []

    def query(soql: str) -> list[dict]:
        queries.append(soql)
        return _records(soql)

    static = rates_from_salesforce(query)
    assert static == CurrencyRates("USD", {"USD": Decimal("1.0"), "COP": Decimal("4100.0")})
    assert len(queries) == 1 and "WHERE IsActive = true" in queries[0]
    dated = rates_from_salesforce(query, dated=True)
    assert dated.dated["COP"] == (Period(dt.date(1, 1, 1), dt.date(2027, 1, 1), Decimal("3900.0")),
                                  Period(dt.date(2027, 1, 1), None, Decimal("4200.0")))
    # an opportunity is converted at the rate of its close date, as Salesforce does
    assert dated.to_corporate(Decimal(4_200_000), "COP", dt.date(2027, 3, 1)) == 1000
    assert dated.to_corporate(Decimal(3_900_000), "COP", dt.date(2026, 12, 31)) == 1000
    assert dated.to_corporate(Decimal(4_100_000), "COP", None) == 1000
    assert dated.to_corporate(Decimal(5), "JPY", None) is None


def test_an_org_without_a_corporate_currency_is_refused():
    with pytest.raises(ConfigurationError, match="no corporate currency"):
        rates_from_salesforce(lambda soql: [])


def test_the_chart_shows_open_pipeline_won_and_overdue_apart(tmp_path, capsys):
    args = project(tmp_path, "corporate: USD\nrates:\n  COP: 4000\n  EUR: 0.92\n")
    chart = tmp_path / "forecast.svg"
    main(["forecast", *args, "--chart", str(chart)])
    svg = chart.read_text(encoding="utf-8")
    buckets, _ = expected()
    overdue = buckets["overdue"][1]  # M04 12,000 + M05 8,000,000 COP (2,000) + M15 5,000
    assert cents(overdue) == "19000.00"
    assert f"<title>overdue open pipeline: {cents(overdue)}</title>" in svg
    assert ">overdue</text>" in svg.split("</title>", 1)[1]  # its own column, first
    # 2026-10 holds only the won EUR deal: all of it won, none of it open
    won = cents(Fraction(50000) / RATES["EUR"])
    assert f"<title>2026-10 won: {won}</title>" in svg
    assert "<title>2026-10 open pipeline: 0.00</title>" in svg
