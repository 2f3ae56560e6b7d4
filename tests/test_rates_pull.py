"""`rates pull`: the org's currency rates (CurrencyType, DatedConversionRate) into
mappings/currencies.yaml, read back as the forecast reads it."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import responses

from connector.cli import main
from connector.files import load_rates
from tests.fake_salesforce import INSTANCE, VERSION, Clock, FakeOrg

ROOT = Path(__file__).resolve().parent.parent


class RatesOrg(FakeOrg):
    """CurrencyType and DatedConversionRate as Salesforce's REST query answers them."""

    CURRENCIES = (("USD", "1.000000", True), ("COP", "4012.500000", False),
                  ("EUR", "0.920000", False), ("MXN", "17.100000", False))
    DATED = (("EUR", "2026-01-01", "2026-04-01", "0.910000"),
             ("EUR", "2026-04-01", None, "0.930000"),
             ("COP", "0001-01-01", "2026-07-01", "3950.000000"),
             ("COP", "2026-07-01", None, "4100.000000"))

    def _run_soql(self, soql: str) -> dict[str, Any]:
        if "FROM CurrencyType" in soql:
            assert "WHERE IsActive = true" in soql
            return self._page([{"attributes": {"type": "CurrencyType",
                                               "url": f"/services/data/v{VERSION}/sobjects/"
                                                      f"CurrencyType/01L00000000000{i}"},
                                "IsoCode": code, "ConversionRate": float(rate),
                                "IsCorporate": corporate}
                               for i, (code, rate, corporate) in enumerate(self.CURRENCIES)])
        if "FROM DatedConversionRate" in soql:
            return self._page([{"attributes": {"type": "DatedConversionRate",
                                               "url": f"/services/data/v{VERSION}/sobjects/"
                                                      f"DatedConversionRate/04w0000000000{i}"},
                                "IsoCode": code, "StartDate": start, "NextStartDate": end,
                                "ConversionRate": float(rate)}
                               for i, (code, start, end, rate) in enumerate(self.DATED)])
        return super()._run_soql(soql)


@pytest.fixture
def org_env(tmp_path, monkeypatch):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        org = RatesOrg(rsps, Clock())
        monkeypatch.setenv("SALESFORCE_INSTANCE_URL", INSTANCE)
        monkeypatch.setenv("SALESFORCE_ACCESS_TOKEN", "00Dxx!rates-session")
        monkeypatch.setenv("STATE_URL", f"sqlite:///{tmp_path / 'state.db'}")
        mappings = tmp_path / "mappings"
        shutil.copytree(ROOT / "mappings", mappings)
        (mappings / "currencies.yaml").unlink(missing_ok=True)
        yield org, mappings


def test_the_orgs_rates_are_written_and_read_back(org_env, capsys):
    org, mappings = org_env
    assert main(["rates", "pull", "--dated", "--rules", str(ROOT / "rules"), "--mappings",
                 str(mappings)]) == 0
    printed = capsys.readouterr().out
    assert "corporate USD, 4 rates, 2 with dated rates" in printed
    assert org.calls["query"] == 2  # one query each, nothing else
    rates, problems = load_rates(mappings)
    assert problems == [] and rates is not None
    assert rates.corporate == "USD" and rates.rates["COP"] == Decimal("4012.5")
    assert rates.to_corporate(Decimal("3950000"), "COP", dt.date(2026, 6, 30)) == 1000
    assert rates.to_corporate(Decimal("4100000"), "COP", dt.date(2026, 7, 1)) == 1000
    assert rates.to_corporate(Decimal("91"), "EUR", dt.date(2026, 2, 1)) == 100
    assert rates.to_corporate(Decimal("4012.5"), "COP", None) == 1
    assert not (mappings / "currencies.yaml.part").exists()
    assert main(["check", "--rules", str(ROOT / "rules"), "--mappings", str(mappings)]) == 0


def test_without_dated_only_currency_type_is_read(org_env, capsys):
    org, mappings = org_env
    assert main(["rates", "pull", "--rules", str(ROOT / "rules"), "--mappings",
                 str(mappings)]) == 0
    assert org.calls["query"] == 1
    text = (mappings / "currencies.yaml").read_text()
    assert re.search(r"^corporate: USD$", text, re.M) and "dated" not in text
