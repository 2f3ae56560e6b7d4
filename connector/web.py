"""`serve`: the webhook routes on a local HTTP server. Each request becomes the API Gateway v2
event the Lambda would get and goes through the very same handler; a background worker then
drains the outbox (reads the records named, writes back, runs the actions).

Logs show the path without its query string: an Outbound Message's URL carries the webhook
token there.

A slow or silent client cannot hold the server: each socket operation times out, the request
(headers and body) must arrive whole within READ_DEADLINE or the connection is closed, a body
shorter than its Content-Length is a 400 (never a request), and at most MAX_REQUESTS requests
are served at once; the next ones get 503 at once.
"""

from __future__ import annotations

import base64
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from connector.crm.events import MAX_BODY_BYTES

log = logging.getLogger(__name__)

Route = Callable[[dict[str, Any]], dict[str, Any]]

TIMEOUT = 10.0        # seconds a client may stay silent, on any read or write
READ_DEADLINE = 30.0  # seconds to send the whole request, headers and body
MAX_REQUESTS = 32     # requests served at once (threads); more are answered 503
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Retry-After: 1\r\nContent-Length: 28\r\nConnection: close\r\n\r\n"
         b'{"error": "try again later"}')


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


class _Server(ThreadingHTTPServer):
    """A thread per request, at most `max_requests` at once."""

    daemon_threads = True
    request_queue_size = 128  # connections the kernel holds until accepted

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 max_requests: int, read_deadline: float) -> None:
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(max_requests)
        self.read_deadline = read_deadline
        # connection -> when it must have sent its whole request; one thread closes the late
        # ones (a client sending a header byte every few seconds never trips a socket timeout)
        self.reading: dict[socket.socket, float] = {}
        self.lock = threading.Lock()
        self.closed = threading.Event()
        threading.Thread(target=self._close_late, name="serve-deadlines", daemon=True).start()

    def _close_late(self) -> None:
        while not self.closed.wait(0.25):
            now = time.monotonic()
            with self.lock:
                late = [conn for conn, deadline in self.reading.items() if deadline < now]
            for conn in late:
                try:
                    conn.shutdown(socket.SHUT_RDWR)  # its handler's read ends, then its thread
                except OSError:
                    pass

    def request_read(self, conn: socket.socket) -> bool:
        """The request is in: the route may take its time. False when it came after its
        deadline: its connection is closed, and what was read of it is not a request."""
        with self.lock:
            deadline = self.reading.pop(conn, None)
        return deadline is not None and time.monotonic() <= deadline

    def server_close(self) -> None:
        self.closed.set()
        super().server_close()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: nothing else will free the slot
            self.slots.release()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that went away mid-answer: one line, not a traceback
        log.info("connection dropped: %s", sys.exc_info()[1])

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.reading[request] = time.monotonic() + self.read_deadline
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.request_read(request)
            self.slots.release()


def make_server(host: str, port: int, route: Route, *, timeout: float = TIMEOUT,
                read_deadline: float = READ_DEADLINE,
                max_requests: int = MAX_REQUESTS) -> ThreadingHTTPServer:
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
            try:
                body = self.rfile.read(size) if size else b""
            except TimeoutError:
                self._send(408, b'{"error": "the body came too slowly"}', "application/json")
                return
            assert isinstance(self.server, _Server)
            if not self.server.request_read(self.connection):
                self.close_connection = True
                return
            if len(body) < size:
                self._send(400, b'{"error": "the body is shorter than its Content-Length"}',
                           "application/json")
                return
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
            self.close_connection = True
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        def log_message(self, format: str, *args: Any) -> None:
            path = urlsplit(self.path).path
            if path.startswith("/approvals/"):  # the signed token decides: whoever reads it
                path = "/approvals/(token)"
            log.info("%s %s -> %s", self.command, path, args[1] if len(args) > 1 else "")

    Handler.timeout = timeout
    return _Server((host, port), Handler, max_requests, read_deadline)


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
