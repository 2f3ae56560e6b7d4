"""Fixtures the Salesforce adapter's tests share: no SALESFORCE_* variable from the machine
leaks in, the HTTP mock, and the retry policy's waits recorded instead of slept."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import responses


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("SALESFORCE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def sleeps() -> list[float]:
    return []
