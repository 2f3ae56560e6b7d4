"""`serve`: the webhook routes on a local HTTP server. Each request becomes the API Gateway v2
event the Lambda would get and goes through the very same handler; a background worker then
drains the outbox (reads the records named, writes back, runs the actions).

Logs show the path without its query string: an Outbound Message's URL carries the webhook
token there.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from connector.crm.events import MAX_BODY_BYTES

log = logging.getLogger(__name__)

Route = Callable[[dict[str, Any]], dict[str, Any]]


def to_event(method: str, target: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """An HTTP request as API Gateway's HTTP API (payload 2.0) hands it to a Lambda."""
    parts = urlsplit(target)
    return {
        "version": "2.0",
        "routeKey": f"{method} {parts.path}",
        "rawPath": parts.path,
        "rawQueryString": parts.query,
        "headers": {k.lower(): v for k, v in headers.items()},
        "queryStringParameters": dict(parse_qsl(parts.query)) or None,
        "requestContext": {"http": {"method": method, "path": parts.path,
                                    "sourceIp": headers.get("x-forwarded-for", "127.0.0.1")}},
        "body": base64.b64encode(body).decode("ascii"),
        "isBase64Encoded": True,
    }


def make_server(host: str, port: int, route: Route) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        server_version = "crm-automation"
        sys_version = ""

        def _handle(self) -> None:
            length = self.headers.get("Content-Length")
            try:
                size = int(length) if length else 0
            except ValueError:
                size = -1
            if size < 0 or size > MAX_BODY_BYTES:
                self._send(413 if size > 0 else 400, b'{"error": "body too large or unreadable"}',
                           "application/json")
                return
            body = self.rfile.read(size) if size else b""
            event = to_event(self.command, self.path, dict(self.headers.items()), body)
            try:
                answer = route(event)
            except Exception:  # the route answers every case; this is the last guard
                log.exception("webhook handler failed")
                answer = {"statusCode": 503, "headers": {"Content-Type": "application/json"},
                          "body": '{"error": "try again later"}'}
            text = answer.get("body") or ""
            data = base64.b64decode(text) if answer.get("isBase64Encoded") else text.encode()
            self._send(int(answer["statusCode"]), data,
                       (answer.get("headers") or {}).get("Content-Type", "application/json"))

        def _send(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s %s -> %s", self.command, urlsplit(self.path).path,
                     args[1] if len(args) > 1 else "")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


class Worker(threading.Thread):
    """Drains the outbox every `interval` seconds, or at once when woken after a webhook."""

    def __init__(self, drain: Callable[[], object], interval: float = 5.0) -> None:
        super().__init__(name="outbox-worker", daemon=True)
        self.drain = drain
        self.interval = interval
        self.wake = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.drain()
            except Exception:  # keep serving; the item stays in the outbox for the next turn
                log.exception("outbox drain failed")
            self.wake.wait(self.interval)
            self.wake.clear()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
