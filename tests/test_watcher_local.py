"""`python -m watcher` on the zero-config default: ./bucket, local compute, SQLite, the real job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.clips import make_clip
from tests.support.jobs import REPO, measure
from vastdrop.ledger.sqlite import SqliteLedger
from vastdrop.manifest import Manifest
from vastdrop.states import JobState

pytestmark = pytest.mark.slow

KEYS = ["input/plain.mp4", "input/with space/ünï 'quoted' \"clip\".mp4", "input/a/b/c/d/deep.mp4"]


def watcher(cwd: Path, *args: str, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHER_", "JOB_"))}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "watcher", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def bucket_dir(tmp_path) -> Path:
    for key in KEYS:
        path = tmp_path / "bucket" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        make_clip(path, width=64, height=48, fps=12, seconds=0.5)
    (tmp_path / "bucket" / "input" / ".hidden.mp4").write_bytes(b"not for us")
    (tmp_path / "bucket" / "input" / "_tmp.mp4").write_bytes(b"not for us")
    (tmp_path / "bucket" / "input" / "empty.mp4").write_bytes(b"")
    return tmp_path


def _result(cwd: Path, key: str) -> tuple[Path, Path]:
    out = cwd / "bucket" / ("output/" + key[len("input/"):]).replace(".mp4", ".mp4")
    return out, out.with_name(out.name + ".manifest.json")


def test_run_once_processes_every_input_and_skips_the_rest(bucket_dir):
    proc = watcher(bucket_dir, "run", "--once", "--target-fps", "24")
    assert proc.returncode == 0, proc.stderr
    for key in KEYS:
        result, manifest_path = _result(bucket_dir, key)
        manifest = Manifest.from_json(manifest_path.read_bytes())
        assert manifest.status == "succeeded"
        assert measure(result).fps == 24.0
    outputs = sorted(p.name for p in (bucket_dir / "bucket" / "output").rglob("*.mp4"))
    assert len(outputs) == len(KEYS)  # hidden, underscore and empty files were skipped
    assert "succeeded" in proc.stdout and "KEY" in proc.stdout
    # Every local instance was destroyed: none is left running.
    ledger = SqliteLedger(bucket_dir / ".vastdrop" / "ledger.sqlite")
    assert {r.state for r in ledger.list()} == {JobState.SUCCEEDED}

    status = watcher(bucket_dir, "status")
    assert status.returncode == 0 and status.stdout.count("succeeded") == len(KEYS)
    assert "ü" in status.stdout

    again = watcher(bucket_dir, "replay", "input/plain.mp4", "--target-fps", "24")
    assert again.returncode == 0 and "already succeeded" in again.stderr
    forced = watcher(bucket_dir, "replay", "input/plain.mp4", "--force", "--target-fps", "24")
    assert forced.returncode == 0, forced.stderr
    record = next(r for r in SqliteLedger(bucket_dir / ".vastdrop" / "ledger.sqlite").list() if r.key == "input/plain.mp4")
    assert record.state == JobState.SUCCEEDED

    logs = watcher(bucket_dir, "logs", record.job_id)
    assert logs.returncode == 0 and "manifest written" in logs.stdout


def test_replay_of_a_missing_key_is_a_clear_error(bucket_dir):
    proc = watcher(bucket_dir, "replay", "input/nope.mp4")
    assert proc.returncode == 2 and "no object" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_settings_are_a_clear_error(bucket_dir):
    proc = watcher(bucket_dir, "run", "--once", "--upscale", "7")
    assert proc.returncode == 2 and "--upscale" in proc.stderr and "Traceback" not in proc.stderr


def test_a_bad_input_fails_once_and_is_not_retried(tmp_path):
    bad = tmp_path / "bucket" / "input" / "notes.mp4"
    bad.parent.mkdir(parents=True)
    bad.write_text("a text file renamed .mp4")
    proc = watcher(tmp_path, "run", "--once", "--max-attempts", "3")
    assert proc.returncode == 1
    (record,) = SqliteLedger(tmp_path / ".vastdrop" / "ledger.sqlite").list()
    assert record.state == JobState.FAILED and record.error_kind == "bad_input" and record.attempt == 1
    assert len(list((tmp_path / ".vastdrop" / "instances").iterdir())) == 1  # launched exactly once
    status = watcher(tmp_path, "status")
    assert f"input/notes.mp4: {record.error}" in status.stdout  # the reason, not just "failed"


def test_watcher_killed_mid_flight_and_restarted_finishes_everything_without_relaunching(bucket_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHER_", "JOB_"))}
    env["PYTHONPATH"] = str(REPO)
    first = subprocess.Popen([sys.executable, "-m", "watcher", "run", "--once"], cwd=bucket_dir, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = bucket_dir / ".vastdrop" / "ledger.sqlite"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        # Every job launched (some may already be finishing): kill the watcher now.
        if db.exists() and sum(r.instance_id is not None for r in SqliteLedger(db).list()) == len(KEYS):
            break
        time.sleep(0.05)
    else:
        first.kill()
        pytest.fail("jobs were never all launched")
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = watcher(bucket_dir, "run", "--once")
    assert second.returncode == 0, second.stderr
    records = SqliteLedger(db).list()
    assert {r.state for r in records} == {JobState.SUCCEEDED} and {r.attempt for r in records} == {1}
    assert len(list((bucket_dir / ".vastdrop" / "instances").iterdir())) == len(KEYS)


def test_inputs_that_would_write_the_same_output_are_not_silently_overwritten(tmp_path):
    """input/a.mov and input/a.mp4 both map to output/a.mp4: the first in key order is processed, the
    other fails with a clear reason instead of overwriting its result."""
    for name in ("a.mov", "a.mp4"):
        path = tmp_path / "bucket" / "input" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        make_clip(path, width=64, height=48, fps=12, seconds=0.5)
    proc = watcher(tmp_path, "run", "--once")
    assert proc.returncode == 1
    records = {r.key: r for r in SqliteLedger(tmp_path / ".vastdrop" / "ledger.sqlite").list()}
    assert records["input/a.mov"].state == JobState.SUCCEEDED
    assert records["input/a.mp4"].state == JobState.FAILED and "output collision" in records["input/a.mp4"].error
    assert Manifest.from_json((tmp_path / "bucket" / "output" / "a.mp4.manifest.json").read_bytes()).job_id == \
        records["input/a.mov"].job_id
