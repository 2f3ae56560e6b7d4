"""Shared fixtures: a real Tryton ERP on loopback (tests/conftest_tryton.py)."""

import sys
from pathlib import Path

# The fixtures live beside the tests and are imported as top-level modules.
sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = ["conftest_tryton"]
