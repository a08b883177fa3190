"""Media facts measured from a file: size, frame rate, frame count, duration, audio; and the video's
timeline (every frame's timestamp), from which gpu_job.media.bounds judges the input before any work."""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.codec.hwaccel import HWAccel

from gpu_job.ranged_input import RangedInput
from vastdrop.errors import BadInputError
from vastdrop.manifest import MediaFacts

# The input: a downloaded file, or one read through ranged GETs as it is demuxed (a segment's).
Source = Path | RangedInput


def readable(source: Source):
    """What av.open takes for the source: a path, or a fresh file object on the shared cache."""
    return source.open() if isinstance(source, RangedInput) else str(source)


# Tags and chapter titles as the file has them, undecodable bytes replaced: PyAV's strict UTF-8 would
# refuse to open a file whose title is Latin-1 (a UnicodeDecodeError, not an FFmpeg error).
METADATA_ERRORS = "replace"


def open_read(source: Source, **options):
    """The source opened for reading (av.open), whatever its tags' encoding."""
    return av.open(readable(source), "r", metadata_errors=METADATA_ERRORS, **options)


def source_size(source: Source) -> int:
    return source.size if isinstance(source, RangedInput) else source.stat().st_size


def open_input(path: Source, hw_decode: list[str] | None = None) -> av.container.InputContainer:
    """Open a media file, or BadInputError with the reason in words.

    hw_decode: a list to ask for decoding on NVDEC (FFmpeg's CUDA hwaccel; frames come back to host
    memory as NV12 or P010). The decoder itself falls back to software for a stream NVDEC cannot
    take; when no CUDA device can be opened at all, the file is opened for software decoding. Either
    way a note in words is appended to the list."""
    if source_size(path) == 0:
        raise BadInputError("the input file is empty (0 bytes)")
    container = None
    if hw_decode is not None:
        try:
            container = open_read(path, hwaccel=HWAccel("cuda", allow_software_fallback=True))
            hw_decode.append("video decoded on NVDEC where it takes the stream (software otherwise)")
        except av.error.FFmpegError as exc:
            hw_decode.append(f"NVDEC unavailable ({exc.strerror or exc}): video decoded in software")
    try:
        container = container or open_read(path)
    except av.error.FFmpegError as exc:
        raise BadInputError(f"not a readable media file: {exc.strerror or exc}") from exc
    if not container.streams.video:
        container.close()
        raise BadInputError("the input has no video stream")
    return container


@dataclass(frozen=True)
class Timeline:
    """When the video's frames are, by their timestamps (seconds from the first frame)."""

    frames: int
    span_s: float  # first frame's start to the last frame's end
    declared_s: float  # the longest duration the container's or the stream's metadata claims
    typical_interval_s: float  # the lower median of the intervals between frames: one gap cannot move it
    largest_gap_s: float  # the longest interval between two consecutive frames
    gap_after_frame: int  # 1-based number of the frame before that gap
    gap_at_s: float  # that frame's time
    complete: bool = True  # False: the measure stopped early (already over the duration limit)


def probe(path: Path) -> MediaFacts:
    return measure(path)[0]


# How often the measure reports the span it has read (packets): often enough that a pipeline waiting
# on it waits microseconds, seldom enough to cost nothing.
SPAN_EVERY = 32

# The span read so far, in seconds as MediaFacts.duration_s has it; False stops the measure there.
OnSpan = Callable[[float], bool]


def header(path: Source) -> tuple[MediaFacts, float]:
    """What the input claims before its packets are counted, and that its first frame decodes: the
    size, codec and audio as measure gives them; the frame rate, frame count and duration as the
    headers declare them (estimates until measured). Also the longest declared duration (declared_s)."""
    with open_input(path) as container:
        stream = container.streams.video[0]
        _first_frame(container, stream)
        declared = declared_s(container, stream)
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        facts = MediaFacts(width=stream.codec_context.width, height=stream.codec_context.height, fps=round(fps, 4),
                           frames=stream.frames or round(declared * fps), duration_s=round(declared, 4),
                           audio=bool(container.streams.audio), codec=stream.codec_context.name)
        return facts, declared


def _first_frame(container: av.container.InputContainer, stream: av.VideoStream) -> None:
    try:
        first = next(container.decode(stream), None)
    except av.error.FFmpegError as exc:
        raise BadInputError(f"the video stream cannot be decoded: {exc.strerror or exc}") from exc
    if first is None:
        raise BadInputError("the video stream has no decodable frame")


def _span_s(start: int, end: int, time_base: Fraction) -> float:
    return float((end - start) * time_base)


def measure(path: Source, on_span: OnSpan | None = None) -> tuple[MediaFacts, Timeline]:
    """Count frames by demuxing every video packet (exact, cheap: nothing is decoded but one frame).
    `on_span` hears the span read so far every SPAN_EVERY packets (gpu_job.media.measuring); when it
    says False, the measure ends there, with what it has read."""
    with open_input(path) as container:
        stream = container.streams.video[0]
        has_audio = bool(container.streams.audio)
        _first_frame(container, stream)
        container.seek(0)
        time_base = stream.time_base or Fraction(1, 90000)
        frames, start, end, complete = 0, None, None, True
        stamps = array("q")  # 8 bytes a frame: 12 h at 60 fps is 21 MB
        try:
            for packet in container.demux(stream):
                if packet.pts is None or packet.size == 0:
                    continue
                frames += 1
                stamps.append(packet.pts)
                t0 = packet.pts
                t1 = packet.pts + (packet.duration or 0)
                start = t0 if start is None else min(start, t0)
                end = t1 if end is None else max(end, t1)
                if on_span is not None and frames % SPAN_EVERY == 0 and not on_span(round(_span_s(start, end, time_base), 4)):
                    complete = False
                    break
        except av.error.FFmpegError as exc:
            raise BadInputError(f"the video stream is corrupt: {exc.strerror or exc}") from exc
        duration = _span_s(start, end, time_base) if frames and end is not None else 0.0
        fps = frames / duration if duration > 0 else float(stream.average_rate or 0)
        facts = MediaFacts(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=round(fps, 4),
            frames=frames,
            duration_s=round(duration, 4),
            audio=has_audio,
            codec=stream.codec_context.name,
        )
        return facts, timeline_from(stamps, time_base, duration, declared_s(container, stream), complete)


def declared_s(container: av.container.InputContainer, stream: av.VideoStream) -> float:
    """What the headers claim, before any packet is read: the container's duration (its longest
    stream, audio included) and the video stream's own."""
    claims = [container.duration / av.time_base if container.duration else 0.0]
    if stream.duration and stream.time_base:
        claims.append(float(stream.duration * stream.time_base))
    return max(claims)


def timeline_from(stamps: array, time_base: Fraction, span_s: float, declared_s: float,
                  complete: bool = True) -> Timeline:
    pts = np.sort(np.frombuffer(stamps, dtype=np.int64))  # presentation order (B-frames are stored out of it)
    gaps = np.diff(pts)
    if gaps.size == 0:
        return Timeline(len(pts), span_s, declared_s, span_s, 0.0, len(pts), 0.0, complete)
    typical = np.partition(gaps, (gaps.size - 1) // 2)[(gaps.size - 1) // 2]
    at = int(np.argmax(gaps))
    tb = float(time_base)
    return Timeline(frames=len(pts), span_s=span_s, declared_s=declared_s, typical_interval_s=float(typical) * tb,
                    largest_gap_s=float(gaps[at]) * tb, gap_after_frame=at + 1,
                    gap_at_s=float(pts[at] - pts[0]) * tb, complete=complete)
