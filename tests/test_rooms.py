"""The rooms of ARCHITECTURE.md and what each may import, checked on every module's source
(imports inside functions and for type checking too). A module in no room fails, so a new
module has to be placed; the purity of `core/` is checked apart (tests/test_core_is_pure.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import connector

PACKAGE = Path(connector.__file__).parent

# Each room by the modules it holds (a name, or a package and everything under it).
ROOMS: dict[str, tuple[str, ...]] = {
    "entry points": ("connector.__main__", "connector.cli", "connector.cli_help",
                     "connector.web", "connector.handlers"),
    "wiring": ("connector.app",),
    "use cases": ("connector.pipeline", "connector.outbox"),
    "tools": ("connector.simulate", "connector.report", "connector.chart", "connector.checks",
              "connector.rulediff", "connector.diff_report",
              # the analysis of snapshot histories: offline, on a file or the store's rows
              *(f"connector.history.{m}" for m in (
                  "source", "engine", "inputs", "calibrate", "propose", "movement", "accuracy",
                  "charts", "report", "commands"))),
    "adapters": ("connector.crm", "connector.state", "connector.erp", "connector.actions",
                 "connector.history"),
    "shared": ("connector", "connector.errors", "connector.settings", "connector.retry",
               "connector.formatting", "connector.templates", "connector.files",
               "connector.i18n", "connector.export", "connector.approvals",
               "connector.locales", "connector.currency"),
    "core": ("connector.core",),
}
# The rooms a room's modules may import; a room never imports one above it.
MAY_IMPORT: dict[str, set[str]] = {
    "entry points": set(ROOMS),
    "wiring": {"wiring", "use cases", "adapters", "shared", "core"},
    "use cases": {"use cases", "adapters", "shared", "core"},
    "tools": {"tools", "adapters", "shared", "core"},
    "adapters": {"adapters", "shared", "core"},
    "shared": {"shared", "core"},
    "core": {"core"},
}
ADAPTERS = ROOMS["adapters"]
# history reads each CRM's own history API, through that CRM's client.
REACHES_INTO = {"connector.history": {"connector.crm"}}


def package_of(module: str) -> str:
    """The package, or the module, that holds `module` among ROOMS' names (the longest;
    `connector` holds only its own `__init__`)."""
    names = [n for names in ROOMS.values() for n in names
             if module == n or (n != "connector" and module.startswith(f"{n}."))]
    return max(names, key=len, default="")


def room_of(module: str) -> str | None:
    held = package_of(module)
    return next((room for room, names in ROOMS.items() if held in names), None)


def imports(source: str, package: str) -> list[str]:
    out: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module == "connector":
                out += [f"connector.{a.name}" for a in node.names]
            else:
                out.append(module)
    return [m for m in out if m == "connector" or m.startswith("connector.")]


def problems(module: str, source: str, package: str) -> list[str]:
    """Every import of `module` that its room does not allow."""
    room = room_of(module)
    if room is None:
        return [f"{module} is in no room"]
    out = []
    for target in imports(source, package):
        other = room_of(target)
        if other is None:
            out.append(f"{module} imports {target}, in no room")
        elif other not in MAY_IMPORT[room] and not (room == "core" and
                                                     target == "connector.errors"):
            # the core's one way out: its errors are the connector's
            out.append(f"{module} ({room}) imports {target} ({other})")
        elif room == "adapters" and other == "adapters":
            mine, theirs = package_of(module), package_of(target)
            # Another adapter through its port (the package itself), not its insides.
            if mine != theirs and target != theirs and \
                    theirs not in REACHES_INTO.get(mine, set()):
                out.append(f"{module} imports {target}: use the port, {theirs}")
    return out


def modules() -> list[tuple[str, Path, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("connector", *path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            module = package = ".".join(parts[:-1])
        else:
            module, package = ".".join(parts), ".".join(parts[:-1])
        found.append((module, path, package))
    return found


# --- the checker itself can fail ---------------------------------------------------------------

@pytest.mark.parametrize(("module", "source"), [
    ("connector.pipeline", "from connector.cli import main"),
    ("connector.pipeline", "from connector import app"),
    ("connector.crm.salesforce.client", "from connector.pipeline import Pipeline"),
    ("connector.state.sqlite", "from connector.simulate import simulate"),
    ("connector.actions.http", "from connector.erp.tryton import TrytonErp"),
    ("connector.erp.rest", "from connector.crm.salesforce import client"),
    ("connector.files", "from connector.state import open_state"),
    ("connector.core.table", "from connector import files"),
    ("connector.simulate", "from connector.outbox import Kind"),
    ("connector.newthing", "import json"),
])
def test_the_checker_finds_a_wrong_import(module, source):
    assert problems(module, source, module.rpartition(".")[0]), source


@pytest.mark.parametrize(("module", "source"), [
    ("connector.cli", "from connector.handlers.webhook import route"),
    ("connector.pipeline", "from connector.crm import Crm\nfrom connector.outbox import Kind"),
    ("connector.actions.http", "from connector.crm import scrub"),
    ("connector.history.salesforce", "from connector.crm.salesforce.client import SalesforceCrm"),
    ("connector.crm.hubspot.client", "from .. import _base\nfrom . import search"),
    ("connector.core.table", "from connector.errors import RecordError"),
])
def test_the_checker_accepts_an_allowed_import(module, source):
    package = module.rpartition(".")[0]
    assert problems(module, source, package) == [], source


# --- the connector ------------------------------------------------------------------------------

@pytest.mark.parametrize(("module", "path", "package"), modules(), ids=lambda v: str(v))
def test_each_module_imports_only_what_its_room_may(module, path, package):
    assert problems(module, path.read_text(encoding="utf-8"), package) == []
