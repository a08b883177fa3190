"""Test clips made with PyAV at test time: the product's sample generator plus broken inputs."""

from __future__ import annotations

from pathlib import Path

import av

from gpu_job.media.samples import _write_tone, make_clip

__all__ = ["make_audio_only", "make_clip", "make_truncated"]


def make_truncated(src: Path, dest: Path, keep_fraction: float = 0.3) -> Path:
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * keep_fraction)])
    return dest


def make_audio_only(path: Path, seconds: float = 1.0) -> Path:
    with av.open(str(path), "w", format="mp4") as out:
        astream = out.add_stream("aac", rate=48000)
        astream.layout = "stereo"
        _write_tone(out, astream, seconds)
    return path
