"""Deinterlacing with libavfilter's `bwdif` (in PyAV, no ffmpeg subprocess), on the decoded YUV frames.

It runs before anything else touches the picture: the two fields of a frame are ~1/60 s apart, so
converting, turning, interpolating or upscaling a woven frame would smear that comb into the result.
It runs on the coded YUV planes (4:2:0 chroma of an interlaced frame belongs to its field; an RGB
conversion first would mix the fields' chroma) and before the display matrix is applied (fields are
lines of the coded picture).

Output rate: without retiming, one frame per frame (mode send_frame), so the result keeps the
source's frame count and exact timestamps; with a target frame rate, one frame per field (send_field):
the fields are real pictures 1/50 or 1/59.94 s apart, and the interpolator should start from them
rather than invent that motion.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import av.filter

from gpu_job.media.geometry import Geometry

# bwdif's parity (libavfilter/vf_bwdif.c): which field comes first, from the stream's field order.
PARITY = {"tt": "tff", "tb": "tff", "bb": "bff", "bt": "bff"}


@dataclass(frozen=True)
class Deinterlace:
    mode: str  # send_frame | send_field
    parity: str  # tff | bff | auto (each frame's own flag)
    deint: str  # all (the stream declares interlace) | interlaced (only frames flagged so)

    @property
    def args(self) -> str:
        return f"mode={self.mode}:parity={self.parity}:deint={self.deint}"

    def note(self) -> str:
        per = ("one frame per field (double rate: the fields are real pictures for the interpolator)"
               if self.mode == "send_field" else
               "one frame per frame (the source's frame count and timestamps are kept)")
        which = "every frame" if self.deint == "all" else "the frames flagged interlaced"
        return f"interlaced input ({self.parity}) deinterlaced with libavfilter bwdif before any other step: " \
               f"{which}, {per}"

    def manifest_entry(self) -> dict:
        return {"filter": "bwdif", "mode": self.mode, "parity": self.parity, "deint": self.deint}


def plan_for(geometry: Geometry, retiming: bool) -> Deinterlace | None:
    if not geometry.interlaced:
        return None
    parity = PARITY.get(geometry.field_order or "", "auto")
    return Deinterlace(mode="send_field" if retiming else "send_frame", parity=parity,
                       deint="all" if geometry.field_order else "interlaced")


class Deinterlacer:
    """Decoded frames in, deinterlaced frames out (bwdif holds one frame back; flush() drains it).
    In send_frame mode the frames come back in the source's time base with their own timestamps."""

    def __init__(self, plan: Deinterlace, time_base: Fraction) -> None:
        self.plan, self.time_base = plan, Fraction(time_base)
        self.graph: av.filter.Graph | None = None
        self.shape: tuple | None = None

    def push(self, frame: av.VideoFrame) -> list[av.VideoFrame]:
        shape = (frame.width, frame.height, frame.format.name)
        out = self.flush() if self.graph is not None and shape != self.shape else []
        if self.graph is None:
            self._build(frame)
            self.shape = shape
        frame.time_base = self.time_base
        self.graph.push(frame)
        return out + self._drain()

    def flush(self) -> list[av.VideoFrame]:
        if self.graph is None:
            return []
        self.graph.push(None)
        out = self._drain()
        self.graph = None
        return out

    def _build(self, frame: av.VideoFrame) -> None:
        graph = av.filter.Graph()
        # The buffer is told the frames' colour so no conversion is inserted and none is assumed.
        source = graph.add("buffer", (
            f"video_size={frame.width}x{frame.height}:pix_fmt={frame.format.name}:"
            f"time_base={self.time_base.numerator}/{self.time_base.denominator}:pixel_aspect=1/1:"
            f"colorspace={frame.colorspace}:range={frame.color_range}"))
        graph.link_nodes(source, graph.add("bwdif", self.plan.args), graph.add("buffersink")).configure()
        self.graph = graph

    def _drain(self) -> list[av.VideoFrame]:
        out = []
        while True:
            try:
                frame = self.graph.pull()
            except (av.BlockingIOError, av.EOFError):
                return out
            if self.plan.mode == "send_frame" and frame.pts is not None:
                # bwdif counts in half the input's time base (pts doubled): give the frame its own back.
                frame.pts = round(Fraction(frame.pts) * Fraction(frame.time_base) / self.time_base)
                frame.time_base = self.time_base
            out.append(frame)


def deinterlaced(frames: Iterator[av.VideoFrame], plan: Deinterlace | None, time_base: Fraction) -> Iterator[av.VideoFrame]:
    if plan is None:
        yield from frames
        return
    worker = Deinterlacer(plan, time_base)
    for frame in frames:
        yield from worker.push(frame)
    yield from worker.flush()
