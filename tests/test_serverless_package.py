"""`scripts/package` builds the stack offline (osls, no AWS account), and the CloudFormation it
writes is what the connector needs: the four functions and their events (HTTP API routes, the
schedules, the SQS mapping reporting partial failures), the queue with its dead-letter queue,
the tables with TTL, and one least-privilege role per function. The zip carries the code, the
rules and mappings, the dependencies and every module's bytecode, and imports on its own.

Needs node and npm (CI has them) and pip's index; skipped only where `npx` is absent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parent.parent
TEMPLATE = ROOT / ".serverless" / "cloudformation-template-update-stack.json"
ARTIFACT = ROOT / "build" / "lambda" / "app.zip"
HANDLERS = {"Webhook": "webhook", "Worker": "worker", "Poll": "poll", "Sweep": "sweep",
            "Approvals": "approvals"}

pytestmark = pytest.mark.skipif(shutil.which("npx") is None,
                                reason="packaging needs node's npx (CI has it)")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # Dummy credentials, and any AWS call sent nowhere: packaging must not need AWS.
    env.update(AWS_ACCESS_KEY_ID="offline", AWS_SECRET_ACCESS_KEY="offline",
               AWS_REGION="eu-west-1", AWS_ENDPOINT_URL="http://127.0.0.1:9")
    if TEMPLATE.exists():
        TEMPLATE.unlink()
    started = time.monotonic()
    done = subprocess.run([str(ROOT / "scripts" / "package")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    print(f"\nscripts/package: {time.monotonic() - started:.1f} s")
    result: dict[str, Any] = json.loads(TEMPLATE.read_text())
    return result


def resources(template, kind):
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def get_att(name, attribute="Arn"):
    return {"Fn::GetAtt": [name, attribute]}


# --- functions and events -----------------------------------------------------------------------


def test_five_functions_on_python_3_11_with_their_handlers(template):
    functions = resources(template, "AWS::Lambda::Function")
    assert set(functions) == {f"{n}LambdaFunction" for n in HANDLERS}
    for name, module in HANDLERS.items():
        props = functions[f"{name}LambdaFunction"]["Properties"]
        assert props["Handler"] == f"connector.handlers.{module}.lambda_handler"
        assert props["Runtime"] == "python3.11"
        assert props["Role"] == get_att(f"{name}Role")
        env = props["Environment"]["Variables"]
        assert env["STATE_URL"].startswith("dynamodb://") and env["WORK_QUEUE_URL"] == {
            "Ref": "WorkQueue"}
        assert env["SECRETS_PATH"].startswith("/crm-automation/")
    assert functions["WorkerLambdaFunction"]["Properties"]["Environment"]["Variables"][
        "IDEMPOTENCY_TABLE"] == {"Ref": "IdempotencyTable"}
    for name in ("Poll", "Sweep"):
        assert functions[f"{name}LambdaFunction"]["Properties"][
            "ReservedConcurrentExecutions"] == 1


def test_the_http_api_routes_go_to_their_functions(template):
    routes = resources(template, "AWS::ApiGatewayV2::Route")
    expected = {"POST /webhooks/salesforce": "Webhook", "POST /webhooks/hubspot": "Webhook",
                "GET /health": "Webhook", "GET /approvals/{token}": "Approvals",
                "POST /approvals/{token}": "Approvals"}
    assert {r["Properties"]["RouteKey"] for r in routes.values()} == set(expected)
    integrations = resources(template, "AWS::ApiGatewayV2::Integration")
    for route in routes.values():
        target = route["Properties"]["Target"]["Fn::Join"][1][1]["Ref"]
        function = expected[route["Properties"]["RouteKey"]]
        assert integrations[target]["Properties"]["IntegrationUri"] == get_att(
            f"{function}LambdaFunction")
        assert integrations[target]["Properties"]["PayloadFormatVersion"] == "2.0"


def test_the_poll_and_the_sweep_run_on_their_own_schedules(template):
    rules = resources(template, "AWS::Events::Rule")
    targets = {}
    for rule in rules.values():
        for target in rule["Properties"]["Targets"]:
            targets[json.dumps(target["Arn"], sort_keys=True)] = rule["Properties"]
    poll = targets[json.dumps(get_att("PollLambdaFunction"), sort_keys=True)]
    sweep = targets[json.dumps(get_att("SweepLambdaFunction"), sort_keys=True)]
    assert poll["ScheduleExpression"] == "rate(5 minutes)" and poll["State"] == "ENABLED"
    assert sweep["ScheduleExpression"].startswith("cron(") and sweep != poll
    change = rules["ChangeEventsRule"]
    assert change["Condition"] == "RelayChangeEvents"
    assert change["Properties"]["Targets"][0]["Arn"] == get_att("WorkQueue")
    assert change["Properties"]["EventPattern"]["detail-type"] == ["OpportunityChangeEvent"]


def test_the_worker_reads_the_queue_reporting_partial_failures(template):
    [mapping] = resources(template, "AWS::Lambda::EventSourceMapping").values()
    props = mapping["Properties"]
    assert props["EventSourceArn"] == get_att("WorkQueue")
    assert props["FunctionName"] == get_att("WorkerLambdaFunction")
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 1 <= props["BatchSize"] <= 10
    assert props["ScalingConfig"] == {"MaximumConcurrency": 5}


def test_the_queue_sends_what_keeps_failing_to_the_dead_letter_queue(template):
    from tests.test_lambda_harness import MAX_RECEIVE_COUNT

    queue = template["Resources"]["WorkQueue"]["Properties"]
    dlq = template["Resources"]["WorkDeadLetterQueue"]["Properties"]
    redrive = queue["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == get_att("WorkDeadLetterQueue")
    assert int(redrive["maxReceiveCount"]) == MAX_RECEIVE_COUNT >= 2
    worker = template["Resources"]["WorkerLambdaFunction"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * worker["Timeout"]       # AWS's advice
    assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]
    assert queue["SqsManagedSseEnabled"] and dlq["SqsManagedSseEnabled"]


# --- tables ---------------------------------------------------------------------------------------


def test_the_state_table_is_the_one_the_code_expects_with_ttl(template):
    from connector.state.dynamodb import TABLE, TTL_ATTRIBUTE

    props = template["Resources"]["StateTable"]["Properties"]
    for key in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "BillingMode"):
        assert props[key] == TABLE[key], key
    assert props["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    assert template["Resources"]["StateTable"]["DeletionPolicy"] == "Retain"


def test_the_idempotency_table_is_powertools_shape_with_ttl(template):
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    layer = DynamoDBPersistenceLayer(table_name="t", boto3_client=object())
    props = template["Resources"]["IdempotencyTable"]["Properties"]
    assert props["KeySchema"] == [{"AttributeName": layer.key_attr, "KeyType": "HASH"}]
    assert props["TimeToLiveSpecification"] == {"AttributeName": layer.expiry_attr,
                                                "Enabled": True}


# --- permissions ----------------------------------------------------------------------------------


def statements(template, role):
    props = template["Resources"][role]["Properties"]
    assert props["AssumeRolePolicyDocument"]["Statement"] == [{
        "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
        "Action": "sts:AssumeRole"}]
    assert "ManagedPolicyArns" not in props
    return [s for p in props["Policies"] for s in p["PolicyDocument"]["Statement"]]


def allowed(template, role):
    """action -> the resources it is allowed on (as JSON, to compare)."""
    found: dict[str, set[str]] = {}
    for s in statements(template, role):
        assert s["Effect"] == "Allow"
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        targets = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        for action in actions:
            found.setdefault(action, set()).update(json.dumps(r, sort_keys=True)
                                                   for r in targets)
    return found


def test_no_wildcards_in_any_role(template):
    roles = resources(template, "AWS::IAM::Role")
    assert set(roles) == {f"{n}Role" for n in HANDLERS}     # no shared default role
    for role in roles:
        for action, targets in allowed(template, role).items():
            assert "*" not in action, (role, action)
            assert '"*"' not in targets, (role, action)


def test_each_role_has_only_what_its_function_does(template):
    table, queue = json.dumps(get_att("StateTable")), json.dumps(get_att("WorkQueue"))
    webhook = allowed(template, "WebhookRole")
    assert set(webhook) == {"logs:CreateLogStream", "logs:PutLogEvents", "dynamodb:PutItem",
                            "sqs:SendMessage", "ssm:GetParametersByPath"}
    assert webhook["dynamodb:PutItem"] == {table} and webhook["sqs:SendMessage"] == {queue}
    worker = allowed(template, "WorkerRole")
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
            "ses:SendEmail", "ses:SendRawEmail"} <= set(worker)
    assert json.dumps(get_att("IdempotencyTable")) in worker["dynamodb:DeleteItem"]
    assert table not in worker["dynamodb:DeleteItem"]      # the state is never deleted from
    approvals = allowed(template, "ApprovalsRole")
    assert set(approvals) == {"logs:CreateLogStream", "logs:PutLogEvents", "dynamodb:GetItem",
                              "dynamodb:PutItem", "dynamodb:UpdateItem", "sqs:SendMessage",
                              "ssm:GetParametersByPath"}
    assert approvals["dynamodb:UpdateItem"] == {table}
    for role in ("WebhookRole", "PollRole", "SweepRole", "ApprovalsRole"):
        others = set(allowed(template, role))
        assert not others & {"ses:SendEmail", "ses:SendRawEmail", "sqs:ReceiveMessage",
                             "dynamodb:DeleteItem", "dynamodb:Scan"}, role
    assert set(allowed(template, "SweepRole")) - {"logs:CreateLogStream", "logs:PutLogEvents",
                                                  "sqs:SendMessage",
                                                  "ssm:GetParametersByPath"} == {
        "dynamodb:PutItem", "dynamodb:Query"}
    for name in HANDLERS:    # its own log group only
        assert allowed(template, f"{name}Role")["logs:PutLogEvents"] == {
            json.dumps(get_att(f"{name}LogGroup"))}


def test_each_function_reads_only_its_own_settings_path(template):
    paths = {}
    for name in HANDLERS:
        [arn] = allowed(template, f"{name}Role")["ssm:GetParametersByPath"]
        parts = json.loads(arn)["Fn::Join"][1]
        path = parts[-1]
        env = template["Resources"][f"{name}LambdaFunction"]["Properties"]["Environment"][
            "Variables"]
        assert env["SECRETS_PATH"].rstrip("/") == path
        paths[name] = path
    assert paths["Webhook"].endswith("/webhook") and paths["Worker"].endswith("/sync")
    assert paths["Webhook"] != paths["Worker"] and paths["Approvals"].endswith("/approvals")


def test_no_secret_is_in_the_template(template):
    text = json.dumps(template)
    assert "${ssm" not in text and "secretsmanager" not in text.lower()
    for name in ("WEBHOOK_SECRET", "SALESFORCE_PASSWORD", "SALESFORCE_ACCESS_TOKEN",
                 "ERP_PASSWORD", "HUBSPOT_CLIENT_SECRET"):
        assert name not in text


# --- the artifact ---------------------------------------------------------------------------------


def test_the_zip_has_code_rules_mappings_dependencies_and_bytecode(template):
    names = set(zipfile.ZipFile(ARTIFACT).namelist())
    sources = {n for n in names if n.startswith("connector/") and n.endswith(".py")}
    assert "connector/handlers/webhook.py" in sources
    for source in sources:
        folder, _, file = source.rpartition("/")
        assert f"{folder}/__pycache__/{file[:-3]}.cpython-311.pyc" in names, source
    assert {"rules/probability.yaml", "rules/templates/approval.txt",
            "mappings/salesforce.yaml", "mappings/erp.yaml"} <= names
    assert any(n.startswith("pydantic_core/") and n.endswith(".so") for n in names)
    assert any(n.startswith("aws_lambda_powertools/") for n in names)
    assert not any(n.startswith(("tests/", ".venv/", "node_modules/", "bench/", ".git/"))
                   for n in names)
    with zipfile.ZipFile(ARTIFACT) as zf:
        header = zf.read("connector/handlers/__pycache__/webhook.cpython-311.pyc")[:8]
    assert int.from_bytes(header[4:8], "little") == 0b01     # hash-based, unchecked (PEP 552)


def test_the_handlers_import_from_the_zip_alone(template, tmp_path):
    with zipfile.ZipFile(ARTIFACT) as zf:
        zf.extractall(tmp_path)
    code = ("import sys; sys.path[:0] = [sys.argv[1]]; sys.dont_write_bytecode = True\n"
            "import os; os.environ.update(AWS_DEFAULT_REGION='eu-west-1')\n"
            "for m in ('webhook', 'worker', 'poll', 'sweep', 'approvals'):\n"
            "    mod = __import__('connector.handlers.' + m, fromlist=['lambda_handler'])\n"
            "    assert callable(mod.lambda_handler)\n"
            "import pydantic, simple_salesforce, boto3, jinja2\n"
            "assert all(str(getattr(sys.modules[n], '__file__', '')).startswith(sys.argv[1])\n"
            "           for n in ('pydantic', 'boto3', 'aws_lambda_powertools', 'connector'))\n"
            "print('ok')")
    # -S: no site-packages, so nothing comes from this virtualenv
    done = subprocess.run([sys.executable, "-S", "-c", code, str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr[-3000:]
