"""Running the real job process (`python -m gpu_job`) with env vars, and measuring what it wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import av

REPO = Path(__file__).resolve().parents[2]
JOB_TIMEOUT_S = 240


def run_job(env: dict[str, str], timeout: float = JOB_TIMEOUT_S,
            unimportable: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The job as the control plane starts it: a child process configured only by its environment.
    `unimportable`: modules that the job must not import (any use of one is an error in the job)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JOB_", "AWS_"))}
    base["PYTHONPATH"] = str(REPO)
    command = [sys.executable, "-m", "gpu_job"]
    if unimportable:  # None in sys.modules: `import x` raises, and so does any use of a lazy binding
        command = [sys.executable, "-c", f"import runpy, sys; sys.modules.update(dict.fromkeys({unimportable!r}));"
                   " runpy.run_module('gpu_job', run_name='__main__', alter_sys=True)"]
    return subprocess.run(command, env={**base, **env}, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def file_job_env(tmp: Path, source: Path, job_id: str = "job-1", **extra: str) -> dict[str, str]:
    out = tmp / "bucket"
    return {
        "JOB_ID": job_id,
        "JOB_INPUT_URL": source.resolve().as_uri(),
        "JOB_OUTPUT_URL": (out / "output" / "clip.mp4").as_uri(),
        "JOB_MANIFEST_URL": (out / "output" / "clip.mp4.manifest.json").as_uri(),
        "JOB_LOG_URL": (out / "logs" / f"{job_id}.log").as_uri(),
        "JOB_DEVICE": "cpu",
        **extra,
    }


@dataclass
class Measured:
    width: int
    height: int
    fps: float
    frames: int
    duration_s: float
    audio_codec: str | None
    frame_times: list[float]
    pix_fmt: str


def measure(path: Path) -> Measured:
    """Decode every frame with PyAV: independent of the product's own probe."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        times = [float(frame.time) for frame in container.decode(video)]
        audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
        step = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 0.0
        return Measured(
            width=video.codec_context.width, height=video.codec_context.height,
            fps=float(video.average_rate), frames=len(times),
            duration_s=(times[-1] - times[0]) + step, audio_codec=audio, frame_times=times,
            pix_fmt=video.codec_context.pix_fmt,
        )
