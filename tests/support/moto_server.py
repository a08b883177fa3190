"""An in-process moto server (DynamoDB and friends over real HTTP) on 127.0.0.1, a free port.

Usage outside pytest:

    with MotoServer.start() as moto:
        ddb = moto.client()
        ...

moto's backends are plain Python objects without locks, and its threaded server handles requests
concurrently, so two conditional UpdateItems on one item could both pass their condition (a race
real DynamoDB never lets through: it applies conditional writes per item atomically). We therefore
serialize requests with one lock around the WSGI app: clients still race for real over HTTP, but
each request is evaluated atomically, as DynamoDB would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

HOST = "127.0.0.1"  # loopback only
REGION = "us-east-1"
ACCESS_KEY = "testing"  # moto accepts any credentials; these never leave the machine
SECRET_KEY = "testing"
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30


class _QuietHandler(MotoRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass  # one stderr line per request drowns test output; errors are still logged


class _AtomicMotoServer(ThreadedMotoServer):
    """ThreadedMotoServer whose requests run one at a time (see the module docstring)."""

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        lock = threading.Lock()

        def serialized(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            with lock:
                # Produce (and close) the whole body under the lock: moto works while producing it.
                body = app(environ, start_response)
                try:
                    return [b"".join(body)]
                finally:
                    if hasattr(body, "close"):
                        body.close()

        self._server = make_server(
            self._ip_address, self._port, serialized, True, request_handler=_QuietHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()


@dataclass
class MotoServer:
    endpoint_url: str
    region: str = REGION
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    _server: ThreadedMotoServer | None = field(default=None, repr=False)

    @classmethod
    def start(cls) -> MotoServer:
        server = _AtomicMotoServer(ip_address=HOST, port=0, verbose=False)  # port 0: the OS picks
        server.start()
        host, port = server.get_host_and_port()
        return cls(endpoint_url=f"http://{host}:{port}", _server=server)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self, service: str = "dynamodb", **config: Any) -> Any:
        """A boto3 client for this server with dummy credentials; `config` goes to botocore Config."""
        session = boto3.session.Session(
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )
        cfg = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S, **config)
        return session.client(service, endpoint_url=self.endpoint_url, config=cfg)

    def __enter__(self) -> MotoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
