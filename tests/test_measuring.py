"""A whole job processes its input while it still arrives (issue 11 item 4): the input swept in
order through ranged GETs (gpu_job.ranged_input), the measure beside the decoding
(gpu_job.media.measuring). The frames must be the very frames a measure-first job makes, and what
the bounds refuse must still be refused, with nothing made past what they allow."""

from __future__ import annotations

import json
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from gpu_job.media import bounds, pipeline
from gpu_job.media.frames import TimedFrame
from gpu_job.media.measuring import Duration, Measured
from gpu_job.media.probe import measure
from gpu_job.media.retime import frames_for, retime
from gpu_job.ranged_input import RangedInput
from tests.support.clips import make_clip
from tests.support.jobs import file_job_env, run_job
from tests.support.throttled_http import ThrottledFile
from vastdrop.errors import BadInputError

LIMITS = bounds.Limits(max_duration_s=12 * 3600, max_output_pixels=1 << 30)


# -- Duration: a lower bound until the measure ends ------------------------------------------------

def _later(seconds: float, action) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), action()), daemon=True)
    thread.start()
    return thread


def test_covers_answers_on_the_floor_at_once_and_waits_past_it_for_the_exact_duration() -> None:
    tenths = lambda seconds: int(seconds * 10)  # noqa: E731 - a count that grows with the duration
    duration = Duration()
    duration.grow(1.0)
    started = time.monotonic()
    assert duration.covers(9, tenths)  # under the floor's count: no wait
    assert time.monotonic() - started < 0.1
    _later(0.3, lambda: duration.finish(1.25))
    assert duration.covers(11, tenths)  # past the floor: waited for the end
    assert time.monotonic() - started >= 0.25
    assert not duration.covers(12, tenths) and duration.wait() == 1.25


def test_a_failed_measure_is_raised_to_whoever_waits_on_it() -> None:
    duration = Duration()
    _later(0.1, lambda: duration.fail(BadInputError("the video stream is corrupt")))
    with pytest.raises(BadInputError, match="corrupt"):
        duration.covers(5, lambda seconds: int(seconds))
    with pytest.raises(BadInputError):
        duration.check()


# -- the retime makes the same frames, whenever the duration becomes known --------------------------

def _frames(times: list[Fraction]) -> list[TimedFrame]:
    tb = Fraction(1, 120000)
    return [TimedFrame(torch.full((2, 2, 3), i, dtype=torch.uint8), int(t / tb), tb) for i, t in enumerate(times)]


def _blend(lefts, rights, steps):
    return [(a.image.float() * (1 - t) + b.image.float() * t).round().to(torch.uint8)
            for a, b, t in zip(lefts, rights, steps, strict=True)]


def _measure_aside(frames: list[TimedFrame], duration: Duration, exact: float, pause_s: float) -> threading.Thread:
    """A measure in a thread of its own, as the job's: the span it has read grows frame by frame
    (a lower bound), `pause_s` between frames, and the exact duration once it has read them all."""
    def run() -> None:
        for frame in frames:
            time.sleep(pause_s)
            duration.grow(float(frame.time - frames[0].time))
        duration.finish(exact)
    return _later(0.0, run)


@pytest.mark.parametrize(("source_fps", "target_fps", "seconds", "last_s"), [
    (24, 60, 1, Fraction(1, 24)),  # up: the tail holds the last frame
    (60, 24, 1, Fraction(1, 60)),  # down: the count cuts inside the last pairs
    (25, 30, 2, Fraction(0)),  # a last frame without a duration
    (30, 50, 1, Fraction(1, 3)),  # a last frame that lasts long
])
def test_the_retime_makes_the_same_frames_as_with_the_count_known_first(source_fps, target_fps, seconds, last_s) -> None:
    times = [Fraction(i, source_fps) for i in range(source_fps * seconds)]
    exact = round(float(times[-1] + last_s), 4)
    fps = Fraction(target_fps)
    known = [(f.pts, f.image.tolist()) for f in retime(iter(_frames(times)), fps, frames_for(exact, fps), _blend, 3)]
    for pause_s in (0.0, 0.002, 0.01):  # a measure ahead, alongside, behind the retime
        duration = Duration()
        measuring = _measure_aside(_frames(times), duration, exact, pause_s)
        learned = retime(iter(_frames(times)), fps, duration, _blend, 3)
        assert [(f.pts, f.image.tolist()) for f in learned] == known
        measuring.join()


# -- the sweep: a download that stays ahead of the decoder ----------------------------------------

def _slow_reads(data: bytes, calls: list[tuple[int, int]], delay_s: float = 0.0):
    def read(start: int, length: int) -> bytes:
        calls.append((start, length))
        time.sleep(delay_s)
        return data[start:start + length]
    return read


def test_a_sweep_fetches_everything_in_order_in_growing_runs_and_a_waiting_reader_comes_first(tmp_path: Path) -> None:
    block = 16 << 10
    data = np.random.default_rng(1).integers(0, 256, 64 * block, dtype=np.uint8).tobytes()
    calls: list[tuple[int, int]] = []
    with RangedInput(_slow_reads(data, calls, 0.02), len(data), tmp_path / "cache", block=block, run=2,
                     sweep=True, sweep_run=8) as source:
        tail = source.open()
        tail.seek(-100, 2)
        assert tail.read() == data[-100:]  # the file's end (an MP4's index), asked for at once
        deadline = time.monotonic() + 10
        while source.completed_at is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert source.completed_at is not None and source.open().read() == data
    assert source.fetched_bytes == len(data)
    tail_call = next(i for i, (start, _) in enumerate(calls) if start >= len(data) - block)
    assert tail_call <= 1, calls  # behind at most the one GET already under way
    swept = [(start, length) for start, length in calls if start < len(data) - 2 * block]
    assert swept == sorted(swept), "the sweep goes in order"
    lengths = [length // block for _, length in swept]
    assert lengths[:4] == [2, 4, 8, 8], lengths  # growing, up to sweep_run


def test_a_failed_sweep_stops_sweeping_and_readers_still_get_their_bytes(tmp_path: Path) -> None:
    block = 16 << 10
    data = bytes(range(256)) * (32 * block // 256)
    calls: list[tuple[int, int]] = []
    failed: list[int] = []

    def flaky(start: int, length: int) -> bytes:
        calls.append((start, length))
        if not failed:
            failed.append(start)
            raise ConnectionError("reset")  # the sweep's first GET: nobody waits on it
        return data[start:start + length]

    with RangedInput(flaky, len(data), tmp_path / "cache", block=block, run=2, sweep=True) as source:
        time.sleep(0.2)
        handle = source.open()
        handle.seek(5 * block)
        assert handle.read(1000) == data[5 * block:5 * block + 1000]
        time.sleep(0.2)
    assert failed == [0] and source.fetched_bytes < len(data)  # the sweep stopped; the read was served


# -- bounds: nothing made past a gap that may be refused ----------------------------------------------

def _clip_with_gap(path: Path, before: int, gap_s: float, after: int, fps: int = 25) -> Path:
    """Noise frames (so that each is a packet of its own weight) with the clock jumping by gap_s."""
    rng = np.random.default_rng(7)
    times = [i / fps for i in range(before)] + [(before - 1) / fps + gap_s + i / fps for i in range(1, after + 1)]
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=1000)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.options = {"preset": "ultrafast"}
        for t in times:
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), format="rgb24")
            frame.pts = round(t * 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def test_a_gap_that_the_bounds_refuse_is_refused_with_no_frame_made_across_it(tmp_path: Path) -> None:
    """GIVEN 4 s of 25 fps footage, then 11 minutes without a frame (over the gap rule), then 2 s more
    WHEN it is retimed to 30 fps while it is measured
    THEN the job fails with the gap's own message, and the output never got past the gap's start."""
    clip = _clip_with_gap(tmp_path / "gap.mkv", before=100, gap_s=660, after=50)
    made: list[int] = []
    with Measured.alongside(clip, LIMITS) as measured, pytest.raises(BadInputError, match=r"jump.*after frame 100"):
        pipeline.process(clip, tmp_path / "out.mp4", pipeline.Plan(target_fps=30), measured.duration,
                         on_frame=made.append)
    assert len(made) <= 4 * 30 + 1, len(made)  # 4 s at 30 fps; 660 s would be 19,800 frames
    with pytest.raises(BadInputError, match=r"jump.*after frame 100"):
        bounds.check(*measure(clip), LIMITS)  # the same verdict as measuring first


def test_headers_that_claim_too_long_are_refused_before_anything_starts(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "long.mp4", fps=24, seconds=1.0)
    with Measured.alongside(clip, bounds.Limits(max_duration_s=0.5, max_output_pixels=1 << 30)) as measured:
        with pytest.raises(BadInputError, match="span 1.000 s over 24 frames, more than the limit"):
            measured.check_claims()
        assert measured.facts.frames == 24  # measured first: the refusal and the facts are the timestamps'


def _live_clip(path: Path, seconds: int, fps: int = 25) -> Path:
    """A live recording: Matroska that declares no duration, so only its packets tell its length."""
    rng = np.random.default_rng(5)
    with av.open(str(path), "w", format="matroska", options={"live": "1"}) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def test_a_recording_longer_than_the_limit_is_refused_once_the_measure_passes_it(tmp_path: Path) -> None:
    """GIVEN a 6 s live recording (no declared duration) arriving slowly, and a limit of 1 s
    WHEN it is transcoded (no retime: nothing waits on the measure's bound)
    THEN the measure stops as soon as it is past the limit, and the job stops with it, having
    encoded no more than the limit allows: the decoder waits on the measure's bound."""
    clip = _live_clip(tmp_path / "live.mkv", seconds=6)
    data = clip.read_bytes()
    made: list[int] = []
    limits = bounds.Limits(max_duration_s=1.0, max_output_pixels=1 << 30)
    with RangedInput(_slow_reads(data, [], 0.01), len(data), tmp_path / "cache", block=4096, run=2, sweep=True,
                     sweep_run=4) as source, Measured.alongside(source, limits) as measured:
        measured.check_claims()  # nothing declared: nothing to refuse yet

        def on_frame(done: int) -> None:
            measured.check()
            made.append(done)

        with pytest.raises(BadInputError, match=r"span at least 1\.\d+ s over its first \d+ frames, more than the limit"):
            pipeline.process(source, tmp_path / "out.mp4", pipeline.Plan(), measured.duration, on_frame=on_frame)
    assert len(made) <= 26, len(made)  # the decoder never passes the measure's bound: 1 s at 25 fps (150 in all)


@pytest.mark.slow
def test_a_refused_jobs_manifest_gives_the_measured_input_not_the_headers_guess(tmp_path: Path) -> None:
    clip = _clip_with_gap(tmp_path / "gap.mkv", before=100, gap_s=660, after=50)
    proc = run_job(file_job_env(tmp_path, clip, JOB_TARGET_FPS="30"), timeout=120)
    assert proc.returncode == 65, proc.stderr[-2000:]
    manifest = json.loads((tmp_path / "bucket/output/clip.mp4.manifest.json").read_text())
    assert "after frame 100" in manifest["error"]["message"]
    facts = manifest["media"]["input"]
    assert facts["frames"] == 150 and 663 < facts["duration_s"] < 667 and facts["width"] == 64, facts


# -- the job, as the control plane starts it, on an input that arrives slowly ---------------------------

def _noise_clip(path: Path, frames: int = 48) -> Path:
    """A clip that compresses badly (about 4 MB), so that it takes several of the sweep's GETs."""
    rng = np.random.default_rng(3)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "10"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def _decoded(path: Path) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as container:
        return [(frame.pts, frame.to_ndarray().tobytes()) for frame in container.decode(video=0)]


@pytest.mark.slow
def test_the_job_processes_an_input_while_it_downloads_and_makes_the_same_result(tmp_path: Path) -> None:
    """GIVEN a 4 MB clip served at 1 MB/s (4 s to arrive) through ranged GETs with an ETag
    WHEN the job retimes it to 60 fps
    THEN most of the download overlaps the processing, and the result is frame for frame the one
    that the job makes from a local copy (where the input is all there at once)."""
    clip = _noise_clip(tmp_path / "noise.mp4")
    size = clip.stat().st_size
    slow_dir, local_dir = tmp_path / "slow", tmp_path / "local"
    with ThrottledFile(clip, size // 4) as server:
        env = file_job_env(slow_dir, clip, JOB_TARGET_FPS="60", JOB_VIDEO_CODEC="libx264")
        slow = run_job({**env, "JOB_INPUT_URL": server.url}, timeout=240)
    local = run_job(file_job_env(local_dir, clip, JOB_TARGET_FPS="60", JOB_VIDEO_CODEC="libx264"), timeout=240)
    assert slow.returncode == 0 and local.returncode == 0, slow.stderr[-2000:] + local.stderr[-2000:]
    manifest = json.loads((slow_dir / "bucket/output/clip.mp4.manifest.json").read_text())
    timings = manifest["timings_s"]
    assert timings["download"] >= 3.0, timings
    assert timings["download_overlap"] >= 0.5 * timings["download"], timings  # processing began early
    assert manifest["engine"]["input_read"]["bytes"] == size
    assert manifest["media"]["input"]["frames"] == 48 and manifest["media"]["input"]["duration_s"] == 2.0
    slow_frames = _decoded(slow_dir / "bucket/output/clip.mp4")
    assert len(slow_frames) == 120 == manifest["media"]["output"]["frames"]
    assert slow_frames == _decoded(local_dir / "bucket/output/clip.mp4")
