"""`GET /approvals/<token>` shows the approver a confirmation page; `POST` records the decision.
A replayed, expired or altered token gets a clear page and changes nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from connector.approvals import STATUS, ExpiredToken, InvalidToken, page, read_token

# (approval key, verdict) -> 'recorded' | 'already decided' | 'not pending'
RecordVerdict = Callable[[str, str], str]


def _html(status: int, body: str) -> dict[str, Any]:
    return {"statusCode": status, "body": body,
            "headers": {"Content-Type": "text/html; charset=utf-8",
                        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}}


def approval_route(event: Mapping[str, Any], *, secret: str, record_verdict: RecordVerdict,
                   now: Callable[[], dt.datetime]) -> dict[str, Any]:
    http = (event.get("requestContext") or {}).get("http") or {}
    method = str(http.get("method") or "GET").upper()
    token = str(event.get("rawPath") or "").removeprefix("/approvals/")
    try:
        claim = read_token(secret, token, now())
    except ExpiredToken as exc:
        return _html(410, page("This link has expired", f"{exc}. Nothing was changed; ask for "
                                                        "a new approval request."))
    except InvalidToken:
        return _html(404, page("Not a valid approval link", "The link is incomplete or was "
                                                             "altered. Nothing was changed."))
    verb = "approve" if claim.decision == "approve" else "reject"
    if method == "GET":
        return _html(200, page(f"{verb.capitalize()} this request?",
                               f"Opportunity {claim.record_id}, {claim.action}: press the button "
                               f"to {verb} it. This link works once, until "
                               f"{claim.expires:%Y-%m-%d}.", token, claim.decision))
    if method != "POST":
        return _html(405, page("Not allowed", "Open the link in a browser."))
    outcome = record_verdict(claim.key, claim.decision)
    if outcome == "recorded":
        return _html(200, page(f"{STATUS[claim.decision]}",
                               f"Your decision on opportunity {claim.record_id} is recorded; the "
                               "CRM will show it in a moment."))
    if outcome == "already decided":
        return _html(409, page("Already decided", "A decision on this request was recorded "
                                                  "before. Nothing was changed."))
    return _html(410, page("No longer pending", "This request is no longer waiting for a "
                                                "decision. Nothing was changed."))


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
            return _html(503, page("Try again later", "The connector is not configured."))
        if rules is None:
            return _html(503, page("Try again later", "The rules do not pass 'check'."))

        def record(key: str, verdict: str) -> str:
            recorded = record_verdict(rt.state, rules, key, verdict, rt.now())
            # The worker writes the field and runs the actions.
            rt.enqueue(recorded.added)
            return recorded.outcome

        return approval_route(event, secret=secret.get_secret_value() if secret else "",
                              record_verdict=record, now=rt.now)

    return handle


__all__ = ["RecordVerdict", "approval_route", "lambda_handler"]
