"""Shared fixtures: a real Tryton ERP on loopback (tests/conftest_tryton.py), and every test in
English with plain numbers, whatever the machine's LANG (a test that wants Spanish sets it)."""

import sys
from pathlib import Path

import pytest

# The fixtures live beside the tests and are imported as top-level modules.
sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = ["conftest_tryton"]


@pytest.fixture(autouse=True)
def _machine_language_left_out(monkeypatch):
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.delenv("CRM_AUTOMATION_LANG", raising=False)
    monkeypatch.delenv("LC_ALL", raising=False)
