"""Benchmark (not a test): the Lambda functions' cold and warm invocation times, run from the bundle
`sam build` makes (serverless/Makefile, built for this interpreter), against the stack stood up on
loopback as tests/test_lambda.py does: moto (DynamoDB, SQS, Secrets Manager), SeaweedFS and the
Vast emulator.

Each run is a fresh `python -S` whose path holds only the standard library and the bundle, as a
Lambda sandbox: "cold" is from the interpreter's first line to the handler's return (imports,
settings, the secret, clients, the work), "warm" is a second invocation in the same process, and
"process" is the whole subprocess, interpreter start-up included. Loopback has no network latency;
on AWS add a few tens of ms per AWS call on a cold start (the secret, then the work's own calls).

Run: `make install .venv-sam/.installed && .venv/bin/python bench/lambda_cold_start.py [--runs 5]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import stack as aws  # noqa: E402
from tests.support.bundle import invoke, sam_build  # noqa: E402
from tests.support.clips import make_clip  # noqa: E402
from tests.support.moto_server import MotoServer  # noqa: E402
from tests.support.seaweed import SeaweedServer  # noqa: E402
from tests.support.vast_emulator import VastEmulator  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--bundle", type=Path, help="a bundle already built for this interpreter")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bundle = args.bundle or sam_build(REPO / ".venv-sam" / "bin" / "sam", tmp / "sam")
        seaweed, moto = SeaweedServer.start(tmp), MotoServer.start()
        try:
            with VastEmulator(command=[sys.executable, "-m", "tests.support.stub_job"], loading_s=0.05) as emu:
                bucket = seaweed.create_bucket()
                stack = aws.deploy(moto, seaweed, bucket, vast_url=emu.url, vast_api_key=emu.api_key,
                                   callback_url="http://127.0.0.1:9/callback")
                clip = make_clip(tmp / "c.mp4", width=64, height=48, fps=12, seconds=0.5)
                figures: dict[str, list[dict]] = {"webhook": [], "launcher": [], "reaper": []}
                for run in range(args.runs):
                    key = f"input/run {run}.mp4"
                    seaweed.client().put_object(Bucket=bucket, Key=key, Body=clip.read_bytes())
                    body, headers = aws.signed_b2(aws.b2_event(bucket, key, clip.stat().st_size))
                    # Each twice in one sandbox: the cold start, then a warm call (a redelivery).
                    figures["webhook"].append(invoke(bundle, stack.env, "webhook",
                                                     aws.http_event("/webhook", body, headers), repeat=2))
                    event = aws.receive(stack, stack.launch_queue_url)
                    figures["launcher"].append(invoke(bundle, stack.env, "launcher", event, repeat=2))
                    aws.delete(stack, stack.launch_queue_url, event, [])
                    figures["reaper"].append(invoke(bundle, stack.env, "reaper", aws.scheduled_event(), repeat=2))
                    print(f"run {run + 1}/{args.runs} done", file=sys.stderr)
        finally:
            moto.stop()
            seaweed.stop()
    print(f"bundle: {bundle}, {args.runs} runs, python{sys.version_info.major}.{sys.version_info.minor}")
    print("| function | cold p50 s | cold max s | warm p50 s | process p50 s |")
    print("|---|---|---|---|---|")
    for name, runs in figures.items():
        cold = [r["seconds"][0] for r in runs]
        print(f"| {name} | {statistics.median(cold):.2f} | {max(cold):.2f} | "
              f"{statistics.median(r['seconds'][1] for r in runs):.3f} | "
              f"{statistics.median(r['process_s'] for r in runs):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
