"""`connector.core` is pure: it imports only the standard library, pydantic, simpleeval, itself
and `connector.errors`, and never reads the clock, the environment or files (time comes in as
`today`, records as dictionaries)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import connector.core

CORE = Path(connector.core.__file__).parent
MODULES = sorted(CORE.rglob("*.py"))

THIRD_PARTY = {"pydantic", "simpleeval"}
# Standard-library modules that reach the clock, the environment, files, processes or the network.
IMPURE_MODULES = {
    "os", "posix", "nt", "pathlib", "io", "_io", "shutil", "glob", "fnmatch", "tempfile",
    "fileinput", "linecache", "sqlite3", "dbm", "shelve", "time", "sched", "subprocess", "socket",
    "ssl", "select", "selectors", "asyncio", "urllib", "http", "ftplib", "smtplib", "email",
    "logging", "zoneinfo", "platform", "getpass", "signal", "mmap", "ctypes", "multiprocessing",
    "concurrent", "webbrowser", "importlib", "runpy", "pkgutil", "zipfile", "tarfile", "gzip",
    "bz2", "lzma", "csv", "configparser", "netrc", "secrets", "random", "uuid",
}
# Attribute reads that ask the clock or the environment.
IMPURE_ATTRIBUTES = {
    "today", "now", "utcnow", "fromtimestamp", "utcfromtimestamp", "time", "time_ns",
    "monotonic", "perf_counter", "process_time", "localtime", "gmtime", "environ", "getenv",
    "putenv", "read_text", "read_bytes", "write_text", "write_bytes", "open", "urandom",
}
IMPURE_CALLS = {"open", "input", "breakpoint", "__import__", "compile_file"}


def allowed_module(module: str) -> bool:
    top = module.split(".")[0]
    if module == "connector.errors" or module == "connector.core" or module.startswith(
            "connector.core."):
        return True
    if top == "connector":
        return False
    if top in IMPURE_MODULES:
        return False
    return top in THIRD_PARTY or top in sys.stdlib_module_names


def problems_in(source: str, package: str = "connector.core") -> list[str]:
    """Every import outside the allowed set, and every use of the clock, the environment or
    files, in one module's source."""
    out: list[str] = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [f"import {a.name}" for a in node.names if not allowed_module(a.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside connector.core, or up to connector.errors
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module == "connector":
                out += [f"from connector import {a.name}" for a in node.names
                        if a.name not in ("errors", "core")]
            elif not allowed_module(module):
                out.append(f"from {module} import ...")
        elif isinstance(node, ast.Attribute) and node.attr in IMPURE_ATTRIBUTES:
            out.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Name) and node.id in IMPURE_CALLS:
            out.append(f"line {node.lineno}: {node.id}")
    return out


# --- the checker itself can fail ---------------------------------------------------------------

@pytest.mark.parametrize("source", [
    "import yaml",
    "import os",
    "from pathlib import Path",
    "import connector.files",
    "from connector import cli",
    "from connector.crm import salesforce",
    "from .. import files",
    "from ..cli import main",
    "import datetime\nx = datetime.date.today()",
    "import datetime as dt\nx = dt.datetime.now()",
    "from datetime import datetime\nx = datetime.utcnow()",
    "import time\nx = time.time()",
    "x = open('rules.yaml').read()",
    "import requests",
    "import jinja2",
    "def f():\n    import os\n    return os.environ['HOME']",
])
def test_the_checker_finds_impurity(source) -> None:
    assert problems_in(source), source


@pytest.mark.parametrize("source", [
    "import ast\nimport datetime as dt\nfrom decimal import Decimal",
    "from pydantic import BaseModel",
    "from simpleeval import SimpleEval",
    "from connector.errors import RecordError",
    "from connector.core.ruleset import RuleSet",
    "from . import schema",
    "from .findings import Finding",
    "from .. import errors",
    "def f(today):\n    return days_between(today, today)",
])
def test_the_checker_accepts_pure_code(source) -> None:
    assert problems_in(source) == [], source


# --- the core ---------------------------------------------------------------------------------

def test_the_core_modules_are_found() -> None:
    names = {p.stem for p in MODULES}
    assert {"__init__", "ruleset", "proof", "table", "evaluate", "expressions", "schema",
            "mapping", "values", "findings"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(CORE)))
def test_module_is_pure(path: Path) -> None:
    rel = path.relative_to(CORE).with_suffix("")
    parts = ["connector", "core", *rel.parts]
    package = ".".join(parts if rel.name == "__init__" else parts[:-1])
    package = package.removesuffix(".__init__")
    assert problems_in(path.read_text(encoding="utf-8"), package) == []


def test_importing_the_core_loads_nothing_impure() -> None:
    """At run time too: importing every core module pulls in no other part of the connector and
    none of its I/O dependencies."""
    modules = [
        "connector.core" + ("" if p.stem == "__init__" else "." + ".".join(
            p.relative_to(CORE).with_suffix("").parts)) for p in MODULES]
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        f"for m in {modules!r}:\n"
        "    __import__(m)\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=CORE.parent.parent)
    loaded = json.loads(result.stdout)
    connector_modules = {m for m in loaded if m.split(".")[0] == "connector"}
    assert {m for m in connector_modules
            if not (m in ("connector", "connector.errors", "connector.core")
                    or m.startswith("connector.core."))} == set()
    forbidden = {"yaml", "requests", "jinja2", "simple_salesforce", "rich", "typer", "tenacity",
                 "pydantic_settings", "defusedxml", "sqlite3", "urllib3", "http.client"}
    assert {m for m in loaded if m in forbidden or m.split(".")[0] in forbidden} == set()
