"""calibrate on the real CRM sales-opportunities dataset (../shared/datasets, beside the
repository; skipped where it is absent): a table proposed on the deals closed before
2017-07-01, scored on those closed after."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from connector.cli import main

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT.parent / "shared" / "datasets" / "crm-sales-opportunities"
EXAMPLE = ROOT / "examples" / "crm-sales-opportunities"
CONFIG = ["--rules", str(EXAMPLE / "rules"), "--mappings", str(EXAMPLE / "mappings")]

pytestmark = pytest.mark.skipif(not (DATASET / "sales_pipeline.csv").is_file(),
                                reason=f"the dataset is not at {DATASET}")


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("real") / "history.csv"
    subprocess.run([sys.executable, str(EXAMPLE / "make_history.py"), str(DATASET), str(out)],
                   check=True)
    return out


def test_backtest_on_later_deals(history: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    proposed = tmp_path / "probability.yaml"
    assert main(["calibrate", "--input", str(history), "--backtest", "2017-07-01", "--propose",
                 str(proposed), "--format", "json", *CONFIG]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["deals"] == 6711            # every Won and Lost deal with an engage date
    assert doc["brier_crm"] is None        # the dataset records no probability
    back = doc["backtest"]
    assert back["fit_deals"] + back["test_deals"] == doc["deals"]
    # the proposal scores better than the lead's guess on the later deals
    assert Fraction(back["brier_proposed"]) < Fraction(back["brier_current"])
    rules = tmp_path / "rules"
    shutil.copytree(EXAMPLE / "rules", rules)
    shutil.copy(proposed, rules / "probability.yaml")
    assert main(["check", "--rules", str(rules), "--mappings", str(EXAMPLE / "mappings")]) == 0


def test_engines_agree_on_the_real_history(history: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    outs = []
    for engine in ("duckdb", "python"):
        for command in (["calibrate"], ["accuracy", "--lags", "30,60"],
                        ["movement", "--from", "2017-03-01", "--to", "2017-06-01"]):
            assert main([*command, "--input", str(history), "--format", "json", "--engine",
                         engine, *CONFIG]) == 0
            outs.append(json.loads(capsys.readouterr().out))
    assert outs[:3] == outs[3:]
