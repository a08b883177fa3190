"""`sam build` of template.yaml with the real AWS SAM CLI, and the bundle it makes, run as Lambda
would run it: a fresh interpreter per invocation (a cold start each), nothing on sys.path but the
standard library and the bundle, configured only by the environment template.yaml gives it.

The deployed bundle is built for the template's runtime (python3.12 wheels, which cannot load in
this machine's python3.11); the one run here is built by the same make rule for this interpreter.
Runs under `make test`, which installs the SAM CLI in .venv-sam and sets VASTDROP_SAM.
"""

from __future__ import annotations

import email
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.support import stack as aws
from tests.support.bundle import invoke, sam_build
from tests.support.clips import make_clip
from tests.support.lockfile import parse_lock
from tests.support.vast_emulator import VastEmulator
from vastdrop.ledger.dynamodb import DynamoLedger
from vastdrop.states import JobState

SAM = os.environ.get("VASTDROP_SAM")
pytestmark = pytest.mark.skipif(not SAM, reason="needs the SAM CLI: run `make test` (sets VASTDROP_SAM)")

LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024  # function code and layers, unzipped
STUB = [sys.executable, "-m", "tests.support.stub_job"]
RUNTIME_PYTHON = aws.template()["Globals"]["Function"]["Runtime"].removeprefix("python")


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


@pytest.fixture(scope="module")
def local_bundle(tmp_path_factory) -> Path:
    return sam_build(Path(SAM), tmp_path_factory.mktemp("sam-local"))


def test_deployed_bundle_fits_lambda_and_holds_only_the_control_plane(tmp_path):
    bundle = sam_build(Path(SAM), tmp_path, RUNTIME_PYTHON)
    size = _size(bundle)
    print(f"bundle for python{RUNTIME_PYTHON}: {size / 2**20:.1f} MiB unzipped")
    assert size < LAMBDA_UNZIPPED_LIMIT / 2  # room to grow
    assert (bundle / "handlers" / "lambda_entry.py").is_file() and (bundle / "vastdrop" / "settings.py").is_file()
    for absent in ("torch", "av", "gpu_job", "tests", "watcher", "b2sdk", "borb", "PIL"):
        assert not (bundle / absent).exists(), absent
    assert not list(bundle.rglob("__pycache__"))  # bytecode of the build machine's python is dead weight
    tag = f"cpython-{RUNTIME_PYTHON.replace('.', '')}-x86_64-linux-gnu"
    assert list((bundle / "pydantic_core").glob(f"*{tag}.so")), "pydantic_core built for another runtime"
    assert _installed(bundle) == _pinned(), "the bundle is not exactly its lock files' pins"


def _installed(bundle: Path) -> dict[str, str]:
    metadata = (email.message_from_string((d / "METADATA").read_text()) for d in bundle.glob("*.dist-info"))
    return {canonicalize_name(m["Name"]): m["Version"] for m in metadata}


def _pinned() -> dict[str, str]:
    pins: dict[str, str] = {}
    for lock in ("requirements.lock", "requirements-sdk-only.lock"):
        found, problems = parse_lock((aws.REPO / "serverless" / lock).read_text())
        assert not problems, problems
        pins |= {name: next(iter(pin.requirement.specifier)).version for name, pin in found.items()}
    return pins


def test_bundle_processes_a_dropped_file(local_bundle, seaweed, bucket, moto_server, tmp_path):
    with VastEmulator(command=STUB, loading_s=0.05, kill_grace_s=0.5) as emu:
        # The callback goes nowhere (best effort in the job): completion comes from the reaper.
        stack = aws.deploy(moto_server, seaweed, bucket, vast_url=emu.url, vast_api_key=emu.api_key,
                           callback_url="http://127.0.0.1:9/callback")
        key = "input/from the bundle.mp4"
        clip = make_clip(tmp_path / "c.mp4", width=64, height=48, fps=12, seconds=0.5)
        seaweed.client().put_object(Bucket=bucket, Key=key, Body=clip.read_bytes())
        body, headers = aws.signed_b2(aws.b2_event(bucket, key, clip.stat().st_size))

        (answer,) = invoke(local_bundle, stack.env, "webhook", aws.http_event("/webhook", body, headers))["results"]
        assert answer["statusCode"] == 202
        event = aws.receive(stack, stack.launch_queue_url)
        assert invoke(local_bundle, stack.env, "launcher", event)["results"] == [{"batchItemFailures": []}]
        aws.delete(stack, stack.launch_queue_url, event, [])

        ledger = DynamoLedger(stack.table, client=moto_server.client())
        (record,) = ledger.list()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and ledger.get(record.job_id).state != JobState.SUCCEEDED:
            invoke(local_bundle, stack.env, "reaper", aws.scheduled_event())
        assert ledger.get(record.job_id).state == JobState.SUCCEEDED
        assert emu.live_instances() == []
        assert len(emu.create_requests) == 1


def test_stack_as_cloudformation_expands_it_is_valid(tmp_path):
    """AWS's SAM translator (what CloudFormation runs on deploy) expands the template; cfn-lint then
    checks the plain CloudFormation, where problems such as circular dependencies between the API
    and its functions show (the SAM-level lint does not see them)."""
    sam_python = Path(SAM).with_name("python")
    proc = subprocess.run([str(sam_python), str(aws.REPO / "tests" / "support" / "sam_transform.py"),
                           str(aws.REPO / "template.yaml")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    expanded = tmp_path / "expanded.json"
    expanded.write_text(proc.stdout)
    resources = json.loads(proc.stdout)["Resources"]
    kinds = {r["Type"] for r in resources.values()}
    assert {"AWS::Lambda::Function", "AWS::Lambda::EventSourceMapping", "AWS::ApiGatewayV2::Api",
            "AWS::Events::Rule", "AWS::IAM::Role"} <= kinds
    lint = subprocess.run([str(Path(sys.executable).with_name("cfn-lint")), str(expanded)], capture_output=True,
                          text=True, timeout=300)
    assert lint.returncode == 0, lint.stdout + lint.stderr
