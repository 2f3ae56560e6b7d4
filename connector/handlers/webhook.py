"""The webhook routes: verify, store, acknowledge. Nothing else happens inside the request:
the records named are read and processed afterwards, from the outbox (locally) or a queue.

Every answer is a 2xx (stored), 401 (not from whom it claims), 400 (malformed), 404/405 (no
such route), or 503 when the state store cannot take the notice (the sender retries later).

`lambda_handler` is the webhook function behind API Gateway's HTTP API: the notice goes into the
DynamoDB state and a message to the work queue, and the worker function does the CRM and ERP
work. Importing this module stays light (no boto3, no CRM adapter, no Powertools: `serve` uses
`route` without them); the function builds those on its first request.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from connector.crm import events
from connector.crm.hubspot import webhooks as hubspot
from connector.crm.salesforce import webhooks as salesforce
from connector.errors import ConnectorError

log = logging.getLogger(__name__)

Response = dict[str, Any]
Store = Callable[[str, list[str]], bool]  # (dedupe key, record ids) -> stored (False: duplicate)


def _response(status: int, body: Any, content_type: str = "application/json") -> Response:
    text = body if isinstance(body, str) else (
        body.decode() if isinstance(body, bytes) else json.dumps(body))
    return {"statusCode": status, "headers": {"Content-Type": content_type}, "body": text}


def _body(event: Mapping[str, Any]) -> bytes:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        return base64.b64decode(body)
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def _headers(event: Mapping[str, Any]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}


def route(event: Mapping[str, Any], *, settings: Any, store: Store,
          version: str | Callable[[], str], now: Callable[[], float] = time.time) -> Response:
    """Answer one API Gateway v2 request. `version` may be a function: /health alone asks."""
    http = (event.get("requestContext") or {}).get("http") or {}
    method = str(http.get("method") or "GET").upper()
    path = str(event.get("rawPath") or http.get("path") or "/")
    try:
        if path == "/health":
            if method != "GET":
                return _response(405, {"error": "use GET"})
            return _response(200, {"status": "ok",
                                   "rules": version() if callable(version) else version})
        if path == "/webhooks/salesforce":
            if method != "POST":
                return _response(405, {"error": "use POST"})
            return _salesforce(event, settings, store, now())
        if path == "/webhooks/hubspot":
            if method != "POST":
                return _response(405, {"error": "use POST"})
            return _hubspot(event, settings, store, now())
        return _response(404, {"error": "no such route"})
    except events.WebhookRejected as exc:
        log.info("webhook refused on %s: %s %s", path, exc.status, exc.reason)
        return _response(exc.status, {"error": exc.reason})
    except ConnectorError as exc:
        # The notice could not be stored: say so, and the sender will deliver it again.
        log.error("webhook not stored on %s: %s", path, type(exc).__name__)
        return _response(503, {"error": "cannot store the notification now; retry later"})


def _salesforce(event: Mapping[str, Any], settings: Any, store: Store, now: float) -> Response:
    body = _body(event)
    headers = _headers(event)
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
    if "xml" in headers.get("content-type", "") or body.lstrip()[:1] == b"<":
        token = (event.get("queryStringParameters") or {}).get("token")
        notices, ack = salesforce.parse_outbound_message(
            body, settings.salesforce_org_id or "", events.token_matches(secret, token))
        for notice in notices:
            store(notice.dedupe_key, list(notice.record_ids))
        return _response(200, ack, "text/xml; charset=utf-8")
    salesforce.verify_signed_json(secret, headers, body, now)
    stored = 0
    timestamp = headers.get("x-connector-timestamp")
    for notice in salesforce.parse_signed_json(body, timestamp=timestamp):
        stored += store(notice.dedupe_key, list(notice.record_ids))
    return _response(202, {"stored": stored})


def _hubspot(event: Mapping[str, Any], settings: Any, store: Store, now: float) -> Response:
    body = _body(event)
    headers = _headers(event)
    secret = (settings.hubspot_client_secret.get_secret_value()
              if settings.hubspot_client_secret else "")
    host = headers.get("host", "")
    query = event.get("rawQueryString") or ""
    uri = f"https://{host}{event.get('rawPath', '')}" + (f"?{query}" if query else "")
    hubspot.verify_hubspot_v3(secret, "POST", uri, body, headers, now)
    stored = 0
    for notice in hubspot.parse_hubspot_events(body, getattr(settings, "hubspot_app_id", None)):
        stored += store(notice.dedupe_key, list(notice.record_ids))
    return _response(204 if not stored else 202, {"stored": stored})


# --- the Lambda function ------------------------------------------------------------------------


def lambda_handler(event: dict[str, Any], context: Any) -> Response:
    """API Gateway HTTP API (payload 2.0) -> verify, store, queue, acknowledge."""
    return _lambda()(event, context)


@cache
def _lambda() -> Callable[[dict[str, Any], Any], Response]:
    from aws_lambda_powertools.logging import correlation_paths

    from connector.handlers import runtime

    logger = runtime.logger()

    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP,
                                  clear_state=True)
    def handle(event: dict[str, Any], context: Any) -> Response:
        rt = runtime.current()
        http = (event.get("requestContext") or {}).get("http") or {}
        if "/health" in (event.get("rawPath"), http.get("path")):
            # Neither the secrets nor the state: the rule set's version only.
            return route(event, settings=None, store=_no_store, version=lambda: rt.version)
        try:
            settings = rt.settings
            store = rt.webhook_store()
        except ConnectorError as exc:
            logger.error("cannot load the settings", extra={"error": type(exc).__name__})
            return _response(503, {"error": "not configured; retry later"})
        answer = route(event, settings=settings, store=store, version=lambda: rt.version)
        if 200 <= answer["statusCode"] < 300 and store.pending:
            try:
                sent = store.flush()
            except ConnectorError as exc:
                # Stored but not queued: the sender delivers again, and then it is queued.
                logger.error("notice stored, not queued", extra={"error": str(exc)})
                return _response(503, {"error": "cannot queue the notification now; retry "
                                                "later"})
            logger.info("notices queued", extra={"queued": sent})
        return answer

    return handle


def _no_store(key: str, ids: list[str]) -> bool:
    raise ConnectorError("a /health request stores nothing")


__all__ = ["Response", "Store", "lambda_handler", "route"]
