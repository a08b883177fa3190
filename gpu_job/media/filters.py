"""Non-learned fallbacks through libavfilter (in PyAV, no ffmpeg subprocess):
`minterpolate` for frame rate, lanczos `scale` for size."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from fractions import Fraction

import av
import av.filter

from gpu_job.lazy import lazy_import
from gpu_job.media.colour import RANGE_FULL, SPC_BT709, Colour, Converter
from gpu_job.media.frames import TimedFrame, rgb_format
from gpu_job.media.retime import Count, within

torch = lazy_import("torch")  # imported on first use: the YUV-only path never needs it

# Motion-compensated interpolation with overlapped blocks: the best quality minterpolate offers.
MINTERPOLATE_OPTIONS = "mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1:scd=fdiff"
# minterpolate takes 8-bit YUV only: RGB frames cross into it through this named working space (4:4:4,
# so no chroma is lost) and back, rather than through swscale's default matrix.
MINTERPOLATE_SPACE = Colour(matrix=SPC_BT709, range=RANGE_FULL, bit_depth=8, chroma="444")


# Times a piece of work (a stage's busy time); the default times nothing.
Timing = Callable[[], AbstractContextManager]


def graph_frames(frames: Iterator[av.VideoFrame], filter_name: str, args: str,
                 timing: Timing = nullcontext) -> Iterator[av.VideoFrame]:
    """PyAV frames through one filter, in their own pixel format and colour: the buffer source is
    told the frames' matrix and range, so libavfilter inserts no conversion and assumes none."""
    graph: av.filter.Graph | None = None

    def drain() -> Iterator[av.VideoFrame]:
        while True:
            try:
                with timing():
                    out = graph.pull()
            except (av.BlockingIOError, av.EOFError):
                return
            yield out

    for frame in frames:
        with timing():
            if graph is None:  # built on the first frame: its size, format and time base configure the source
                graph = av.filter.Graph()
                tb = Fraction(frame.time_base)
                source = graph.add("buffer", (
                    f"video_size={frame.width}x{frame.height}:pix_fmt={frame.format.name}:"
                    f"time_base={tb.numerator}/{tb.denominator}:pixel_aspect=1/1:"
                    f"colorspace={frame.colorspace}:range={frame.color_range}"))
                graph.link_nodes(source, graph.add(filter_name, args), graph.add("buffersink")).configure()
            graph.push(frame)
        yield from drain()
    if graph is not None:
        with timing():
            graph.push(None)
        yield from drain()


def minterpolate_frames(frames: Iterator[av.VideoFrame], fps: Fraction, count: Count,
                        timing: Timing = nullcontext, origin: Fraction | None = None,
                        first: int = 0) -> Iterator[tuple[int, av.VideoFrame]]:
    """(k, frame) for the output frames first <= k < `count` at k/fps (8-bit YUV in and out).
    minterpolate stops at the last source frame's time, so the tail holds the last frame to cover
    the input's duration, as the learned path does. A held frame is yielded again, not changed: set
    its pts only when it is encoded.

    k counts from the first picture: by default the filter's first output is k = 0. A segment
    (issue 12) gives `origin`, the first picture's time on the input's clock, and feeds frames from
    a little before its own first: the filter places its outputs on the same 1/fps grid whatever
    frame it starts from (its first output is the first frame's time, rounded as av_rescale_q
    does), and after a few frames of warm-up makes the very frames the one job makes."""
    args = f"fps={fps.numerator}/{fps.denominator}:{MINTERPOLATE_OPTIONS}"
    seen: list[av.VideoFrame] = []

    def remembered() -> Iterator[av.VideoFrame]:  # the last source frame, for when the filter yields none
        for frame in frames:
            seen[:] = [frame]
            yield frame

    zero = None if origin is None else _nearest(origin * fps)
    holds = within(count, fps)
    k, last = first, None  # k: the next frame to yield
    for n, out in enumerate(graph_frames(remembered(), "minterpolate", args, timing)):
        at = n if zero is None else round(out.pts * Fraction(out.time_base) * fps) - zero
        if at < k or not holds(at):
            continue
        if at > k:  # a segment's reading starts early enough, and the filter fills every slot
            raise RuntimeError(f"minterpolate gave output frame {at} where frame {k} was due")
        last, k = out, at + 1
        yield at, out
    if last is None and seen:  # a single source frame: minterpolate needs two to emit anything
        last = seen[0]
    while last is not None and holds(k):
        yield k, last
        k += 1


def _nearest(x: Fraction) -> int:
    """x rounded as av_rescale_q rounds: to the nearest, halves away from zero."""
    return int(math.copysign(math.floor(abs(x) + Fraction(1, 2)), x))


def lanczos_frames(frames: Iterator[av.VideoFrame], factor: int, timing: Timing = nullcontext) -> Iterator[av.VideoFrame]:
    """Frames scaled by `factor` with swscale's lanczos, in their own pixel format (YUV stays YUV:
    no matrix is applied, as ffmpeg's `-vf scale` does it)."""
    first = next(frames, None)
    if first is None:
        return

    def chain() -> Iterator[av.VideoFrame]:
        yield first
        yield from frames

    args = f"w={first.width * factor}:h={first.height * factor}:flags=lanczos"
    yield from graph_frames(chain(), "scale", args, timing)


# -- the same filters for RGB TimedFrames (the learned path's currency) -----------------------------


def minterpolate(frames: Iterator[TimedFrame], fps: Fraction, count: Count, timing: Timing = nullcontext,
                 origin: Fraction | None = None, first: int = 0) -> Iterator[TimedFrame]:
    """RGB frames cross into minterpolate's 8-bit YUV through a named working space and back."""
    space = Converter(MINTERPOLATE_SPACE)
    depth: list[torch.dtype] = []

    def yuv() -> Iterator[av.VideoFrame]:
        for frame in frames:
            depth[:] = [frame.image.dtype]
            with timing():
                crossed = space.to_frame(frame.image, "yuv444p", frame.pts, frame.time_base)
            yield crossed

    time_base = 1 / fps
    for k, out in minterpolate_frames(yuv(), fps, count, timing, origin, first):
        with timing():
            image = _depth(space.to_rgb(out), depth[0])
        yield TimedFrame(image, k, time_base)


def lanczos_scale(frames: Iterator[TimedFrame], factor: int, timing: Timing = nullcontext) -> Iterator[TimedFrame]:
    """RGB frames (rgb24 / rgb48le, their own depth) through lanczos_frames."""
    depth: list[torch.dtype] = []

    def rgb() -> Iterator[av.VideoFrame]:
        for frame in frames:
            depth[:] = [frame.image.dtype]
            with timing():
                crossed = frame.to_av()
            yield crossed

    for out in lanczos_frames(rgb(), factor, timing):
        with timing():
            image = torch.from_numpy(out.to_ndarray(format=rgb_format(depth[0])))
        yield TimedFrame(image, int(out.pts), Fraction(out.time_base))


def _depth(rgb: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An 8-bit filter's RGB back at the stream's depth (uint16 images use the full 16-bit scale)."""
    if rgb.dtype == dtype:
        return rgb
    return (rgb.to(torch.int32) * 257).to(dtype)  # 255 * 257 = 65535
