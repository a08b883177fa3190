"""`serve`: the B2 webhook and the job callback over HTTP, for hosts without Lambda.

POST /webhook   B2 event notifications, `x-bz-event-notification-signature: v1=<hex HMAC-SHA256>`
POST /callback  job completion, `X-Signature: v1=<hex HMAC-SHA256>` over the manifest body, with
                that job's own key (handlers/callback.py)
Unsigned or wrongly signed requests get 401 and change nothing. Verified events go to a queue that
one worker thread drains, so a slow launch never holds a sender's connection open.

Anyone can connect, so nothing a sender does costs more than it is allowed: a body must declare its
Content-Length (digits, at most MAX_BODY_BYTES) or it is refused with 400 before a byte of it is
read; every socket read times out (idle senders are dropped) and a whole connection has a deadline
(senders trickling a byte at a time are dropped too); beyond MAX_CONNECTIONS at once, new ones get a
503 at once, from the accepting thread, without a thread of their own.
"""

from __future__ import annotations

import http.server
import json
import logging
import queue
import re
import socket
import threading
import time
from collections.abc import Callable

from handlers import callback
from handlers.deps import Deps
from handlers.events import load_payload, parse_events, route, without_stale
from vastdrop import signing
from vastdrop.errors import PermanentError

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20  # B2 deliveries are a few KB; a manifest is at most 1 MiB (manifest.py)
MAX_CONNECTIONS = 64  # connections handled at once; each holds a thread and at most one body
READ_TIMEOUT_S = 10.0  # one socket read; an idle sender is dropped after this
CONNECTION_DEADLINE_S = 30.0  # a whole connection: B2 itself gives up after a few seconds
_DIGITS = re.compile(r"[0-9]{1,16}")
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
         b"Connection: close\r\nContent-Length: 18\r\n\r\n{\"error\": \"busy\"}\n")


class _BoundedServer(http.server.ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` of them, each with a deadline that one
    watchdog thread enforces (shutting a socket down ends any read or write in progress on it)."""

    daemon_threads = True
    request_queue_size = 128  # the kernel's backlog while the accept loop hands out or refuses

    def __init__(self, address: tuple[str, int], handler: type, max_connections: int, deadline_s: float) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        self._deadline_s = deadline_s
        self._open: dict[socket.socket, float] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        super().__init__(address, handler)
        threading.Thread(target=self._watch, daemon=True).start()

    def process_request(self, request: socket.socket, client_address: object) -> None:
        if not self._slots.acquire(blocking=False):
            _refuse_busy(request)
            self.shutdown_request(request)
            return
        with self._lock:
            self._open[request] = time.monotonic() + self._deadline_s
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: the slot is ours to give back
            self._done(request)
            raise

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done(request)

    def _done(self, request: socket.socket) -> None:
        with self._lock:
            self._open.pop(request, None)
        self._slots.release()

    def _watch(self) -> None:
        while not self._closed.wait(min(1.0, self._deadline_s / 4)):
            now = time.monotonic()
            with self._lock:
                expired = [r for r, deadline in self._open.items() if deadline <= now]
            for request in expired:
                _shut(request)

    def server_close(self) -> None:
        self._closed.set()
        super().server_close()


def _refuse_busy(request: socket.socket) -> None:
    try:  # one small non-blocking send: the accepting thread never waits on a sender
        request.setblocking(False)
        request.send(_BUSY)
    except OSError:
        pass


def _shut(request: socket.socket) -> None:
    try:
        request.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class EventServer:
    def __init__(self, deps: Deps, host: str, port: int, webhook_secret: str | None,
                 callback_secret: str | None, *, max_connections: int = MAX_CONNECTIONS,
                 read_timeout_s: float = READ_TIMEOUT_S, deadline_s: float = CONNECTION_DEADLINE_S) -> None:
        self.deps = deps
        self.work: queue.Queue[Callable[[], object] | None] = queue.Queue()
        self.accepted = 0
        handler = _make_handler(self, webhook_secret, callback_secret, read_timeout_s)
        self.httpd = _BoundedServer((host, port), handler, max_connections, deadline_s)
        self.port = self.httpd.server_address[1]
        self._threads = [threading.Thread(target=self.httpd.serve_forever, daemon=True),
                         threading.Thread(target=self._drain, daemon=True)]

    def start(self) -> EventServer:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.work.put(None)

    def _drain(self) -> None:
        while (task := self.work.get()) is not None:
            try:
                task()
            except Exception:  # one bad event must not stop the worker
                logger.exception("event handling failed")
            finally:
                self.work.task_done()

    def submit_events(self, body: bytes) -> tuple[int, int]:
        """Queue the delivery's fresh events; (queued, refused as too old). Raises PermanentError."""
        cfg = self.deps.config
        payload, stale = without_stale(load_payload(body), self.deps.clock(), cfg.event_max_age_s)
        events = parse_events(payload)
        for event in events:
            self.work.put(lambda e=event: route(e, self.deps))
        self.accepted += len(events)
        return len(events), stale


def _body_length(headers) -> int | None:
    """The declared Content-Length if it is one plain number within the cap, else None."""
    values = headers.get_all("Content-Length") or []
    if len(values) != 1 or headers.get("Transfer-Encoding") or not _DIGITS.fullmatch(values[0].strip()):
        return None
    length = int(values[0])
    return length if length <= MAX_BODY_BYTES else None


def _make_handler(server: EventServer, webhook_secret: str | None, callback_secret: str | None,
                  read_timeout_s: float):
    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = read_timeout_s  # socketserver sets it on the connection: each read waits this long

        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            self.close_connection = True  # one request per connection: the deadline is per request
            length = _body_length(self.headers)
            if length is None:  # refused before reading: an unread body costs us nothing
                return self._reply(400, {"error": f"Content-Length required: one number, at most {MAX_BODY_BYTES}"})
            try:
                body = self.rfile.read(length)
            except OSError:  # timed out, or the deadline shut the socket: nobody to answer
                return None
            if len(body) < length:
                return self._reply(400, {"error": "body shorter than its Content-Length"})
            try:
                return self._route(body)
            except Exception:  # never a traceback for the sender; the log has it
                logger.exception("request failed", extra={"path": self.path.split("?")[0]})
                return self._reply(500, {"error": "internal error"})

        def _route(self, body: bytes) -> None:
            path = self.path.split("?")[0]
            if path == "/webhook":
                if not signing.verify(webhook_secret or "", body, self.headers.get(signing.B2_SIGNATURE_HEADER)):
                    return self._reply(401, {"error": "bad or missing signature"})
                try:
                    queued, stale = server.submit_events(body)
                except PermanentError as exc:  # signed by B2 but malformed: B2 would resend it forever
                    return self._reply(400, {"error": str(exc)})
                # Too-old events are refused yet answered 202, so that B2 stops redelivering them.
                return self._reply(202, {"accepted": queued, "ignored": stale})
            if path == "/callback":
                try:
                    job_id = callback.verified_job_id(callback_secret, body,
                                                      self.headers.get(signing.CALLBACK_SIGNATURE_HEADER))
                except callback.CallbackRefused as refused:
                    return self._reply(refused.status, {"error": refused.reason})
                server.work.put(lambda: callback.act(job_id, server.deps))
                return self._reply(202, callback.ACCEPTED)
            return self._reply(404, {"error": "not found"})

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/healthz":
                return self._reply(200, {"ok": True})
            return self._reply(404, {"error": "not found"})

        def _reply(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the sender left; nothing to tell it
                self.close_connection = True

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            # The path without its query string (never logged: it may carry a presigned signature).
            path = (getattr(self, "path", None) or "-").split("?")[0][:200]  # unset for a bad request line
            logger.info("%s %s -> %s", self.command or "-", path, code)

        def log_error(self, fmt: str, *args) -> None:  # http.server's own refusals: bad request line, timeout
            logger.warning("request refused: %s", (fmt % args)[:200])  # sender's text: bounded

    return Handler
