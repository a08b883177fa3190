"""Benchmark: our streaming pipeline vs the old way, same clip, same RIFE model, one run side by side.

(a) streaming: decode (PyAV, threaded) -> batched RIFE on tensors -> libx264, no file per frame;
(b) old way: every frame extracted to PNG, the model run per pair of PNG files, results written as
    PNG, then every PNG read back and encoded.
Each variant runs in its own child process so its peak RSS is its own. Not a test: run it by hand,
`python bench/pipeline.py` (or `make bench`), and compare the ratio, not absolute seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def streaming(clip: Path, model_path: Path, out: Path, fps: float, batch: int) -> dict:
    import torch

    from gpu_job.media.pipeline import Plan, process
    from gpu_job.media.probe import probe
    from gpu_job.models.rife import RifeInterpolator

    facts = probe(clip)
    model = RifeInterpolator.from_file(model_path, device=torch.device("cpu"))
    t0 = time.perf_counter()
    report = process(clip, out, Plan(target_fps=fps, interpolator=model, batch_size=batch), facts.duration_s)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "frames_in": report.frames_in, "frames_out": report.frames_out,
            "stage_s": dict(report.stage_s)}


def old_way(clip: Path, model_path: Path, out: Path, fps: float, workdir: Path) -> dict:
    """What the replaced system did: PNG per frame on disk, the model per PNG pair, re-encode PNGs."""
    import av
    import numpy as np
    import torch
    from PIL import Image

    from gpu_job.models.rife import RifeInterpolator

    model = RifeInterpolator.from_file(model_path, device=torch.device("cpu"))
    frames_dir, mid_dir = workdir / "frames", workdir / "interp"
    frames_dir.mkdir()
    mid_dir.mkdir()
    stage = {"decode": 0.0, "model": 0.0, "encode": 0.0}
    t_start = time.perf_counter()
    with av.open(str(clip)) as container:
        n = 0
        for frame in container.decode(video=0):
            frame.to_image().save(frames_dir / f"{n:06d}.png")
            n += 1
    stage["decode"] = time.perf_counter() - t_start

    def load(path: Path) -> torch.Tensor:
        return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].float() / 255

    t0 = time.perf_counter()
    for i in range(n - 1):  # a middle frame per source pair: 2x the rate
        a, b = load(frames_dir / f"{i:06d}.png"), load(frames_dir / f"{i + 1:06d}.png")
        mid = model(a, b, torch.tensor([0.5]))
        Image.fromarray((mid[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()).save(mid_dir / f"{i:06d}.png")
    stage["model"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    order = []
    for i in range(n):
        order.append(frames_dir / f"{i:06d}.png")
        order.append(mid_dir / f"{i:06d}.png" if i < n - 1 else frames_dir / f"{i:06d}.png")
    with av.open(str(out), "w") as output:
        stream = output.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001),
                                   options={"crf": "18", "preset": "medium"})
        first = Image.open(order[0])
        stream.width, stream.height, stream.pix_fmt = first.width - first.width % 2, first.height - first.height % 2, "yuv420p"
        for k, path in enumerate(order):
            vf = av.VideoFrame.from_image(Image.open(path).convert("RGB"))
            vf.pts = k
            output.mux(stream.encode(vf))
        output.mux(stream.encode())
    stage["encode"] = time.perf_counter() - t0
    return {"wall_s": time.perf_counter() - t_start, "frames_in": n, "frames_out": len(order), "stage_s": stage,
            "disk_mb": sum(p.stat().st_size for p in workdir.rglob("*.png")) / 1e6}


def _child(args: argparse.Namespace) -> None:
    clip, model, out = Path(args.clip), Path(args.model), Path(args.out)
    if args.variant == "streaming":
        result = streaming(clip, model, out, args.fps, args.batch)
    else:
        with tempfile.TemporaryDirectory() as work:
            result = old_way(clip, model, out, args.fps, Path(work))
    print(json.dumps(result))


def _run_child(variant: str, clip: Path, model: Path, out: Path, fps: float, batch: int) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, "--clip", str(clip), "--model", str(model),
           "--out", str(out), "--fps", str(fps), "--batch", str(batch)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed with exit {proc.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--source-fps", type=int, default=24)
    parser.add_argument("--rife-version", default="4.25")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--child", choices=["streaming", "old"])
    parser.add_argument("--clip")
    parser.add_argument("--model")
    parser.add_argument("--out")
    parser.add_argument("--fps", type=float)
    args = parser.parse_args()
    if args.child:
        args.variant = args.child
        _child(args)
        return

    from gpu_job.media.samples import make_clip
    from tests.support.models import save_rife

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        clip = make_clip(tmp_path / "clip.mp4", width=args.width, height=args.height, fps=args.source_fps,
                         seconds=args.seconds)
        # Random weights in the published layout: the same compute as real weights.
        model = save_rife(tmp_path / "flownet.pkl", args.rife_version)
        fps = 2 * args.source_fps
        print(f"clip {args.width}x{args.height}, {args.seconds}s @ {args.source_fps} fps -> {fps} fps, "
              f"RIFE {args.rife_version} (random weights), CPU, torch threads {os.cpu_count()}")
        results = {}
        for variant in ("streaming", "old"):
            results[variant] = _run_child(variant, clip, model, tmp_path / f"{variant}.mp4", fps, args.batch)
    print(f"\n{'variant':<10} {'wall s':>8} {'decode fps':>11} {'model fps':>10} {'encode fps':>11} {'peak RSS MB':>12}")
    for name, r in results.items():
        s = r["stage_s"]
        print(f"{name:<10} {r['wall_s']:>8.2f} {r['frames_in'] / max(s['decode'], 1e-9):>11.1f} "
              f"{r['frames_out'] / max(s['model'], 1e-9):>10.1f} {r['frames_out'] / max(s['encode'], 1e-9):>11.1f} "
              f"{r['peak_rss_mb']:>12.0f}")
    ratio = results["old"]["wall_s"] / results["streaming"]["wall_s"]
    print(f"\nold / streaming wall time: {ratio:.2f}x   (old way wrote {results['old']['disk_mb']:.0f} MB of PNG)")


if __name__ == "__main__":
    main()
