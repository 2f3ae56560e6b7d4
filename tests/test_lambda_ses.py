"""Email through Amazon SES (moto): the raw MIME message SMTP would send, from a verified
sender; SES's refusals become the connector's policy (an unverified sender needs an admin, a
throttled call is retried). The cloud picks SES when EMAIL_TRANSPORT says so, or when SMTP_URL is
unset in Lambda."""

from __future__ import annotations

import email

import pytest

from connector.errors import ConfigurationError, FatalError, RecordError, RetriableError
from tests import test_lambda_harness as harness
from tests.test_lambda_harness import REGION, SENDER, sent_emails

aws, keep_logging = harness.aws, harness.keep_logging  # fixtures

RENDERED = {"to": ["ann@example.com"], "cc": ["director@example.com"],
            "subject": "Approval needed: Zürich fleet (120000)", "text": "Please approve.",
            "html": "<html><body><p>Please approve.</p></body></html>"}


def sender(aws, address=SENDER):
    from connector.actions.ses import SesSender

    return SesSender(address, client=aws.ses)


def test_the_message_goes_raw_with_both_parts_and_the_idempotency_message_id(aws):
    from connector.actions import opaque

    result = sender(aws).send(RENDERED, "0065g00000QzW1xAAF:notify-director:1")
    assert result.startswith("email to ann@example.com (SES ")
    [sent] = sent_emails()
    assert sent["source"] == SENDER
    message = email.message_from_string(sent["raw"])
    assert message["To"] == "ann@example.com" and message["Cc"] == "director@example.com"
    assert "Zürich" in str(email.header.make_header(email.header.decode_header(
        message["Subject"])))
    assert opaque("0065g00000QzW1xAAF:notify-director:1") in message["Message-ID"]
    assert [p.get_content_type() for p in message.walk()][1:] == ["text/plain", "text/html"]


def test_an_unverified_sender_needs_an_admin(aws):
    with pytest.raises(ConfigurationError, match="verify"):
        sender(aws, "someone@elsewhere.example").send(RENDERED, "k")
    assert sent_emails() == []


def test_no_sender_is_a_configuration_error(aws):
    with pytest.raises(ConfigurationError, match="EMAIL_FROM"):
        sender(aws, "")


@pytest.mark.parametrize("code, status, error", [
    ("TooManyRequestsException", 429, RetriableError),
    ("InternalFailure", 500, RetriableError),
    ("MessageRejected", 400, RecordError),
    ("SendingPausedException", 400, FatalError),
])
def test_ses_errors_follow_the_policy(aws, code, status, error):
    from botocore.stub import Stubber

    stub = Stubber(aws.ses)
    stub.add_client_error("send_email", service_error_code=code, service_message="no",
                          http_status_code=status)
    with stub, pytest.raises(error):
        sender(aws).send(RENDERED, "k")


def test_the_cloud_runtime_picks_ses_unless_told_otherwise(aws, monkeypatch):
    from connector.handlers.runtime import Runtime

    monkeypatch.delenv("SMTP_URL", raising=False)
    monkeypatch.delenv("EMAIL_TRANSPORT", raising=False)
    assert set(Runtime().senders()) == {"email"}               # in Lambda, no SMTP_URL
    monkeypatch.setenv("SMTP_URL", "smtp://mail.example.com:25")
    assert Runtime().senders() == {}                           # SMTP_URL set: SMTP
    monkeypatch.setenv("EMAIL_TRANSPORT", "ses")
    send = Runtime().senders()["email"]
    send(RENDERED, "k2")
    assert len(sent_emails()) == 1
    monkeypatch.setenv("EMAIL_TRANSPORT", "pigeon")
    with pytest.raises(ConfigurationError, match="EMAIL_TRANSPORT"):
        Runtime().senders()
    assert aws.ses.meta.region_name == REGION
