"""LocalCompute: each job is a child process on this machine (the embedded default).

Layout of `state_dir`, one directory per instance (so a restarted watcher finds everything):

    <state_dir>/local-1a2b3c4d/instance.json   id, label, pid, pgid, pid start time, created/destroyed
    <state_dir>/local-1a2b3c4d/output.log      the job's stdout + stderr
    <state_dir>/local-1a2b3c4d/exit_code       written atomically by the wrapper when the job ends

The job runs as `python -m vastdrop.compute._local_child <exit_code> -- <command>` in its own
session/process group (the wrapper is the group leader, pid == pgid), so it outlives a SIGKILLed
watcher, and `destroy` can kill the job with everything it spawned. The job env is exactly the env
given to `launch`, merged onto a minimal base (PATH, HOME, LANG, PYTHONPATH).

A stored pid is trusted only while /proc/<pid>/stat shows the start time recorded at launch: a pid
the kernel reused for another process is never reported RUNNING and never signalled.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import vastdrop
from vastdrop.compute import register_env_secrets
from vastdrop.compute.base import LABEL_PREFIX, Instance, InstanceState, label_for
from vastdrop.errors import PermanentError
from vastdrop.jobspec import JobSpec
from vastdrop.logs import scrub

logger = logging.getLogger(__name__)

DEFAULT_COMMAND = (sys.executable, "-m", "gpu_job")
DEFAULT_KILL_GRACE_S = 10.0  # SIGTERM -> SIGKILL on destroy, like `docker stop`
KILL_WAIT_S = 5.0  # how long to wait for the group to vanish after SIGKILL
POLL_S = 0.05
LOG_TAIL_BYTES = 1 << 20  # logs() reads at most the last MiB of the log
_ID_RE = re.compile(r"^local-[0-9a-f]{8}$")

META_FILE, LOG_FILE, EXIT_FILE = "instance.json", "output.log", "exit_code"

# Every wrapper this process started, kept so none is garbage-collected while running and so
# exited ones are reaped (a zombie still has a /proc entry) -- shared by all LocalCompute objects.
_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()


@dataclass(frozen=True)
class _ProcStat:
    state: str  # R, S, D, Z, X, ...
    pgrp: int
    start: int  # clock ticks after boot: with the pid, identifies one process


def _proc_stat(pid: int) -> _ProcStat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return _ProcStat(state=fields[0], pgrp=int(fields[2]), start=int(fields[19]))


_HAVE_PROC = Path("/proc/self/stat").exists()


def _answers_signal_0(send: Callable[[int, int], None], target: int) -> bool:
    """Without /proc: signal 0 tells whether a process (or group) exists; reap our own child first."""
    _reap(target)
    try:
        send(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _reap(pid: int) -> None:
    with _children_lock:
        proc = _children.get(pid)
        if proc is not None and proc.poll() is not None:
            del _children[pid]


@atexit.register
def _reap_all() -> None:
    for pid in list(_children):
        _reap(pid)  # the ones still running are jobs meant to outlive us


def _default_base_env() -> dict[str, str]:
    roots: list[str] = []
    here = str(Path(vastdrop.__file__).resolve().parent.parent)  # holds vastdrop/ and gpu_job/
    for p in [here, *os.environ.get("PYTHONPATH", "").split(os.pathsep)]:
        if p and os.path.abspath(p) not in roots:
            roots.append(os.path.abspath(p))
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONPATH": os.pathsep.join(roots),
    }


class LocalCompute:
    """Compute port on local processes. Price 0; no GPU bookkeeping."""

    name = "local"

    def __init__(
        self,
        state_dir: Path,
        command: list[str] | None = None,
        base_env: dict[str, str] | None = None,
        *,
        kill_grace_s: float = DEFAULT_KILL_GRACE_S,
    ) -> None:
        """`command`: the job argv (default `python -m gpu_job`). `base_env`: entries merged onto the
        minimal base env (PATH, HOME, LANG, PYTHONPATH) before the job env."""
        self.state_dir = Path(state_dir).absolute()  # the wrapper runs in its instance dir: a relative exit-code path would miss
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.command = list(command) if command is not None else list(DEFAULT_COMMAND)
        self.base_env = {**_default_base_env(), **(base_env or {})}
        self.kill_grace_s = kill_grace_s

    # -- port ----------------------------------------------------------------

    def launch(self, spec: JobSpec, env: dict[str, str]) -> Instance:
        register_env_secrets(env)
        iid = f"local-{uuid.uuid4().hex[:8]}"
        d = self.state_dir / iid
        d.mkdir()
        label = label_for(spec.id)
        meta: dict[str, Any] = {"id": iid, "label": label, "pid": None, "pgid": None,
                                "pid_start": None, "created_at": time.time(), "destroyed_at": None}
        self._write_meta(d, meta)  # visible (PENDING) even if we die before the pid is recorded
        argv = [sys.executable, "-m", "vastdrop.compute._local_child", str(d / EXIT_FILE), "--", *self.command]
        full_env = {**self.base_env, **{str(k): str(v) for k, v in env.items()}}
        try:
            with open(d / LOG_FILE, "ab") as log:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        env=full_env, cwd=d, start_new_session=True)
        except OSError as exc:
            meta["destroyed_at"] = time.time()
            self._write_meta(d, meta)
            raise PermanentError(f"local: cannot start the job wrapper: {exc.strerror}") from None
        with _children_lock:
            _children[proc.pid] = proc
        st = _proc_stat(proc.pid)
        meta.update(pid=proc.pid, pgid=proc.pid, pid_start=st.start if st else None)
        self._write_meta(d, meta)
        logger.info("local: started %s for %s (pid %s)", iid, label, proc.pid)
        return self._instance(meta, InstanceState.RUNNING)

    def get(self, instance_id: str) -> Instance:
        meta = self._read_meta(instance_id)
        if meta is None or meta.get("destroyed_at"):
            return Instance(id=instance_id, label=meta.get("label") if meta else None, state=InstanceState.GONE)
        return self._status(meta)

    def list_ours(self) -> list[Instance]:
        out = []
        for d in sorted(self.state_dir.iterdir()):
            meta = self._read_meta(d.name)
            if meta and not meta.get("destroyed_at") and str(meta.get("label") or "").startswith(LABEL_PREFIX):
                out.append(self._status(meta))
        out.sort(key=lambda i: i.started_at or 0.0)
        return out

    def destroy(self, instance_id: str) -> None:
        meta = self._read_meta(instance_id)
        if meta is None or meta.get("destroyed_at"):
            return
        if meta.get("pgid") and self._group_alive(meta):
            self._kill_group(meta)
        meta["destroyed_at"] = time.time()
        self._write_meta(self.state_dir / instance_id, meta)
        logger.info("local: destroyed %s", instance_id)

    def logs(self, instance_id: str, tail: int = 200) -> str:
        if not _ID_RE.match(instance_id):
            return ""
        path = self.state_dir / instance_id / LOG_FILE
        try:
            with open(path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - LOG_TAIL_BYTES))
                data = f.read()
        except FileNotFoundError:
            return ""
        lines = data.decode("utf-8", errors="replace").splitlines(keepends=True)
        return scrub("".join(lines[-tail:]) if tail > 0 else "")

    # -- state -----------------------------------------------------------------

    def _status(self, meta: dict[str, Any]) -> Instance:
        if not meta.get("pid"):
            return self._instance(meta, InstanceState.PENDING)
        code = self._exit_code(meta)
        if code is not None:
            _reap(int(meta["pid"]))
            return self._instance(meta, InstanceState.EXITED, code)
        if self._leader_alive(meta):
            return self._instance(meta, InstanceState.RUNNING)
        code = self._exit_code(meta)  # it may have finished between the two checks
        if code is not None:
            return self._instance(meta, InstanceState.EXITED, code)
        if self._group_alive(meta):  # the wrapper was killed on its own; the job lives on
            return self._instance(meta, InstanceState.RUNNING, extra={"orphaned": True})
        return self._instance(meta, InstanceState.EXITED, extra={"note": "exit code not recorded"})

    def _exit_code(self, meta: dict[str, Any]) -> int | None:
        try:
            return int((self.state_dir / meta["id"] / EXIT_FILE).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _instance(self, meta: dict[str, Any], state: InstanceState, exit_code: int | None = None,
                  extra: dict[str, Any] | None = None) -> Instance:
        return Instance(
            id=meta["id"], label=meta.get("label"), state=state, exit_code=exit_code, gpu_name=None,
            dph=0.0, offer_id=None, started_at=meta.get("created_at"),
            extra={"pid": meta.get("pid"), "log_path": str(self.state_dir / meta["id"] / LOG_FILE),
                   **(extra or {})},
        )

    # -- processes ---------------------------------------------------------------

    @staticmethod
    def _leader_alive(meta: dict[str, Any]) -> bool:
        pid = int(meta["pid"])
        if not _HAVE_PROC:
            return _answers_signal_0(os.kill, pid)
        st = _proc_stat(pid)
        if st is None or (meta.get("pid_start") is not None and st.start != meta["pid_start"]):
            return False  # gone, or the pid now belongs to another process
        if st.state in ("Z", "X"):
            _reap(pid)
            return False
        return True

    @staticmethod
    def _group_alive(meta: dict[str, Any]) -> bool:
        """Any live (non-zombie) process left in the job's process group?"""
        pgid = int(meta["pgid"])
        if not _HAVE_PROC:
            return _answers_signal_0(os.killpg, pgid)
        leader = _proc_stat(pgid)
        if leader is not None and meta.get("pid_start") is not None and leader.start != meta["pid_start"]:
            # The kernel hands out a pid only when no process uses it as a group id: a new owner of
            # our leader's pid means our whole group was gone by then.
            return False
        if leader is not None and leader.state in ("Z", "X"):
            _reap(pgid)
        with os.scandir("/proc") as entries:
            for entry in entries:
                if not entry.name.isdigit():
                    continue
                st = _proc_stat(int(entry.name))
                if st is not None and st.pgrp == pgid and st.state not in ("Z", "X"):
                    return True
        return False

    def _kill_group(self, meta: dict[str, Any]) -> None:
        pgid = int(meta["pgid"])
        for sig, wait_s in ((signal.SIGTERM, self.kill_grace_s), (signal.SIGKILL, KILL_WAIT_S)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                if not self._group_alive(meta):
                    return
                time.sleep(POLL_S)
        logger.error("local: process group %s of %s survived SIGKILL", pgid, meta["id"])

    # -- files -------------------------------------------------------------------

    def _read_meta(self, instance_id: str) -> dict[str, Any] | None:
        if not _ID_RE.match(instance_id):
            return None
        try:
            return json.loads((self.state_dir / instance_id / META_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return None

    @staticmethod
    def _write_meta(d: Path, meta: dict[str, Any]) -> None:
        tmp = d / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, sort_keys=True))
        os.replace(tmp, d / META_FILE)
