"""The control plane with real parts: SeaweedFS (S3), the Vast API emulator driven through the real
`vastai` SDK (it starts real job processes with the env it was given), SQLite ledger, the handlers."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from vastai import VastAI

from handlers.created import ObjectEvent, on_object_created
from handlers.deps import ControlConfig, Deps
from handlers.finished import on_job_finished
from handlers.reaper import reap
from tests.support.clips import make_clip
from tests.support.vast_emulator import VastEmulator
from vastdrop import signing
from vastdrop.compute.vast import VastCompute, VastConfig
from vastdrop.ledger.sqlite import SqliteLedger
from vastdrop.location import Location
from vastdrop.manifest import Manifest, ObjectRef, ResultRef
from vastdrop.signing import B2_SIGNATURE_HEADER
from vastdrop.states import JobState
from vastdrop.storage.s3 import S3Storage
from watcher import driver
from watcher.server import EventServer

STUB = [sys.executable, "-m", "tests.support.stub_job"]
FAST_VAST = {"image": "vastdrop/gpu-job:test", "backoff_initial_s": 0.01, "backoff_max_s": 0.05,
             "reconcile_interval_s": 0.05}
FAST_CONTROL = {"retry_backoff_s": 0.05, "retry_backoff_max_s": 0.1, "verify_interval_s": 0.05,
                "launch_timeout_s": 5.0}
WEBHOOK_SECRET = "0123456789abcdefghijABCDEFGHIJ01"
TICK_S = 0.1


def stub(mode: str = "ok", sleep_s: float = 0.0) -> list[str]:
    return ["env", f"STUB_MODE={mode}", f"STUB_SLEEP_S={sleep_s}", *STUB]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("cp") / "clip.mp4", width=64, height=48, fps=12, seconds=0.5)


@pytest.fixture
def emu() -> Iterator[VastEmulator]:
    with VastEmulator(command=stub(), loading_s=0.05, kill_grace_s=0.5) as e:
        yield e


def make_deps(seaweed, bucket: str, emu: VastEmulator, tmp_path: Path, vast: dict | None = None, **control) -> Deps:
    storage = S3Storage(client=seaweed.client())
    root = f"s3://{bucket}/"
    return Deps(
        inputs=Location(root, "input/", storage), outputs=Location(root, "output/", storage),
        ledger=SqliteLedger(tmp_path / "ledger.sqlite"),
        compute=VastCompute(api_key=emu.api_key, server_url=emu.url, config=VastConfig(**{**FAST_VAST, **(vast or {})})),
        config=ControlConfig(**{**FAST_CONTROL, **control}),
    )


def drop(seaweed, bucket: str, key: str, source: Path | bytes) -> None:
    body = source if isinstance(source, bytes) else source.read_bytes()
    seaweed.client().put_object(Bucket=bucket, Key=key, Body=body)


def test_real_jobs_on_vast_finish_verified_and_every_instance_is_destroyed(seaweed, bucket, clip, tmp_path):
    """GIVEN videos under input/ (spaces, unicode, quotes, deep paths) and the real `python -m gpu_job`
    WHEN the watcher runs once with --compute vast
    THEN each has a verified result + manifest, the jobs saw only presigned URLs, nothing is left billing."""
    keys = ["input/a b/ü 'q'.mp4", "input/x/y/z/deep.mp4"]
    with VastEmulator(loading_s=0.05, kill_grace_s=0.5) as emu:  # the default command: python -m gpu_job
        deps = make_deps(seaweed, bucket, emu, tmp_path, target_fps=24.0, device="cpu")
        for key in keys:
            drop(seaweed, bucket, key, clip)
        assert driver.run_once(deps, TICK_S)
        s3 = seaweed.client()
        for key in keys:
            result_key = "output/" + key[len("input/"):]
            manifest = Manifest.from_json(s3.get_object(Bucket=bucket, Key=result_key + ".manifest.json")["Body"].read())
            head = s3.head_object(Bucket=bucket, Key=result_key)
            assert manifest.result.etag == head["ETag"] and manifest.media.output.fps == 24.0
        assert emu.live_instances() == []
        for request in emu.create_requests:
            assert not any(k.startswith("AWS_") for k in request["env_keys"])
        assert all(r.state == JobState.SUCCEEDED and r.gpu_name for r in deps.ledger.list())


def test_a_result_larger_than_one_put_goes_up_in_parts_and_is_published_verified(seaweed, bucket, clip, tmp_path):
    """GIVEN a single-PUT limit below the result's size (5 GB in production, 1 KB here)
    WHEN the real job runs on the emulator with presigned URLs only
    THEN it uploads its result as a multipart upload through presigned part URLs and completes it,
    the control plane verifies that ETag and publishes the result, and no upload is left pending."""
    with VastEmulator(loading_s=0.05, kill_grace_s=0.5) as emu:  # the real `python -m gpu_job`
        deps = make_deps(seaweed, bucket, emu, tmp_path, device="cpu", single_put_max_bytes=1024)
        drop(seaweed, bucket, "input/big.mp4", clip)
        assert driver.run_once(deps, TICK_S)
        s3 = seaweed.client()
        final = Manifest.from_json(s3.get_object(Bucket=bucket, Key="output/big.mp4.manifest.json")["Body"].read())
        head = s3.head_object(Bucket=bucket, Key="output/big.mp4")
        assert final.status == "succeeded" and final.result.size == head["ContentLength"] > 1024
        assert final.result.etag == head["ETag"]
        record = deps.ledger.list()[0]
        log = s3.get_object(Bucket=bucket, Key=f"logs/{record.job_id}.log")["Body"].read().decode()
        assert "uploading the result in parts" in log
        assert emu.live_instances() == []
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        assert s3.list_objects_v2(Bucket=bucket, Prefix="output/.attempts/").get("KeyCount", 0) == 0
        assert any("JOB_OUTPUT_PARTS_URL" in k for k in emu.create_requests[0]["env_keys"])


def test_duplicate_webhook_deliveries_launch_once_and_bad_signatures_get_401(seaweed, bucket, clip, tmp_path, emu):
    deps = make_deps(seaweed, bucket, emu, tmp_path)
    drop(seaweed, bucket, "input/dup.mp4", clip)
    server = EventServer(deps, "127.0.0.1", 0, WEBHOOK_SECRET, None).start()
    try:
        body = json.dumps({"events": [{"eventType": "b2:ObjectCreated:Upload", "objectName": "input/dup.mp4",
                                       "objectSize": clip.stat().st_size, "bucketName": bucket}]}).encode()
        url = f"http://127.0.0.1:{server.port}/webhook"
        bad = requests.post(url, data=body, headers={B2_SIGNATURE_HEADER: "v1=" + "0" * 64}, timeout=5)
        unsigned = requests.post(url, data=body, timeout=5)
        assert (bad.status_code, unsigned.status_code) == (401, 401)
        time.sleep(0.3)
        assert emu.create_requests == []  # nothing launched for unsigned requests
        good = {B2_SIGNATURE_HEADER: signing.sign(WEBHOOK_SECRET, body)}
        answers = [requests.post(url, data=body, headers=good, timeout=5).status_code for _ in range(3)]
        assert answers == [202, 202, 202]
        server.work.join()
    finally:
        server.stop()
    (record,) = deps.ledger.list()
    states = driver.wait_for([record.job_id], deps, TICK_S, show_progress=False, timeout_s=60)
    assert states[record.job_id] == JobState.SUCCEEDED
    assert len(emu.create_requests) == 1
    assert emu.live_instances() == []


def test_a_crashing_job_is_retried_then_failed_and_all_instances_destroyed(seaweed, bucket, clip, tmp_path):
    with VastEmulator(command=stub("crash"), loading_s=0.05, kill_grace_s=0.5) as emu:
        deps = make_deps(seaweed, bucket, emu, tmp_path, max_attempts=2)
        drop(seaweed, bucket, "input/crash.mp4", clip)
        assert not driver.run_once(deps, TICK_S)
        (record,) = deps.ledger.list()
        assert record.state == JobState.FAILED and record.attempt == 2
        assert "gave up after 2 attempts" in record.error
        assert len(emu.create_requests) == 2 and emu.live_instances() == []


def test_bad_input_fails_once_and_is_not_retried(seaweed, bucket, clip, tmp_path):
    with VastEmulator(command=stub("bad_input"), loading_s=0.05, kill_grace_s=0.5) as emu:
        deps = make_deps(seaweed, bucket, emu, tmp_path, max_attempts=3)
        drop(seaweed, bucket, "input/bad.mp4", b"not a video")
        assert not driver.run_once(deps, TICK_S)
        (record,) = deps.ledger.list()
        assert (record.state, record.error_kind, record.attempt) == (JobState.FAILED, "bad_input", 1)
        assert len(emu.create_requests) == 1 and emu.live_instances() == []


def test_a_job_killed_mid_run_is_retried_and_succeeds(seaweed, bucket, clip, tmp_path):
    with VastEmulator(command=stub("ok", sleep_s=1.0), loading_s=0.05, kill_grace_s=0.5) as emu:
        emu.die_mid_job(next=True, delay_s=0.2)
        deps = make_deps(seaweed, bucket, emu, tmp_path)
        drop(seaweed, bucket, "input/dies.mp4", clip)
        assert driver.run_once(deps, TICK_S)
        (record,) = deps.ledger.list()
        assert record.attempt == 2 and len(emu.create_requests) == 2 and emu.live_instances() == []


def test_stuck_loading_instances_are_destroyed_and_the_job_fails_after_the_limit(seaweed, bucket, clip, tmp_path, emu):
    emu.stuck_loading = True
    deps = make_deps(seaweed, bucket, emu, tmp_path, loading_timeout_s=0.5, max_attempts=2)
    drop(seaweed, bucket, "input/stuck.mp4", clip)
    assert not driver.run_once(deps, TICK_S)
    (record,) = deps.ledger.list()
    assert record.state == JobState.FAILED and "stuck in loading" in record.error
    assert len(emu.create_requests) == 2 and emu.live_instances() == []


def test_create_that_fails_yet_returns_a_contract_leaves_nothing_billing(seaweed, bucket, clip, tmp_path, emu):
    emu.create_fails_with_contract = True
    deps = make_deps(seaweed, bucket, emu, tmp_path)
    drop(seaweed, bucket, "input/contract.mp4", clip)
    outcome = on_object_created(ObjectEvent("input/contract.mp4"), deps)
    emu.create_fails_with_contract = False
    states = driver.wait_for([outcome.job_id], deps, TICK_S, show_progress=False, timeout_s=60)
    assert states[outcome.job_id] == JobState.SUCCEEDED
    assert emu.live_instances() == []


def test_throttled_api_still_launches(seaweed, bucket, clip, tmp_path, emu):
    emu.rate_limit_next(3)
    deps = make_deps(seaweed, bucket, emu, tmp_path)
    drop(seaweed, bucket, "input/throttled.mp4", clip)
    assert driver.run_once(deps, TICK_S)
    assert emu.live_instances() == []


def test_result_overwritten_after_its_manifest_is_not_marked_succeeded(seaweed, bucket, clip, tmp_path):
    """GIVEN a success manifest whose ETag matched the result when written
    WHEN the result is overwritten before verification
    THEN the job is not succeeded: the attempt ends, its instance is destroyed, the job is retried."""
    with VastEmulator(command=stub("hang"), loading_s=0.05, kill_grace_s=0.5) as emu:
        _overwritten_result(seaweed, bucket, clip, tmp_path, emu)


def _overwritten_result(seaweed, bucket, clip, tmp_path, emu):
    deps = make_deps(seaweed, bucket, emu, tmp_path)
    s3 = seaweed.client()
    drop(seaweed, bucket, "input/over.mp4", clip)
    outcome = on_object_created(ObjectEvent("input/over.mp4"), deps)
    record = deps.ledger.get(outcome.job_id)
    assert record.state == JobState.RUNNING
    staged = f"output/.attempts/{record.job_id}/1/"
    put = s3.put_object(Bucket=bucket, Key=staged + "result.mp4", Body=b"the real result")
    manifest = Manifest(job_id=record.job_id, status="succeeded", params=record.params,
                        input=ObjectRef(url="s3://x", etag=record.input_etag),
                        result=ResultRef(url="s3://x", etag=put["ETag"], size=15))
    s3.put_object(Bucket=bucket, Key=staged + "manifest.json", Body=manifest.to_json())
    s3.put_object(Bucket=bucket, Key=staged + "result.mp4", Body=b"someone else's bytes")
    assert on_job_finished(record.job_id, deps) == "verification failed"
    after = deps.ledger.get(record.job_id)
    assert after.state == JobState.RETRYING and "ETag" in after.error
    assert emu.live_instances() == []
    # Nothing was published, and the failed attempt's staging is gone.
    assert s3.list_objects_v2(Bucket=bucket, Prefix="output/").get("KeyCount", 0) == 0


def test_orphan_instance_with_our_label_is_destroyed_by_the_reaper(seaweed, bucket, tmp_path, emu):
    client = VastAI(api_key=emu.api_key, server_url=emu.url, retry=1)
    offer = client.search_offers(query="rentable=true", order="dph_total")[0]
    orphan = client.create_instance(id=offer["id"], image="vastdrop/gpu-job:test", disk=10,
                                    label="vastdrop:vd-ghost", env={"JOB_ID": "vd-ghost"})["new_contract"]
    time.sleep(4.6)  # Vast's create pace: one per 4.5 s per key
    other = client.create_instance(id=offer["id"], image="someone/else", disk=10, label="not-ours")["new_contract"]
    deps = make_deps(seaweed, bucket, emu, tmp_path)
    actions = reap(deps)
    assert actions["orphan"] == 1
    live = {i["id"] for i in emu.live_instances()}
    assert orphan not in live and other in live


def test_signed_job_callback_completes_the_job_and_unsigned_ones_are_refused(seaweed, bucket, clip, tmp_path):
    """GIVEN jobs that POST their manifest to the watcher's /callback, signed with the callback secret
    WHEN one arrives signed and one forged
    THEN the forged one gets 401; the signed one stops the instance at once and verification completes the job."""
    secret = "callback-secret-0123456789"
    with VastEmulator(command=stub("ok"), loading_s=0.05, kill_grace_s=0.5) as emu:
        deps = make_deps(seaweed, bucket, emu, tmp_path)
        server = EventServer(deps, "127.0.0.1", 0, WEBHOOK_SECRET, secret).start()
        try:
            deps.config = ControlConfig(**{**FAST_CONTROL, "callback_url": f"http://127.0.0.1:{server.port}/callback",
                                           "callback_secret": secret})
            drop(seaweed, bucket, "input/cb.mp4", clip)
            outcome = on_object_created(ObjectEvent("input/cb.mp4"), deps)
            forged = requests.post(f"http://127.0.0.1:{server.port}/callback", data=b'{"job_id": "x"}',
                                   headers={"X-Signature": signing.sign("wrong", b'{"job_id": "x"}')}, timeout=5)
            assert forged.status_code == 401
            deadline = time.monotonic() + 30  # no reap() here: only the callback can move the job on
            while time.monotonic() < deadline and (deps.ledger.get(outcome.job_id).state != JobState.VERIFYING
                                                   or emu.live_instances()):
                time.sleep(0.05)
            # The callback alone destroyed the instance: nothing bills while the result is re-verified.
            assert deps.ledger.get(outcome.job_id).state == JobState.VERIFYING
            assert emu.live_instances() == []
        finally:
            server.stop()
        states = driver.wait_for([outcome.job_id], deps, TICK_S, show_progress=False, timeout_s=30)
        assert states[outcome.job_id] == JobState.SUCCEEDED


def test_a_job_past_its_deadline_is_destroyed_and_failed(seaweed, bucket, clip, tmp_path):
    with VastEmulator(command=stub("hang"), loading_s=0.05, kill_grace_s=0.5) as emu:
        deps = make_deps(seaweed, bucket, emu, tmp_path, job_timeout_s=0.5, deadline_grace_s=0.2, max_attempts=1)
        drop(seaweed, bucket, "input/slow.mp4", clip)
        assert not driver.run_once(deps, TICK_S)
        (record,) = deps.ledger.list()
        assert record.state == JobState.FAILED and "deadline" in record.error
        assert emu.live_instances() == []
        (instance,) = emu.all_instances()
        assert instance["destroyed_at"] - instance["created_at"] < 10  # not billed for the hour it would hang


def test_a_vast_api_outage_delays_the_reaper_but_does_not_stop_it(seaweed, bucket, clip, tmp_path, emu):
    deps = make_deps(seaweed, bucket, emu, tmp_path)
    drop(seaweed, bucket, "input/outage.mp4", clip)
    outcome = on_object_created(ObjectEvent("input/outage.mp4"), deps)
    emu.server_error_next(40, status=500)
    assert driver.safe_reap(deps) == {}  # the pass is skipped, nothing raised
    states = driver.wait_for([outcome.job_id], deps, TICK_S, show_progress=False, timeout_s=60)
    assert states[outcome.job_id] == JobState.SUCCEEDED and emu.live_instances() == []


def test_a_backlog_larger_than_the_instance_cap_waits_for_capacity_without_failing(seaweed, bucket, clip, tmp_path):
    """GIVEN five inputs and a cap of two concurrent instances
    THEN jobs wait in the queue for capacity (no attempt used up), all succeed, never more than two live."""
    with VastEmulator(command=stub("ok", sleep_s=0.3), loading_s=0.05, kill_grace_s=0.5) as emu:
        deps = make_deps(seaweed, bucket, emu, tmp_path, vast={"max_instances": 2}, max_attempts=1,
                         capacity_wait_s=0.1)
        for i in range(5):
            drop(seaweed, bucket, f"input/backlog-{i}.mp4", clip)
        assert driver.run_once(deps, TICK_S)
        assert {r.attempt for r in deps.ledger.list()} == {1}
        assert len(emu.create_requests) == 5 and emu.live_instances() == []
        spans = [(i["created_at"], i["destroyed_at"]) for i in emu.all_instances()]
        assert max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans) <= 2


def _offers(n: int) -> list[dict]:
    """n single-GPU hosts of one model, prices a little apart, as a market has them."""
    return [{"id": 32_000_000 + i, "gpu_name": "RTX 4090", "gpu_ram": 24564, "dph_base": 0.30 + 0.002 * i,
             "storage_cost": 0.15, "inet_down_cost": 0.004, "inet_up_cost": 0.008, "reliability2": 0.99,
             "cuda_max_good": 12.8, "compute_cap": 890, "inet_down": 900.0, "disk_space": 120.0}
            for i in range(n)]


def test_a_backlog_of_20_files_at_vasts_documented_limits(seaweed, bucket, clip, tmp_path):
    """GIVEN 20 inputs (spaces, unicode, deep paths) and the strict emulator: Vast's documented value
    limits and rate limits, plain-text 429s, offers that a rental takes off the market, billing of GPU,
    storage and bandwidth
    WHEN the watcher runs once through the real SDK
    THEN every file is verified; one create per file, paced at the documented ceiling (>= 4.5 s
    apart); not a single 429, so no attempt used by one; nothing left billing; and each job's cost in
    the ledger is what the emulator billed."""
    keys = [f"input/batch {i:02d}/clip ü {i}.mp4" if i % 3 else f"input/a/b/c/d/{i:02d}.mp4" for i in range(20)]
    with VastEmulator(command=stub("ok", sleep_s=1.5), offers=_offers(24), offers_single_use=True,
                      loading_s=0.3, kill_grace_s=0.5) as emu:
        deps = make_deps(seaweed, bucket, emu, tmp_path, vast={"max_instances": 20, "max_total_dph": 20.0})
        for key in keys:
            drop(seaweed, bucket, key, clip)
        assert driver.run_once(deps, 0.5)
        records = deps.ledger.list()
        assert len(records) == 20 and {r.state for r in records} == {JobState.SUCCEEDED}
        assert {r.attempt for r in records} == {1}
        assert emu.rate_limited == []
        creates = emu.create_requests
        assert len(creates) == 20 and {c["status"] for c in creates} == {200}
        assert sorted(c["label"] for c in creates) == sorted(f"vastdrop:{r.job_id}" for r in records)
        times = sorted(c["monotonic"] for c in creates)
        assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 4.5
        assert emu.live_instances() == []
        s3 = seaweed.client()
        for key in keys:
            s3.head_object(Bucket=bucket, Key="output/" + key[len("input/"):] + ".manifest.json")
        billed = {r.job_id: emu.billing(int(r.instance_id)) for r in records}
        assert all(b["storage_cost"] > 0 and b["gpu_cost"] > 0 and b["bytes_in"] > 0 for b in billed.values())
        # The ledger's cost follows Vast's model (GPU while the job ran, storage while the instance
        # existed, bandwidth per byte): each job within a third of what was billed, the sum within 15 %
        # (the job's own run time excludes its interpreter's start-up, a second here, nothing at minutes).
        for record in records:
            assert record.cost == pytest.approx(billed[record.job_id]["total"], rel=0.35)
        assert sum(r.cost for r in records) == pytest.approx(sum(b["total"] for b in billed.values()), rel=0.15)


def test_a_host_that_goes_offline_is_replaced_and_the_job_succeeds(seaweed, bucket, clip, tmp_path):
    """Vast's docs: an instance seen `offline` (host disconnected) or `unknown` (no heartbeat) may never
    come back. After unhealthy_timeout_s it is destroyed and the job runs again elsewhere."""
    with VastEmulator(command=stub("ok", sleep_s=6.0), loading_s=0.05, kill_grace_s=0.5) as emu:
        deps = make_deps(seaweed, bucket, emu, tmp_path, vast={"max_dph": 1.0}, unhealthy_timeout_s=0.5)
        drop(seaweed, bucket, "input/offline.mp4", clip)
        outcome = on_object_created(ObjectEvent("input/offline.mp4"), deps)
        first_id = int(deps.ledger.get(outcome.job_id).instance_id)
        emu.wait_for_status(first_id, "running")
        emu.set_state(first_id, "offline", duration_s=60)
        states = driver.wait_for([outcome.job_id], deps, 0.3, show_progress=False, timeout_s=90)
        record = deps.ledger.get(outcome.job_id)
        assert states[outcome.job_id] == JobState.SUCCEEDED and record.attempt == 2
        assert emu.instance(first_id)["destroyed"] and emu.live_instances() == []
        assert len(emu.create_requests) == 2 and emu.rate_limited == []


def test_an_outbid_interruptible_instance_is_relaunched_without_using_an_attempt(seaweed, bucket, clip, tmp_path):
    """GIVEN run --interruptible and max_attempts 1
    WHEN the market outbids the job's instance mid-run (Vast stops it, keeps billing its storage)
    THEN that instance is destroyed, the job runs again on a new bid instance and succeeds: the
    preemption used no attempt, the ledger counts it, and its cost includes both instances."""
    with VastEmulator(command=stub("ok", sleep_s=3.0), loading_s=0.05, kill_grace_s=0.5) as emu:
        deps = make_deps(seaweed, bucket, emu, tmp_path, vast={"interruptible": True}, max_attempts=1)
        drop(seaweed, bucket, "input/outbid.mp4", clip)
        outcome = on_object_created(ObjectEvent("input/outbid.mp4"), deps)
        first_id = int(deps.ledger.get(outcome.job_id).instance_id)
        emu.wait_for_status(first_id, "running")
        emu.outbid(first_id)
        states = driver.wait_for([outcome.job_id], deps, 0.3, show_progress=False, timeout_s=90)
        record = deps.ledger.get(outcome.job_id)
        assert states[outcome.job_id] == JobState.SUCCEEDED
        assert (record.attempt, record.preemptions) == (2, 1)
        first = emu.instance(first_id)
        assert first["destroyed"] and first["outbid"] and emu.live_instances() == []
        on_demand = {o["id"]: o["dph_base"] for o in emu.offers}
        requests_ = emu.create_requests
        assert len(requests_) == 2 and requests_[0]["offer_id"] == first["offer_id"] != requests_[1]["offer_id"]
        assert all(r["price"] == round(0.7 * on_demand[r["offer_id"]], 4) for r in requests_)  # elsewhere, bid
        billed = sum(emu.cost(i["id"]) for i in emu.all_instances())
        assert record.cost == pytest.approx(billed, rel=0.35) and record.cost > emu.cost(first_id)


def test_preemptions_beyond_the_limit_fail_the_job_with_a_clear_reason(seaweed, bucket, clip, tmp_path):
    from tests.support.vast_emulator import Faults

    faults = Faults(outbid_chance=1.0, outbid_after_s=(0.05, 0.1), seed=1)
    with VastEmulator(command=stub("ok", sleep_s=3.0), loading_s=0.05, kill_grace_s=0.2, faults=faults) as emu:
        deps = make_deps(seaweed, bucket, emu, tmp_path, vast={"interruptible": True}, max_preemptions=1)
        drop(seaweed, bucket, "input/always-outbid.mp4", clip)
        assert not driver.run_once(deps, TICK_S)
        (record,) = deps.ledger.list()
        assert record.state == JobState.FAILED and record.preemptions == 2
        assert "gave up after 2 preemptions" in record.error and record.error_kind == "preempted"
        assert len(emu.create_requests) == 2 and emu.live_instances() == []


def test_a_throttled_launch_waits_in_the_queue_and_status_says_so(seaweed, bucket, clip, tmp_path, emu):
    """Another process on the key creates first: our create gets a plain-text 429. The job is queued,
    waiting for the Vast API, its attempt kept; `status` says why; it launches after the penalty."""
    from watcher.status import render

    deps = make_deps(seaweed, bucket, emu, tmp_path)
    drop(seaweed, bucket, "input/busy.mp4", clip)
    other = VastAI(api_key=emu.api_key, server_url=emu.url, retry=1)
    other.create_instance(31000002, image="someone/else", disk=10, label="not-ours")
    outcome = on_object_created(ObjectEvent("input/busy.mp4"), deps)
    record = deps.ledger.get(outcome.job_id)
    assert record.state == JobState.QUEUED and record.attempt == 1 and record.error_kind == "waiting"
    table = render([record])
    assert "queued (waiting)" in table and "waiting for the Vast API" in table
    states = driver.wait_for([outcome.job_id], deps, TICK_S, show_progress=False, timeout_s=60)
    assert states[outcome.job_id] == JobState.SUCCEEDED and deps.ledger.get(outcome.job_id).attempt == 1
    assert [c["status"] for c in emu.create_requests] == [200, 429, 200]
