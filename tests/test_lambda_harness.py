"""The AWS side of the Lambda tests, on moto: the state table, the work queue and its
dead-letter queue as serverless.yml declares them, the Lambda context, and an event source
mapping that turns queue messages into the SQS events Lambda delivers (and deletes what the
handler did not report as failed). The tests at the bottom check the harness itself against the
JSON fixtures, which are shaped as AWS documents its events."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "lambda"
REGION = "eu-west-1"
ACCOUNT = "123456789012"
STATE_TABLE = "crm-automation-test-state"
IDEMPOTENCY_TABLE = "crm-automation-test-idempotency"
ROOT = Path(__file__).parent.parent


def _stack_param(name: str) -> Any:
    """A default of serverless.yml's `params`, so that moto's queues are the stack's."""
    import yaml

    return yaml.safe_load((ROOT / "serverless.yml").read_text())["params"]["default"][name]


MAX_RECEIVE_COUNT = int(_stack_param("maxReceiveCount"))   # tries before the DLQ
SENDER = "connector@example.com"

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_SECURITY_TOKEN": "testing", "AWS_SESSION_TOKEN": "testing",
           "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def set_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)


def moto_state(table: str = "state") -> Any:
    """A DynamoState on a moto table, for tests/test_state_contract.py: moto runs until the
    store is closed."""
    import boto3
    from moto import mock_aws

    from connector.state.dynamodb import DynamoState, create_table

    mock = mock_aws()
    saved = _set_default_env()
    mock.start()
    client = boto3.client("dynamodb", region_name=REGION)
    create_table(client, table)

    class MotoState(DynamoState):
        def close(self) -> None:
            super().close()
            mock.stop()
            _restore_env(saved)

    return MotoState(table, client=client)


def _set_default_env() -> dict[str, str | None]:
    import os

    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    return saved


def _restore_env(saved: dict[str, str | None]) -> None:
    import os

    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@dataclass
class LambdaContext:
    """What Lambda passes as `context` (the attributes Powertools reads)."""

    function_name: str = "crm-automation-test-worker"
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    remaining_ms: int = 120_000

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@dataclass
class Aws:
    """The moto resources of one test: clients, table names, queue URLs."""

    dynamodb: Any
    sqs: Any
    ses: Any
    ssm: Any
    queue_url: str
    dlq_url: str
    queue_arn: str

    def messages(self, url: str | None = None) -> list[dict[str, Any]]:
        """Every message waiting in a queue, left there (visible again at once)."""
        url = url or self.queue_url
        seen: dict[str, dict[str, Any]] = {}
        for _ in range(20):
            got = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                           VisibilityTimeout=0, AttributeNames=["All"],
                                           MessageAttributeNames=["All"]).get("Messages", [])
            if not got:
                break
            new = [m for m in got if m["MessageId"] not in seen]
            seen.update((m["MessageId"], m) for m in got)
            if not new:
                break
        return list(seen.values())

    def bodies(self, url: str | None = None) -> list[dict[str, Any]]:
        return [json.loads(m["Body"]) for m in self.messages(url)]

    def purge(self) -> None:
        for m in self.messages():
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])

    def sqs_event(self, max_messages: int = 10) -> tuple[dict[str, Any], dict[str, str]]:
        """Receive a batch as Lambda's event source mapping does: the SQS event, and each
        message's receipt handle by message id."""
        got = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=max_messages,
                                       VisibilityTimeout=0, AttributeNames=["All"],
                                       MessageAttributeNames=["All"]).get("Messages", [])
        template = fixture("sqs_event.json")["Records"][0]
        records = []
        for m in got:
            record = copy.deepcopy(template)
            record.update(messageId=m["MessageId"], receiptHandle=m["ReceiptHandle"],
                          body=m["Body"], md5OfBody=m["MD5OfBody"],
                          eventSourceARN=self.queue_arn, awsRegion=REGION)
            attributes = m.get("Attributes", {})
            record["attributes"] = {k: attributes[k] for k in (
                "ApproximateReceiveCount", "SentTimestamp", "SenderId",
                "ApproximateFirstReceiveTimestamp") if k in attributes}
            records.append(record)
        return {"Records": records}, {m["MessageId"]: m["ReceiptHandle"] for m in got}

    def deliver(self, handler: Any, rounds: int = 1) -> list[dict[str, Any]]:
        """Run the event source mapping `rounds` times: receive, invoke, delete the messages
        not reported in batchItemFailures. Returns each invocation's answer."""
        answers = []
        for _ in range(rounds):
            event, handles = self.sqs_event()
            if not event["Records"]:
                break
            try:
                answer = handler(event, LambdaContext())
            except Exception:  # the whole batch failed: every message comes back
                answer = {"batchItemFailures": [{"itemIdentifier": i} for i in handles]}
            answers.append(answer)
            failed = {f["itemIdentifier"] for f in answer.get("batchItemFailures", [])}
            for message_id, handle in handles.items():
                if message_id not in failed:
                    self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=handle)
        return answers


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    """moto with the stack's table, queues and a verified SES sender; the environment the
    functions get from serverless.yml."""
    import os

    import boto3
    from moto import mock_aws

    from connector.handlers import runtime
    from connector.state.dynamodb import create_table

    set_aws_env(monkeypatch)
    saved = dict(os.environ)   # the secrets read from SSM land in os.environ
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        create_table(dynamodb, STATE_TABLE)
        dynamodb.create_table(
            TableName=IDEMPOTENCY_TABLE, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
        sqs = boto3.client("sqs", region_name=REGION)
        dlq_url = sqs.create_queue(QueueName="crm-automation-test-work-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        queue_url = sqs.create_queue(QueueName="crm-automation-test-work", Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                         "maxReceiveCount": str(MAX_RECEIVE_COUNT)})})[
            "QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        ses = boto3.client("sesv2", region_name=REGION)
        ses.create_email_identity(EmailIdentity=SENDER)
        ssm = boto3.client("ssm", region_name=REGION)
        for name, value in (("STATE_URL", f"dynamodb://{STATE_TABLE}"),
                            ("WORK_QUEUE_URL", queue_url),
                            ("IDEMPOTENCY_TABLE", IDEMPOTENCY_TABLE),
                            ("POWERTOOLS_SERVICE_NAME", "crm-automation"),
                            ("AWS_LAMBDA_FUNCTION_NAME", "crm-automation-test-worker"),
                            ("EMAIL_FROM", SENDER)):
            monkeypatch.setenv(name, value)
        runtime.reset()
        try:
            yield Aws(dynamodb, sqs, ses, ssm, queue_url, dlq_url, queue_arn)
        finally:
            runtime.reset()
            os.environ.clear()
            os.environ.update(saved)


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    """Powertools reconfigures the `connector` logger; give the other tests theirs back."""
    import logging

    logger = logging.getLogger("connector")
    saved = (logger.handlers[:], logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate, logger.level = saved


ORG_ID = "00D5g00000LqXyZEAV"
SECRET = "whsec-test-4f1c2b"        # the token in apigw_v2_salesforce_outbound.json
SECRETS_PATH = "/crm-automation/test/sync/"
HOOK = "https://hooks.example.com/marketing/T0KEN"


@dataclass
class World:
    """moto, the fake Salesforce org, and the functions' runtime on the org's clock."""

    aws: Aws
    org: Any
    rsps: Any
    monkeypatch: pytest.MonkeyPatch

    def runtime(self) -> Any:
        from connector.handlers import runtime

        return runtime.current()

    def new_container(self) -> None:
        """A cold start: new clients, settings and app (the state is in DynamoDB)."""
        from connector.handlers import runtime

        runtime.reset(runtime.Runtime(now=self.org.clock))

    def webhook(self, event: dict[str, Any]) -> dict[str, Any]:
        from connector.handlers.webhook import lambda_handler

        answer: dict[str, Any] = lambda_handler(event, LambdaContext(
            function_name="crm-automation-test-webhook"))
        return answer

    def work(self, rounds: int = 20) -> list[dict[str, Any]]:
        """Run the worker until the queue is empty."""
        from connector.handlers.worker import lambda_handler

        return self.aws.deliver(lambda_handler, rounds)

    def items(self) -> list[Any]:
        return list(self.runtime().state.items())


@pytest.fixture
def world(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """Secrets in SSM under SECRETS_PATH, plain settings in the environment, and a fake org
    with the two opportunities of tests/test_serve.py."""
    import responses

    from tests.fake_salesforce import INSTANCE, Clock, FakeOrg

    for name, value in (("SALESFORCE_ACCESS_TOKEN", "00Dxx!session"),
                        ("WEBHOOK_SECRET", SECRET), ("MARKETING_WEBHOOK_URL", HOOK)):
        aws.ssm.put_parameter(Name=f"{SECRETS_PATH}{name}", Value=value, Type="SecureString")
    for name, value in (("SALESFORCE_INSTANCE_URL", INSTANCE), ("SALESFORCE_ORG_ID", ORG_ID),
                        ("SECRETS_PATH", SECRETS_PATH)):
        monkeypatch.setenv(name, value)
    for name in ("SMTP_URL", "WEBHOOK_SECRET", "SALESFORCE_ACCESS_TOKEN", "ERP_URL",
                 "MARKETING_WEBHOOK_URL", "EMAIL_TRANSPORT"):
        monkeypatch.delenv(name, raising=False)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru("http://127.0.0.1")
        rsps.add(responses.POST, HOOK, json={})
        org = FakeOrg(rsps, Clock())
        org.add("0065g00000QzW1xAAF", StageName="Negotiation/Review", Proposal_Type__c="Firm",
                Relationship_Level__c="Trusted", Amount=120000, Probability=50)
        org.add("0065g00000QzW2KAAV", StageName="Prospecting", Probability=10)
        world = World(aws, org, rsps, monkeypatch)
        world.new_container()
        yield world


def signed_event(name: str, body: bytes, secret: str = SECRET,
                 at: int | None = None) -> dict[str, Any]:
    """An API Gateway fixture with this body, signed as Apex would sign it."""
    import hashlib
    import hmac
    import time

    event = fixture(name)
    ts = str(at if at is not None else int(time.time()))
    event["body"] = body.decode()
    event["headers"]["content-length"] = str(len(body))
    event["headers"]["x-connector-timestamp"] = ts
    event["headers"]["x-connector-signature"] = "v1=" + hmac.new(
        secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return event


def sent_emails() -> list[dict[str, Any]]:
    """What moto's SES accepted (raw MIME messages included)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    backend = ses_backends[DEFAULT_ACCOUNT_ID][REGION]
    return [{"source": m.source, "destinations": m.destinations, "raw": m.raw_data}
            for m in backend.sent_messages if hasattr(m, "raw_data")]


# --- the fixtures are what AWS sends ----------------------------------------------------------


def test_the_api_gateway_fixtures_are_http_api_payload_2_0():
    for name in ("apigw_v2_salesforce_outbound.json", "apigw_v2_signed_json.json",
                 "apigw_v2_health.json", "apigw_v2_hubspot.json"):
        event = fixture(name)
        assert event["version"] == "2.0"
        method, path = event["routeKey"].split(" ")
        assert event["rawPath"] == path == event["requestContext"]["http"]["path"]
        assert event["requestContext"]["http"]["method"] == method
        assert event["requestContext"]["routeKey"] == event["routeKey"]
        assert {"accountId", "apiId", "domainName", "requestId", "stage", "time",
                "timeEpoch"} <= set(event["requestContext"])
        assert all(k == k.lower() for k in event["headers"])   # HTTP APIs lower-case them
        assert isinstance(event["isBase64Encoded"], bool)


def test_the_queue_and_schedule_fixtures_are_shaped_as_aws_sends_them():
    record = fixture("sqs_event.json")["Records"][0]
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"].startswith(
        "arn:aws:sqs:")
    assert {"messageId", "receiptHandle", "body", "attributes", "messageAttributes",
            "md5OfBody", "awsRegion"} <= set(record)
    scheduled = fixture("eventbridge_scheduled_event.json")
    assert scheduled["detail-type"] == "Scheduled Event" and scheduled["source"] == "aws.events"
    cdc = fixture("eventbridge_cdc_opportunity.json")
    assert cdc["source"].startswith("aws.partner/salesforce.com/")
    assert "ChangeEventHeader" in cdc["detail"]["payload"]
    wrapped = fixture("sqs_event_eventbridge_cdc.json")["Records"][0]
    assert json.loads(wrapped["body"])["detail-type"] == "OpportunityChangeEvent"


def test_the_harness_delivers_and_deletes_like_an_event_source_mapping(aws):
    for n in range(3):
        aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=json.dumps({"n": n}))

    def handler(event, context):
        assert isinstance(context.get_remaining_time_in_millis(), int)
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]}
                                      for r in event["Records"]
                                      if json.loads(r["body"])["n"] == 1]}

    [answer] = aws.deliver(handler)
    assert len(answer["batchItemFailures"]) == 1
    assert aws.bodies() == [{"n": 1}]
