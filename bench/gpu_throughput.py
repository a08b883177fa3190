"""End-to-end frame rates on a CUDA host (issue 11 item 5 (d)), in one go of under 10 minutes.

`python bench/gpu_throughput.py --json gpu.json` runs the job's own pipeline
(gpu_job.media.pipeline.process: demux, decode, device work, encode, mux) on generated clips with:
  - RIFE 4.25 and 4.26 doubling the frame rate, at 1080p and at 4K (flow at scale 0.5 above 1440p,
    as the runner does);
  - the same with the opt-in compiled path (JOB_COMPILE=cuda-graphs) for one RIFE and one Compact
    case, compiled during the warm-up, whose wall time is not counted;
  - x2 upscaling from 1080p and x4 from 540p (both 4K out), with SRVGGNetCompact
    (realesr-animevideov3's size: 64 features, 16 convs) and RRDBNet (RealESRGAN_x*plus's size:
    64 features, 23 blocks);
in fp16 on CUDA (the runner's choice, gpu_job/runner.py `_plan`), with random weights in the real
layouts (tests/support/models.py: the same compute as the published files). Each case first runs a
few warm-up frames of the same size (cuDNN's algorithm search, lazy CUDA init), then the timed run;
fps counts output frames over the whole wall time, decode and encode included. The GPU's
utilization is sampled from nvidia-smi every SAMPLE_S while a case runs. Cases not started by
BUDGET_S are recorded as skipped, so the run stays inside its 10 minutes.

`--smoke` runs every case at tiny sizes on the CPU (float32, as the runner does there), to check
the script without a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BUDGET_S = 480  # no case starts after this: the run stays under 10 minutes with the slowest case
SAMPLE_S = 0.25  # nvidia-smi polling period
WARMUP_FRAMES = 6
SMOKE_FRAMES = 8  # source frames per case with --smoke
SOURCE_FPS = 24
NVIDIA_SMI_TIMEOUT_S = 5


@dataclass(frozen=True)
class Case:
    name: str
    size: str  # key of the sizes table
    frames: int  # source frames
    rife: str | None = None
    upscaler: str | None = None  # compact or rrdb
    scale: int = 1
    channels_last: bool = False  # the model's weights in NHWC: cuDNN then picks NHWC kernels (issue 11 item 3)
    compile: str = "off"  # JOB_COMPILE's values: the opt-in compiled path (gpu_job.models.compiled)


CASES = (
    Case("rife-4.25 1080p x2 fps", "1080p", 96, rife="4.25"),
    Case("rife-4.26 1080p x2 fps", "1080p", 96, rife="4.26"),
    Case("rife-4.25 4K x2 fps", "4K", 48, rife="4.25"),
    Case("rife-4.26 4K x2 fps", "4K", 48, rife="4.26"),
    Case("compact x2 1080p->4K", "1080p", 48, upscaler="compact", scale=2),
    Case("compact x4 540p->4K", "540p", 48, upscaler="compact", scale=4),
    Case("rrdb x2 1080p->4K", "1080p", 12, upscaler="rrdb", scale=2),
    Case("rrdb x4 540p->4K", "540p", 12, upscaler="rrdb", scale=4),
    # The same as two cases above, with the weights channels_last: the job adopts it where it measures faster.
    Case("rife-4.26 1080p x2 fps channels_last", "1080p", 96, rife="4.26", channels_last=True),
    Case("compact x2 1080p->4K channels_last", "1080p", 48, upscaler="compact", scale=2, channels_last=True),
    # The same with JOB_COMPILE=cuda-graphs: compiled during the warm-up (same frame size), then replayed.
    Case("rife-4.26 1080p x2 fps cuda-graphs", "1080p", 96, rife="4.26", compile="cuda-graphs"),
    Case("compact x2 1080p->4K cuda-graphs", "1080p", 48, upscaler="compact", scale=2, compile="cuda-graphs"),
)
SIZES = {"540p": (960, 540), "1080p": (1920, 1080), "4K": (3840, 2160)}
SMOKE_SIZES = {"540p": (64, 36), "1080p": (128, 72), "4K": (256, 144)}
# Real widths (Real-ESRGAN's release files) and tiny ones for --smoke.
UPSCALER_SIZES = {"compact": {"num_feat": 64, "num_conv": 16}, "rrdb": {"num_feat": 64, "num_block": 23}}
SMOKE_UPSCALER_SIZES = {"compact": {"num_feat": 8, "num_conv": 2}, "rrdb": {"num_feat": 8, "num_block": 1}}


class GpuSampler:
    """Utilization (%) of one GPU, polled in a thread: nvidia-smi, else torch.cuda.utilization (pynvml)."""

    def __init__(self, index: int | None) -> None:
        self.index, self.samples = index, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GpuSampler:
        if self.index is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _read(self) -> float | None:
        if shutil.which("nvidia-smi"):
            proc = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                   "-i", str(self.index)], capture_output=True, text=True,
                                  timeout=NVIDIA_SMI_TIMEOUT_S, check=False)
            if proc.returncode == 0 and proc.stdout.strip():
                return float(proc.stdout.strip().splitlines()[0])
        try:
            import torch

            return float(torch.cuda.utilization(self.index))
        except Exception:  # no pynvml, or no driver: no figure rather than no benchmark
            return None

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            value = self._read()
            if value is None:
                return
            self.samples.append(value)

    def summary(self) -> dict | None:
        if not self.samples:
            return None
        return {"mean_pct": statistics.fmean(self.samples), "median_pct": statistics.median(self.samples),
                "samples": len(self.samples)}


def _models(tmp: Path, device, dtype, smoke: bool, notes: list[str]) -> dict:
    """Loaders for each model, through the job's own classes; files written once, loaded once."""
    import torch

    from gpu_job.models.rife import RifeInterpolator
    from gpu_job.models.upscaler import Upscaler
    from gpu_job.runner import RIFE_FULL_SCALE_MAX_PX, RIFE_UHD_SCALE
    from tests.support.models import save_compact, save_rife, save_rrdb

    widths = SMOKE_UPSCALER_SIZES if smoke else UPSCALER_SIZES
    cache: dict = {}

    def load(case: Case, width: int, height: int):
        if case.rife:
            scale = RIFE_UHD_SCALE if max(width, height) > RIFE_FULL_SCALE_MAX_PX else 1.0
            key = ("rife", case.rife, scale, case.channels_last, case.compile)
            if key not in cache:
                path = save_rife(tmp / f"rife-{case.rife}" / "flownet.pkl", case.rife)
                cache[key] = RifeInterpolator.from_file(path, device=device, dtype=dtype, version=case.rife,
                                                        scale=scale)
                if case.channels_last:
                    cache[key].net.to(memory_format=torch.channels_last)
                if case.compile != "off":
                    cache[key].compile(case.compile, notes)
            return cache[key]
        key = (case.upscaler, case.scale, case.channels_last, case.compile)
        if key not in cache:
            save = save_compact if case.upscaler == "compact" else save_rrdb
            path = save(tmp / f"{case.upscaler}-x{case.scale}.pth", scale=case.scale, **widths[case.upscaler])
            cache[key] = Upscaler.from_file(path, device=device, dtype=dtype)
            if case.channels_last:
                cache[key].descriptor.model.to(memory_format=torch.channels_last)
            if case.compile != "off":
                cache[key].compile(case.compile, notes)
        return cache[key]

    return load


def run_case(case: Case, load, clips, device, dtype, args, tmp: Path) -> dict:
    import torch

    from gpu_job.media.pipeline import Plan, process
    from gpu_job.media.probe import probe

    width, height = (SMOKE_SIZES if args.smoke else SIZES)[case.size]
    model = load(case, width, height)
    plan = Plan(target_fps=2 * SOURCE_FPS if case.rife else None, upscale=case.scale,
                interpolator=model if case.rife else None, upscaler=None if case.rife else model,
                device=str(device), dtype=str(dtype).removeprefix("torch."), video_codec=args.codec, crf=args.crf,
                batch_size=args.batch)
    warm = clips(width, height, WARMUP_FRAMES)
    process(warm, tmp / "warm.mp4", plan, probe(warm).duration_s)
    src = clips(width, height, min(case.frames, SMOKE_FRAMES) if args.smoke else case.frames)
    duration = probe(src).duration_s
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    with GpuSampler((device.index or 0) if device.type == "cuda" else None) as gpu:
        t0 = time.perf_counter()
        report = process(src, tmp / "out.mp4", plan, duration)
        wall = time.perf_counter() - t0
    return {
        "case": case.name, "input": f"{width}x{height}", "source_frames": report.frames_in,
        "output_frames": report.frames_out, "wall_s": wall, "fps": report.frames_out / wall,
        "stage_s": dict(report.stage_s), "encoder": report.encoder,
        "model": report.interpolation if case.rife else report.upscale, "dtype": str(dtype).removeprefix("torch."),
        "batch": args.batch, "channels_last": case.channels_last, "compile": case.compile,
        "gpu_utilization": gpu.summary(),
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the script")
    parser.add_argument("--json", type=Path, default=Path("gpu_throughput.json"))
    parser.add_argument("--codec", default="auto", help="JOB_VIDEO_CODEC's values (auto picks NVENC if present)")
    parser.add_argument("--crf", type=int, default=18)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--only", help="run only cases whose name contains this")
    args = parser.parse_args()

    import torch

    from gpu_job.media.samples import make_clip

    if args.smoke:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda", 0)
    else:
        raise SystemExit("no CUDA device: run with --smoke to check the script on the CPU")
    dtype = torch.float16 if device.type == "cuda" else torch.float32  # as gpu_job/runner.py _plan
    started = time.perf_counter()
    results = {"host": {"python": platform.python_version(), "torch": torch.__version__,
                        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                        "smoke": args.smoke}, "cases": []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        made: dict[tuple[int, int, int], Path] = {}

        def clips(width: int, height: int, frames: int) -> Path:
            key = (width, height, frames)
            if key not in made:
                made[key] = make_clip(tmp / f"src-{width}x{height}-{frames}.mp4", width=width, height=height,
                                      fps=SOURCE_FPS, seconds=frames / SOURCE_FPS)
            return made[key]

        notes: list[str] = []  # what the compiled cases' compiles came to
        load = _models(tmp, device, dtype, args.smoke, notes)
        for case in CASES:
            if args.only and args.only not in case.name:
                continue
            if time.perf_counter() - started > BUDGET_S:
                results["cases"].append({"case": case.name, "skipped": f"past the {BUDGET_S} s budget"})
                continue
            if args.smoke and case.compile != "off":  # inductor on a CPU takes minutes for RIFE
                results["cases"].append({"case": case.name, "skipped": "a compiled case: on a CUDA host only"})
                continue
            started_notes = len(notes)
            row = run_case(case, load, clips, device, dtype, args, tmp)
            row["notes"] = notes[started_notes:]
            results["cases"].append(row)
            util = row["gpu_utilization"]
            print(f"{case.name:<24} {row['input']:>9} {row['output_frames']:4d} frames {row['wall_s']:7.2f} s "
                  f"{row['fps']:7.1f} fps  gpu {util['mean_pct'] if util else float('nan'):5.1f}%  "
                  f"{row['encoder']}", flush=True)
            args.json.write_text(json.dumps(results, indent=2))  # after each case: a cut-short run keeps its figures
    results["total_s"] = time.perf_counter() - started
    args.json.write_text(json.dumps(results, indent=2))
    print(f"total {results['total_s']:.0f} s -> {args.json}")


if __name__ == "__main__":
    main()
