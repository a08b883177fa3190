"""One file served over HTTP on 127.0.0.1 at a fixed rate per request, as a presigned GET serves it:
Range, ETag and If-Match (412 for another version). For inputs that arrive slowly (issue 11 item 4:
a whole job processes its input while it downloads)."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path


class ThrottledFile:
    """`with ThrottledFile(path, bytes_per_s) as server: server.url` serves the file until the block ends."""

    def __init__(self, path: Path, bytes_per_s: int, etag: str = '"v1"') -> None:
        body, rate = path.read_bytes(), max(1, int(bytes_per_s))

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.headers.get("If-Match") not in (None, etag):
                    self.send_response(412)
                    self.end_headers()
                    return
                start, end = 0, len(body) - 1
                ranged = self.headers.get("Range")
                if ranged:
                    first, _, last = ranged.removeprefix("bytes=").partition("-")
                    start, end = int(first), min(int(last or end), end)
                self.send_response(206 if ranged else 200)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(end - start + 1))
                if ranged:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
                self.end_headers()
                chunk = max(1, rate // 50)  # 50 writes a second
                for at in range(start, end + 1, chunk):
                    self.wfile.write(body[at:min(at + chunk, end + 1)])
                    time.sleep(min(chunk, end + 1 - at) / rate)

            def log_message(self, *args) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/{path.name}"

    def __enter__(self) -> ThrottledFile:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
