"""Non-learned fallbacks through libavfilter (in PyAV, no ffmpeg subprocess):
`minterpolate` for frame rate, lanczos `scale` for size."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import av
import av.filter
import torch

from gpu_job.media.frames import TimedFrame

# Motion-compensated interpolation with overlapped blocks: the best quality minterpolate offers.
MINTERPOLATE_OPTIONS = "mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1:scd=fdiff"


def _run_graph(frames: Iterator[TimedFrame], filter_name: str, args: str) -> Iterator[TimedFrame]:
    graph: av.filter.Graph | None = None

    def drain() -> Iterator[TimedFrame]:
        assert graph is not None
        while True:
            try:
                out = graph.pull()
            except (av.BlockingIOError, av.EOFError):
                return
            rgb = torch.from_numpy(out.to_ndarray(format="rgb24"))
            yield TimedFrame(rgb, int(out.pts), Fraction(out.time_base))

    for frame in frames:
        if graph is None:  # built on the first frame: its size and time base configure the source
            graph = av.filter.Graph()
            source = graph.add_buffer(
                width=frame.width, height=frame.height, format="rgb24", time_base=frame.time_base
            )
            graph.link_nodes(source, graph.add(filter_name, args), graph.add("buffersink")).configure()
        graph.push(frame.to_av())
        yield from drain()
    if graph is not None:
        graph.push(None)
        yield from drain()


def minterpolate(frames: Iterator[TimedFrame], fps: Fraction, count: int) -> Iterator[TimedFrame]:
    """Exactly `count` frames at k/fps. minterpolate stops at the last source frame's time, so the
    tail is held on the last frame to cover the input's duration, as the learned path does."""
    args = f"fps={fps.numerator}/{fps.denominator}:{MINTERPOLATE_OPTIONS}"
    time_base = 1 / fps
    seen: list[TimedFrame] = []

    def remembered() -> Iterator[TimedFrame]:  # the last source frame, for when the filter yields none
        for frame in frames:
            seen[:] = [frame]
            yield frame

    k, last = 0, None
    for out in _run_graph(remembered(), "minterpolate", args):
        if k >= count:
            continue
        last = out
        yield TimedFrame(out.image, k, time_base)
        k += 1
    if last is None and seen:  # a single source frame: minterpolate needs two to emit anything
        last = seen[0]
    while last is not None and k < count:
        yield TimedFrame(last.image, k, time_base)
        k += 1


def lanczos_scale(frames: Iterator[TimedFrame], factor: int) -> Iterator[TimedFrame]:
    first = next(frames, None)
    if first is None:
        return

    def chain() -> Iterator[TimedFrame]:
        yield first
        yield from frames

    args = f"w={first.width * factor}:h={first.height * factor}:flags=lanczos"
    yield from _run_graph(chain(), "scale", args)
