"""Synthetic clips made with PyAV: a moving pattern with an AAC tone; odd sizes, VFR and scene cuts on
request. The demo uses one as its sample input; the tests use them all."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def _pattern(i: int, width: int, height: int, shot: int = 0) -> np.ndarray:
    """A frame with a gradient background and a square that moves 2 px per frame."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)), np.full_like(x, 96)], axis=-1
    ).astype(np.uint8)
    if shot % 2 == 1:  # a different shot: inverted colours
        base = 255 - base
    size = max(4, min(width, height) // 4)
    left = (2 * i) % max(width - size, 1)
    top = (height - size) // 2
    base[top : top + size, left : left + size] = (255, 255, 255) if shot % 2 == 0 else (0, 0, 0)
    return base


def make_clip(
    path: Path,
    *,
    width: int = 64,
    height: int = 48,
    fps: int = 24,
    seconds: float = 1.0,
    audio: bool = True,
    vfr: bool = False,
    cut_at_frame: int | None = None,
    codec: str = "libx264",
    audio_codec: str = "aac",
    gap_s: float = 0.0,
    gap_after_frame: int = 1,
) -> Path:
    """Write an H.264 clip (yuv444p when the size is odd, so odd sizes survive) with optional audio
    (AAC unless `audio_codec` says otherwise; the container follows the path's extension).

    vfr=True alternates frame durations of 1 and 2 ticks of 1/fps (a real variable-frame-rate stream).
    cut_at_frame switches to a visually unrelated shot from that frame on.
    gap_s > 0 makes the timestamps jump by that much after frame `gap_after_frame` (1-based), as a
    clock jump would (no audio then: a tone would have to fill the gap); MP4 gets a track time scale
    of the frame rate, so even a 30-day jump fits its 32-bit sample durations.
    """
    n = round(fps * seconds)
    audio = audio and not gap_s
    ticks = fps * (2 if vfr else 1)
    options = {"video_track_timescale": str(ticks)} if gap_s and path.suffix == ".mp4" else {}
    with av.open(str(path), "w", options=options) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        stream.time_base = Fraction(1, ticks)
        stream.options = {"preset": "ultrafast", "crf": "10"}
        # encode() converts rgb24 with swscale's default, BT.601 limited range: say so in the tags.
        cc = stream.codec_context
        cc.colorspace = cc.color_primaries = cc.color_trc = 6  # AVCOL_*_SMPTE170M
        cc.color_range = 1  # AVCOL_RANGE_MPEG
        astream = out.add_stream(audio_codec, rate=48000) if audio else None
        if astream is not None:
            astream.layout = "stereo"
        pts = 0
        for i in range(n):
            shot = 0 if cut_at_frame is None or i < cut_at_frame else 1
            frame = av.VideoFrame.from_ndarray(_pattern(i, width, height, shot), format="rgb24")
            frame.pts = pts
            pts += (1 if i % 2 == 0 else 3) if vfr else 1
            if gap_s and i + 1 == gap_after_frame:
                pts += round(gap_s * ticks)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        if astream is not None:
            duration_s = pts / ticks  # not the stream's time base: a muxer may have changed it (Matroska's 1 ms)
            _write_tone(out, astream, duration_s)
    return path


def _write_tone(out: av.container.OutputContainer, astream, duration_s: float) -> None:
    rate, chunk = 48000, 1024
    total = int(rate * duration_s)
    # The tone is made as planar float; the resampler converts it to what the encoder takes.
    resampler = av.AudioResampler(format=astream.format.name, layout="stereo", rate=rate)
    t = np.arange(total) / rate
    tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for start in range(0, total, chunk):
        part = tone[start : start + chunk]
        samples = np.stack([part, part])  # planar stereo
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
        frame.sample_rate = rate
        frame.pts = start
        for converted in resampler.resample(frame):
            out.mux(astream.encode(converted))
    out.mux(astream.encode())
