"""A real Tryton ERP for tests: a template database built once (and cached on disk, keyed by
the Tryton versions), a copy of it per test, and `trytond` serving the copy on a free loopback
port. Run as a script only by itself, to create the company in a fresh database (proteus
changes trytond's global state, so that never happens inside the test process)."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any

import requests

USERNAME = "admin"
PASSWORD = "tryton-test-password"  # a throwaway database on loopback: not a secret
BUILD = 1  # bump when the build steps below change, so stale cached templates are not reused
TEMPLATE = "template"


def versions() -> str:
    """The versions the template depends on; raises ImportError when trytond is missing."""
    import trytond

    return f"trytond-{trytond.__version__}-sale-{metadata.version('trytond_sale')}-b{BUILD}"


def _tool(name: str) -> str:
    beside = Path(sys.executable).with_name(name)  # the virtualenv's own scripts
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found beside {sys.executable} nor on PATH")
    return found


def _write_config(folder: Path, port: int | None = None) -> Path:
    (folder / "db").mkdir(parents=True, exist_ok=True)
    lines = ["[database]", "uri = sqlite://", f"path = {folder / 'db'}"]
    if port is not None:
        lines += ["[web]", f"listen = 127.0.0.1:{port}"]
    conf = folder / "trytond.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _run(args: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{output}")


def template_database(cache_root: Path | None = None) -> Path:
    """The template `.sqlite` with sale activated and a USD company, built once per set of
    versions; concurrent test runs wait for one build instead of racing."""
    root = (cache_root or Path(tempfile.gettempdir()) / "crm-automation-tryton") / versions()
    target = root / f"{TEMPLATE}.sqlite"
    if target.exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            work = Path(tempfile.mkdtemp(prefix="build-", dir=root))
            try:
                built = _build(work)
                os.replace(built, target)  # atomic: a half-built template is never seen
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return target


def _build(work: Path) -> Path:
    conf = _write_config(work)
    database = work / "db" / f"{TEMPLATE}.sqlite"
    database.touch()
    (work / "passfile").write_text(PASSWORD + "\n")
    env = dict(os.environ, TRYTONPASSFILE=str(work / "passfile"))
    admin = _tool("trytond-admin")
    _run([admin, "-c", str(conf), "-d", TEMPLATE, "--all", "--email", "admin@example.com"], env)
    _run([admin, "-c", str(conf), "-d", TEMPLATE, "-u", "sale", "--activate-dependencies"], env)
    _run([sys.executable, __file__, "company", str(conf), TEMPLATE])
    # Tryton's SQLite runs in WAL mode: fold the log into the file so one file is the database.
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return database


def _create_company(conf: str, database: str) -> None:
    from proteus import Model, Wizard, config

    config.set_trytond(database, config_file=conf)
    usd = Model.get("currency.currency")(name="US Dollar", code="USD", symbol="$",
                                         rounding=Decimal("0.01"), digits=2)
    usd.save()
    party = Model.get("party.party")(name="Connector Test Company")
    party.save()
    wizard = Wizard("company.company.config")
    wizard.execute("company")
    wizard.form.party = party
    wizard.form.currency = usd
    wizard.execute("add")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TrytonServer:
    """A running trytond. Unpacks as (url, database, username, password)."""

    url: str
    database: str
    username: str
    password: str
    path: Path                      # the database file, for tests that reach under the ERP
    process: subprocess.Popen[bytes]
    log: Path
    _auth: str | None = field(default=None, repr=False)
    _context: dict[str, Any] = field(default_factory=dict, repr=False)

    def __iter__(self) -> Iterator[str]:
        return iter((self.url, self.database, self.username, self.password))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self, timeout: float = 60.0) -> None:
        """Start the server again on the same database and port (after `stop`)."""
        conf = self.path.parent.parent / "trytond.conf"
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [_tool("trytond"), "-c", str(conf), "-d", self.database],
                stdout=out, stderr=subprocess.STDOUT)
        self._auth = None
        _wait_until_listening(self, time.monotonic() + timeout)

    def rpc(self, method: str, *params: Any) -> Any:
        """A plain JSON-RPC call, independent of the adapter under test (the context is
        appended for model calls)."""
        if self._auth is None and method != "common.db.login":
            user_id, session = self.rpc("common.db.login", USERNAME,
                                        {"password": self.password})[:2]
            token = f"{self.username}:{user_id}:{session}".encode()
            self._auth = "Session " + base64.b64encode(token).decode()
            self._context = self.rpc("model.res.user.get_preferences", True, {})
        args = [*params, self._context] if method.startswith("model.") and not method.endswith(
            "get_preferences") else list(params)
        headers = {"Authorization": self._auth} if self._auth else {}
        response = requests.post(f"{self.url}/{self.database}/rpc/", headers=headers, timeout=30,
                                 json={"id": 1, "method": method, "params": args})
        if response.status_code == 401 and self._auth:  # a test expired the sessions
            self._auth = None
            return self.rpc(method, *params)
        response.raise_for_status()
        payload = response.json(object_hook=_decode)
        if payload.get("error"):
            raise RuntimeError(f"{method}: {payload['error']}")
        return payload["result"]

    def count(self, model: str, domain: list[Any] | None = None) -> int:
        return int(self.rpc(f"model.{model}.search_count", domain or []))


def _decode(obj: dict[str, Any]) -> Any:
    return Decimal(obj["decimal"]) if obj.get("__class__") == "Decimal" else obj


def start_server(template: Path, workdir: Path, database: str = "crm",
                 timeout: float = 60.0) -> TrytonServer:
    """A trytond serving a fresh copy of `template`, answering before this returns."""
    port = _free_port()
    conf = _write_config(workdir, port)
    path = workdir / "db" / f"{database}.sqlite"
    shutil.copyfile(template, path)
    log = workdir / "trytond.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([_tool("trytond"), "-c", str(conf), "-d", database],
                                   stdout=out, stderr=subprocess.STDOUT)
    server = TrytonServer(f"http://127.0.0.1:{port}", database, USERNAME, PASSWORD, path,
                          process, log)
    try:
        _wait_until_listening(server, time.monotonic() + timeout)
        server.count("party.party")  # logs in: loads the database pool before the test runs
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_listening(server: TrytonServer, deadline: float) -> None:
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"trytond exited ({server.process.returncode}):\n"
                               f"{server.log.read_text()[-3000:]}")
        try:
            requests.get(f"{server.url}/", timeout=1)  # any HTTP answer means it listens
            return
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError("trytond did not answer in time:\n"
                                   f"{server.log.read_text()[-3000:]}") from None
            time.sleep(0.1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["company"] and len(sys.argv) == 4:
        _create_company(sys.argv[2], sys.argv[3])
    else:
        print(json.dumps({"usage": "tryton_server.py company CONF DATABASE"}))
        sys.exit(2)
