"""The public surface is what the README documents: each module's `__all__` lists exactly the
names of its row in the README's "Python API" table, every one of them exists, and every
exception the connector raises on purpose outside the pure core is in the error tree."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import connector
from connector.errors import ConnectorError

README = Path(__file__).parent.parent / "README.md"


def documented() -> dict[str, set[str]]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([\w.]+)` \| (.+) \|$", section, re.MULTILINE)
    return {module: set(re.findall(r"`(\w+)`", names)) for module, names in rows}


def test_the_readme_documents_some_modules():
    assert {"connector.errors", "connector.crm", "connector.app"} <= set(documented())


@pytest.mark.parametrize("module", sorted(documented()))
def test_exported_names_are_the_documented_ones(module):
    mod = importlib.import_module(module)
    exported = set(getattr(mod, "__all__", ()))
    assert exported == documented()[module]
    assert all(hasattr(mod, name) for name in exported)


def modules():
    for info in pkgutil.walk_packages(connector.__path__, "connector."):
        if info.name.startswith("connector.core") or info.name == "connector.__main__":
            continue   # the pure core has its own errors; __main__ runs the command line
        yield importlib.import_module(info.name)


def test_every_public_exception_outside_the_core_is_in_the_tree():
    outside = [f"{m.__name__}.{name}" for m in modules() for name, obj in vars(m).items()
               if inspect.isclass(obj) and issubclass(obj, BaseException)
               and obj.__module__ == m.__name__ and not name.startswith("_")
               and not issubclass(obj, ConnectorError)]
    assert outside == []
