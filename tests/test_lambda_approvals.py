"""The approvals function behind API Gateway: the approval request goes out from the worker
(SES), the link's page is shown, the decision is recorded once and queued; the worker writes it
to the CRM. A second click, an altered or expired link change nothing."""

from __future__ import annotations

import datetime as dt
import json

from tests import test_lambda_harness as harness
from tests.test_approvals import APPROVAL_RULES, DEAL, PUBLIC, ROOT
from tests.test_lambda_harness import LambdaContext, fixture

aws, world, keep_logging = harness.aws, harness.world, harness.keep_logging  # fixtures

APPROVAL_SECRET = "approval-key-lambda"


def approval_rules(tmp_path):
    import shutil

    rules, mappings = tmp_path / "rules", tmp_path / "mappings"
    shutil.copytree(ROOT / "rules", rules)
    mappings.mkdir()
    (rules / "actions.yaml").write_text(APPROVAL_RULES)
    text = (rules / "probability.yaml").read_text()
    (rules / "probability.yaml").write_text(text.replace("actions: [notify-director]", ""))
    mapping = (ROOT / "mappings" / "salesforce.yaml").read_text().replace(
        "  rule: Probability_Rule__c",
        "  approval_status: Approval_Status__c\n  rule: Probability_Rule__c", 1).replace(
        "writeback: [probability, weighted_amount, rule]",
        "writeback: [probability, weighted_amount, rule, approval_status]")
    (mappings / "salesforce.yaml").write_text(mapping)
    return rules, mappings


def call(method: str, token: str):
    from connector.handlers.approvals import lambda_handler

    event = fixture("apigw_v2_health.json")
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/approvals/{token}"
    event["routeKey"] = event["requestContext"]["routeKey"] = f"{method} /approvals/{{token}}"
    event["requestContext"]["http"]["method"] = method
    event["pathParameters"] = {"token": token}
    return lambda_handler(event, LambdaContext(function_name="crm-automation-test-approvals"))


def test_an_approval_link_decides_once_in_the_cloud(world, tmp_path):
    from connector.approvals import Claim, make_token
    from connector.handlers.poll import lambda_handler as poll

    rules, mappings = approval_rules(tmp_path)
    for name, value in (("RULES_DIR", str(rules)), ("MAPPINGS_DIR", str(mappings)),
                        ("PUBLIC_URL", PUBLIC)):
        world.monkeypatch.setenv(name, value)
    world.aws.ssm.put_parameter(Name=f"{harness.SECRETS_PATH}APPROVAL_SECRET",
                                Value=APPROVAL_SECRET, Type="SecureString")
    world.org.add(DEAL, StageName="Proposal/Price Quote", Proposal_Type__c="Budgetary",
                  Relationship_Level__c="Known", Amount=250000, Name="Harbour cranes")
    world.new_container()
    world.org.clock.advance(seconds=1)
    poll({**fixture("eventbridge_scheduled_event.json"), "fire_backfill": True},
         LambdaContext(function_name="crm-automation-test-poll"))
    world.work()
    [request] = [i for i in world.items() if i.kind == "approval"]
    assert request.status == "waiting"
    assert world.org.records[DEAL]["Approval_Status__c"] == "Pending"

    expires = world.org.clock() + dt.timedelta(days=7)
    approve = make_token(APPROVAL_SECRET, Claim(request.key, DEAL, request.action, "approve",
                                                expires))
    world.new_container()                       # the approvals function: its own container
    page = call("GET", approve)
    assert page["statusCode"] == 200 and "<form" in page["body"]
    assert world.org.records[DEAL]["Approval_Status__c"] == "Pending"
    assert call("POST", approve)["statusCode"] == 200
    queued = [json.loads(m["Body"]) for m in world.aws.messages()]
    assert {"kind": "outbox", "key": f"{request.key}:decision", "attempts": 0} in queued
    world.work()
    assert world.org.records[DEAL]["Approval_Status__c"] == "Approved"
    assert call("POST", approve)["statusCode"] == 409
    forged = approve[:-3] + ("AAA" if not approve.endswith("AAA") else "BBB")
    assert call("POST", forged)["statusCode"] == 404
    world.work()
    assert world.org.records[DEAL]["Approval_Status__c"] == "Approved"
