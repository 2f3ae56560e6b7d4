"""Currency rates for the forecast, in Salesforce's convention: a rate is the units of a currency
per one unit of the corporate currency, and an amount in the corporate currency is the amount
divided by its currency's rate (SPEC 6). From `mappings/currencies.yaml`:

    corporate: USD
    rates: {COP: 4000, EUR: 0.92}
    dated:                      # optional: advanced currency management's periods
      EUR: [{from: 2026-01-01, until: 2026-04-01, rate: 0.91}, {from: 2026-04-01, rate: 0.93}]

or online from Salesforce's CurrencyType, and DatedConversionRate where advanced currency
management is on (a rate per period: an opportunity is converted at the rate of its close
date, as Salesforce converts it); `crm-automation rates pull` writes them into the file.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from connector.core.findings import Finding, Where
from connector.errors import ConfigurationError, Text

FILE = "currencies.yaml"  # in the mappings folder
_CODE = re.compile(r"^[A-Z]{3}$")

Query = Callable[[str], Iterable[Mapping[str, Any]]]  # SOQL -> the records it returns


@dataclass(frozen=True)
class Period:
    """A dated rate: from `start` until `next_start` (excluded; None: no end)."""

    start: dt.date
    next_start: dt.date | None
    rate: Decimal


@dataclass(frozen=True)
class CurrencyRates:
    corporate: str
    rates: Mapping[str, Decimal]
    dated: Mapping[str, tuple[Period, ...]] = field(default_factory=dict)

    def rate(self, currency: str, day: dt.date | None) -> Decimal | None:
        """The rate on `day` (a dated rate where one covers it), else the currency's rate."""
        if day is not None:
            for period in self.dated.get(currency, ()):
                if period.start <= day and (period.next_start is None or day < period.next_start):
                    return period.rate
        return self.rates.get(currency)

    def to_corporate(self, amount: Decimal, currency: str, day: dt.date | None
                     ) -> Decimal | None:
        if currency == self.corporate:
            return amount
        rate = self.rate(currency, day)
        return None if rate is None else amount / rate


def _rate(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        return None
    try:
        rate = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        return None
    return rate if rate.is_finite() and rate > 0 else None


def rates_from_file(data: object, where: Callable[[tuple[str, ...]], Where]
                    ) -> tuple[CurrencyRates | None, list[Finding]]:
    """`mappings/currencies.yaml`'s data as rates, or every problem, each at its line."""
    problems: list[Finding] = []

    def error(at: tuple[str, ...], message: Text) -> None:
        problems.append(Finding.at(where(at), "error", "schema", message))

    if not isinstance(data, dict):
        error((), Text("a currencies file is 'corporate: USD' and 'rates: {COP: 4000, ...}'"))
        return None, problems
    for key in data:
        if key not in ("corporate", "rates", "dated"):
            error((str(key),), Text("unknown key '{key}': a currencies file has 'corporate', "
                                    "'rates' and 'dated'", key=str(key)))
    corporate = data.get("corporate")
    if not isinstance(corporate, str) or not _CODE.match(corporate):
        error(("corporate",), Text("'corporate' must be an ISO currency code such as USD, not "
                                   "{value}", value=repr(corporate)))
    rates: dict[str, Decimal] = {}
    given = data.get("rates") or {}
    if not isinstance(given, dict):
        error(("rates",), Text("'rates' maps ISO codes to units per corporate unit: "
                               "{COP: 4000}"))
        given = {}
    for code, value in given.items():
        rate = _rate(value)
        if not isinstance(code, str) or not _CODE.match(code):
            error(("rates", str(code)), Text("'{code}' is not an ISO currency code (COP, EUR "
                                             "...)", code=str(code)))
        elif rate is None:
            error(("rates", code), Text("the rate of {code} must be a number above 0 (units "
                                        "of {code} per one {corporate}), not {value}",
                                        code=code, corporate=str(corporate), value=repr(value)))
        else:
            rates[code] = rate
    dated = _dated(data.get("dated") or {}, error)
    if problems:
        return None, problems
    assert isinstance(corporate, str)
    if corporate in rates and rates[corporate] != 1:
        error(("rates", corporate), Text("the corporate currency's rate is 1, not {rate}",
                                         rate=str(rates[corporate])))
        return None, problems
    return CurrencyRates(corporate, rates, dated), problems


def _dated(given: object, error: Callable[[tuple[str, ...], Text], None]
           ) -> dict[str, tuple[Period, ...]]:
    """`dated: {EUR: [{from: 2026-01-01, until: 2026-04-01, rate: 0.91}, ...]}`."""
    if not isinstance(given, dict):
        error(("dated",), Text("'dated' maps ISO codes to periods: {EUR: [{from: 2026-01-01, "
                               "rate: 0.91}]}"))
        return {}
    out: dict[str, tuple[Period, ...]] = {}
    for code, periods in given.items():
        if not isinstance(code, str) or not _CODE.match(code) or not isinstance(periods, list):
            error(("dated", str(code)), Text("'{code}': an ISO currency code and a list of "
                                             "periods", code=str(code)))
            continue
        kept = []
        for i, period in enumerate(periods):
            at = ("dated", code, str(i))
            start = period.get("from") if isinstance(period, dict) else None
            until = period.get("until") if isinstance(period, dict) else None
            rate = _rate(period.get("rate")) if isinstance(period, dict) else None
            if not isinstance(start, dt.date) or (until is not None
                                                  and not isinstance(until, dt.date)):
                error(at, Text("a period is {from: YYYY-MM-DD, until: YYYY-MM-DD (optional), "
                               "rate: a number above 0}"))
            elif rate is None:
                error(at, Text("the rate of {code} from {start} must be a number above 0",
                               code=code, start=str(start)))
            else:
                kept.append(Period(start, until, rate))
        out[code] = tuple(kept)
    return out


def rates_yaml(rates: CurrencyRates) -> str:
    """`rates` as `mappings/currencies.yaml`, which rates_from_file reads back the same."""
    lines = ["# Currency rates in Salesforce's convention: units of each currency per one "
             f"{rates.corporate}.", f"corporate: {rates.corporate}", "rates:"]
    lines += [f"  {code}: {rate}" for code, rate in sorted(rates.rates.items())]
    if rates.dated:
        lines.append("dated:")
        for code, periods in sorted(rates.dated.items()):
            lines.append(f"  {code}:")
            for p in periods:
                until = f", until: {p.next_start.isoformat()}" if p.next_start else ""
                lines.append(f"    - {{from: {p.start.isoformat()}{until}, rate: {p.rate}}}")
    return "\n".join(lines) + "\n"


def rates_from_salesforce(query: Query, dated: bool = False) -> CurrencyRates:
    """The org's active currencies (CurrencyType: the corporate one and each rate) and, with
    `dated` (advanced currency management), their dated rates. `query` runs one SOQL query
    and returns all its records (the adapter's query, every page)."""
    corporate = None
    rates: dict[str, Decimal] = {}
    for record in query("SELECT IsoCode, ConversionRate, IsCorporate FROM CurrencyType "
                        "WHERE IsActive = true"):
        code = str(record["IsoCode"])
        rate = _rate(record["ConversionRate"])
        if rate is not None:
            rates[code] = rate
        if record.get("IsCorporate"):
            corporate = code
    if corporate is None:
        raise ConfigurationError(Text("CurrencyType has no corporate currency (IsCorporate): is "
                                      "multi-currency on in this org?"))
    periods: dict[str, list[Period]] = {}
    if dated:
        for record in query("SELECT IsoCode, ConversionRate, StartDate, NextStartDate FROM "
                            "DatedConversionRate ORDER BY IsoCode, StartDate"):
            rate = _rate(record["ConversionRate"])
            if rate is None:
                continue
            end = record.get("NextStartDate")
            periods.setdefault(str(record["IsoCode"]), []).append(Period(
                dt.date.fromisoformat(record["StartDate"]),
                dt.date.fromisoformat(end) if end else None, rate))
    return CurrencyRates(corporate, rates, {k: tuple(v) for k, v in periods.items()})
