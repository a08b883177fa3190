"""LocalCompute with real child processes: env contract, exit codes, process-group kill, and a
watcher restart (the launching process SIGKILLed; a new one takes over from the state dir)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vastdrop.compute.base import Instance, InstanceState, label_for
from vastdrop.compute.local import LocalCompute
from vastdrop.jobspec import JobSpec

# Records what it saw, optionally spawns a grandchild / ignores SIGTERM, logs, sleeps, exits JOB_CODE.
STUB_JOB = textwrap.dedent(
    """
    import importlib.util, json, os, signal, subprocess, sys, time
    if os.environ.get("IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out = os.environ.get("OUT_PATH")
    if out:
        with open(out + ".tmp", "w") as f:
            json.dump({"env": dict(os.environ), "gpu_job": importlib.util.find_spec("gpu_job") is not None,
                       "pgid": os.getpgid(0), "pid": os.getpid()}, f)
        os.replace(out + ".tmp", out)
    grandchild = os.environ.get("GRANDCHILD_PID_PATH")
    if grandchild:
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open(grandchild + ".tmp", "w") as f:
            f.write(str(p.pid))
        os.replace(grandchild + ".tmp", grandchild)
    print("hello from local job", flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    time.sleep(float(os.environ.get("JOB_SECONDS", "0")))
    print("job done", flush=True)
    sys.exit(int(os.environ.get("JOB_CODE", "0")))
    """
)
STUB = [sys.executable, "-c", STUB_JOB]


def _spec(job_id: str = "job-local-1") -> JobSpec:
    return JobSpec(id=job_id, input_url="file:///in/a.mp4", output_url="file:///out/a.mp4",
                   manifest_url="file:///out/a.json")


def _alive(pid: int) -> bool:
    """Running, not a zombie (a zombie is dead; its parent may just not have reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _wait_for(pred, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _wait_state(compute: LocalCompute, iid: str, state: InstanceState, timeout: float = 10.0) -> Instance:
    return _wait_for(lambda: (i := compute.get(iid)).state is state and i, timeout, f"{iid} {state}")


@pytest.fixture
def compute(tmp_path: Path) -> Iterator[LocalCompute]:
    c = LocalCompute(tmp_path / "state", command=STUB, kill_grace_s=0.5)
    yield c
    for inst in c.list_ours():
        c.destroy(inst.id)


def test_job_runs_with_exactly_the_env_and_its_exit_code_is_recorded(
    compute: LocalCompute, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHER_ONLY_SECRET", "must-not-leak-into-the-job")
    out = tmp_path / "seen.json"
    spec = _spec()
    env = {**spec.to_env(), "OUT_PATH": str(out), "SECRET_TOKEN": "local-s3cr3t", "JOB_SECONDS": "0.4",
           "JOB_CODE": "3"}
    inst = compute.launch(spec, env)
    assert inst.id.startswith("local-") and len(inst.id) == len("local-") + 8
    assert inst.label == label_for(spec.id) and inst.job_id == spec.id
    assert inst.state is InstanceState.RUNNING and inst.dph == 0.0
    assert compute.name == "local"

    assert compute.get(inst.id).state is InstanceState.RUNNING
    seen = json.loads(_wait_for(lambda: out.exists() and out.read_text(), what="job output"))
    job_env = seen["env"]
    assert {k: job_env[k] for k in env} == env
    assert set(job_env) - {"LC_CTYPE"} == set(env) | {"PATH", "HOME", "LANG", "PYTHONPATH"}
    assert seen["gpu_job"] is True  # PYTHONPATH lets the real job import
    assert seen["pgid"] != os.getpgid(0)  # its own process group

    done = _wait_state(compute, inst.id, InstanceState.EXITED)
    assert done.exit_code == 3
    text = compute.logs(inst.id)
    assert "hello from local job" in text and "to stderr" in text and "job done" in text
    assert compute.logs(inst.id, tail=1).strip() == "job done"
    assert [i.id for i in compute.list_ours()] == [inst.id]  # exited but not destroyed: still listed

    compute.destroy(inst.id)
    assert compute.get(inst.id).state is InstanceState.GONE
    assert compute.list_ours() == []


def test_destroy_kills_the_whole_process_group_and_is_idempotent(compute: LocalCompute, tmp_path: Path) -> None:
    gc_path = tmp_path / "grandchild.pid"
    inst = compute.launch(_spec(), {"JOB_SECONDS": "60", "GRANDCHILD_PID_PATH": str(gc_path)})
    grandchild = int(_wait_for(lambda: gc_path.exists() and gc_path.read_text(), what="grandchild"))
    leader = inst.extra["pid"]
    assert _alive(leader) and _alive(grandchild)

    compute.destroy(inst.id)
    assert not _alive(leader) and not _alive(grandchild)
    assert compute.get(inst.id).state is InstanceState.GONE
    compute.destroy(inst.id)  # again: nothing to do
    compute.destroy("local-00000000")  # never existed
    compute.destroy("../../etc")  # not an id of ours
    assert compute.get("local-00000000").state is InstanceState.GONE
    assert compute.logs("local-00000000") == ""


def test_destroy_escalates_to_sigkill_when_sigterm_is_ignored(compute: LocalCompute, tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    inst = compute.launch(_spec(), {"JOB_SECONDS": "60", "IGNORE_TERM": "1", "OUT_PATH": str(out)})
    job_pid = json.loads(_wait_for(lambda: out.exists() and out.read_text(), what="job output"))["pid"]
    started = time.monotonic()
    compute.destroy(inst.id)
    assert time.monotonic() - started >= 0.4  # waited out the grace period first
    assert not _alive(job_pid) and not _alive(inst.extra["pid"])


def test_sigterm_to_the_wrapper_alone_reaches_the_job(compute: LocalCompute) -> None:
    inst = compute.launch(_spec(), {"JOB_SECONDS": "60"})
    time.sleep(0.3)  # let the wrapper start the job
    os.kill(inst.extra["pid"], signal.SIGTERM)
    done = _wait_state(compute, inst.id, InstanceState.EXITED)
    assert done.exit_code == 128 + signal.SIGTERM


def _watcher_launch(state_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """A separate watcher process that launches one job, prints its id, then idles (to be SIGKILLed)."""
    code = textwrap.dedent(
        f"""
        import json, sys, time
        from pathlib import Path
        from vastdrop.compute.local import LocalCompute
        from vastdrop.jobspec import JobSpec
        spec = JobSpec(id="job-restart", input_url="file:///i", output_url="file:///o", manifest_url="file:///m")
        c = LocalCompute(Path({str(state_dir)!r}), command={STUB!r})
        print(c.launch(spec, json.loads(sys.argv[1])).id, flush=True)
        time.sleep(60)
        """
    )
    watcher = subprocess.Popen([sys.executable, "-c", code, json.dumps(env)], stdout=subprocess.PIPE, text=True)
    assert watcher.stdout is not None
    return watcher, watcher.stdout.readline().strip()


def test_a_restarted_watcher_sees_the_running_job_and_later_its_exit_code(tmp_path: Path) -> None:
    state = tmp_path / "state"
    watcher, iid = _watcher_launch(state, {"JOB_SECONDS": "1.0", "JOB_CODE": "7"})
    watcher.kill()  # SIGKILL: no cleanup of any kind
    watcher.communicate()

    fresh = LocalCompute(state, command=STUB)
    now = fresh.get(iid)
    assert now.state is InstanceState.RUNNING and now.job_id == "job-restart"
    assert [i.id for i in fresh.list_ours()] == [iid]
    done = _wait_state(fresh, iid, InstanceState.EXITED)
    assert done.exit_code == 7
    assert "job done" in fresh.logs(iid)
    fresh.destroy(iid)


def test_a_restarted_watcher_can_destroy_a_job_it_did_not_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    gc_path = tmp_path / "grandchild.pid"
    watcher, iid = _watcher_launch(state, {"JOB_SECONDS": "60", "GRANDCHILD_PID_PATH": str(gc_path)})
    watcher.kill()
    watcher.communicate()
    grandchild = int(_wait_for(lambda: gc_path.exists() and gc_path.read_text(), what="grandchild"))

    fresh = LocalCompute(state, command=STUB, kill_grace_s=0.5)
    leader = fresh.get(iid).extra["pid"]
    assert fresh.get(iid).state is InstanceState.RUNNING and _alive(leader)
    fresh.destroy(iid)
    assert not _alive(leader) and not _alive(grandchild)
    assert fresh.get(iid).state is InstanceState.GONE and fresh.list_ours() == []


def test_a_reused_pid_is_neither_trusted_nor_killed(compute: LocalCompute) -> None:
    inst = compute.launch(_spec(), {"JOB_SECONDS": "60"})
    pid = inst.extra["pid"]
    meta_path = compute.state_dir / inst.id / "instance.json"
    meta = json.loads(meta_path.read_text())
    meta["pid_start"] -= 1  # as if the pid now belonged to a process started at another time
    meta_path.write_text(json.dumps(meta))
    try:
        seen = compute.get(inst.id)
        assert seen.state is InstanceState.EXITED and seen.exit_code is None
        compute.destroy(inst.id)
        assert _alive(pid)  # someone else's process (as far as we can tell): left alone
        assert compute.get(inst.id).state is InstanceState.GONE
    finally:
        os.killpg(pid, signal.SIGKILL)


def test_list_ours_lists_every_undestroyed_instance(compute: LocalCompute) -> None:
    a = compute.launch(_spec("job-a"), {"JOB_SECONDS": "60"})
    b = compute.launch(_spec("job-b"), {"JOB_SECONDS": "0"})
    _wait_state(compute, b.id, InstanceState.EXITED)
    listed = {i.id: i for i in compute.list_ours()}
    assert set(listed) == {a.id, b.id}
    assert listed[a.id].state is InstanceState.RUNNING and listed[a.id].job_id == "job-a"
    assert listed[b.id].state is InstanceState.EXITED and listed[b.id].exit_code == 0
    compute.destroy(a.id)
    assert [i.id for i in compute.list_ours()] == [b.id]


def test_a_command_that_cannot_start_exits_127(tmp_path: Path) -> None:
    c = LocalCompute(tmp_path / "state", command=["/nonexistent/binary"])
    inst = c.launch(_spec(), {})
    done = _wait_state(c, inst.id, InstanceState.EXITED)
    assert done.exit_code == 127
    assert "cannot start" in c.logs(inst.id)
    c.destroy(inst.id)
