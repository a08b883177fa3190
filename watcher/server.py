"""`serve`: the B2 webhook and the job callback over HTTP, for hosts without Lambda.

POST /webhook   B2 event notifications, `x-bz-event-notification-signature: v1=<hex HMAC-SHA256>`
POST /callback  job completion, `X-Signature: v1=<hex HMAC-SHA256>` over the manifest body
Unsigned or wrongly signed requests get 401 and change nothing. Verified events go to a queue that
one worker thread drains, so a slow launch never holds a sender's connection open.
"""

from __future__ import annotations

import http.server
import json
import logging
import queue
import threading
from collections.abc import Callable

from handlers.deps import Deps
from handlers.events import parse_events, route
from handlers.finished import manifest_job_id, on_job_finished
from vastdrop import signing
from vastdrop.errors import PermanentError

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20


class EventServer:
    def __init__(self, deps: Deps, host: str, port: int, webhook_secret: str | None,
                 callback_secret: str | None) -> None:
        self.deps = deps
        self.work: queue.Queue[Callable[[], object] | None] = queue.Queue()
        self.accepted = 0
        handler = _make_handler(self, webhook_secret, callback_secret)
        self.httpd = http.server.ThreadingHTTPServer((host, port), handler)
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

    def submit_events(self, body: bytes) -> int:
        events = parse_events(body)
        for event in events:
            self.work.put(lambda e=event: route(e, self.deps))
        self.accepted += len(events)
        return len(events)


def _make_handler(server: EventServer, webhook_secret: str | None, callback_secret: str | None):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                return self._reply(413, {"error": "body too large"})
            body = self.rfile.read(length)
            if self.path.split("?")[0] == "/webhook":
                if not signing.verify(webhook_secret or "", body, self.headers.get(signing.B2_SIGNATURE_HEADER)):
                    return self._reply(401, {"error": "bad or missing signature"})
                try:
                    n = server.submit_events(body)
                except PermanentError as exc:
                    return self._reply(400, {"error": str(exc)})
                return self._reply(202, {"accepted": n})
            if self.path.split("?")[0] == "/callback":
                if not signing.verify(callback_secret or "", body, self.headers.get(signing.CALLBACK_SIGNATURE_HEADER)):
                    return self._reply(401, {"error": "bad or missing signature"})
                job_id = manifest_job_id(body)
                if job_id is None:
                    return self._reply(400, {"error": "not a manifest"})
                server.work.put(lambda: on_job_finished(job_id, server.deps))
                return self._reply(202, {"accepted": 1})
            return self._reply(404, {"error": "not found"})

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/healthz":
                return self._reply(200, {"ok": True})
            return self._reply(404, {"error": "not found"})

        def _reply(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt: str, *args) -> None:  # access log without query strings
            logger.info("%s %s -> %s", self.command, self.path.split("?")[0], args[1] if len(args) > 1 else "")

    return Handler
