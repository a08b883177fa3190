"""Non-learned fallbacks through libavfilter (in PyAV, no ffmpeg subprocess):
`minterpolate` for frame rate, lanczos `scale` for size."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import av
import av.filter
import torch

from gpu_job.media.colour import RANGE_FULL, SPC_BT709, Colour, Converter
from gpu_job.media.frames import RGB_FORMATS, TimedFrame

# Motion-compensated interpolation with overlapped blocks: the best quality minterpolate offers.
MINTERPOLATE_OPTIONS = "mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1:scd=fdiff"
# minterpolate takes 8-bit YUV only: RGB frames cross into it through this named working space (4:4:4,
# so no chroma is lost) and back, rather than through swscale's default matrix.
MINTERPOLATE_SPACE = Colour(matrix=SPC_BT709, range=RANGE_FULL, bit_depth=8, chroma="444")


def _run_graph(frames: Iterator[TimedFrame], filter_name: str, args: str,
               yuv: Converter | None = None) -> Iterator[TimedFrame]:
    """Frames through one filter: as RGB (rgb24 / rgb48le, their own depth), or, with `yuv`, as
    yuv444p made and read back by that converter."""
    graph: av.filter.Graph | None = None
    depth = torch.uint8

    def drain() -> Iterator[TimedFrame]:
        assert graph is not None
        while True:
            try:
                out = graph.pull()
            except (av.BlockingIOError, av.EOFError):
                return
            if yuv is not None:
                rgb = _depth(yuv.to_rgb(out), depth)
            else:
                rgb = torch.from_numpy(out.to_ndarray(format=RGB_FORMATS[depth]))
            yield TimedFrame(rgb, int(out.pts), Fraction(out.time_base))

    for frame in frames:
        if graph is None:  # built on the first frame: its size and time base configure the source
            depth = frame.image.dtype
            graph = av.filter.Graph()
            source = graph.add_buffer(
                width=frame.width, height=frame.height, format="yuv444p" if yuv else frame.rgb_format,
                time_base=frame.time_base,
            )
            graph.link_nodes(source, graph.add(filter_name, args), graph.add("buffersink")).configure()
        graph.push(yuv.to_frame(frame.image, "yuv444p", frame.pts, frame.time_base) if yuv else frame.to_av())
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
    for out in _run_graph(remembered(), "minterpolate", args, Converter(MINTERPOLATE_SPACE)):
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


def _depth(rgb: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An 8-bit filter's RGB back at the stream's depth (uint16 images use the full 16-bit scale)."""
    if rgb.dtype == dtype:
        return rgb
    return (rgb.to(torch.int32) * 257).to(dtype)  # 255 * 257 = 65535
