"""The Lambda adapters of template.yaml with real parts: API Gateway-shaped events, SQS and DynamoDB
on moto's server, S3 on SeaweedFS, the Vast emulator with the stub job."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from handlers import lambda_entry
from handlers.deps import ControlConfig, Deps
from handlers.lambda_entry import Runtime
from tests.support.clips import make_clip
from tests.support.vast_emulator import VastEmulator
from vastdrop import signing
from vastdrop.compute.vast import VastCompute, VastConfig
from vastdrop.ledger.dynamodb import DynamoLedger, create_table
from vastdrop.location import Location
from vastdrop.states import JobState
from vastdrop.storage.s3 import S3Storage

EVENTS = Path(__file__).parent / "events"
REPO = Path(__file__).resolve().parents[1]
WEBHOOK_SECRET = "0123456789abcdefghijABCDEFGHIJ01"
CALLBACK_SECRET = "callback-secret-for-tests"
STUB = [sys.executable, "-m", "tests.support.stub_job"]


def _http_event(body: bytes, headers: dict[str, str], b64: bool = False) -> dict:
    """An API Gateway HTTP API (payload 2.0) request."""
    return {"version": "2.0", "routeKey": "POST /webhook", "rawPath": "/webhook", "headers": headers,
            "isBase64Encoded": b64, "body": base64.b64encode(body).decode() if b64 else body.decode()}


@pytest.fixture
def runtime(seaweed, bucket, moto_server, tmp_path):
    table = f"jobs-{tmp_path.name[-12:]}".replace("_", "-")
    dynamodb = moto_server.client("dynamodb")
    create_table(dynamodb, table)
    sqs = moto_server.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"events-{time.time_ns()}")["QueueUrl"]
    storage = S3Storage(client=seaweed.client())
    with VastEmulator(command=STUB, loading_s=0.05, kill_grace_s=0.5) as emu:
        deps = Deps(
            inputs=Location(f"s3://{bucket}/", "input/", storage), outputs=Location(f"s3://{bucket}/", "output/", storage),
            ledger=DynamoLedger(table, client=dynamodb),
            compute=VastCompute(api_key=emu.api_key, server_url=emu.url,
                                config=VastConfig(image="vastdrop/gpu-job:test", backoff_initial_s=0.01)),
            config=ControlConfig(retry_backoff_s=0.05, verify_interval_s=0.05),
        )
        rt = Runtime(deps=deps, sqs=sqs, queue_url=queue_url, webhook_secret=WEBHOOK_SECRET,
                     callback_secret=CALLBACK_SECRET)
        lambda_entry.configure(rt)
        try:
            yield rt, emu
        finally:
            lambda_entry.configure(None)


def _receive(rt: Runtime) -> list[dict]:
    out = rt.sqs.receive_message(QueueUrl=rt.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    return [{"messageId": m["MessageId"], "body": m["Body"]} for m in out.get("Messages", [])]


def test_webhook_to_queue_to_launch_to_verified_completion(runtime, seaweed, bucket, tmp_path):
    rt, emu = runtime
    clip = make_clip(tmp_path / "c.mp4", width=64, height=48, fps=12, seconds=0.5)
    seaweed.client().put_object(Bucket=bucket, Key="input/lambda clip.mp4", Body=clip.read_bytes())
    payload = json.loads((EVENTS / "b2_object_created.json").read_text())
    for e in payload["events"]:
        e["bucketName"] = bucket
    payload["events"][0]["objectSize"] = clip.stat().st_size
    body = json.dumps(payload).encode()

    unsigned = lambda_entry.webhook(_http_event(body, {}))
    wrong = lambda_entry.webhook(_http_event(body, {"X-Bz-Event-Notification-Signature": signing.sign("nope", body)}))
    assert unsigned["statusCode"] == 401 and wrong["statusCode"] == 401
    assert _receive(rt) == []  # nothing enqueued

    signed = {"X-Bz-Event-Notification-Signature": signing.sign(WEBHOOK_SECRET, body)}
    assert lambda_entry.webhook(_http_event(body, signed, b64=True))["statusCode"] == 202
    messages = _receive(rt)
    assert len(messages) == 1
    assert lambda_entry.launcher({"Records": messages}) == {"batchItemFailures": []}
    assert lambda_entry.launcher({"Records": messages}) == {"batchItemFailures": []}  # redelivery: no relaunch
    (record,) = rt.deps.ledger.list()
    assert record.state == JobState.RUNNING and len(emu.create_requests) == 1

    # The stub job writes its manifest; the reaper (scheduled) finds it and completes the job.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and rt.deps.ledger.get(record.job_id).state != JobState.SUCCEEDED:
        lambda_entry.reaper({})
        time.sleep(0.1)
    assert rt.deps.ledger.get(record.job_id).state == JobState.SUCCEEDED
    assert emu.live_instances() == []


def test_callback_must_be_signed(runtime):
    body = b'{"job_id": "vd-x"}'
    assert lambda_entry.completion(_http_event(body, {}))["statusCode"] == 401
    signed = lambda_entry.completion(_http_event(body, {"X-Signature": signing.sign(CALLBACK_SECRET, body)}))
    assert signed["statusCode"] == 400  # signed, but not a manifest


def test_malformed_queue_message_is_reported_for_the_dead_letter_queue(runtime):
    result = lambda_entry.launcher({"Records": [{"messageId": "m1", "body": "not json"}]})
    assert result == {"batchItemFailures": [{"itemIdentifier": "m1"}]}


def test_template_is_valid_cloudformation_and_wires_every_handler():
    cfn_lint = Path(sys.executable).with_name("cfn-lint")  # the console script of the dev extra
    proc = subprocess.run([str(cfn_lint), str(REPO / "template.yaml")], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (REPO / "template.yaml").read_text()
    for handler in ("webhook", "launcher", "completion", "reaper"):
        assert f"Handler: handlers.lambda_entry.{handler}" in text
        assert callable(getattr(lambda_entry, handler))
    assert "TimeToLiveSpecification" in text and "deadLetterTargetArn" in text
    assert "resolve:secretsmanager" in text
