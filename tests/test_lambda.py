"""The Lambda entry points of template.yaml, deployed on loopback: each function cold-starts from the
environment the template gives it (resolved from template.yaml itself) plus the Secrets Manager
secret; SQS, DynamoDB and Secrets Manager are moto's server, the bucket is SeaweedFS, Vast.ai is the
emulator running the stub job, and every event is shaped as AWS delivers it."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from handlers import lambda_entry
from tests.support import stack as aws
from tests.support.clips import make_clip
from tests.support.vast_emulator import VastEmulator
from vastdrop import signing
from vastdrop.errors import ConfigError
from vastdrop.ledger.dynamodb import DynamoLedger
from vastdrop.manifest import ErrorInfo, Manifest, ObjectRef
from vastdrop.settings import load_settings
from vastdrop.states import JobState

STUB = [sys.executable, "-m", "tests.support.stub_job"]


class CallbackRelay:
    """The public /callback route: turns a job's POST into an API Gateway event for the completion
    function, as the HTTP API would. `open = False` answers 503 instead (an unreachable API)."""

    def __init__(self) -> None:
        relay = self
        self.open = True
        self.answers: list[int] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if relay.open:
                    out = lambda_entry.completion(aws.http_event("/callback", body, dict(self.headers)))
                    status, payload = out["statusCode"], out["body"].encode()
                else:
                    status, payload = 503, b'{"message":"Service Unavailable"}'
                relay.answers.append(status)
                self.send_response(status)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callback"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Deployed:
    stack: aws.Stack
    emu: VastEmulator
    relay: CallbackRelay
    bucket: str
    ledger: DynamoLedger


@pytest.fixture
def deployed(seaweed, bucket, moto_server, monkeypatch) -> Iterator[Deployed]:
    relay = CallbackRelay()
    with VastEmulator(command=STUB, loading_s=0.05, kill_grace_s=0.5) as emu:
        stack = aws.deploy(moto_server, seaweed, bucket, vast_url=emu.url, vast_api_key=emu.api_key,
                           callback_url=relay.url)
        for name, value in stack.env.items():
            monkeypatch.setenv(name, value)
        lambda_entry.configure(None)  # the next invocation is a cold start
        try:
            yield Deployed(stack, emu, relay, bucket, DynamoLedger(stack.table, client=moto_server.client()))
        finally:
            lambda_entry.configure(None)
            relay.close()


def _upload_clip(seaweed, d: Deployed, tmp_path, key: str) -> int:
    clip = make_clip(tmp_path / "c.mp4", width=64, height=48, fps=12, seconds=0.5)
    seaweed.client().put_object(Bucket=d.bucket, Key=key, Body=clip.read_bytes())
    return clip.stat().st_size


def _invoke_queue(d: Deployed, queue_url: str, function) -> tuple[int, dict]:
    event = aws.receive(d.stack, queue_url)
    result = function(event)
    aws.delete(d.stack, queue_url, event, result["batchItemFailures"])
    return len(event["Records"]), result


def _reap_until(d: Deployed, job_id: str, state: JobState, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and d.ledger.get(job_id).state != state:
        assert lambda_entry.reaper(aws.scheduled_event())["actions"] is not None
        time.sleep(0.1)
    assert d.ledger.get(job_id).state == state


@pytest.mark.parametrize("completion_via", ["callback", "manifest_event", "s3_notification"])
def test_deployed_stack_processes_a_dropped_file(deployed, seaweed, tmp_path, completion_via):
    """B2 webhook -> webhook function -> launch queue -> launcher -> Vast instance running the job ->
    the job's signed callback (or B2's manifest event -> completion queue, or an S3 bucket's own
    notification) -> completion function destroys the instance -> the reaper finishes verification."""
    d = deployed
    d.relay.open = completion_via == "callback"
    key = "input/lambda clip.mp4"
    size = _upload_clip(seaweed, d, tmp_path, key)
    body, headers = aws.signed_b2(aws.b2_event(d.bucket, key, size),
                               aws.b2_event(d.bucket, "input/old.mp4", 0, event_type="b2:ObjectDeleted:Delete"))

    answer = lambda_entry.webhook(aws.http_event("/webhook", body, headers, base64_body=True))
    assert answer["statusCode"] == 202
    assert json.loads(answer["body"]) == {"inputs": 1, "manifests": 0, "ignored": 0}  # deletions are no events
    assert lambda_entry._runtime is not None  # built once, at this cold start
    runtime = lambda_entry._runtime

    assert _invoke_queue(d, d.stack.launch_queue_url, lambda_entry.launcher) == (1, {"batchItemFailures": []})
    (record,) = d.ledger.list()
    assert record.state == JobState.RUNNING and len(d.emu.create_requests) == 1
    # No secret reaches the instance except the callback secret it signs with.
    job_env = d.emu.all_instances()[0]["env"]
    for name in ("webhook_secret", "vast_api_key", "s3_secret_access_key"):
        assert not any(d.stack.secret_values[name] in str(v) for v in job_env.values()), name

    manifest_key = f"output/.attempts/{record.job_id}/1/manifest.json"  # the job's own, staged
    deadline = time.monotonic() + 30
    # Until the instance is gone and, for the callback, the relay has the completion's answer (the
    # instance is destroyed inside the completion, before the relay records what it answered).
    while time.monotonic() < deadline and (d.emu.live_instances() or (completion_via == "callback"
                                                                      and not d.relay.answers)):
        if completion_via == "manifest_event" and _exists(seaweed, d.bucket, manifest_key):
            size = seaweed.client().head_object(Bucket=d.bucket, Key=manifest_key)["ContentLength"]
            body, headers = aws.signed_b2(aws.b2_event(d.bucket, manifest_key, size, rule="vastdrop-manifests"),
                                       aws.b2_event(d.bucket, "output/lambda clip.mp4", 10, rule="vastdrop-manifests"))
            answer = lambda_entry.webhook(aws.http_event("/webhook", body, headers))
            assert json.loads(answer["body"]) == {"inputs": 0, "manifests": 1, "ignored": 1}
            assert _invoke_queue(d, d.stack.completion_queue_url, lambda_entry.completion) == (
                1, {"batchItemFailures": []})
        if completion_via == "s3_notification" and _exists(seaweed, d.bucket, manifest_key):
            head = seaweed.client().head_object(Bucket=d.bucket, Key=manifest_key)
            assert lambda_entry.completion(aws.s3_event(d.bucket, manifest_key, head["ContentLength"],
                                                        head["ETag"])) == {"ok": True}
        time.sleep(0.1)
    assert d.emu.live_instances() == []  # destroyed by the completion function, not by the reaper
    if completion_via == "callback":
        assert d.relay.answers == [202]  # accepted; the answer says nothing about the job
    else:  # the API was down (the job retries a 503), or the instance went before the job called
        assert set(d.relay.answers) <= {503}
    _reap_until(d, record.job_id, JobState.SUCCEEDED)
    assert lambda_entry._runtime is runtime  # every later invocation reused the cold start's deps


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_the_launcher_splits_a_long_input_into_segments_from_its_index(seaweed, bucket, moto_server, monkeypatch,
                                                                      tmp_path, suffix):
    """With SegmentSeconds set, the launcher (no PyAV in its bundle) reads the input's MP4 index, or
    its Matroska header and first cluster, through a presigned URL and launches one instance per
    segment, each told its span."""
    relay = CallbackRelay()
    with VastEmulator(command=STUB, loading_s=0.05, kill_grace_s=0.5) as emu:
        stack = aws.deploy(moto_server, seaweed, bucket, vast_url=emu.url, vast_api_key=emu.api_key,
                           callback_url=relay.url, parameters={"SegmentSeconds": 2})
        for name, value in stack.env.items():
            monkeypatch.setenv(name, value)
        lambda_entry.configure(None)
        try:
            key = f"input/long{suffix}"
            # Matroska states the container's duration, planned 2 s short (the last segment runs to the end).
            clip = make_clip(tmp_path / f"long{suffix}", width=64, height=48, fps=12, seconds=8 if suffix == ".mp4" else 10)
            seaweed.client().put_object(Bucket=bucket, Key=key, Body=clip.read_bytes())
            body, headers = aws.signed_b2(aws.b2_event(bucket, key, clip.stat().st_size))
            assert lambda_entry.webhook(aws.http_event("/webhook", body, headers))["statusCode"] == 202
            event = aws.receive(stack, stack.launch_queue_url)
            assert lambda_entry.launcher(event) == {"batchItemFailures": []}
            aws.delete(stack, stack.launch_queue_url, event, [])
            records = DynamoLedger(stack.table, client=moto_server.client()).list()
            parent = next(r for r in records if r.parent_id is None)
            assert parent.state == JobState.SPLIT and parent.segments == 4
            assert sorted(r.segment["index"] for r in records if r.parent_id == parent.job_id) == [0, 1, 2, 3]
            starts = sorted(float(i["env"]["JOB_SEGMENT_START_S"]) for i in emu.all_instances())
            assert starts == pytest.approx([0.0, 2.0, 4.0, 6.0], abs=0.05)
        finally:
            lambda_entry.configure(None)
            relay.close()


def _exists(seaweed, bucket: str, key: str) -> bool:
    return seaweed.client().list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0) > 0


def test_redelivered_launch_message_launches_once(deployed, seaweed, tmp_path):
    d = deployed
    key = "input/twice.mp4"
    size = _upload_clip(seaweed, d, tmp_path, key)
    body, headers = aws.signed_b2(aws.b2_event(d.bucket, key, size))
    for _ in range(2):  # B2 delivers at least once
        assert lambda_entry.webhook(aws.http_event("/webhook", body, headers))["statusCode"] == 202
    assert _invoke_queue(d, d.stack.launch_queue_url, lambda_entry.launcher) == (2, {"batchItemFailures": []})
    assert len(d.ledger.list()) == 1 and len(d.emu.create_requests) == 1


def test_webhook_refuses_unsigned_and_malformed_bodies(deployed):
    d = deployed
    body, _ = aws.signed_b2(aws.b2_event(d.bucket, "input/a.mp4", 10))
    forged = {"X-Bz-Event-Notification-Signature": signing.sign("not-the-secret", body)}
    assert lambda_entry.webhook(aws.http_event("/webhook", body, {}))["statusCode"] == 401
    assert lambda_entry.webhook(aws.http_event("/webhook", body, forged))["statusCode"] == 401
    junk = b"not json"
    answer = lambda_entry.webhook(aws.http_event(
        "/webhook", junk, {"X-Bz-Event-Notification-Signature": signing.sign(aws.WEBHOOK_SECRET, junk)}))
    assert answer["statusCode"] == 400 and "JSON" in json.loads(answer["body"])["error"]
    for queue in (d.stack.launch_queue_url, d.stack.completion_queue_url):
        assert aws.receive(d.stack, queue)["Records"] == []  # nothing enqueued


def test_webhook_says_503_when_it_cannot_enqueue(deployed, moto_server):
    d = deployed
    lambda_entry.webhook(aws.http_event("/webhook", b"{}", {}))  # cold start
    moto_server.client("sqs").delete_queue(QueueUrl=d.stack.launch_queue_url)
    body, headers = aws.signed_b2(aws.b2_event(d.bucket, "input/a.mp4", 10))
    answer = lambda_entry.webhook(aws.http_event("/webhook", body, headers))
    assert answer["statusCode"] == 503  # B2 retries the delivery later


def test_a_bad_message_is_reported_alone_and_ends_in_the_dead_letter_queue(deployed, seaweed, tmp_path):
    d = deployed
    sqs = d.stack.sqs
    key = "input/good.mp4"
    size = _upload_clip(seaweed, d, tmp_path, key)
    good, _ = aws.signed_b2(aws.b2_event(d.bucket, key, size))
    sqs.send_message(QueueUrl=d.stack.launch_queue_url, MessageBody=good.decode())
    sqs.send_message(QueueUrl=d.stack.launch_queue_url, MessageBody="not json")
    event = aws.receive(d.stack, d.stack.launch_queue_url)
    result = lambda_entry.launcher(event)
    bad_id = next(r["messageId"] for r in event["Records"] if r["body"] == "not json")
    assert result == {"batchItemFailures": [{"itemIdentifier": bad_id}]}
    aws.delete(d.stack, d.stack.launch_queue_url, event, result["batchItemFailures"])
    assert len(d.emu.create_requests) == 1  # the good one launched

    # The failed message comes back after its visibility timeout (cut short here), fails again, and
    # after maxReceiveCount receives the queue moves it to the dead-letter queue.
    bad_handle = next(r["receiptHandle"] for r in event["Records"] if r["body"] == "not json")
    sqs.change_message_visibility(QueueUrl=d.stack.launch_queue_url, ReceiptHandle=bad_handle, VisibilityTimeout=0)
    max_receives = aws.template()["Resources"]["LaunchQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"]
    for _ in range(max_receives - 1):
        out = sqs.receive_message(QueueUrl=d.stack.launch_queue_url, VisibilityTimeout=0, WaitTimeSeconds=0)
        assert [m["Body"] for m in out.get("Messages", [])] == ["not json"]
    out = sqs.receive_message(QueueUrl=d.stack.launch_queue_url, WaitTimeSeconds=0)
    assert "Messages" not in out
    dead = sqs.receive_message(QueueUrl=d.stack.dlq_url, WaitTimeSeconds=0)
    assert [m["Body"] for m in dead["Messages"]] == ["not json"]


def test_callback_must_be_a_manifest_signed_with_its_own_jobs_key(deployed):
    """Each job signs with HMAC(callback secret, its job id): a host cannot sign for another job, and a
    valid callback gets the same 202 whatever the job (known or not), so a host learns nothing."""
    def call(body: bytes, key: str | None) -> dict:
        headers = {"X-Signature": signing.sign(key, body)} if key else {}
        return lambda_entry.completion(aws.http_event("/callback", body, headers))

    mine = Manifest(job_id="vd-mine", status="failed", input=ObjectRef(url="s3://b/input/a.mp4"),
                    error=ErrorInfo(kind="transient", message="x")).to_json()
    theirs = mine.replace(b"vd-mine", b"vd-theirs")
    own_key = signing.job_key(aws.CALLBACK_SECRET, "vd-mine")
    assert (call(mine, own_key)["statusCode"], json.loads(call(mine, own_key)["body"])) == (202, {"accepted": True})
    refused = [call(theirs, own_key), call(mine, aws.CALLBACK_SECRET), call(mine, None)]
    assert [(r["statusCode"], json.loads(r["body"])) for r in refused] == [
        (401, {"error": "bad or missing signature"})] * 3
    assert call(b'{"job_id": "vd-mine"}', own_key)["statusCode"] == 400  # not a manifest
    oversize = lambda_entry.completion(aws.http_event("/callback", b" " * (lambda_entry.MAX_BODY_BYTES + 1), {}))
    assert oversize["statusCode"] == 400


MALFORMED = [b"not json", b'{"events": ["\xff"]}', b"[" * 5_000, b'{"events": "many"}', b'{"events": [1]}',
             b'{"events": [{"eventType": "b2:ObjectCreated:Upload", "eventTimestamp": 1}]}',
             b'{"events": [{"eventType": "b2:ObjectCreated:Upload", "objectName": "input/a.mp4", '
             b'"objectSize": "big", "eventTimestamp": 1}]}',
             b'{"events": [{"eventType": "b2:ObjectCreated:Upload", "objectName": "input/a.mp4", '
             b'"eventTimestamp": 1.5}]}']


@pytest.mark.parametrize("body", MALFORMED, ids=["not-json", "not-utf8", "deep", "events-str", "event-int",
                                                 "no-name", "size-str", "float-timestamp"])
def test_webhook_answers_400_to_signed_but_malformed_deliveries(deployed, body):
    """B2 delivers again anything but a 2xx or 4xx: a 500 for a malformed payload would come back forever."""
    d = deployed
    headers = {"X-Bz-Event-Notification-Signature": signing.sign(aws.WEBHOOK_SECRET, body)}
    answer = lambda_entry.webhook(aws.http_event("/webhook", body, headers, base64_body=True))
    assert answer["statusCode"] == 400 and json.loads(answer["body"])["error"]
    for queue in (d.stack.launch_queue_url, d.stack.completion_queue_url):
        assert aws.receive(d.stack, queue)["Records"] == []


def test_webhook_answers_400_to_a_body_that_is_not_base64_or_too_large(deployed):
    event = aws.http_event("/webhook", b"x", {}, base64_body=True)
    event["body"] = "not base64!"
    assert lambda_entry.webhook(event)["statusCode"] == 400
    huge = aws.http_event("/webhook", b" " * (lambda_entry.MAX_BODY_BYTES + 1), {})
    assert lambda_entry.webhook(huge)["statusCode"] == 400


def test_events_older_than_the_ledger_remembers_launch_nothing(deployed, seaweed, tmp_path):
    """GIVEN a validly signed delivery eight days old (the ledger's TTL may have forgotten its job)
    THEN the webhook answers 202 (so B2 stops) and enqueues nothing; an old event already queued is
    dropped by the launcher too, without failing its message."""
    d = deployed
    key = "input/old.mp4"
    size = _upload_clip(seaweed, d, tmp_path, key)
    old = aws.b2_event(d.bucket, key, size)
    old["eventTimestamp"] -= 8 * 24 * 3600 * 1000
    body, headers = aws.signed_b2(old)
    answer = lambda_entry.webhook(aws.http_event("/webhook", body, headers))
    assert (answer["statusCode"], json.loads(answer["body"])) == (202, {"inputs": 0, "manifests": 0, "ignored": 1})
    assert aws.receive(d.stack, d.stack.launch_queue_url)["Records"] == []
    d.stack.sqs.send_message(QueueUrl=d.stack.launch_queue_url, MessageBody=body.decode())
    assert _invoke_queue(d, d.stack.launch_queue_url, lambda_entry.launcher) == (1, {"batchItemFailures": []})
    assert d.ledger.list() == [] and d.emu.create_requests == []


def test_one_failing_event_in_a_launch_message_does_not_stop_the_others(deployed, seaweed, tmp_path, monkeypatch):
    """GIVEN one queue message (S3's shape, ETags included) whose first event fails -- the ledger's
    claim raises for it, as a bug or an outage would -- and whose second is a good input
    THEN the good one launches, the failure is logged against its key, and only that message is
    reported failed (it comes back; the launched event is then a duplicate, a no-op)."""
    from vastdrop.ledger.dynamodb import DynamoLedger

    d = deployed
    key = "input/good after bad.mp4"
    size = _upload_clip(seaweed, d, tmp_path, key)
    etag = seaweed.client().head_object(Bucket=d.bucket, Key=key)["ETag"]
    claim = DynamoLedger.claim

    def claim_unless_bad(self, record):
        if record.key == "input/bad.mp4":
            raise RuntimeError("the ledger refused this one")
        return claim(self, record)

    monkeypatch.setattr(DynamoLedger, "claim", claim_unless_bad)
    bad = aws.s3_event(d.bucket, "input/bad.mp4", 10, '"0123"')["Records"]
    good = aws.s3_event(d.bucket, key, size, etag)["Records"]
    d.stack.sqs.send_message(QueueUrl=d.stack.launch_queue_url, MessageBody=json.dumps({"Records": bad + good}))
    event = aws.receive(d.stack, d.stack.launch_queue_url)
    result = lambda_entry.launcher(event)
    assert result == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    (record,) = d.ledger.list()
    assert record.key == key and len(d.emu.create_requests) == 1


def test_reaper_on_schedule_with_nothing_to_do(deployed):
    assert lambda_entry.reaper(aws.scheduled_event()) == {"actions": {}}


def test_secret_values_never_sit_in_the_functions_environment(deployed):
    values = set(deployed.stack.secret_values.values())
    assert not values & set(deployed.stack.env.values())
    assert deployed.stack.env["WATCHER_SECRET_ID"] == deployed.stack.secret_id


def test_settings_take_credentials_from_the_secret(deployed):
    s = load_settings()
    assert s.webhook_secret.get_secret_value() == aws.WEBHOOK_SECRET
    assert s.vast_api_key.get_secret_value() == deployed.stack.secret_values["vast_api_key"]
    assert s.input == f"s3://{deployed.bucket}/input/"
    # The secret wins over a value given directly too (and the two never collide).
    assert load_settings(webhook_secret="given").webhook_secret.get_secret_value() == aws.WEBHOOK_SECRET


def test_secret_problems_are_clear_errors(deployed, moto_server, monkeypatch):
    sm = moto_server.client("secretsmanager")
    monkeypatch.setenv("WATCHER_SECRET_ID", "vastdrop/does-not-exist")
    with pytest.raises(ConfigError, match="cannot read secret 'vastdrop/does-not-exist': ResourceNotFoundException"):
        load_settings()
    sm.create_secret(Name="vastdrop/sneaky", SecretString=json.dumps({"webhook_secret": "x", "input": "s3://evil/"}))
    monkeypatch.setenv("WATCHER_SECRET_ID", "vastdrop/sneaky")
    with pytest.raises(ConfigError, match="not secret fields: input") as err:
        load_settings()
    assert "evil" not in str(err.value)
    sm.create_secret(Name="vastdrop/text", SecretString="hunter2")
    monkeypatch.setenv("WATCHER_SECRET_ID", "vastdrop/text")
    with pytest.raises(ConfigError, match="not a JSON object") as err:
        load_settings()
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize(("name", "value", "logged"), [
    ("WATCHER_SECRET_ID", "vastdrop/missing", "cannot read secret 'vastdrop/missing': ResourceNotFoundException"),
    ("WATCHER_UPSCALE", "9", "invalid settings: upscale: Input should be less than or equal to 4"),
])
def test_a_misconfigured_function_says_why_and_loses_nothing(deployed, monkeypatch, capfd, name, value, logged):
    d = deployed
    monkeypatch.setenv(name, value)
    body, headers = aws.signed_b2(aws.b2_event(d.bucket, "input/a.mp4", 10))
    answer = lambda_entry.webhook(aws.http_event("/webhook", body, headers))
    assert answer["statusCode"] == 500 and "misconfigured" in answer["body"]  # B2 delivers again later
    assert lambda_entry.completion(aws.http_event("/callback", b"{}", {}))["statusCode"] == 500
    assert logged in capfd.readouterr().err  # the function's log (JSON lines on stderr)
    d.stack.sqs.send_message(QueueUrl=d.stack.launch_queue_url, MessageBody=body.decode())
    with pytest.raises(lambda_entry.ColdStartError):  # the batch comes back, then the DLQ keeps it
        lambda_entry.launcher(aws.receive(d.stack, d.stack.launch_queue_url))
    with pytest.raises(lambda_entry.ColdStartError):
        lambda_entry.reaper(aws.scheduled_event())
    assert lambda_entry._runtime is None and d.emu.create_requests == []


def test_a_delivery_larger_than_one_queue_message_is_split_without_losing_an_event(deployed):
    """SQS takes 256 KiB per message; one B2 delivery may carry more. Each queue gets its own events,
    verbatim and in order, across as many messages as needed."""
    d = deployed
    inputs = [aws.b2_event(d.bucket, f"input/{'deep/' * 20}clip {i:04d}.mp4", 1000 + i) for i in range(1500)]
    manifests = [aws.b2_event(d.bucket, f"output/.attempts/vd-{i}/1/manifest.json", 900, rule="vastdrop-manifests")
                 for i in range(3)]
    body, headers = aws.signed_b2(*inputs, *manifests)
    assert len(body) > 3 * 256 * 1024
    answer = lambda_entry.webhook(aws.http_event("/webhook", body, headers))
    assert json.loads(answer["body"]) == {"inputs": 1500, "manifests": 3, "ignored": 0}

    def drain(queue_url: str) -> list[str]:
        bodies = []
        while records := aws.receive(d.stack, queue_url)["Records"]:
            bodies += [r["body"] for r in records]
            aws.delete(d.stack, queue_url, {"Records": records}, [])
        return bodies

    launch_bodies = drain(d.stack.launch_queue_url)
    assert len(launch_bodies) > 3 and all(len(b.encode()) <= 256 * 1024 for b in launch_bodies)
    received = sorted((e for b in launch_bodies for e in json.loads(b)["events"]), key=lambda e: e["objectName"])
    assert received == inputs  # every event, verbatim
    (completion_body,) = drain(d.stack.completion_queue_url)
    assert json.loads(completion_body)["events"] == manifests
