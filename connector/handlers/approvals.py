"""`GET /approvals/<token>` shows the approver a confirmation page; `POST` records the decision.
A replayed, expired or altered token gets a clear page and changes nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from connector.approvals import ExpiredToken, InvalidToken, page, page_language, read_token
from connector.errors import Text
from connector.i18n import language_of, say, translate

# (approval key, verdict) -> 'recorded' | 'already decided' | 'not pending'
RecordVerdict = Callable[[str, str], str]


def _html(status: int, body: str) -> dict[str, Any]:
    return {"statusCode": status, "body": body,
            "headers": {"Content-Type": "text/html; charset=utf-8",
                        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}}


def approval_route(event: Mapping[str, Any], *, secret: str, record_verdict: RecordVerdict,
                   now: Callable[[], dt.datetime], language: str = "en") -> dict[str, Any]:
    """The approver's page, in the language their browser asks for, else in `language` (the
    mapping's)."""
    http = (event.get("requestContext") or {}).get("http") or {}
    method = str(http.get("method") or "GET").upper()
    token = str(event.get("rawPath") or "").removeprefix("/approvals/")
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    code = page_language(headers, language)

    def show(status: int, title: str, message: str, **form: Any) -> dict[str, Any]:
        return _html(status, page(title, message, language=code, **form))

    try:
        claim = read_token(secret, token, now())
    except ExpiredToken as exc:
        return show(410, translate(code, "This link has expired"), translate(
            code, "The link expired on {when} UTC. Nothing was changed; ask for a new approval "
            "request.").format(when=f"{exc.expired:%Y-%m-%d %H:%M}"))
    except InvalidToken:
        return show(404, translate(code, "Not a valid approval link"), translate(
            code, "The link is incomplete or was altered. Nothing was changed."))
    approving = claim.decision == "approve"
    if method == "GET":
        title = (translate(code, "Approve this request?") if approving
                 else translate(code, "Reject this request?"))
        message = (translate(code, "Opportunity {record}, {action}: press the button to approve "
                             "it. This link works once, until {until}.") if approving
                   else translate(code, "Opportunity {record}, {action}: press the button to "
                                  "reject it. This link works once, until {until}.")).format(
            record=claim.record_id, action=claim.action, until=f"{claim.expires:%Y-%m-%d}")
        return show(200, title, message, token=token, decision=claim.decision)
    if method != "POST":
        return show(405, translate(code, "Not allowed"),
                    translate(code, "Open the link in a browser."))
    outcome = record_verdict(claim.key, claim.decision)
    if outcome == "recorded":
        return show(200, translate(code, "Approved") if approving
                    else translate(code, "Rejected"),
                    translate(code, "Your decision on opportunity {record} is recorded; the CRM "
                              "will show it in a moment.").format(record=claim.record_id))
    if outcome == "already decided":
        return show(409, translate(code, "Already decided"), translate(
            code, "A decision on this request was recorded before. Nothing was changed."))
    return show(410, translate(code, "No longer pending"), translate(
        code, "This request is no longer waiting for a decision. Nothing was changed."))


def _unavailable(event: Mapping[str, Any], why: Text) -> dict[str, Any]:
    """503, in the browser's language (no mapping was read to say otherwise)."""
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    code = page_language(headers, "en")
    return _html(503, page(translate(code, "Try again later"), say(why, code), language=code))


# --- the Lambda function ------------------------------------------------------------------------

def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """API Gateway HTTP API (payload 2.0): GET and POST /approvals/{token}."""
    return _lambda()(event, context)


@cache
def _lambda() -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    from aws_lambda_powertools.logging import correlation_paths

    from connector.errors import ConnectorError
    from connector.files import load
    from connector.handlers import runtime
    from connector.outbox import record_verdict

    logger = runtime.logger()

    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP,
                                  clear_state=True)
    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        rt = runtime.current()
        try:
            secret = rt.settings.approval_secret
            rules = load(rt.rules_dir, rt.mappings_dir, crm=rt.settings.crm).rules
        except ConnectorError as exc:
            logger.error("cannot load the settings", extra={"error": type(exc).__name__})
            return _unavailable(event, Text("The connector is not configured."))
        if rules is None:
            return _unavailable(event, Text("The rules do not pass 'check'."))

        def record(key: str, verdict: str) -> str:
            recorded = record_verdict(rt.state, rules, key, verdict, rt.now())
            # The worker writes the field and runs the actions.
            rt.enqueue(recorded.added)
            return recorded.outcome

        return approval_route(event, secret=secret.get_secret_value() if secret else "",
                              record_verdict=record, now=rt.now,
                              language=language_of(rules.mapping.locale))

    return handle


__all__ = ["RecordVerdict", "approval_route", "lambda_handler"]
