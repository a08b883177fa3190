"""The Lambda bundle: built by the real `sam build` (serverless/Makefile), and invoked as a Lambda
sandbox would: a fresh `python -S` per cold start, nothing on its path but the standard library and
the bundle, and no bytecode cache (/var/task is read-only on Lambda). Used by
tests/test_sam_build.py and bench/lambda_cold_start.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.stack import REPO

LOCAL_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"

# Invokes `entry` `repeat` times in one interpreter; the first call is the cold start.
_INVOKE = """
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
from handlers import lambda_entry
event, results, seconds = json.load(sys.stdin), [], []
for _ in range(int(sys.argv[3])):
    results.append(getattr(lambda_entry, sys.argv[2])(event))
    seconds.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
print(json.dumps({"results": results, "seconds": seconds}))
"""


def sam_build(sam: Path, out: Path, lambda_python: str = LOCAL_PYTHON) -> Path:
    """`sam build WebhookFunction` into `out`, wheels for `lambda_python`; the function's bundle.
    One function: all four share the one make rule (tests/test_template.py checks that)."""
    app_dir = out / "sam-app"  # SAM's own config: no telemetry, no update check against PyPI
    app_dir.mkdir(parents=True)
    (app_dir / "metadata.json").write_text(json.dumps({"telemetryEnabled": False, "lastVersionCheck": 4e9}))
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "__SAM_CLI_APP_DIR": str(app_dir),
           "PYTHON": sys.executable, "LAMBDA_PYTHON": lambda_python}
    proc = subprocess.run([str(sam), "build", "WebhookFunction", "--template-file", str(REPO / "template.yaml"),
                           "--build-dir", str(out / "build")], cwd=out, env=env, capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"sam build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return out / "build" / "WebhookFunction"


def invoke(bundle: Path, env: dict[str, str], entry: str, event: dict, repeat: int = 1) -> dict[str, Any]:
    """Run `entry` on `event` in a fresh sandbox interpreter, `repeat` times. Returns its results,
    the seconds of each call (the first includes every import: the cold start), and the seconds of
    the whole process (interpreter start-up too)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-S", "-c", _INVOKE, str(bundle), entry, str(repeat)],
                          input=json.dumps(event),
                          env={**env, "PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"},
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{entry} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.splitlines()[-1])
    out["process_s"] = time.perf_counter() - t0
    return out
