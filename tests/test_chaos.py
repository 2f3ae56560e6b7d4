"""The whole path under SIGKILL: `serve` runs in a process of its own (tests/chaos_node.py)
while signed webhooks, approval clicks and won deals flow; it is killed at random moments, five
times per seed, and started again. Then we count, against the real Tryton, the real SMTP
server and the fake org: every webhook's records computed and written, no outbox item lost,
one ERP order per won deal, one decision per approval, and every email once, but for copies
inside the documented window (a kill between the SMTP server's answer and the state's note),
each with the Message-ID of the first."""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from connector.approvals import STATUS
from connector.core.evaluate import Evaluator
from connector.files import load
from connector.state.sqlite import SqliteState
from tests.fake_salesforce import INSTANCE, Clock, FakeOrg
from tests.smtp_server import smtp  # noqa: F401 - the fixture
from tests.test_approvals import approval_folders

ROOT = Path(__file__).resolve().parent.parent
SEEDS = [11, 12, 13, 14, 15]
KILLS = 5
WEBHOOK_SECRET = "whsec-chaos-3e1d"
APPROVAL_SECRET = "approval-chaos-77aa"
ORG_ID = "00D5g00000LqXyZEAV"
ACCOUNTS = ["Acme Corp", "Globex", "Initech"]

ACTIONS = """
actions:
  notify-director:
    email:
      to: ["{{ owner_email }}", director@example.com]
      subject: "Likely: {{ name }}"
      body: "{{ name }} ({{ amount }}) is likely to close."
  budget-approval:
    approval:
      to: [manager@example.com]
      subject: "Approve {{ name }}?"
      body: "approve {{ approve_url }} or reject {{ reject_url }}"
      field: approval_status
      expires_in_days: 7
      on_approve: [tell-owner]
      on_reject: [tell-owner]
  tell-owner:
    email:
      to: ["{{ owner_email }}"]
      subject: "Decided: {{ name }}"
      body: "The manager has decided."
  erp-order:
    erp: sales_order
triggers:
  - name: big-budgetary
    when: proposal_type == 'Budgetary' and amount >= 200000
    do: [budget-approval]
  - name: won-to-erp
    when: won and close_date >= date('2026-11-01')
    do: [erp-order]
"""


class Registrar:
    """Stands in for `responses` when the fake org registers its routes: the relay serves
    them over a loopback socket instead."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, Any, Any]] = []

    def add_callback(self, method: str, pattern: Any, callback: Any) -> None:
        self.routes.append((method, pattern, callback))


def relay(org: FakeOrg, routes: Registrar) -> HTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(size).decode() if size else None
            request = types.SimpleNamespace(url=INSTANCE + self.path, body=body,
                                            headers=self.headers, method=self.command)
            for method, pattern, callback in routes.routes:
                if method == self.command and pattern.match(request.url):
                    status, headers, text = callback(request)
                    break
            else:
                status, headers, text = 404, {}, "[]"
            data = text.encode() if isinstance(text, str) else text
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)   # one request at a time: the org is not
    threading.Thread(target=server.serve_forever, daemon=True).start()   # thread-safe
    return server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Node:
    """One `serve` process; `kill` is SIGKILL, nothing is flushed or closed."""

    def __init__(self, env: dict[str, str], rules: Path, mappings: Path, log: Path) -> None:
        self.port = free_port()
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "tests" / "chaos_node.py"), str(self.port),
                 str(rules), str(mappings)], env=env, stdout=out, stderr=out)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, log.read_text()[-3000:]
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("serve did not start")

    def request(self, method: str, path: str, body: bytes = b"",
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            answer = conn.getresponse()
            return answer.status, answer.read()
        finally:
            conn.close()

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()


class Sender:
    """Salesforce's side and the approver's: each webhook is delivered (the same signed body
    again) until acknowledged; each approval link found in the inbox is clicked until the
    server answers."""

    def __init__(self, rng: random.Random, org: FakeOrg, inbox: Any,
                 steps: list[tuple[dict[str, dict[str, Any]], list[str]]]) -> None:
        self.rng = rng
        self.org = org
        self.inbox = inbox
        self.steps = collections.deque(steps)
        self.hook: tuple[bytes, dict[str, str]] | None = None   # sent, not yet acknowledged
        self.named: set[str] = set()
        self.plan: dict[str, list[str]] = {}                   # approval -> links to click
        self.clicked: dict[str, list[tuple[str, int]]] = {}    # approval -> answers

    def busy(self) -> bool:
        return bool(self.steps or self.hook or self._unclicked())

    def act(self, node: Node) -> None:
        try:
            if self.hook is None and self.steps:
                edits, ids = self.steps.popleft()
                for record_id, fields in edits.items():
                    self.org.edit(record_id, **fields)   # the change the webhook announces
                body = json.dumps({"ids": ids}).encode()
                ts = str(int(time.time()))
                signature = hmac.new(WEBHOOK_SECRET.encode(), ts.encode() + b"." + body,
                                     hashlib.sha256).hexdigest()
                self.hook = body, {"Content-Type": "application/json",
                                   "X-Connector-Timestamp": ts,
                                   "X-Connector-Signature": f"v1={signature}"}
                self.named.update(ids)
            if self.hook is not None:
                status, _ = node.request("POST", "/webhooks/salesforce", *self.hook)
                # 503: the notice could not be stored now (a busy machine); like a real
                # sender, deliver it again later. Anything else but 202 is a bug.
                assert status in (202, 503), status
                if status == 202:
                    self.hook = None
                else:
                    time.sleep(0.02)
                return
            for path, first in self._unclicked():
                status, _ = node.request("POST", path, b"token=x")
                assert status in (200, 409), status
                self.clicked.setdefault(first, []).append((path, status))
                return
            time.sleep(0.02)
        except (OSError, http.client.HTTPException):
            time.sleep(0.02)   # killed under us, or not up: delivered again later

    def _unclicked(self) -> list[tuple[str, str]]:
        """(link to POST, the approval it answers) still to click: one pick per approval
        email, and for some the other link after it (a second click must change nothing)."""
        todo = []
        for message in list(self.inbox.messages):
            if not str(message["Subject"]).startswith("Approve"):
                continue
            text = message.get_body(("plain",)).get_content()
            links = dict(re.findall(r"(approve|reject) (https://\S+)", text))
            key = links["approve"]
            if key not in self.plan:
                first, second = self.rng.sample(["approve", "reject"], 2)
                self.plan[key] = [urllib.parse.urlsplit(links[d]).path
                                  for d in ([first, second] if self.rng.random() < 0.3
                                            else [first])]
            answered = len(self.clicked.get(key, []))
            if answered < len(self.plan[key]):
                todo.append((self.plan[key][answered], key))
        return todo


def scenario(org: FakeOrg, seed: int) -> list[tuple[dict[str, dict[str, Any]], list[str]]]:
    """Deals of three kinds and the webhooks that announce them, in a seeded order."""
    ids = {kind: [f"006S{seed}{kind[0]}{n:011d}" for n in range(count)]
           for kind, count in (("won", 6), ("approval", 3), ("likely", 3), ("other", 4))}
    for n, deal in enumerate(ids["won"]):
        org.add(deal, StageName="Negotiation/Review", Proposal_Type__c="Firm",
                Relationship_Level__c="Known", Amount=20000 + n * 1000.5,
                Name=f"Won {deal}", Account={"Name": ACCOUNTS[n % 3]})
    for deal in ids["approval"]:
        org.add(deal, StageName="Proposal/Price Quote", Proposal_Type__c="Budgetary",
                Relationship_Level__c="Known", Amount=250000, Name=f"Budget {deal}")
    for deal in ids["likely"]:
        org.add(deal, StageName="Negotiation/Review", Proposal_Type__c="Firm",
                Relationship_Level__c="Trusted", Amount=150000, Name=f"Likely {deal}")
    for deal in ids["other"]:
        org.add(deal, StageName="Qualification", Amount=5000)
    rng = random.Random(seed)
    named = [d for kind in ("approval", "likely", "other") for d in ids[kind]]
    steps: list[tuple[dict[str, dict[str, Any]], list[str]]] = []
    rng.shuffle(named)
    for i in range(0, len(named), 3):
        steps.append(({}, named[i:i + 3]))
    # Each won deal is first seen open, then won (the order goes once). The same ids signed
    # in the same second are a replay: the win comes with another id, as batches do.
    for deal in ids["won"]:
        steps.append(({}, [deal]))
        steps.append(({deal: {"StageName": "Closed Won", "CloseDate": "2026-11-20"}},
                      [deal, rng.choice(ids["other"])]))
    rng.shuffle(steps)
    steps.sort(key=lambda s: bool(s[0]))   # a deal's win comes after it was first seen
    return steps


def test_kill_9_at_random_moments_loses_nothing_and_repeats_nothing(tmp_path, tryton, smtp):  # noqa: F811
    url, database, username, password = tryton
    smtp_url, inbox = smtp
    started = time.monotonic()
    totals = collections.Counter()
    for seed in SEEDS:
        inbox.messages.clear()
        home = tmp_path / f"seed{seed}"
        home.mkdir()
        rules, mappings = approval_folders(home, ACTIONS, keep=("salesforce.yaml", "erp.yaml"))
        routes = Registrar()
        org = FakeOrg(routes, Clock())    # type: ignore[arg-type]
        steps = scenario(org, seed)
        server = relay(org, routes)
        state_path = home / "state.db"
        env = {**os.environ, "SALESFORCE_INSTANCE_URL": INSTANCE,
               "SALESFORCE_ACCESS_TOKEN": "00Dxx!session", "WEBHOOK_SECRET": WEBHOOK_SECRET,
               "SALESFORCE_ORG_ID": ORG_ID[:15], "STATE_URL": f"sqlite:///{state_path}",
               "SMTP_URL": smtp_url, "EMAIL_FROM": "crm@example.com",
               "APPROVAL_SECRET": APPROVAL_SECRET, "PUBLIC_URL": "https://crm.example.com",
               "ERP_URL": url, "ERP_DATABASE": database, "ERP_USERNAME": username,
               "ERP_PASSWORD": password, "CRM": "salesforce",
               "RELAY_URL": f"http://127.0.0.1:{server.server_port}"}
        rng = random.Random(seed)
        sender = Sender(rng, org, inbox, steps)
        log = home / "serve.log"
        for _ in range(KILLS):
            node = Node(env, rules, mappings, log)
            end = time.monotonic() + rng.uniform(0.05, 0.5)  # kill while work is in hand
            while time.monotonic() < end:
                sender.act(node)
            node.kill()
            seen = SqliteState(state_path)          # what the kill interrupted
            totals["kills with work left"] += any(i.status == "pending" for i in seen.items())
            seen.close()
        node = Node(env, rules, mappings, log)
        try:
            state = SqliteState(state_path)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                if sender.busy():
                    sender.act(node)
                    continue
                items = state.items()
                if all(i.status == "done" for i in items) and len(
                        [i for i in items if i.kind == "approval"]) == 3:
                    break
                time.sleep(0.05)
        finally:
            node.kill()
            server.shutdown()
        check(seed, org, state, inbox, tryton, sender, rules, mappings, log, totals)
        state.close()
    elapsed = time.monotonic() - started
    print(f"\nchaos: {len(SEEDS)} seeds x {KILLS} kills in {elapsed:.0f}s; {dict(totals)}")
    assert totals["kills with work left"] >= len(SEEDS)   # the kills hit the path under test


def check(seed: int, org: FakeOrg, state: SqliteState, inbox: Any, tryton: Any,
          sender: Sender, rules_dir: Path, mappings_dir: Path, log: Path,
          totals: collections.Counter[str]) -> None:
    items = state.items()
    left = [(i.key, i.status, i.reason) for i in items if i.status != "done"]
    assert left == [], (seed, left, log.read_text()[-3000:])
    # Every record a webhook named is computed and written: a fresh look changes nothing.
    rules = load(rules_dir, mappings_dir, crm="salesforce").rules
    assert rules is not None
    evaluator = Evaluator(rules)
    today = dt.datetime.now(dt.UTC).date()
    for record_id in sorted(sender.named):
        outcome = evaluator.evaluate(rules.mapping.read(org.records[record_id]), today)
        assert outcome.changes == {}, (seed, record_id, outcome.changes)
    # One ERP order per won deal.
    won = sorted(r for r in org.records if r.startswith(f"006S{seed}w"))
    sales = tryton.rpc("model.sale.sale.search_read", [("reference", "in", won)], 0, None,
                       None, ["reference"])
    assert sorted(s["reference"] for s in sales) == won, seed
    # One decision per approval, the one the CRM shows.
    approvals = [i for i in items if i.kind == "approval"]
    for request in approvals:
        decisions = [i for i in items if i.key == f"{request.key}:decision"]
        assert len(decisions) == 1, (seed, request.key)
        value = decisions[0].payload["value"]
        assert value in STATUS.values()
        assert org.records[request.record_id]["Approval_Status__c"] == value
        decided = {status: decision for decision, status in STATUS.items()}[value]
        followers = [i.key for i in items if i.key.startswith(f"{request.key}:")
                     and i.kind == "email"]
        assert followers == [f"{request.key}:{decided}:tell-owner"], (seed, followers)
    accepted = [a for answers in sender.clicked.values() for _, a in answers if a == 200]
    assert len(accepted) <= len(approvals)     # a second click, the other link: 409
    assert all([a for _, a in answers].count(200) <= 1 for answers in sender.clicked.values())
    # Every email arrived; a copy only within the window, under the first's Message-ID.
    by_id = collections.Counter(str(m["Message-ID"]) for m in inbox.messages)
    subjects = collections.Counter(str(m["Subject"]).split(":")[0].split(" ")[0]
                                   for m in {str(m["Message-ID"]): m
                                             for m in inbox.messages}.values())
    assert subjects == {"Approve": 3, "Likely": 3, "Decided": 3}, (seed, subjects)
    copies = sum(n - 1 for n in by_id.values())
    assert copies <= KILLS, (seed, by_id)
    totals.update(records=len(sender.named), orders=len(sales), decisions=len(approvals),
                  emails=len(inbox.messages), copies=copies,
                  retaken=sum(i.attempts > 1 for i in items))
