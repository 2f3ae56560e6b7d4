"""The webhook function behind API Gateway: it verifies, stores the notice in DynamoDB, queues
a message for the worker and acknowledges, with no CRM call; a forged or malformed request is
refused with nothing stored or queued; a state or queue it cannot reach gets 503, never 500."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

from tests import test_lambda_harness as harness
from tests.test_lambda_harness import FIXTURES, fixture, signed_event

aws, world, keep_logging = harness.aws, harness.world, harness.keep_logging  # fixtures

OUTBOUND = "apigw_v2_salesforce_outbound.json"
NOTICE = "notice:salesforce:outbound:04l5g00002RsNbTAAV"


def test_an_outbound_message_is_stored_queued_and_acknowledged(world):
    answer = world.webhook(fixture(OUTBOUND))
    assert answer["statusCode"] == 200 and "<Ack>true</Ack>" in answer["body"]
    assert answer["headers"]["Content-Type"].startswith("text/xml")
    assert world.org.api_calls == 0                       # no CRM call inside the request
    [item] = world.items()
    assert item.key == NOTICE and item.kind == "notice" and item.status == "pending"
    assert item.payload == {"ids": ["0065g00000QzW1xAAF"]}
    assert world.aws.bodies() == [{"kind": "outbox", "key": NOTICE, "attempts": 0}]


def test_a_redelivery_is_stored_once(world):
    for _ in range(2):
        assert world.webhook(fixture(OUTBOUND))["statusCode"] == 200
    assert [i.key for i in world.items()] == [NOTICE]
    # Queued twice: the worker's idempotency (same body) and the state drop the copy.
    assert world.aws.bodies() == [{"kind": "outbox", "key": NOTICE, "attempts": 0}] * 2


def test_signed_json_is_accepted_and_a_forgery_is_not(world):
    body = (FIXTURES.parent / "webhooks" / "signed_json_ids.json").read_bytes()
    answer = world.webhook(signed_event("apigw_v2_signed_json.json", body))
    assert answer["statusCode"] == 202 and json.loads(answer["body"]) == {"stored": 1}
    forged = world.webhook(signed_event("apigw_v2_signed_json.json", body, secret="nope"))
    stale = world.webhook(signed_event("apigw_v2_signed_json.json", body,
                                       at=int(time.time()) - 301))
    assert forged["statusCode"] == stale["statusCode"] == 401
    assert len(world.items()) == 1 and len(world.aws.bodies()) == 1


def test_a_hubspot_batch_signed_v3_is_stored_per_event(world):
    import base64
    import hashlib
    import hmac

    world.aws.ssm.put_parameter(Name="/crm-automation/test/sync/HUBSPOT_CLIENT_SECRET",
                                Value="hs-secret", Type="SecureString")
    world.new_container()
    event = fixture("apigw_v2_hubspot.json")
    ts = str(int(time.time() * 1000))
    uri = f"https://{event['headers']['host']}{event['rawPath']}"
    signature = base64.b64encode(hmac.new(b"hs-secret", ("POST" + uri + event["body"] + ts
                                                         ).encode(), hashlib.sha256).digest())
    event["headers"].update({"x-hubspot-request-timestamp": ts,
                             "x-hubspot-signature-v3": signature.decode()})
    answer = world.webhook(event)
    assert answer["statusCode"] == 202
    stored = json.loads(answer["body"])["stored"]
    assert stored >= 1 and len(world.items()) == stored == len(world.aws.bodies())
    event["headers"]["x-hubspot-signature-v3"] = "forged"
    assert world.webhook(event)["statusCode"] == 401


def test_a_wrong_token_or_a_bomb_stores_and_queues_nothing(world):
    wrong = fixture(OUTBOUND)
    wrong["rawQueryString"] = "token=guess"
    wrong["queryStringParameters"] = {"token": "guess"}
    bomb = fixture(OUTBOUND)
    bomb["body"] = (FIXTURES.parent / "webhooks" / "salesforce_outbound_billion_laughs.xml"
                    ).read_text()
    assert world.webhook(wrong)["statusCode"] == 401
    assert world.webhook(bomb)["statusCode"] == 400
    assert world.items() == [] and world.aws.bodies() == []


def test_health_answers_the_rule_set_version_without_secrets_or_state(world, monkeypatch):
    from connector.files import load

    monkeypatch.setenv("SECRETS_PATH", "/nowhere/")       # would fail if it were read
    monkeypatch.setenv("STATE_URL", "dynamodb://no-such-table")
    answer = world.webhook(fixture("apigw_v2_health.json"))
    assert answer["statusCode"] == 200
    assert json.loads(answer["body"]) == {"status": "ok",
                                          "rules": load(Path("rules"), Path("mappings")).version}


def test_a_function_configured_wrong_answers_503(world, monkeypatch):
    monkeypatch.setenv("STATE_URL", "postgres://nope")
    world.new_container()
    assert world.webhook(fixture(OUTBOUND))["statusCode"] == 503
    monkeypatch.setenv("STATE_URL", "dynamodb://crm-automation-test-state")
    monkeypatch.delenv("WORK_QUEUE_URL")
    world.new_container()
    assert world.webhook(fixture(OUTBOUND))["statusCode"] == 503


def test_a_state_it_cannot_write_gets_503_and_nothing_queued(world, monkeypatch):
    monkeypatch.setenv("STATE_URL", "dynamodb://no-such-table")
    world.new_container()
    answer = world.webhook(fixture(OUTBOUND))
    assert answer["statusCode"] == 503 and world.aws.bodies() == []


def test_a_queue_it_cannot_reach_gets_503_and_the_redelivery_queues(world, monkeypatch):
    monkeypatch.setenv("WORK_QUEUE_URL", world.aws.queue_url + "-gone")
    world.new_container()
    assert world.webhook(fixture(OUTBOUND))["statusCode"] == 503
    assert [i.key for i in world.items()] == [NOTICE]     # stored, not queued
    monkeypatch.setenv("WORK_QUEUE_URL", world.aws.queue_url)
    world.new_container()
    assert world.webhook(fixture(OUTBOUND))["statusCode"] == 200   # Salesforce resends
    assert world.aws.bodies() == [{"kind": "outbox", "key": NOTICE, "attempts": 0}]


def test_missing_secrets_get_503(world, monkeypatch):
    world.aws.ssm.delete_parameter(Name="/crm-automation/test/sync/WEBHOOK_SECRET")
    monkeypatch.setenv("SECRETS_PATH", "/crm-automation/test/sync/")
    world.new_container()
    # Without the secret no token matches: refused, not a crash.
    assert world.webhook(fixture(OUTBOUND))["statusCode"] == 401
    monkeypatch.setenv("SALESFORCE_DOMAIN", "https://bad/path/x")   # an invalid setting
    world.new_container()
    assert world.webhook(fixture(OUTBOUND))["statusCode"] == 503


def test_the_logs_are_json_with_the_request_id_as_correlation_id(world, monkeypatch):
    from connector.handlers import runtime

    out = io.StringIO()
    monkeypatch.setattr(runtime.logger().registered_handler, "stream", out)
    world.webhook(fixture(OUTBOUND))
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    queued = [line for line in lines if line.get("message") == "notices queued"]
    assert queued and queued[0]["correlation_id"] == "Zr9vMgRtjoEEMxA="
    assert queued[0]["service"] == "crm-automation" and queued[0]["queued"] == 1
    assert all("whsec" not in json.dumps(line) for line in lines)


def test_importing_the_webhook_module_loads_neither_boto3_nor_the_crm_code():
    code = ("import sys, connector.handlers.webhook as w; "
            "print(sorted(m for m in ('boto3', 'botocore', 'simple_salesforce', "
            "'aws_lambda_powertools', 'connector.pipeline', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
