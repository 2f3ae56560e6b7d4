"""The `tryton` fixture: a real Tryton server per test, on a copy of a template database
built once per session (and cached on disk across runs). Register it in tests/conftest.py
with `pytest_plugins = ["conftest_tryton"]`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tryton_server
from tryton_server import TrytonServer


@pytest.fixture(scope="session")
def tryton_template() -> Path:
    missing = None
    try:
        tryton_server.versions()
    except ImportError as exc:  # trytond_sale's metadata missing is one too
        missing = str(exc)
    if missing is not None:
        # Tryton is a declared test dependency: a missing one is a broken setup, not a skip.
        pytest.fail(f"the Tryton tests need trytond, trytond-sale and proteus ({missing}); run "
                    "scripts/setup, or pip install -e '.[test]'", pytrace=False)
    started = time.monotonic()
    template = tryton_server.template_database()
    print(f"\nTryton template ready in {time.monotonic() - started:.1f}s: {template}")
    return template


@pytest.fixture
def tryton(tryton_template: Path, tmp_path: Path) -> Iterator[TrytonServer]:
    """(url, database, username, password) of a running Tryton with sale and a USD company;
    the object also has .stop(), .rpc(method, *params), .count(model) and .path."""
    server = tryton_server.start_server(tryton_template, tmp_path)
    try:
        yield server
    finally:
        server.stop()
