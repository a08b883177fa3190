"""Segments end to end (issue 12 item 6): SeaweedFS, the strict Vast emulator through the real SDK,
the real job. A 2-minute clip in 8 segments on interruptible instances that the market outbids at
random gives one verified result with the frames, timestamps and sound of the one-job run."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from gpu_job.media.samples import make_clip
from handlers import jobs
from handlers.created import ObjectEvent, on_object_created
from handlers.reaper import reap
from handlers.segments import segment_job_id
from tests.support.clips import make_subtitled, shown_cues
from tests.support.ffmpeg import decode_warnings
from tests.support.jobs import REPO, file_job_env, run_job
from tests.support.vast_emulator import Faults, VastEmulator
from tests.test_control_plane import TICK_S, drop, make_deps, stub
from vastdrop.ledger.sqlite import SqliteLedger
from vastdrop.manifest import Manifest
from vastdrop.states import JobState
from watcher import driver
from watcher.mediaprobe import probe_for_segments

pytestmark = pytest.mark.slow


def _timeline(path: Path) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = {"video": [], "audio": []}
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.dts is not None and packet.stream.type in seen:
                seen[packet.stream.type].append(packet.pts)
    return {kind: sorted(pts) for kind, pts in seen.items()}


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("long") / "film.mp4", width=64, height=48, fps=12, seconds=120)


def test_a_two_minute_clip_in_8_segments_with_preemptions_joins_into_the_one_job_result(seaweed, bucket, long_clip,
                                                                                        tmp_path):
    one = tmp_path / "one"
    proc = run_job(file_job_env(one, long_clip))
    assert proc.returncode == 0, proc.stderr[-2000:]
    whole = _timeline(one / "bucket" / "output" / "clip.mp4")

    faults = Faults(outbid_chance=0.3, outbid_after_s=(0.5, 2.0), seed=7)
    with VastEmulator(loading_s=0.05, kill_grace_s=0.5, faults=faults) as emu:  # the real `python -m gpu_job`
        deps = make_deps(seaweed, bucket, emu, tmp_path, vast={"interruptible": True, "max_instances": 8},
                         device="cpu", segment_s=15.0, single_put_max_bytes=4 << 10, max_attempts=1)
        deps = dataclasses.replace(deps, probe=probe_for_segments)
        drop(seaweed, bucket, "input/film.mp4", long_clip)
        assert driver.run_once(deps, TICK_S)
        s3 = seaweed.client()
        parent = next(r for r in deps.ledger.list() if r.parent_id is None)
        children = [deps.ledger.get(segment_job_id(parent.job_id, parent.attempt, i)) for i in range(8)]
        assert parent.state == JobState.SUCCEEDED and parent.segments == 8
        preempted = sum(c.preemptions for c in children)
        assert preempted >= 1, "the seeded market outbids at least one segment's instance"
        # Each segment processed once, unless its instance was taken by the market.
        assert all(c.state == JobState.SUCCEEDED and c.attempt == 1 + c.preemptions for c in children)
        assert len(emu.create_requests) == 8 + preempted
        assert emu.live_instances() == []

        result = tmp_path / "film.mp4"
        result.write_bytes(s3.get_object(Bucket=bucket, Key="output/film.mp4")["Body"].read())
        final = Manifest.from_json(s3.get_object(Bucket=bucket, Key="output/film.mp4.manifest.json")["Body"].read())
        head = s3.head_object(Bucket=bucket, Key="output/film.mp4")
        assert final.status == "succeeded" and final.result.etag == head["ETag"] and final.result.size == result.stat().st_size
        assert [s["index"] for s in final.segments] == list(range(8))
        assert all(s["instance_id"] and s["sha256"] for s in final.segments)
        assert parent.cost == pytest.approx(sum(c.cost for c in children)) and parent.cost > 0
        assert final.media.output.frames == final.media.input.frames == 120 * 12  # each measured its share
        # Each segment read the input through ranged GETs (presigned, pinned to its ETag), none past its size.
        reads = [s["input_read_bytes"] for s in final.segments]
        assert all(0 < r <= long_clip.stat().st_size for r in reads)
        assert final.engine.model_extra["input_read"] == {"bytes": sum(reads), "of_bytes": long_clip.stat().st_size}

        assert decode_warnings(result) == ""
        joined = _timeline(result)
        assert joined["video"] == whole["video"], "every frame once, at the one job's time"
        assert joined["audio"] == whole["audio"], "every audio packet once, in place"

        # Each segment went up through presigned multipart (its result is over the lowered single-PUT limit).
        logs = [s3.get_object(Bucket=bucket, Key=f"logs/{c.job_id}.log")["Body"].read().decode() for c in children]
        sizes = [s["size"] for s in final.segments]
        assert all("uploading the result in parts" in log for log in logs), sizes
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        assert s3.list_objects_v2(Bucket=bucket, Prefix="output/.attempts/").get("KeyCount", 0) == 0


def test_a_watcher_killed_while_segments_run_resumes_without_redoing_finished_ones(tmp_path):
    """`run --once --segment-s` on the embedded default (./bucket, local compute, SQLite): killed
    once some segments are done, started again, it joins the result and no segment ran twice. The
    film's subtitles (SRT in Matroska) show in the result at their own times, across the joins (three
    segments of about 2 s: the plan stops 2 s short of the duration Matroska's header states)."""
    (tmp_path / "bucket" / "input").mkdir(parents=True)
    cues = [(0.5, 1.5, "Before the first join"), (1.8, 4.5, "Across two joins"), (6.0, 7.5, "After the joins")]
    clip = tmp_path / "bucket" / "input" / "long.mkv"
    make_subtitled(tmp_path / "film.mkv", 8, cues).rename(clip)
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "WATCHER_SEGMENT_S": "2"}
    first = subprocess.Popen([sys.executable, "-m", "watcher", "run", "--once"], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = tmp_path / ".vastdrop" / "ledger.sqlite"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        records = SqliteLedger(db).list() if db.exists() else []
        if any(r.parent_id and r.state == JobState.SUCCEEDED for r in records):
            break
        time.sleep(0.05)
    else:
        first.kill()
        pytest.fail("no segment ever finished")
    first.kill()
    first.wait()
    second = subprocess.run([sys.executable, "-m", "watcher", "run", "--once"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    records = SqliteLedger(db).list()
    parent = next(r for r in records if r.parent_id is None)
    children = [r for r in records if r.parent_id]
    assert parent.state == JobState.SUCCEEDED and len(children) == parent.segments == 3
    assert all(c.state == JobState.SUCCEEDED and c.attempt == 1 for c in children)
    # One instance per segment: none was launched again after the restart.
    assert len(list((tmp_path / ".vastdrop" / "instances").iterdir())) == 3
    result = tmp_path / "bucket" / "output" / "long.mp4"
    assert decode_warnings(result) == ""
    with av.open(str(result)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 192
    assert [(start / 1e6, end / 1e6, text.decode()) for start, end, text in shown_cues(result)] == cues
    status = subprocess.run([sys.executable, "-m", "watcher", "status"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert "input/long.mkv [3/3]" in status.stdout and clip.exists()


def test_a_segment_that_fails_for_good_fails_its_job_and_stops_the_others(seaweed, bucket, long_clip, tmp_path):
    """GIVEN a long input split into 3 segments whose jobs are still running
    WHEN one segment fails for good (here: its record is failed, as a bad-input manifest would)
    THEN the job fails naming that segment, the other segments are cancelled, their instances
    destroyed, and nothing is left in staging."""
    with VastEmulator(command=stub("hang"), loading_s=0.05, kill_grace_s=0.2) as emu:
        deps = dataclasses.replace(make_deps(seaweed, bucket, emu, tmp_path, segment_s=40.0),
                                   probe=probe_for_segments)
        drop(seaweed, bucket, "input/film.mp4", long_clip)
        outcome = on_object_created(ObjectEvent("input/film.mp4"), deps)
        parent = deps.ledger.get(outcome.job_id)
        assert parent.state == JobState.SPLIT and parent.segments == 3
        ids = [segment_job_id(parent.job_id, parent.attempt, i) for i in range(3)]
        for job_id in ids:
            emu.wait_for_status(int(deps.ledger.get(job_id).instance_id), "running")
        broken = deps.ledger.get(ids[1])
        jobs.stop_instance(broken, broken.instance_id, deps, "test")
        deps.ledger.transition(ids[1], broken.state, JobState.FAILED, error_kind="bad_input", error="unreadable frame")
        reap(deps)
        parent = deps.ledger.get(outcome.job_id)
        assert parent.state == JobState.FAILED and parent.error_kind == "bad_input"
        assert "segment 1" in parent.error and "unreadable frame" in parent.error
        assert [deps.ledger.get(i).state for i in ids] == [JobState.CANCELLED, JobState.FAILED, JobState.CANCELLED]
        assert emu.live_instances() == []
        assert seaweed.client().list_objects_v2(Bucket=bucket, Prefix="output/.attempts/").get("KeyCount", 0) == 0


def test_inputs_too_short_or_not_splittable_run_as_one_job(seaweed, bucket, tmp_path):
    """Not longer than the segment length (4 s, segments of 3 s), or with DVD subtitles (which MP4
    keeps as they are, a track that starts at its first cue): each runs as one job, decided once."""
    from tests.support.clips import make_rip
    from tests.support.ffmpeg import ffmpeg

    vobsub = tmp_path / "vobsub.mkv"
    ffmpeg("-i", make_rip(tmp_path / "rip.mkv", seconds=10, pgs=True), "-map", "0:v", "-map", "0:s:1",
           "-c:v", "copy", "-c:s", "dvdsub", vobsub)
    short = make_clip(tmp_path / "short.mp4", width=64, height=48, fps=12, seconds=4)
    with VastEmulator(command=stub(), loading_s=0.05, kill_grace_s=0.2) as emu:
        deps = dataclasses.replace(make_deps(seaweed, bucket, emu, tmp_path, segment_s=3.0), probe=probe_for_segments)
        drop(seaweed, bucket, "input/vobsub.mkv", vobsub)
        drop(seaweed, bucket, "input/short.mp4", short)
        assert driver.run_once(deps, TICK_S)
        records = deps.ledger.list()
        assert len(records) == 2, "neither was split"
        assert all(r.segments == 0 and r.state == JobState.SUCCEEDED for r in records)
        assert len(emu.create_requests) == 2
