"""Honest jobs and hostile hosts side by side, end to end with real parts (issue 9 item 9): SeaweedFS
(S3, SigV4-checked presigned URLs), the Vast API emulator through the real `vastai` SDK starting real
job processes, the SQLite ledger, the watcher's callback server, and `run --once`'s driver.

The emulator runs one command for every instance, so the stub job reads what to be from its input's
first line (tests/support/stub_job.py, STUB_MODE=from_input); real clips are honest."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from handlers.deps import ControlConfig
from tests.support.clips import make_clip
from tests.support.stub_job import HOSTILE_BODY, result_bytes
from tests.support.vast_emulator import Limits, VastEmulator
from tests.test_control_plane import FAST_CONTROL, TICK_S, WEBHOOK_SECRET, drop, make_deps, stub
from vastdrop.jobid import job_id_for
from vastdrop.manifest import Manifest
from vastdrop.states import JobState
from watcher import driver
from watcher.server import EventServer
from watcher.status import render

CALLBACK_SECRET = "hostile-hosts-callback-secret-0123"
SCALE = 0.02  # Vast's documented limits at 1/50 of their waits, on both sides: pacing stays real
RUN_ONCE_LIMIT_S = 120.0  # `run --once` must end by itself well within this
VAST = {"pace_scale": SCALE, "api_margin_s": 0.01, "max_instances": 16, "max_total_dph": 20.0}
CONTROL = {"max_attempts": 2, "job_timeout_s": 10.0, "deadline_grace_s": 0.5, "capacity_wait_s": 0.1}

HONEST = ["input/honest a.mp4", "input/deep/ü honest b.mp4", "input/honest-bytes.mp4"]
# Hostile hosts whose claim must never be published, and the reason `status` must give for each.
FAILS = {
    "input/hostile-no-result.mp4": ("no_result", "invalid manifest"),
    "input/hostile-huge.mp4": ("huge_manifest", "larger than"),
    "input/hostile-stale.mp4": ("stale", "its attempt is not this job's"),
    "input/hostile-hang.mp4": ("hang", "deadline passed"),
}
FORGER, PUTTER = "input/hostile-forge.mp4", "input/hostile-put.mp4"


def _final(key: str) -> str:
    return "output/" + key[len("input/"):]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("hostile") / "clip.mp4", width=64, height=48, fps=12, seconds=0.5)


def _run_once_bounded(deps) -> tuple[bool | None, float]:
    """driver.run_once in a thread: (its answer, or None if it had not ended by the limit; seconds)."""
    answer: list[bool] = []
    started = time.monotonic()
    thread = threading.Thread(target=lambda: answer.append(driver.run_once(deps, TICK_S)), daemon=True)
    thread.start()
    thread.join(RUN_ONCE_LIMIT_S)
    return (answer[0] if answer else None), time.monotonic() - started


def test_hostile_hosts_harm_only_their_own_jobs_and_run_once_still_ends(seaweed, bucket, clip, tmp_path, caplog):
    """GIVEN three honest inputs and six hostile hosts in one bucket: a success manifest without a
    result, a 20 MB manifest, a stale manifest (claiming attempt 1) followed by silence, a job that
    never ends, a host that signs a callback for another job, a host that PUTs where it was not given
    a URL (its final key, another job's final key, another job's staging key)
    WHEN the watcher runs once through the real Vast SDK, its callback server up
    THEN every honest file is verified and published; no hostile claim is ever published; the forged
    callback gets 401 and never reaches the job it names; the tampered PUTs get 403 and write
    nothing; `run --once` ends by itself with exit 1; nothing is left billing; `status` says why each
    failed job failed."""
    caplog.set_level(logging.INFO, logger="handlers.callback")
    s3 = seaweed.client()
    with VastEmulator(command=stub("from_input"), loading_s=0.05, kill_grace_s=0.5,
                      limits=Limits().scaled(SCALE)) as emu:
        deps = make_deps(seaweed, bucket, emu, tmp_path, vast=VAST, **CONTROL)
        params = deps.config.params()
        ids: dict[str, str] = {}

        def put(key: str, body: Path | bytes) -> None:
            drop(seaweed, bucket, key, body)
            ids[key] = job_id_for(bucket, key, s3.head_object(Bucket=bucket, Key=key)["ETag"], params)

        put(HONEST[0], clip)
        put(HONEST[1], clip)
        put(HONEST[2], b"STUB_MODE=ok\nplain bytes, honestly processed\n")
        for key, (mode, _) in FAILS.items():
            put(key, f"STUB_MODE={mode}\n".encode())
        victim = ids["input/hostile-no-result.mp4"]  # sends no callback of its own: any that acts is forged
        put(FORGER, f"STUB_MODE=forge_callback victim={victim}\n".encode())
        targets = [_final(PUTTER), _final(HONEST[0]), f"output/.attempts/{ids[HONEST[0]]}/1/result.mp4"]
        put(PUTTER, f"STUB_MODE=put_elsewhere targets={quote(','.join(targets))}\n".encode())

        server = EventServer(deps, "127.0.0.1", 0, WEBHOOK_SECRET, CALLBACK_SECRET).start()
        try:
            deps.config = ControlConfig(**{**FAST_CONTROL, **CONTROL, "callback_secret": CALLBACK_SECRET,
                                           "callback_url": f"http://127.0.0.1:{server.port}/callback"})
            succeeded, took_s = _run_once_bounded(deps)
            server.work.join()  # the callbacks already queued are handled (and logged) before we look
        finally:
            server.stop()

        # `run --once` ended by itself, and would exit 1: some jobs failed.
        assert succeeded is False, f"run_once answered {succeeded} after {took_s:.1f}s"
        # Nothing is left billing, the hanging and silent hosts included.
        assert emu.live_instances() == []

    records = {r.key: r for r in deps.ledger.list()}
    assert {k: r.job_id for k, r in records.items()} == ids

    # Every honest file (and the hostile hosts' own honest work) is verified and published.
    for key in [*HONEST, FORGER, PUTTER]:
        record = records[key]
        assert record.state == JobState.SUCCEEDED, (key, record.state, record.error)
        final = s3.get_object(Bucket=bucket, Key=_final(key))
        manifest = Manifest.from_json(s3.get_object(Bucket=bucket, Key=_final(key) + ".manifest.json")["Body"].read())
        source = s3.get_object(Bucket=bucket, Key=key)
        assert final["ETag"] == manifest.result.etag == record.result_etag
        assert (manifest.job_id, manifest.input.etag) == (record.job_id, source["ETag"])
        assert final["Body"].read() == result_bytes(record.job_id, source["Body"].read()[:64])

    # No hostile claim is published: each such job failed, with its reason in `status`.
    table = render(list(records.values()))
    for key, (mode, reason) in FAILS.items():
        record = records[key]
        assert record.state == JobState.FAILED and record.attempt == 2, (key, record.state, record.error)
        assert reason in record.error, (mode, record.error)
        assert any(line.startswith(f"  {key}: ") and reason in line for line in table.splitlines()), table
    stored = {obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket, Prefix="output/").get("Contents", [])}
    # A host may still write into its own ended attempt's folder (its URLs outlive the attempt; a
    # retried 20 MB PUT lands late under load): scratch the lifecycle rule expires, never published.
    published = {k for k in stored if not k.startswith("output/.attempts/")}
    assert published == {k for key in [*HONEST, FORGER, PUTTER] for k in (_final(key), _final(key) + ".manifest.json")}
    for key in stored - published:
        job_id, attempt = key.split("/")[2], int(key.split("/")[3])
        ended = next(r for r in records.values() if r.job_id == job_id)
        assert ended.state.is_terminal() and attempt <= ended.attempt, key
    for key in published:
        assert HOSTILE_BODY not in s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    # The forged callback was refused, and nothing was done for the job it named.
    forger_log = s3.get_object(Bucket=bucket, Key=f"logs/{ids[FORGER]}.log")["Body"].read().decode()
    assert f"forge_callback victim={victim} status=401" in forger_log
    acted_on = [getattr(r, "job_id", None) for r in caplog.records if r.name == "handlers.callback"]
    assert victim not in acted_on
    # The host's own callback, signed with its own key, was accepted and acted on.
    assert ids[FORGER] in acted_on

    # Every rewritten presigned URL was refused by the store's signature check.
    putter_log = s3.get_object(Bucket=bucket, Key=f"logs/{ids[PUTTER]}.log")["Body"].read().decode()
    for target in targets:
        assert f"put_elsewhere {target} status=403" in putter_log
