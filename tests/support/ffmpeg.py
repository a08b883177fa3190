"""A static ffmpeg from the package index, for tests only: it makes files PyAV cannot write (a display
matrix set at mux time, stream-copy joins and loops) and reads results as a player would (autorotate,
warnings). The product never runs it. It ships in the ``imageio-ffmpeg`` wheel, fetched once and
cached like the other wheels (tests/support/wheels.py); the wheel has no ffprobe.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import numpy as np

from tests.support.wheels import unpacked

IMAGEIO_FFMPEG = ("imageio-ffmpeg", "0.8.1")  # ffmpeg 9.0 (has -display_rotation / -display_hflip)
FFMPEG_TIMEOUT_S = 300


def ffmpeg_bin() -> Path:
    binaries = unpacked(*IMAGEIO_FFMPEG) / "imageio_ffmpeg" / "binaries"
    exe = next(p for p in binaries.iterdir() if p.name.startswith("ffmpeg-"))
    if not os.access(exe, os.X_OK):  # zip extraction drops the executable bit
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return exe


def ffmpeg(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(ffmpeg_bin()), "-hide_banner", "-nostdin", "-y", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=FFMPEG_TIMEOUT_S, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc


def decode_warnings(path: Path) -> str:
    """What a player would complain about while decoding the whole file (empty when clean)."""
    return ffmpeg("-v", "warning", "-i", path, "-f", "null", "-", check=False).stderr.strip()


def player_frames(path: Path, limit: int | None = None) -> np.ndarray:
    """The frames as a player shows them: display matrix applied (ffmpeg's autorotate), as RGB."""
    info = ffmpeg("-i", path, check=False).stderr
    size = _display_size(path)
    frames = ["-frames:v", str(limit)] if limit else []
    proc = subprocess.run(
        [str(ffmpeg_bin()), "-v", "error", "-nostdin", "-i", str(path), *frames, "-f", "rawvideo",
         "-pix_fmt", "rgb24", "-"], capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=True)
    w, h = size
    assert len(proc.stdout) % (w * h * 3) == 0, info
    return np.frombuffer(proc.stdout, np.uint8).reshape(-1, h, w, 3)


def _display_size(path: Path) -> tuple[int, int]:
    """Width and height after autorotate: one frame scaled to nothing but itself, read back as PAM."""
    proc = subprocess.run(
        [str(ffmpeg_bin()), "-v", "error", "-nostdin", "-i", str(path), "-frames:v", "1", "-f", "image2pipe",
         "-c:v", "pam", "-"], capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=True)
    header = proc.stdout[:200].decode("ascii", "replace").split("\n")
    fields = dict(line.split(" ", 1) for line in header[1:5] if " " in line)
    return int(fields["WIDTH"]), int(fields["HEIGHT"])
