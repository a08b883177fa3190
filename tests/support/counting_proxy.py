"""A small counting HTTP forward proxy on 127.0.0.1, for metering a test job's bandwidth.

Point a process at it with ``HTTP_PROXY``/``HTTPS_PROXY`` (and their lower-case forms, with
``NO_PROXY`` unset): ``requests``, ``urllib`` and ``boto3`` then send plain-HTTP requests in
absolute form (``GET http://host:port/path HTTP/1.1``) and open ``CONNECT host:443`` tunnels
for HTTPS. The proxy relays both byte for byte and counts what it relays:

* ``bytes_in``  -- bytes sent *to* the client (responses, tunnel downstream): what the
  metered process received;
* ``bytes_out`` -- bytes the client sent (request heads and bodies, tunnel upstream).

Request heads are counted as forwarded (origin-form, ``Connection: close``, without the
``Proxy-*`` headers); everything else is counted exactly. One proxy meters one tenant: the
Vast emulator starts one per instance, so nothing depends on the client sending credentials.

    with CountingProxy() as proxy:
        env = {"HTTP_PROXY": proxy.url, "HTTPS_PROXY": proxy.url, ...}
        ...
        proxy.bytes_in, proxy.bytes_out
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

__all__ = ["CountingProxy"]

_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate",
    "te", "trailer", "upgrade",
}
_CHUNK = 65536


class CountingProxy:
    """A forward proxy bound to ``host`` (127.0.0.1) on an ephemeral port; see the module doc."""

    def __init__(self, *, host: str = "127.0.0.1", connect_timeout_s: float = 10.0, name: str = "") -> None:
        self.host = host
        self.connect_timeout_s = connect_timeout_s
        self.name = name
        self._lock = threading.Lock()
        self._bytes_in = 0
        self._bytes_out = 0
        self._requests = 0
        self._tunnels = 0
        self._sockets: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.url = ""

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> CountingProxy:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer((self.host, 0), _ProxyHandler)
        server.daemon_threads = True
        server.proxy = self  # type: ignore[attr-defined]
        self._server = server
        self.port = server.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"counting-proxy{'-' + self.name if self.name else ''}", daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop accepting, and cut every relayed connection still open."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            open_sockets = list(self._sockets)
            self._sockets.clear()
        for sock in open_sockets:
            _close(sock)

    def __enter__(self) -> CountingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- counters ----------------------------------------------------------

    @property
    def bytes_in(self) -> int:
        with self._lock:
            return self._bytes_in

    @property
    def bytes_out(self) -> int:
        with self._lock:
            return self._bytes_out

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {"bytes_in": self._bytes_in, "bytes_out": self._bytes_out,
                    "requests": self._requests, "tunnels": self._tunnels}

    def _count(self, *, down: int = 0, up: int = 0, request: int = 0, tunnel: int = 0) -> None:
        with self._lock:
            self._bytes_in += down
            self._bytes_out += up
            self._requests += request
            self._tunnels += tunnel

    def _track(self, sock: socket.socket, on: bool) -> None:
        with self._lock:
            if on:
                self._sockets.add(sock)
            else:
                self._sockets.discard(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "CountingProxy/1.0"

    @property
    def proxy(self) -> CountingProxy:
        return self.server.proxy  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        logger.debug("proxy %s: %s", self.proxy.name, format % args)

    def handle_expect_100(self) -> bool:
        # Forward "Expect: 100-continue" upstream and relay the origin's own 100 response.
        return True

    def _connect(self, host: str, port: int) -> socket.socket | None:
        try:
            upstream = socket.create_connection((host, port), timeout=self.proxy.connect_timeout_s)
        except OSError as exc:
            self.send_error(502, f"cannot reach {host}:{port}: {exc}")
            return None
        upstream.settimeout(None)
        return upstream

    def do_CONNECT(self) -> None:  # noqa: N802 (http.server naming)
        self.close_connection = True
        host, _, port = self.path.rpartition(":")
        if not host or not port.isdigit():
            self.send_error(400, "CONNECT needs host:port")
            return
        upstream = self._connect(host.strip("[]"), int(port))
        if upstream is None:
            return
        reply = b"HTTP/1.1 200 Connection established\r\n\r\n"
        self.connection.sendall(reply)
        self.proxy._count(down=len(reply), tunnel=1)
        self._relay(upstream)

    def _forward(self) -> None:
        self.close_connection = True
        url = urlsplit(self.path)
        if url.scheme != "http" or not url.hostname:
            self.send_error(400, "a proxy request needs an absolute http:// URL (or CONNECT)")
            return
        upstream = self._connect(url.hostname, url.port or 80)
        if upstream is None:
            return
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        lines = [f"{self.command} {target} {self.request_version}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP]
        lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            upstream.sendall(head)
        except OSError:
            _close(upstream)
            return
        self.proxy._count(up=len(head), request=1)
        self._relay(upstream)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _forward

    def _relay(self, upstream: socket.socket) -> None:
        """Pump bytes both ways until either side closes, counting each direction."""
        proxy, client = self.proxy, self.connection
        proxy._track(upstream, True)
        proxy._track(client, True)

        def client_to_upstream() -> None:
            try:
                while True:
                    data = self.rfile.read1(_CHUNK)  # type: ignore[attr-defined]
                    if not data:
                        break
                    upstream.sendall(data)
                    proxy._count(up=len(data))
            except (OSError, ValueError):
                pass
            finally:
                try:
                    upstream.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        pump = threading.Thread(target=client_to_upstream, name="counting-proxy-up", daemon=True)
        pump.start()
        try:
            while True:
                data = upstream.recv(_CHUNK)
                if not data:
                    break
                client.sendall(data)
                proxy._count(down=len(data))
        except OSError:
            pass
        finally:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            pump.join(timeout=2)
            _close(upstream)
            proxy._track(upstream, False)
            proxy._track(client, False)
