"""Media facts measured from a file: size, frame rate, frame count, duration, audio."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av

from vastdrop.errors import BadInputError
from vastdrop.manifest import MediaFacts


def open_input(path: Path) -> av.container.InputContainer:
    """Open a media file, or BadInputError with the reason in words."""
    if path.stat().st_size == 0:
        raise BadInputError("the input file is empty (0 bytes)")
    try:
        container = av.open(str(path), "r")
    except av.error.FFmpegError as exc:
        raise BadInputError(f"not a readable media file: {exc.strerror or exc}") from exc
    if not container.streams.video:
        container.close()
        raise BadInputError("the input has no video stream")
    return container


def probe(path: Path) -> MediaFacts:
    """Count frames by demuxing every video packet (exact, cheap: nothing is decoded but one frame)."""
    with open_input(path) as container:
        stream = container.streams.video[0]
        has_audio = bool(container.streams.audio)
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as exc:
            raise BadInputError(f"the video stream cannot be decoded: {exc.strerror or exc}") from exc
        if first is None:
            raise BadInputError("the video stream has no decodable frame")
        container.seek(0)
        frames, start, end = 0, None, None
        try:
            for packet in container.demux(stream):
                if packet.pts is None or packet.size == 0:
                    continue
                frames += 1
                t0 = packet.pts
                t1 = packet.pts + (packet.duration or 0)
                start = t0 if start is None else min(start, t0)
                end = t1 if end is None else max(end, t1)
        except av.error.FFmpegError as exc:
            raise BadInputError(f"the video stream is corrupt: {exc.strerror or exc}") from exc
        time_base = stream.time_base or Fraction(1, 90000)
        duration = float((end - start) * time_base) if frames and end is not None else 0.0
        fps = frames / duration if duration > 0 else float(stream.average_rate or 0)
        return MediaFacts(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=round(fps, 4),
            frames=frames,
            duration_s=round(duration, 4),
            audio=has_audio,
            codec=stream.codec_context.name,
        )
