"""Segments (issue 12 item 7): the same long clip as 1 job and as N segments, with the real job
(`python -m gpu_job`) on the Vast emulator and SeaweedFS, side by side in one run.

Reports per N: wall time from the drop to the verified result, instance-seconds billed, $ billed
(the emulator bills as Vast documents: GPU while running, storage while existing, bandwidth per
byte), the join's own time, and the speed-up and cost ratio against N=1. The emulator runs each
instance's job as a local process, so N jobs share this machine's cores: on a machine with fewer
cores than N, CPU-bound jobs cannot finish in 1/N of the time (rented GPUs would not share).

    python bench/segments.py [--seconds 120] [--segments 1,2,4,8] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from gpu_job.media.samples import make_clip  # noqa: E402
from handlers.segments import segment_job_id  # noqa: E402
from tests.support.seaweed import SeaweedServer  # noqa: E402
from tests.support.vast_emulator import VastEmulator  # noqa: E402
from tests.test_control_plane import TICK_S, drop, make_deps  # noqa: E402
from vastdrop.manifest import Manifest  # noqa: E402
from watcher import driver  # noqa: E402
from watcher.mediaprobe import probe_for_segments  # noqa: E402


def run(sw: SeaweedServer, clip: Path, seconds: float, n: int, tmp: Path) -> dict:
    bucket = sw.create_bucket()
    with VastEmulator(loading_s=0.05, kill_grace_s=0.5) as emu:
        segment_s = 0.0 if n == 1 else seconds / n
        deps = make_deps(sw, bucket, emu, tmp / f"n{n}", vast={"max_instances": max(n, 1)}, device="cpu",
                         segment_s=segment_s)
        deps = dataclasses.replace(deps, probe=probe_for_segments)
        drop(sw, bucket, "input/film.mp4", clip)
        t0 = time.monotonic()
        assert driver.run_once(deps, TICK_S), "the job did not succeed"
        wall = time.monotonic() - t0
        final = Manifest.from_json(sw.client().get_object(Bucket=bucket, Key="output/film.mp4.manifest.json")["Body"].read())
        instances = emu.all_instances()
        parent = next(r for r in deps.ledger.list() if r.parent_id is None)
        if n > 1:
            assert parent.segments == n, f"split into {parent.segments}, not {n}"
            children = [deps.ledger.get(segment_job_id(parent.job_id, parent.attempt, i)) for i in range(n)]
            assert all(c.attempt == 1 for c in children)
    return {"segments": n, "wall_s": round(wall, 2), "instances": len(instances),
            "billed_instance_s": round(sum(i["billed_seconds"] for i in instances), 2),
            "billed_usd": round(sum(i["cost"] for i in instances), 6),
            "join_s": final.timings_s.get("join", 0.0), "frames": final.media.output.frames,
            "result_bytes": final.result.size}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0, help="clip length (default 120)")
    ap.add_argument("--segments", default="1,2,4,8", help="segment counts to compare (default 1,2,4,8)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    counts = [int(x) for x in args.segments.split(",")]
    with tempfile.TemporaryDirectory() as tmp_name, SeaweedServer.start() as sw:
        tmp = Path(tmp_name)
        clip = make_clip(tmp / "film.mp4", width=320, height=240, fps=24, seconds=args.seconds)
        rows = [run(sw, clip, args.seconds, n, tmp) for n in counts]
    base = rows[0]
    for row in rows:
        row["speedup"] = round(base["wall_s"] / row["wall_s"], 2)
        row["cost_ratio"] = round(row["billed_usd"] / base["billed_usd"], 3) if base["billed_usd"] else None
    print(f"clip: {args.seconds:.0f} s, 320x240 24 fps with AAC; real job on the emulator; {os.cpu_count()} cores")
    print("| segments | wall s | speed-up | instances | billed instance-s | billed $ | $ vs 1 | join s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['segments']} | {r['wall_s']} | {r['speedup']}x | {r['instances']} | {r['billed_instance_s']} | "
              f"{r['billed_usd']:.6f} | {r['cost_ratio']} | {r['join_s']} |")
    if args.json:
        args.json.write_text(json.dumps({"cores": os.cpu_count(), "seconds": args.seconds, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
