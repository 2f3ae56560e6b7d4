"""No output, log line or file the product writes holds a secret. Every secret setting (and
every secret an action's variables or URLs carry) is set to a unique marker, a whole deployment
runs (check, simulate with a report and an export, two syncs against the fake org, `serve` with
signed webhooks and an approval click, `outbox list` and `retry`, with records that fail on
the way), and everything it produced is searched for every marker."""

from __future__ import annotations

import csv
import hashlib
import hmac
import http.client
import json
import logging
import re
import secrets
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import responses
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

import connector.web
from connector.cli import main
from connector.settings import Settings
from connector.state.sqlite import SqliteState
from tests.fake_salesforce import INSTANCE, Clock, FakeOrg
from tests.smtp_server import Inbox
from tests.test_hostile_values import ERP  # a REST ERP; its header reads ${ERP_WAREHOUSE}

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
ORG_ID = "00D5g00000LqXyZEAV"
HOOK_HOST = "https://hooks.example.com"
ERP_URL = "https://erp.example.com/api"

# Every setting pydantic keeps as a SecretStr, found from the model: a secret added later is
# covered without editing this test.
SECRET_SETTINGS = sorted(name.upper() for name, field in Settings.model_fields.items()
                         if "SecretStr" in str(field.annotation))
# Secrets that travel inside other values: the SMTP password in SMTP_URL, an HTTP action's
# URL (its path and query) and the token its header names.
OTHER_SECRETS = ["SMTP_PASSWORD", "HOOK_PATH", "HOOK_QUERY", "MARKETING_TOKEN"]

ACTIONS = """\
actions:
  notify-director:
    email:
      to: ["{{ owner_email }}", director@example.com]
      subject: "Approval needed: {{ name }} ({{ amount }})"
      template: templates/approval.txt
  push-marketing:
    http:
      method: POST
      url: "${MARKETING_WEBHOOK_URL}"
      headers: {Authorization: "Bearer ${MARKETING_TOKEN}", X-Deal: "{{ name }}"}
      json: {opportunity: "{{ id }}", name: "{{ name }}", stage: "{{ stage }}"}
  erp-order:
    erp: sales_order
  budget-approval:
    approval:
      to: [manager@example.com]
      subject: "Approve {{ name }}?"
      body: "{{ name }}: approve {{ approve_url }} or reject {{ reject_url }}"
      field: approval_status
      on_approve: [tell-owner]
  tell-owner:
    email:
      to: ["{{ owner_email }}"]
      subject: "Decision on {{ name }}"
      body: "Approved."
triggers:
  - name: large-deal-likely
    when: amount >= 100000 and probability >= 70
    do: [notify-director]
  - name: late-stage
    when: probability >= 60
    do: [push-marketing]
  - name: won-to-erp
    when: won and close_date >= date('2026-11-01')
    do: [erp-order]
  - name: big-budgetary
    when: proposal_type == 'Budgetary' and amount >= 200000
    do: [budget-approval]
"""


def deployment(folder: Path) -> tuple[Path, Path]:
    rules, mappings = folder / "rules", folder / "mappings"
    shutil.copytree(ROOT / "rules", rules)
    shutil.copytree(ROOT / "mappings", mappings)
    (rules / "actions.yaml").write_text(ACTIONS)
    (mappings / "erp.yaml").write_text(ERP)
    mapping = (mappings / "salesforce.yaml").read_text()
    mapping = mapping.replace("  rule: Probability_Rule__c",
                              "  approval_status: Approval_Status__c\n  rule: Probability_Rule__c")
    mapping = mapping.replace("writeback: [probability, weighted_amount, rule]",
                              "writeback: [probability, weighted_amount, rule, approval_status]")
    (mappings / "salesforce.yaml").write_text(mapping)
    (mappings / "hubspot.yaml").unlink()
    return rules, mappings


class Outputs:
    """Everything the product produced, by where it went, searched after each step so a leak
    is reported at the step that made it."""

    def __init__(self, markers: dict[str, str], folder: Path, caplog: pytest.LogCaptureFixture
                 ) -> None:
        self.markers = markers
        self.folder = folder
        self.caplog = caplog
        self.parts: list[tuple[str, str]] = []

    def add(self, where: str, text: str | bytes) -> None:
        self.parts.append((where, text.decode("utf-8", "replace")
                           if isinstance(text, bytes) else text))

    def assert_clean(self) -> None:
        for record in self.caplog.records:
            if record.name != "mail.log":   # the test's SMTP server, not the product
                self.add(f"log {record.name}", self.caplog.handler.format(record))
        self.caplog.clear()
        for path in self.folder.rglob("*"):
            if path.is_file():
                self.add(f"file {path.relative_to(self.folder)}", path.read_bytes())
        leaks = [f"{name} in {where}" for where, text in self.parts
                 for name, marker in self.markers.items() if marker in text]
        assert leaks == []


@pytest.fixture
def markers() -> dict[str, str]:
    return {name: f"mk{i:02d}{secrets.token_hex(8)}"
            for i, name in enumerate(SECRET_SETTINGS + OTHER_SECRETS)}


@pytest.fixture
def mail(markers):
    """A real SMTP server that asks for the login SMTP_URL carries."""
    inbox = Inbox()

    def authenticate(server, session, envelope, mechanism, auth_data):
        return AuthResult(success=auth_data.password.decode() == markers["SMTP_PASSWORD"])

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port, auth_require_tls=False,
                            authenticator=authenticate)
    controller.start()
    yield port, inbox
    controller.stop()


def signed(body: bytes, secret: str) -> dict[str, str]:
    ts = str(int(time.time()))
    sig = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Connector-Timestamp": ts,
            "X-Connector-Signature": f"v1={sig}"}


def call(port: int, method: str, path: str, body: bytes = b"",
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read()


def wait_for(condition, what: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def test_no_secret_reaches_any_output(tmp_path, monkeypatch, markers, mail, caplog, capsys):
    smtp_port, inbox = mail
    rules, mappings = deployment(tmp_path / "deploy")
    run = tmp_path / "run"       # the working folder: every file the product writes is here
    run.mkdir()
    monkeypatch.chdir(run)
    hook = f"{HOOK_HOST}/catch/{markers['HOOK_PATH']}?token={markers['HOOK_QUERY']}"
    for name in SECRET_SETTINGS:
        monkeypatch.setenv(name, markers[name])
    env = {"SALESFORCE_INSTANCE_URL": INSTANCE, "SALESFORCE_USERNAME": "sync@acme.example",
           "SALESFORCE_CLIENT_ID": "3MVG9-client", "SALESFORCE_ORG_ID": ORG_ID,
           "STATE_URL": f"sqlite:///{run / 'state' / 'state.db'}",
           "ERP_URL": ERP_URL, "ERP_USERNAME": "erp-user", "ERP_WAREHOUSE": "WH-1",
           "SMTP_URL": f"smtp://mailer:{markers['SMTP_PASSWORD']}@127.0.0.1:{smtp_port}",
           "EMAIL_FROM": "crm@example.com", "PUBLIC_URL": "https://connector.example.com",
           "MARKETING_WEBHOOK_URL": hook, "MARKETING_TOKEN": markers["MARKETING_TOKEN"]}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    out = Outputs(markers, run, caplog)
    folders = ["--rules", str(rules), "--mappings", str(mappings)]

    def cli(*argv: str) -> int:
        code = main([*argv, *folders])
        captured = capsys.readouterr()
        out.add(f"{argv[0]} stdout", captured.out)
        out.add(f"{argv[0]} stderr", captured.err)
        return code

    # --- check, and a dry run with a report and an export ---------------------------------
    assert cli("check") == 0
    export = tmp_path / "deploy" / "export.csv"
    rows = list(csv.DictReader((ROOT / "examples" / "opportunities.csv").open(
        encoding="utf-8-sig")))[:40]
    rows[0]["Name"] = "Acme ${MARKETING_TOKEN} ${WEBHOOK_SECRET}"
    rows[1]["StageName"] = "No such stage"
    with export.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert cli("simulate", str(export), "--report", str(run / "report.html"),
               "--out", str(run / "out.csv")) == 1    # the row with a bad stage
    assert 'id="previews"' in (run / "report.html").read_text()
    out.assert_clean()

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru("http://127.0.0.1")
        sent: list[tuple[str, str]] = []    # what the product sent to the endpoints

        def push(request):
            sent.append(("push body", request.body or ""))
            sent.append(("push headers", json.dumps(
                {k: v for k, v in request.headers.items() if k != "Authorization"})))
            if request.headers.get("Authorization") != f"Bearer {markers['MARKETING_TOKEN']}":
                return 401, {}, "no token"
            if "Refused" in json.loads(request.body)["name"]:   # an echo of what came in
                return 400, {}, f"bad request {request.url} {request.headers['Authorization']}"
            return 200, {}, "{}"

        def erp_orders(request):
            sent.append(("erp", request.body or ""))
            if request.method == "GET":
                return 200, {}, "[]"
            return 422, {}, f"refused for user erp-user password {markers['ERP_PASSWORD']}"

        rsps.add_callback(responses.POST, re.compile(re.escape(HOOK_HOST) + ".*"), push)
        rsps.add_callback(responses.GET, re.compile(re.escape(ERP_URL) + "/orders.*"),
                          erp_orders)
        rsps.add_callback(responses.POST, re.compile(re.escape(ERP_URL) + "/orders.*"),
                          erp_orders)
        org = FakeOrg(rsps, Clock())
        ids = [f"006C0000000000{i:04d}" for i in range(8)]
        for rid in ids:                       # nothing fires yet: the first sync records this
            org.add(rid, StageName="Prospecting", Amount=5000)
        org.add("0065g00000QzW1xAAF", StageName="Prospecting", Amount=5000)  # the webhook's

        # --- two syncs; the second meets edits that fire actions, and records that fail --
        assert cli("sync") == 0
        org.clock.advance(seconds=5)
        hot = dict(StageName="Negotiation/Review", Proposal_Type__c="Firm",
                   Relationship_Level__c="Strategic", Amount=150000)
        org.edit(ids[0], Name="Fleet ${MARKETING_TOKEN} ${APPROVAL_SECRET}", **hot)
        org.edit(ids[1], Name="Refused deal", **hot)                    # the endpoint says 400
        org.edit(ids[2], Name="Split\r\nX-Admin: yes", **hot)         # a header it would break
        org.edit(ids[3], Owner={"Name": "Two", "Email": "a@acme.example, evil@evil.example"},
                 **hot)
        org.edit(ids[4], StageName="No such stage")                    # cannot be computed
        org.edit(ids[5], StageName="Closed Won", CloseDate="2026-11-20")  # the ERP refuses
        org.edit(ids[6], StageName="Proposal/Price Quote", Proposal_Type__c="Budgetary",
                 Relationship_Level__c="Known", Amount=250000, Name="Harbour cranes")
        org.edit(ids[7], **hot)
        org.invalid[ids[7]] = f"FIELD_CUSTOM_VALIDATION_EXCEPTION: {markers['SALESFORCE_PASSWORD']}"
        assert cli("sync") == 1
        out.assert_clean()
        assert any(m["Subject"] == "Approve Harbour cranes?" for m in inbox.messages)

        # --- serve: signed webhooks, an Outbound Message, forged ones, an approval click ----
        servers = []
        real_make_server = connector.web.make_server

        def make_server(*args, **kwargs):
            servers.append(real_make_server(*args, **kwargs))
            return servers[-1]

        monkeypatch.setattr(connector.web, "make_server", make_server)
        serving = threading.Thread(target=lambda: out.add("serve exit", str(main(
            ["serve", "--port", "0", *folders]))), daemon=True)
        serving.start()
        wait_for(lambda: servers and servers[0].server_port, "serve to start")
        port = servers[0].server_port
        org.edit("0065g00000QzW1xAAF", Name="Webhook ${ERP_PASSWORD}", **hot)
        body = json.dumps({"ids": ["0065g00000QzW1xAAF"]}).encode()
        answers = [call(port, "POST", "/webhooks/salesforce", body,
                        signed(body, markers["WEBHOOK_SECRET"])),
                   call(port, "POST", "/webhooks/salesforce", body, signed(body, "forged")),
                   call(port, "POST", f"/webhooks/salesforce?token={markers['WEBHOOK_SECRET']}",
                        (FIXTURES / "salesforce_outbound_opportunity.xml").read_bytes(),
                        {"Content-Type": "text/xml"}),
                   call(port, "POST", "/webhooks/salesforce?token=wrong",
                        (FIXTURES / "salesforce_outbound_opportunity.xml").read_bytes(),
                        {"Content-Type": "text/xml"}),
                   call(port, "POST", "/webhooks/hubspot", b"[]",
                        {"Content-Type": "application/json"}),
                   call(port, "GET", "/health")]
        assert [status for status, _ in answers] == [202, 401, 200, 401, 401, 200]
        [request] = [m for m in inbox.messages if m["Subject"] == "Approve Harbour cranes?"]
        link = re.search(r"https://connector\.example\.com(/approvals/\S+)",
                         request.get_body(("plain",)).get_content())
        assert link is not None
        answers.append(call(port, "GET", link.group(1).split(" ")[0]))
        answers.append(call(port, "POST", link.group(1).split(" ")[0]))
        for status, answer in answers:
            out.add(f"serve answer {status}", answer)
        out.assert_clean()
        wait_for(lambda: any("Webhook" in text for _, text in sent) and any(
            m["Subject"] == "Decision on Harbour cranes" for m in inbox.messages),
            "the webhook's push and the approval's follow-up")
        servers[0].shutdown()
        serving.join(timeout=30)
        for thread in threading.enumerate():   # serve stops its worker; let it finish here
            if thread.name == "outbox-worker":
                thread.join(timeout=60)
        out.assert_clean()

        # --- what waits, and a retry of it -------------------------------------------------
        assert cli("outbox", "list") == 0
        assert cli("outbox", "list", "--all") == 0
        cli("outbox", "retry")

    state = SqliteState(str(run / "state" / "state.db"))
    reasons = {i.record_id: i.reason for i in state.items("parked")}
    assert {ids[1], ids[2], ids[3], ids[4], ids[5], ids[7]} <= set(reasons), reasons
    assert all(reasons.values())

    for message in inbox.messages:
        out.add(f"email {message['Subject']}", message.as_bytes())
    for where, text in sent:
        out.add(where, text)
    out.assert_clean()
    assert {"file report.html", "file out.csv", "file state/state.db"} <= \
        {where for where, _ in out.parts}
