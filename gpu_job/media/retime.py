"""Retiming to a constant output frame rate.

Output frame k sits at time k/fps (relative to the first source frame). It is made from the two
source frames that bracket that time, with timestep t = (T - t_left) / (t_right - t_left):
t == 0 copies the left frame, 0 < t < 1 asks the interpolator, and across a scene cut the nearer
source frame is repeated instead of morphing two shots into each other. Source timestamps are used
as they are, so variable-frame-rate input comes out evenly spaced without drifting.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

from gpu_job.lazy import lazy_import
from gpu_job.media.frames import TimedFrame
from gpu_job.media.measuring import Duration

torch = lazy_import("torch")  # imported on first use: the YUV-only path never needs it

# Mean absolute difference (0..1) of 64x64 grey thumbnails above which two frames are different shots.
SCENE_CUT_THRESHOLD = 0.2
NTSC_TOLERANCE = 0.005

# Interpolates a batch: (left frames, right frames, timesteps in (0, 1)) -> middle frames, same order.
BatchInterpolator = Callable[[list[TimedFrame], list[TimedFrame], list[float]], list["torch.Tensor"]]


def fps_fraction(fps: float) -> Fraction:
    """59.94 -> 60000/1001, 23.976 -> 24000/1001 (the NTSC rates people mean); others kept exact."""
    ntsc = fps * 1.001
    if not float(fps).is_integer() and abs(ntsc - round(ntsc)) < NTSC_TOLERANCE:
        return Fraction(round(ntsc) * 1000, 1001)
    return Fraction(fps).limit_denominator(1001)


def output_frame_count(duration_s: Fraction | float, fps: Fraction) -> int:
    """Frames that cover the input's duration at `fps`; the duration stays within half an output frame."""
    return max(1, math.floor(Fraction(duration_s) * fps + Fraction(1, 2)))


def frames_for(duration_s: float, fps: Fraction) -> int:
    """output_frame_count for a duration as measured (seconds, as MediaFacts.duration_s has it)."""
    return output_frame_count(Fraction(duration_s).limit_denominator(10**6), fps)


# The output's length: a count, or the Duration of an input still being measured, which decides
# whether frame k is part of the output as it learns the input's length (gpu_job.media.measuring).
Count = int | Duration


def within(count: Count, fps: Fraction) -> Callable[[int], bool]:
    """Whether output frame k (at k/fps) is part of the output: k < the count."""
    if isinstance(count, Duration):
        return lambda k: count.covers(k, lambda seconds: frames_for(seconds, fps))
    return lambda k: k < count


def grey_thumbnail(image: torch.Tensor) -> torch.Tensor:
    x = image.permute(2, 0, 1).unsqueeze(0).float().mean(dim=1, keepdim=True) / 255.0
    return torch.nn.functional.adaptive_avg_pool2d(x, (64, 64))


def is_scene_cut(a: TimedFrame, b: TimedFrame) -> bool:
    diff = (grey_thumbnail(a.image) - grey_thumbnail(b.image)).abs().mean()
    return float(diff) > SCENE_CUT_THRESHOLD


@dataclass
class _Slot:
    ready: torch.Tensor | None = None  # a copied source frame
    left: TimedFrame | None = None  # or an interpolation request
    right: TimedFrame | None = None
    t: float = 0.0


@dataclass
class RetimeStats:
    interpolated: int = 0
    copied: int = 0
    scene_cuts: int = 0


def retime(
    frames: Iterator[TimedFrame],
    fps: Fraction,
    count: Count,
    interpolate: BatchInterpolator,
    batch_size: int | Callable[[], int] = 4,
    stats: RetimeStats | None = None,
    *,
    origin: Fraction | None = None,
    first: int = 0,
) -> Iterator[TimedFrame]:
    """Yield the frames k at k/fps for first <= k < count, pts = k in time base 1/fps. Times count
    from `origin` (seconds; None: the first source frame's): a segment of a longer job gives the
    whole job's origin and its own first k, and gets exactly the frames the whole job would.
    `batch_size`: the frames to interpolate per call, or a function asked once before each (a batch
    chosen from the device's free memory, gpu_job.memory.MeasuredBatch)."""
    def next_size() -> int:
        return batch_size() if callable(batch_size) else batch_size

    stats = stats or RetimeStats()
    holds = within(count, fps)
    time_base = 1 / fps
    slots: list[_Slot] = []
    k = first
    prev: TimedFrame | None = None
    cut_cache: dict[int, bool] = {}
    size = next_size()

    def flush() -> Iterator[TimedFrame]:
        nonlocal slots
        requests = [s for s in slots if s.ready is None]
        if requests:
            outs = interpolate([s.left for s in requests], [s.right for s in requests], [s.t for s in requests])  # type: ignore[misc]
            for slot, out in zip(requests, outs, strict=True):
                slot.ready = out
        first_k = k - len(slots)
        for i, slot in enumerate(slots):
            assert slot.ready is not None
            yield TimedFrame(slot.ready, first_k + i, time_base)
        slots = []

    for cur in frames:
        if origin is None:
            origin = cur.time
        if prev is None or cur.time <= prev.time:  # first frame, or a duplicate/backwards timestamp
            prev = prev or cur
            continue
        left_t, right_t = prev.time - origin, cur.time - origin
        while k * time_base < right_t and holds(k):
            t = (k * time_base - left_t) / (right_t - left_t)
            if t <= 0:
                slots.append(_Slot(ready=prev.image))
                stats.copied += 1
            else:
                key = id(cur)
                if key not in cut_cache:
                    cut_cache.clear()
                    cut_cache[key] = is_scene_cut(prev, cur)
                    stats.scene_cuts += cut_cache[key]
                if cut_cache[key]:
                    slots.append(_Slot(ready=prev.image if t < Fraction(1, 2) else cur.image))
                    stats.copied += 1
                else:
                    slots.append(_Slot(left=prev, right=cur, t=float(t)))
                    stats.interpolated += 1
            k += 1
            if sum(s.ready is None for s in slots) >= size:
                yield from flush()
                size = next_size()
        prev = cur
    # Past the last source frame: hold it until the input's duration is covered.
    while prev is not None and holds(k):
        slots.append(_Slot(ready=prev.image))
        stats.copied += 1
        k += 1
    yield from flush()
