"""`serve` on a real loopback socket: webhooks are verified, stored, then acknowledged; the
worker reads the records they name and writes back like a poll. Forged, stale and malformed
requests never get a 2xx or a 5xx."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import threading
import time
from pathlib import Path

import pytest
import responses

from connector.app import build_app
from connector.handlers.webhook import route
from connector.settings import Settings
from connector.web import make_server
from tests.fake_salesforce import INSTANCE, Clock, FakeOrg

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
ORG_ID = "00D5g00000LqXyZEAV"
SECRET = "whsec-test-4f1c2b"
RECORD = "0065g00000QzW1xAAF"


@pytest.fixture
def stack(tmp_path):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru("http://127.0.0.1")
        org = FakeOrg(rsps, Clock())
        org.add(RECORD, StageName="Negotiation/Review", Proposal_Type__c="Firm",
                Relationship_Level__c="Trusted", Amount=120000, Probability=50)
        org.add("0065g00000QzW2KAAV", StageName="Prospecting", Probability=10)
        settings = Settings(_env_file=None, salesforce_instance_url=INSTANCE,
                            salesforce_access_token="00Dxx!session",
                            webhook_secret=SECRET, salesforce_org_id=ORG_ID[:15],
                            state_url=f"sqlite:///{tmp_path / 'state.db'}")
        app = build_app(settings=settings, now=org.clock)
        server = make_server("127.0.0.1", 0, lambda event: route(
            event, settings=settings, store=app.pipeline_store, version=app.version))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield app, org, server.server_port
        server.shutdown()
        server.server_close()


def post(port, path, body, headers):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def signed(body: bytes, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    ts = str(at if at is not None else int(time.time()))
    sig = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Connector-Timestamp": ts,
            "X-Connector-Signature": f"v1={sig}"}


def test_an_outbound_message_is_stored_acknowledged_then_processed(stack):
    app, org, port = stack
    body = (FIXTURES / "salesforce_outbound_opportunity.xml").read_bytes()
    status, answer = post(port, f"/webhooks/salesforce?token={SECRET}", body,
                          {"Content-Type": "text/xml; charset=utf-8"})
    assert status == 200 and b"<Ack>true</Ack>" in answer
    assert org.api_calls == 0                     # acknowledged before any CRM call
    assert [i.kind for i in app.state.items("pending")] == ["notice"]
    # Salesforce delivers it again (no Ack seen, say): stored once only.
    status, _ = post(port, f"/webhooks/salesforce?token={SECRET}", body,
                     {"Content-Type": "text/xml"})
    assert status == 200 and len(app.state.items()) == 1
    drained = app.pipeline.drain()
    assert drained.done == 1
    assert org.records[RECORD]["Probability"] == 90 and org.writes[RECORD] == 1


@pytest.mark.parametrize("path, headers, body, expected", [
    ("/webhooks/salesforce?token=wrong", {"Content-Type": "text/xml"}, "om", 401),
    ("/webhooks/salesforce", {"Content-Type": "text/xml"}, "om", 401),
    ("/webhooks/salesforce?token=" + SECRET, {"Content-Type": "text/xml"}, b"<not-xml", 400),
    ("/webhooks/salesforce?token=" + SECRET, {"Content-Type": "text/xml"}, "bomb", 400),
    ("/webhooks/salesforce", "forged", b'{"ids": ["0065g00000QzW1xAAF"]}', 401),
    ("/webhooks/salesforce", "stale", b'{"ids": ["0065g00000QzW1xAAF"]}', 401),
    ("/webhooks/salesforce", "signed", b'{"ids": "nope"}', 400),
    ("/webhooks/salesforce", "signed", b"\xff\xfe garbage", 400),
    ("/webhooks/hubspot", {"Content-Type": "application/json"}, b"[]", 401),
    ("/nowhere", {}, b"", 404),
])
def test_bad_requests_get_a_4xx_and_nothing_is_stored(stack, path, headers, body, expected):
    app, org, port = stack
    if body == "om":
        body = (FIXTURES / "salesforce_outbound_opportunity.xml").read_bytes()
    if body == "bomb":
        body = (FIXTURES / "salesforce_outbound_billion_laughs.xml").read_bytes()
    if headers == "forged":
        headers = signed(body, secret="not-the-secret")
    elif headers == "stale":
        headers = signed(body, at=int(time.time()) - 301)
    elif headers == "signed":
        headers = signed(body)
    status, _ = post(port, path, body, headers)
    assert status == expected
    assert app.state.items() == [] and org.api_calls == 0


def test_signed_json_is_processed_once_and_a_replay_is_ignored(stack):
    app, org, port = stack
    body = (FIXTURES / "signed_json_ids.json").read_bytes()
    headers = signed(body)
    assert post(port, "/webhooks/salesforce", body, headers)[0] == 202
    assert post(port, "/webhooks/salesforce", body, headers)[0] == 202   # the replay
    assert len(app.state.items()) == 1
    app.pipeline.drain()
    assert org.writes[RECORD] == 1 and org.writes["0065g00000QzW2KAAV"] == 1
    # The connector's own write comes back as a change: it computes to no change.
    app.pipeline.drain()
    again = json.dumps({"ids": [RECORD]}).encode()
    post(port, "/webhooks/salesforce", again, signed(again))
    app.pipeline.drain()
    assert org.writes[RECORD] == 1


def test_an_oversized_body_is_refused(stack):
    app, _, port = stack
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("POST", "/webhooks/salesforce")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(1_048_576 + 1))
    conn.endheaders()                      # the server answers before reading the body
    assert conn.getresponse().status == 413 and app.state.items() == []


def test_health_says_the_rule_set_version(stack):
    app, _, port = stack
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/health")
    response = conn.getresponse()
    assert response.status == 200
    assert json.loads(response.read()) == {"status": "ok", "rules": app.version}


# --- slow and short clients -------------------------------------------------------------------

@pytest.fixture
def echo_server():
    """A server whose route records the bodies it is given; short timeouts, 8 at once."""
    bodies: list[bytes] = []

    def echo(event):
        import base64

        bodies.append(base64.b64decode(event["body"]))
        return {"statusCode": 200, "body": "{}"}

    server = make_server("127.0.0.1", 0, echo, timeout=0.5, read_deadline=2.0, max_requests=8)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port, bodies
    server.shutdown()
    server.server_close()


def announce(port, length, sent: bytes):
    import socket

    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"POST /webhooks/salesforce HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
                 + f"Content-Length: {length}\r\n\r\n".encode() + sent)
    return sock


def answer_of(sock) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except OSError:  # reset: the server closed on unread data
        pass
    sock.close()
    return b"".join(chunks)


def test_a_body_shorter_than_its_content_length_is_a_400_and_never_routed(echo_server):
    import socket

    port, bodies = echo_server
    sock = announce(port, 100, b"<soap>")
    sock.shutdown(socket.SHUT_WR)               # the client sent all it will send
    answer = answer_of(sock)
    assert answer.startswith(b"HTTP/1.0 400") and b"shorter than its Content-Length" in answer
    assert bodies == []
    assert post(port, "/webhooks/x", b"<soap/>", {})[0] == 200 and bodies == [b"<soap/>"]


def test_slow_clients_hold_a_bounded_number_of_threads_and_time_out(echo_server):
    port, bodies = echo_server
    before = threading.active_count()
    slow = [announce(port, 1_000_000, b"abc") for _ in range(300)]
    peak = threading.active_count()
    answers = [answer_of(s) for s in slow]       # each is answered and closed, none hangs
    assert peak - before <= 8
    statuses = {a[:12] for a in answers}
    assert statuses <= {b"HTTP/1.0 408", b"HTTP/1.1 503", b""}, statuses
    assert any(a.startswith(b"HTTP/1.0 408") for a in answers)
    assert bodies == []
    assert post(port, "/webhooks/x", b"{}", {})[0] == 200  # and the server still serves


def test_a_client_dribbling_its_headers_is_closed_at_the_deadline(echo_server):
    """A header line every 0.2 s never trips the 0.5 s socket timeout; the 2 s deadline for
    the whole request closes the connection."""
    import socket

    port, bodies = echo_server
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"POST /webhooks/x HTTP/1.1\r\nHost: x\r\n")
    closed = False
    for i in range(100):                         # 20 s: ten times the deadline
        time.sleep(0.2)
        try:
            sock.sendall(f"X-Pad-{i}: a\r\n".encode())
        except OSError:
            closed = True
            break
    sock.close()
    assert closed and bodies == []


def test_serve_without_crm_credentials_exits_2_with_the_message_sync_gives(tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "HUBSPOT_"))}
    env["PYTHONPATH"] = str(root)
    answers = [subprocess.run(
        [sys.executable, "-m", "connector", command, *extra, "--rules", str(root / "rules"),
         "--mappings", str(root / "mappings")], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=120) for command, extra in (("serve", ["--port", "0"]), ("sync", []))]
    serve, sync = answers
    assert serve.returncode == sync.returncode == 2
    assert "Salesforce credentials are incomplete" in serve.stderr
    assert serve.stderr == sync.stderr and "Traceback" not in serve.stderr


def test_an_approval_links_token_is_never_logged(echo_server, caplog):
    """Whoever holds the token can decide: a log reader must not be able to."""
    import logging

    port, _bodies = echo_server
    token = "eyJrZXkiOiJhcHByb3ZhbDoxMjMifQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"
    with caplog.at_level(logging.INFO, logger="connector.web"):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", f"/approvals/{token}")
        conn.getresponse().read()
        conn.close()
        deadline = time.monotonic() + 5
        while not any("/approvals/" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the request was not logged"
            time.sleep(0.02)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "/approvals/(token)" in logged and token not in logged
