"""Retiming: output frame k at k/fps, made from the two source frames that bracket it."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_job.media.frames import TimedFrame
from gpu_job.media.retime import RetimeStats, fps_fraction, output_frame_count, retime


def _source(times: list[Fraction], values: list[int] | None = None) -> list[TimedFrame]:
    """Frames whose single pixel value identifies them; a time base that holds every test time exactly."""
    values = values or list(range(len(times)))
    tb = Fraction(1, 120000)
    return [
        TimedFrame(torch.full((4, 4, 3), v, dtype=torch.uint8), int(t / tb), tb)
        for t, v in zip(times, values, strict=True)
    ]


class Recorder:
    """An interpolator that returns the mean of its inputs and remembers every request."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, float]] = []
        self.batch_sizes: list[int] = []

    def __call__(self, lefts, rights, steps):
        self.batch_sizes.append(len(steps))
        out = []
        for a, b, t in zip(lefts, rights, steps, strict=True):
            self.calls.append((int(a.image[0, 0, 0]), int(b.image[0, 0, 0]), t))
            out.append(((a.image.float() * (1 - t) + b.image.float() * t)).round().to(torch.uint8))
        return out


@pytest.mark.parametrize(
    ("fps", "expected"),
    [(60, Fraction(60)), (70, Fraction(70)), (59.94, Fraction(60000, 1001)), (23.976, Fraction(24000, 1001)),
     (29.97, Fraction(30000, 1001)), (12.5, Fraction(25, 2))],
)
def test_fps_fraction_maps_ntsc_rates(fps, expected):
    assert fps_fraction(fps) == expected


def test_24_to_60_brackets_each_output_time_with_timesteps_inside_0_1():
    src = _source([Fraction(i, 24) for i in range(24)])
    rec = Recorder()
    stats = RetimeStats()
    out = list(retime(iter(src), Fraction(60), output_frame_count(1, Fraction(60)), rec, batch_size=3, stats=stats))
    assert [f.pts for f in out] == list(range(60))
    assert all(f.time_base == Fraction(1, 60) for f in out)
    # 24 -> 60: every 5 output frames, 2 land exactly on a source frame (0 and 2.5 -> no: 0/60 and 5/60...)
    for left, right, t in rec.calls:
        assert right == left + 1 and 0 < t < 1
    # Output frame k=1 (t=1/60) lies between source 0 (0) and 1 (1/24): t = (1/60)/(1/24) = 0.4
    assert rec.calls[0] == (0, 1, pytest.approx(0.4))
    # Exact hits copy the source frame: k=0 -> frame 0, k=5 (1/12 s) -> frame 2.
    assert int(out[0].image[0, 0, 0]) == 0 and int(out[5].image[0, 0, 0]) == 2
    assert stats.copied + stats.interpolated == 60
    assert max(rec.batch_sizes) <= 3


def test_tail_is_held_on_the_last_frame_to_cover_the_duration():
    src = _source([Fraction(i, 24) for i in range(24)])
    out = list(retime(iter(src), Fraction(60), 60, Recorder()))
    # The last source frame is at 23/24 s; output frames after it (k >= 58) repeat it.
    assert [int(f.image[0, 0, 0]) for f in out[58:]] == [23, 23]


def test_variable_frame_rate_input_comes_out_evenly_spaced_and_uses_true_timestamps():
    times = [Fraction(0), Fraction(1, 10), Fraction(4, 10), Fraction(5, 10), Fraction(9, 10)]
    rec = Recorder()
    out = list(retime(iter(_source(times)), Fraction(10), 10, rec))
    assert [f.pts for f in out] == list(range(10))
    # 0.2 s lies between the frames at 0.1 and 0.4: t = 1/3.
    assert (1, 2, pytest.approx(1 / 3)) in rec.calls
    assert int(out[4].image[0, 0, 0]) == 2  # 0.4 s is an exact source frame: copied, not interpolated
    assert int(out[9].image[0, 0, 0]) == 4


def test_scene_cut_repeats_the_nearer_frame_instead_of_morphing():
    times = [Fraction(i, 10) for i in range(4)]
    black, white = 0, 255
    src = _source(times, [black, black, white, white])
    rec = Recorder()
    stats = RetimeStats()
    out = list(retime(iter(src), Fraction(40), 16, rec, stats=stats))
    values = [int(f.image[0, 0, 0]) for f in out]
    # Between 0.1 (black) and 0.2 (white) no blend appears: 0.125 -> black, 0.175 -> white.
    assert set(values) == {black, white}
    assert values[5] == black and values[7] == white
    assert all((left, right) != (1, 2) for left, right, _ in [(a, b, t) for a, b, t in rec.calls])
    assert stats.scene_cuts == 1


def test_duplicate_timestamps_are_skipped_not_divided_by_zero():
    times = [Fraction(0), Fraction(1, 10), Fraction(1, 10), Fraction(2, 10)]
    out = list(retime(iter(_source(times)), Fraction(20), 6, Recorder()))
    assert len(out) == 6


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=1, max_value=90), min_size=1, max_size=30),
    fps=st.sampled_from([24, 25, 30, 50, 59.94, 60, 70, 120]),
)
def test_any_timing_yields_exactly_the_planned_frames_with_valid_timesteps(gaps, fps):
    times = [Fraction(0)]
    for g in gaps:
        times.append(times[-1] + Fraction(g, 1000))
    duration = times[-1] + Fraction(gaps[-1], 1000)
    rate = fps_fraction(fps)
    count = output_frame_count(duration, rate)
    rec = Recorder()
    out = list(retime(iter(_source(times, [i % 256 for i in range(len(times))])), rate, count, rec, batch_size=5))
    assert len(out) == count
    assert count == 1 or abs(Fraction(count) / rate - duration) <= 1 / (2 * rate)  # at least one frame
    assert all(0 < t < 1 for _, _, t in rec.calls)


class _LinearBlend:
    """A stand-in model with RIFE's call shape: (img0, img1, t) -> a blend, so outputs are checkable."""

    name = "linear-blend"

    def __call__(self, img0, img1, t):
        t = t.view(-1, 1, 1, 1)
        return img0 * (1 - t) + img1 * t


def test_the_pipeline_stage_hands_each_slot_its_own_two_frames():
    """The interpolation stage moves each source frame to the device once per batch; every output
    must still be made from the two frames that bracket it (values 0, 40, 80, ... identify them)."""
    from gpu_job.media.pipeline import Plan, Report, _interpolate_stage

    src = _source([Fraction(i, 24) for i in range(6)], [40 * i for i in range(6)])
    plan = Plan(target_fps=60, interpolator=_LinearBlend(), batch_size=4)
    out = list(_interpolate_stage(iter(src), plan, 0.25, Report()))
    assert len(out) == 15
    for k, frame in enumerate(out):
        t_src = Fraction(k, 60) * 24  # position in source frames
        left = min(int(t_src), 5)
        frac = float(t_src - left) if left < 5 else 0.0
        expected = 40 * left + 40 * frac
        assert abs(int(frame.image[0, 0, 0]) - expected) <= 1, f"frame {k}"


class _Device:
    """A device's memory as MeasuredBatch reads it: `free` bytes now, and a call that peaks at
    `per_pair` bytes for each pair it runs (set by the interpolator below)."""

    def __init__(self, free: int, per_pair: int) -> None:
        self.free_now, self.per_pair, self.pairs, self.measured = free, per_pair, 0, 0

    def free(self) -> int:
        return self.free_now

    def start(self) -> None:
        self.measured += 1

    def peak(self) -> int:
        return self.per_pair * self.pairs


def test_a_batch_is_chosen_from_the_free_memory_its_first_pair_measured():
    """The first call runs one pair, measured; then as many pairs as half the free memory holds at
    that peak each (the rest is the allocator's, the codecs' and cuDNN's), never more than the
    plan's batch_size, and fewer when the free memory shrinks. The frames are the same whatever
    the batches."""
    from gpu_job.memory import HEADROOM, MeasuredBatch

    mib = 1 << 20
    device = _Device(free=12 * 100 * mib, per_pair=100 * mib)  # half of it holds 6 pairs
    batch = MeasuredBatch(8, device)
    rec = Recorder()

    def interpolate(lefts, rights, steps):
        device.pairs = len(steps)
        if len(rec.batch_sizes) == 3:
            device.free_now = 4 * 100 * mib  # another tenant: 2 pairs from now on
        return batch.run(lambda: rec(lefts, rights, steps), len(steps))

    src = _source([Fraction(i, 12) for i in range(25)])
    out = list(retime(iter(src), Fraction(60), 120, interpolate, batch))
    assert device.measured == 1 and batch.per_item == 100 * mib and HEADROOM == 0.5
    assert rec.batch_sizes[:6] == [1, 6, 6, 6, 2, 2], rec.batch_sizes  # the 4th was sized before the drop
    plain = Recorder()
    assert [f.image.tolist() for f in out] == [f.image.tolist() for f in retime(iter(src), Fraction(60), 120, plain, 8)]
    # On the CPU nothing is measured: every call takes the plan's batch.
    cpu = MeasuredBatch.for_device(8, torch.device("cpu"))
    assert cpu() == 8 and cpu.run(lambda: "ran", 8) == "ran" and cpu.per_item is None
