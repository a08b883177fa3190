"""`python -m gpu_job.demo`: the zero-config first run. Generates a sample clip into
./bucket/input/, then runs the real job (as a child process, configured only by env vars, exactly as
the control plane launches it) on the CPU: 24 -> 60 fps and x2, writing ./bucket/output/."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from gpu_job.media.samples import make_clip
from vastdrop.layout import Layout
from vastdrop.storage.local import path_to_file_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpu_job.demo", description=__doc__)
    parser.add_argument("--bucket", type=Path, default=Path("bucket"))
    parser.add_argument("--target-fps", default="60")
    parser.add_argument("--upscale", default="2")
    args = parser.parse_args(argv)

    layout = Layout()
    bucket = args.bucket.resolve()
    input_key = layout.input_prefix + "sample.mp4"
    source = bucket / input_key
    source.parent.mkdir(parents=True, exist_ok=True)
    make_clip(source, width=320, height=180, fps=24, seconds=2.0)
    result_key = layout.result_key(input_key)
    job_id = "demo-sample"
    env = {
        **os.environ,
        "JOB_ID": job_id,
        "JOB_INPUT_URL": path_to_file_url(source),
        "JOB_OUTPUT_URL": path_to_file_url(bucket / result_key),
        "JOB_MANIFEST_URL": path_to_file_url(bucket / layout.manifest_key(result_key)),
        "JOB_LOG_URL": path_to_file_url(bucket / layout.log_key(job_id)),
        "JOB_TARGET_FPS": args.target_fps,
        "JOB_UPSCALE": args.upscale,
        "JOB_DEVICE": "cpu",
    }
    print(f"sample clip: {source}", flush=True)
    code = subprocess.call([sys.executable, "-m", "gpu_job"], env=env)
    manifest_path = bucket / layout.manifest_key(result_key)
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        out = (manifest.get("media") or {}).get("output") or {}
        print(f"\nstatus: {manifest['status']} (exit {code})")
        print(f"result: {bucket / result_key}")
        print(f"  {out.get('width')}x{out.get('height')} @ {out.get('fps')} fps, {out.get('frames')} frames, "
              f"{out.get('duration_s')} s, audio={out.get('audio')}")
        print(f"engine: {manifest['engine'].get('interpolation')} + {manifest['engine'].get('upscale')}")
        print(f"manifest: {manifest_path}")
    return code


if __name__ == "__main__":
    sys.exit(main())
