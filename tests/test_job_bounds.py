"""Bounds a job decides before any heavy work (issue 9 item 5): absurd inputs are bad input (exit 65,
a failure manifest, never retried); a full disk or exhausted memory is transient (exit 75)."""

from __future__ import annotations

import errno
import subprocess
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from pydantic import ValidationError

from gpu_job import failures, memory
from gpu_job.media import bounds
from gpu_job.media.probe import Timeline, measure
from gpu_job.models.upscaler import Upscaler
from tests.support.clips import make_clip
from tests.support.jobs import file_job_env, run_job
from tests.support.jobs import measure as measure_output
from tests.support.models import save_compact, save_rife, save_rrdb
from vastdrop.errors import BadInputError
from vastdrop.jobspec import JobSpec
from vastdrop.manifest import Manifest, MediaFacts

DAY_S = 86400
DEFAULTS = bounds.Limits(max_duration_s=12 * 3600, max_output_pixels=8192 * 8192)


def _outputs(tmp: Path) -> tuple[Path, Manifest]:
    out = tmp / "bucket" / "output"
    return out / "clip.mp4", Manifest.from_json((out / "clip.mp4.manifest.json").read_bytes())


def _refused(tmp: Path, proc: subprocess.CompletedProcess) -> Manifest:
    assert proc.returncode == 65, proc.stderr
    assert "Traceback" not in proc.stderr
    result, manifest = _outputs(tmp)
    assert not result.exists() and manifest.status == "failed" and manifest.error.kind == "bad_input"
    return manifest


# -- timestamps --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_30_day_timestamp_gap_is_refused_in_milliseconds_naming_the_gap(tmp_path):
    """GIVEN a 3-frame MP4 of a few KB whose timestamps jump by 30 days after frame 2
    WHEN the job is asked for 60 fps (155 million output frames, before this fix)
    THEN it exits 65 with a bad_input manifest naming the gap and where it is, before any processing."""
    clip = make_clip(tmp_path / "gap.mp4", fps=24, seconds=3 / 24, gap_s=30 * DAY_S, gap_after_frame=2)
    assert clip.stat().st_size < 4096
    started = time.monotonic()
    proc = run_job(file_job_env(tmp_path, clip, JOB_TARGET_FPS="60"), timeout=60)
    wall_s = time.monotonic() - started
    manifest = _refused(tmp_path, proc)
    message = manifest.error.message
    assert "30 days" in message and "after frame 2" in message and "JOB_MAX_DURATION_S=43200" in message
    assert "process" not in manifest.timings_s  # refused after the probe: nothing was decoded
    assert manifest.timings_s["total"] < 1.0, manifest.timings_s  # the job's own time, torch import aside
    assert wall_s < 30


@pytest.mark.slow
def test_a_clip_longer_than_the_configured_duration_is_refused(tmp_path):
    clip = make_clip(tmp_path / "long.mp4", fps=24, seconds=1.0)
    proc = run_job(file_job_env(tmp_path, clip, JOB_MAX_DURATION_S="0.5"))
    assert "more than the limit" in _refused(tmp_path, proc).error.message


def _timeline(times: list[float], declared: float | None = None) -> Timeline:
    """Measured by the product's probe from a real file with these frame times (seconds)."""
    return _probe_times(times, declared)[1]


def _probe_times(times: list[float], declared: float | None = None) -> tuple[MediaFacts, Timeline]:
    import tempfile
    from fractions import Fraction

    path = Path(tempfile.mkdtemp()) / "t.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=1000)  # so that frame pts are milliseconds
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.options = {"preset": "ultrafast"}
        for t in times:
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            frame.pts = round(t * 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return measure(path)


def test_a_clock_jump_inside_footage_is_refused_even_within_the_duration():
    """25 fps footage with 11 minutes without a frame after frame 50: over the gap rule's floor."""
    times = [i / 25 for i in range(50)] + [49 / 25 + 660 + i / 25 for i in range(1, 51)]
    with pytest.raises(BadInputError, match=r"jump.*after frame 50 \(at 1\.960 s\)"):
        bounds.check(MediaFacts(width=32, height=32), _timeline(times), DEFAULTS)


@pytest.mark.parametrize("times", [
    [i * 5.0 for i in range(20)],  # a slideshow: a picture every 5 s
    [i * 30.0 for i in range(3)] + [60 + 600.0],  # a time-lapse at one frame per 30 s, one 10-minute pause
    [0.0, 3000.0],  # two frames: no typical interval, bounded by the duration alone
    [0.0],
])
def test_sparse_but_honest_timelines_pass(times):
    bounds.check(MediaFacts(width=32, height=32), _timeline(times), DEFAULTS)


# -- frame size ---------------------------------------------------------------------------------------

def test_an_8k_clip_upscaled_x4_is_over_the_default_pixel_budget_and_says_what_fits():
    facts = MediaFacts(width=7680, height=4320)
    small = Timeline(1, 0.04, 0.04, 0.04, 0.0, 1, 0.0)
    with pytest.raises(BadInputError, match=r"30720x17280 .* over the pixel budget of 67\.1 MP.*x1 fits"):
        bounds.check(facts, small, bounds.Limits(12 * 3600, 8192 * 8192, upscale=4))
    bounds.check(facts, small, bounds.Limits(12 * 3600, 8192 * 8192, upscale=1))


@pytest.mark.slow
def test_the_pixel_budget_is_configurable_and_refused_before_processing(tmp_path):
    clip = make_clip(tmp_path / "small.mp4", width=64, height=48, fps=24, seconds=0.25, audio=False)
    proc = run_job(file_job_env(tmp_path, clip, JOB_UPSCALE="4", JOB_MAX_OUTPUT_PIXELS=str(128 * 96)))
    message = _refused(tmp_path, proc).error.message
    assert "256x192" in message and "JOB_MAX_OUTPUT_PIXELS=12288" in message and "x2 fits" in message


# -- tiling within memory ------------------------------------------------------------------------------

RRDB_FP16 = memory.Footprint(lr_channels=192, hr_channels=64, scale=4, elem_bytes=2)  # RealESRGAN_x4plus


@pytest.mark.parametrize("free_gib", [2, 10, 22, 75, 135])
def test_8k_x4_through_rrdb_is_planned_within_any_device_memory(free_gib):
    """Whatever the free memory, the plan fits in its headroom: tiles grow with it, whole outputs
    stay on the device only when they fit, else they are stitched in host memory."""
    free = free_gib << 30
    plan = memory.plan(free, 4320, 7680, 4, RRDB_FP16, overlap=16)
    assert plan.peak_bytes <= plan.budget_bytes == int(free * memory.HEADROOM)
    assert memory.MIN_TILE_PX <= plan.tile_px < 7680
    assert plan.output_on_host == (free_gib < 75)
    if plan.output_on_host:
        assert plan.batch == 1


def test_tiles_and_batches_grow_with_free_memory():
    plans = [memory.plan(g << 30, 2160, 3840, 4, RRDB_FP16, overlap=16) for g in (4, 16, 64)]
    in_flight = [p.batch * p.tile_px**2 for p in plans]  # input pixels per model call
    assert in_flight == sorted(in_flight) and in_flight[0] < in_flight[-1]
    assert plans[0].output_on_host and plans[-1].batch > 1 and not plans[-1].output_on_host


@pytest.mark.parametrize(("save", "tolerance"), [(save_compact, 1e-5), (save_rrdb, 1e-3)])
def test_the_upscaler_tiles_by_free_memory_and_the_picture_is_unchanged(tmp_path, save, tolerance):
    """GIVEN a device that reports little free memory
    WHEN a frame is upscaled
    THEN the planned tile is smaller than the frame, and the stitched result equals the whole-frame one."""
    path = save(tmp_path / "m.pth", scale=2)
    x = torch.rand(1, 3, 150, 130)
    whole = Upscaler.from_file(path, torch.device("cpu"), tile_px=4096)(x)
    scarce = Upscaler.from_file(path, torch.device("cpu"), free_bytes=lambda: 16 << 20)
    tiled = scarce(x)
    assert scarce.tile_px is not None and scarce.tile_px < 130
    assert float((tiled - whole).abs().max()) <= tolerance
    roomy = Upscaler.from_file(path, torch.device("cpu"), free_bytes=lambda: 64 << 30)
    roomy(x)
    assert roomy.tile_px >= 150  # plenty of memory: the whole frame at once


# -- target frame rate ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fps", [0.0001, 0.5, 1000.5, float("nan")])
def test_a_target_fps_outside_1_to_1000_is_refused_by_the_jobspec(fps):
    with pytest.raises(ValidationError):
        JobSpec(id="j", input_url="file:///i", output_url="file:///o", manifest_url="file:///m", target_fps=fps)
    for ok in (1, 1000):
        JobSpec(id="j", input_url="file:///i", output_url="file:///o", manifest_url="file:///m", target_fps=ok)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["minterpolate", "rife"])
def test_a_one_frame_clip_with_a_target_fps_gives_a_valid_result(tmp_path, engine):
    """One frame of 1/24 s at 60 fps: 3 frames (the duration within half an output frame)."""
    clip = make_clip(tmp_path / "one.mp4", fps=24, seconds=1 / 24)
    extra = {"JOB_INTERPOLATION_MODEL": str(save_rife(tmp_path / "flownet.pkl", "4.6"))} if engine == "rife" else {}
    proc = run_job(file_job_env(tmp_path, clip, JOB_TARGET_FPS="60", **extra))
    assert proc.returncode == 0, proc.stderr
    result, manifest = _outputs(tmp_path)
    m = measure_output(result)
    assert (m.frames, m.fps) == (3, 60.0) and manifest.status == "succeeded"
    assert manifest.media.output.frames == 3


# -- a host's resource limits --------------------------------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs as the job's TMPDIR (root can mount; elsewhere the test is skipped)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_is_transient_with_a_clear_message(tmp_path, tiny_disk):
    """GIVEN a work directory on a 64 KiB disk and a 120 KB input
    THEN the job exits 75 with a transient manifest that says the disk is full and how much is free."""
    clip = make_clip(tmp_path / "big.mp4", width=320, height=240, fps=24, seconds=2.0)
    assert clip.stat().st_size > 100_000
    proc = run_job({**file_job_env(tmp_path, clip), "TMPDIR": str(tiny_disk)})
    assert proc.returncode == 75, proc.stderr
    _, manifest = _outputs(tmp_path)
    assert manifest.error.kind == "transient"
    assert manifest.error.message.startswith("disk full") and " KiB free of 64 KiB" in manifest.error.message


def _raised(fn) -> BaseException:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - the very exception is the test's subject
        return exc
    raise AssertionError("did not raise")


def _wrapped_as_bad_input(inner: BaseException) -> BaseException:
    def decode():
        try:
            raise inner
        except av.error.FFmpegError as exc:
            raise BadInputError(f"the video is corrupt after frame 3: {exc}") from exc
    return _raised(decode)


@pytest.mark.parametrize(("make", "where"), [
    (lambda: _raised(lambda: torch.empty(1 << 50, dtype=torch.uint8)), "the host"),  # torch's CPU allocator
    (lambda: _raised(lambda: np.empty(1 << 50, dtype=np.uint8)), "the host"),  # NumPy's MemoryError
    (lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 6.00 GiB"), "the host"),
    (lambda: _wrapped_as_bad_input(_raised(lambda: av.error.err_check(-errno.ENOMEM))), "the host"),  # a decoder's ENOMEM
])
def test_out_of_memory_however_it_surfaces_is_transient_and_said_in_words(tmp_path, make, where):
    found = failures.resource_exhausted(make(), tmp_path, "cpu")
    assert isinstance(found, failures.ResourceExhausted)
    assert str(found).startswith(f"out of memory on {where} (") and " available of " in str(found)
    assert len(str(found)) < 500


def test_a_muxer_write_on_a_full_disk_is_recognised_and_other_errors_are_not(tmp_path):
    enospc = _raised(lambda: av.error.err_check(-errno.ENOSPC, str(tmp_path / "output.mp4")))
    found = failures.resource_exhausted(enospc, tmp_path, None)
    assert found is not None and str(found).startswith("disk full writing output.mp4")
    assert failures.resource_exhausted(RuntimeError("shape mismatch"), tmp_path, None) is None
    assert failures.resource_exhausted(_raised(lambda: av.error.err_check(-errno.EINVAL)), tmp_path, None) is None


def test_the_pipeline_sends_as_many_frames_per_call_as_the_memory_plan_allows(tmp_path):
    """Frames that crowd the device go to the model one at a time, whatever the plan's batch size."""
    from fractions import Fraction

    from gpu_job.media.frames import TimedFrame
    from gpu_job.media.pipeline import Plan, Report, _upscale_stage

    class Recording(Upscaler):
        calls: list[int] = []

        def __call__(self, batch):
            self.calls.append(batch.shape[0])
            return super().__call__(batch)

    path = save_compact(tmp_path / "m.pth", scale=2)
    frames = [TimedFrame(torch.zeros(40, 48, 3, dtype=torch.uint8), i, Fraction(1, 24)) for i in range(5)]
    for free, expected in ((1 << 20, [1] * 5), (64 << 30, [4, 1])):
        model = Recording.from_file(path, torch.device("cpu"), free_bytes=lambda free=free: free)
        Recording.calls = []
        out = list(_upscale_stage(iter(frames), Plan(upscale=2, upscaler=model, batch_size=4), Report()))
        assert len(out) == 5 and Recording.calls == expected
