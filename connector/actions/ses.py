"""Email actions through Amazon SES (API v2 `SendEmail`), the cloud's SMTP: the same MIME
message as `SmtpSender` sends (connector.actions.email.build_message), sent raw.

SES replaces the Message-ID header with its own; the outbox's idempotency key, not the header,
is what keeps an email from going twice. Errors follow the connector's policy: throttling and
5xx are retried, a refused message fails its record, and a sender SES does not know, or an
account whose sending is paused, needs an admin.
https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connector.actions.email import build_message, checked_sender
from connector.errors import (
    ConfigurationError,
    FatalError,
    RecordError,
    RetriableError,
    Text,
)

_RETRIABLE = frozenset({"TooManyRequestsException", "LimitExceededException",
                        "ThrottlingException", "Throttling", "ServiceUnavailable",
                        "InternalFailure", "InternalServerError"})
_ADMIN = frozenset({"MailFromDomainNotVerifiedException", "NotFoundException",
                    "AccessDeniedException", "AccessDenied", "UnrecognizedClientException",
                    "InvalidClientTokenId"})
_PAUSED = frozenset({"AccountSuspendedException", "SendingPausedException"})


class SesSender:
    """EMAIL_FROM must be an identity SES has verified (the address or its domain)."""

    def __init__(self, sender: str | None, client: Any = None,
                 configuration_set: str | None = None) -> None:
        if not sender:
            raise ConfigurationError(Text("email actions through SES need EMAIL_FROM, an "
                                          "address or domain SES has verified"))
        if client is None:
            import boto3

            client = boto3.client("sesv2")
        self.sender = checked_sender(sender)
        self.configuration_set = configuration_set
        self._ses = client

    def send(self, rendered: Mapping[str, Any], key: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

        message = build_message(rendered, self.sender, key)
        request: dict[str, Any] = {
            "FromEmailAddress": self.sender,
            "Destination": {"ToAddresses": list(rendered["to"]),
                            "CcAddresses": list(rendered["cc"])},
            "Content": {"Raw": {"Data": message.as_bytes()}},
        }
        if self.configuration_set:
            request["ConfigurationSetName"] = self.configuration_set
        try:
            answer = self._ses.send_email(**request)
        except ClientError as exc:
            raise _translate(exc, self.sender) from None
        except ParamValidationError as exc:  # checked before SES sees it: this message's values
            raise RecordError(Text("Amazon SES cannot take this email: {reason}",
                                   reason=str(exc))) from None
        except BotoCoreError as exc:
            raise RetriableError(Text("cannot reach Amazon SES ({error})",
                                      error=type(exc).__name__)) from None
        return f"email to {', '.join(rendered['to'])} (SES {answer.get('MessageId', '?')})"


def _translate(exc: Any, sender: str) -> Exception:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    text = str(error.get("Message", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code in _RETRIABLE or status >= 500:
        return RetriableError(Text("Amazon SES is busy ({code}); try again later",
                                   code=code or status))
    if code in _PAUSED:
        return FatalError(Text("Amazon SES does not send for this account now ({code})",
                               code=code))
    if code in _ADMIN or "not verified" in text.lower() or "authority" in text.lower():
        return ConfigurationError(Text("Amazon SES refused to send from {sender} ({code}): "
                                       "verify that identity in SES, in this region, and check "
                                       "the function's role", sender=sender, code=code))
    # MessageRejected, BadRequestException: this message, as rendered, will not go.
    return RecordError(Text("Amazon SES refused the email ({code}): {reason}", code=code,
                            reason=text[:200]))
