"""The CLI against remote parts: `run --once --compute vast` (SeaweedFS + the Vast emulator through
the real SDK), `destroy`, and `setup-b2` on b2sdk's RawSimulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from b2sdk.v2 import B2Api, B2HttpApiConfig, InMemoryAccountInfo, RawSimulator

from tests.support.clips import make_clip
from tests.support.jobs import REPO
from tests.support.vast_emulator import VastEmulator
from vastdrop.errors import ConfigError
from vastdrop.settings import ControlSettings
from vastdrop.storage.local import path_to_file_url
from watcher.b2setup import setup_notification_rule

STUB = [sys.executable, "-m", "tests.support.stub_job"]
B2_SECRET = "0123456789abcdefghijABCDEFGHIJ01"


def watcher(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHER_", "JOB_", "AWS_"))}
    return subprocess.run([sys.executable, "-m", "watcher", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**base, "PYTHONPATH": str(REPO), **env})


def test_run_once_with_vast_compute_finishes_every_job_and_destroys_every_instance(seaweed, bucket, tmp_path):
    s3 = seaweed.client()
    clip = make_clip(tmp_path / "c.mp4", width=64, height=48, fps=12, seconds=0.5)
    keys = ["input/one.mp4", "input/two words/ü.mp4", "input/.hidden.mp4"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=clip.read_bytes())
    with VastEmulator(command=STUB, loading_s=0.05, kill_grace_s=0.5) as emu:
        env = {**seaweed.env(), "WATCHER_VAST_API_KEY": emu.api_key, "WATCHER_VAST_SERVER_URL": emu.url,
               "WATCHER_TICK_S": "0.2"}
        proc = watcher(tmp_path, "run", "--once", "--compute", "vast", "--input", f"s3://{bucket}/input/",
                       "--output", f"s3://{bucket}/output/", env=env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("succeeded") == 2 and emu.api_key not in proc.stdout + proc.stderr
        assert emu.live_instances() == [] and len(emu.create_requests) == 2
        status = watcher(tmp_path, "status", env=env)
        assert status.returncode == 0 and "succeeded" in status.stdout
        # The GPU column shows what was rented.
        offers = {o["id"]: o for o in emu.offers}
        assert all(offers[i["offer_id"]]["gpu_name"] in status.stdout for i in emu.all_instances())


def test_vast_compute_refuses_local_folders_with_a_clear_message(tmp_path):
    proc = watcher(tmp_path, "run", "--once", "--compute", "vast", env={"WATCHER_VAST_API_KEY": "k" * 20})
    assert proc.returncode == 2 and "s3://" in proc.stderr and "Traceback" not in proc.stderr


def test_destroy_command_stops_an_instance(tmp_path):
    with VastEmulator(command=[sys.executable, "-c", "import time; time.sleep(60)"], loading_s=0.05,
                      kill_grace_s=0.5) as emu:
        from vastai import VastAI

        client = VastAI(api_key=emu.api_key, server_url=emu.url, retry=1)
        offer = client.search_offers(query="rentable=true", order="dph_total")[0]
        iid = client.create_instance(id=offer["id"], image="x/y:1", disk=10, label="vastdrop:vd-manual")["new_contract"]
        env = {"WATCHER_VAST_API_KEY": emu.api_key, "WATCHER_VAST_SERVER_URL": emu.url,
               "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1"}
        proc = watcher(tmp_path, "destroy", str(iid), "--compute", "vast", "--input", "s3://b/input/",
                       "--output", "s3://b/output/", env=env)
        assert proc.returncode == 0, proc.stderr
        assert emu.live_instances() == []


@pytest.fixture
def b2():
    api = B2Api(InMemoryAccountInfo(), api_config=B2HttpApiConfig(_raw_api_class=RawSimulator))
    simulator = api.session.raw_api
    key_id, key = simulator.create_account()
    api.authorize_account("production", key_id, key)
    bucket = api.create_bucket("vastdrop-b2", "allPrivate")
    bucket.set_notification_rules([{
        "name": "someone-elses", "eventTypes": ["b2:ObjectDeleted:*"], "isEnabled": True, "objectNamePrefix": "x/",
        "targetConfiguration": {"targetType": "webhook", "url": "https://example.invalid/hook"},
    }])
    return api


def _rules(api) -> dict[str, dict]:
    return {r["name"]: r for r in api.get_bucket_by_name("vastdrop-b2").get_notification_rules()}


def test_setup_b2_creates_signed_rules_and_keeps_other_rules(b2):
    settings = ControlSettings(webhook_secret=B2_SECRET)
    url = "https://hooks.example.test/webhook"
    setup_notification_rule(settings, bucket_name="vastdrop-b2", url=url, rule_name="vastdrop",
                            input_prefix="input/", output_prefix="output/", api=b2)
    rules = _rules(b2)
    assert set(rules) == {"someone-elses", "vastdrop-input", "vastdrop-manifests"}
    assert rules["vastdrop-input"]["objectNamePrefix"] == "input/"
    # Only a job's own (staged) manifests end an attempt; the final ones are ours.
    assert rules["vastdrop-manifests"]["objectNamePrefix"] == "output/.attempts/"
    for name in ("vastdrop-input", "vastdrop-manifests"):
        assert rules[name]["eventTypes"] == ["b2:ObjectCreated:*"]
        assert rules[name]["targetConfiguration"]["url"] == url
        assert rules[name]["targetConfiguration"]["hmacSha256SigningSecret"] == B2_SECRET
    # Running it again with a new URL merges: still three rules, ours updated in place.
    setup_notification_rule(settings, bucket_name="vastdrop-b2", url=url + "2", rule_name="vastdrop",
                            input_prefix="input/", output_prefix="output/", api=b2)
    rules = _rules(b2)
    assert len(rules) == 3 and rules["vastdrop-input"]["targetConfiguration"]["url"] == url + "2"


def test_setup_b2_expires_leftover_staging_and_keeps_other_lifecycle_rules(b2):
    bucket = b2.get_bucket_by_name("vastdrop-b2")
    theirs = {"fileNamePrefix": "archive/", "daysFromUploadingToHiding": 30, "daysFromHidingToDeleting": 1}
    bucket.update(lifecycle_rules=[theirs])
    for _ in range(2):  # idempotent: merged, never duplicated
        setup_notification_rule(ControlSettings(webhook_secret=B2_SECRET), bucket_name="vastdrop-b2",
                                url="https://hooks.example.test/webhook", rule_name="vastdrop",
                                input_prefix="input/", output_prefix="output/", api=b2)
    rules = b2.get_bucket_by_name("vastdrop-b2").lifecycle_rules
    assert theirs in rules and len(rules) == 2
    ours = next(r for r in rules if r["fileNamePrefix"] == "output/.attempts/")
    assert ours["daysFromUploadingToHiding"] >= 1 and ours["daysFromHidingToDeleting"] >= 1


@pytest.mark.parametrize(("secret", "url"), [("short", "https://h/webhook"), (B2_SECRET, "http://h/webhook")])
def test_setup_b2_refuses_what_b2_would_reject(b2, secret, url):
    with pytest.raises(ConfigError):
        setup_notification_rule(ControlSettings(webhook_secret=secret), bucket_name="vastdrop-b2", url=url,
                                rule_name="vastdrop", input_prefix="input/", output_prefix="output/", api=b2)


@pytest.mark.parametrize(("inputs", "outputs"), [
    ("file://./bucket/input/", "file://./bucket/input/results/"),
    ("s3://media/in/", "s3://media/in/out/"),
    ("s3://media/out/in/", "s3://media/out/"),
])
def test_output_and_input_that_overlap_are_refused_at_start_naming_both(tmp_path, inputs, outputs):
    """Every result under the input prefix would become a new input, forever: refused before anything runs."""
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1"}
    proc = watcher(tmp_path, "run", "--once", "--input", inputs, "--output", outputs, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    shown = [u.replace("file://./", path_to_file_url(tmp_path.resolve()) + "/") for u in (inputs, outputs)]
    assert all(url in proc.stderr for url in shown), proc.stderr
    assert not (tmp_path / ".vastdrop").exists()  # refused before the ledger is opened


def test_replay_of_a_key_outside_the_bucket_is_refused_and_reads_nothing(tmp_path):
    (tmp_path / "bucket" / "input").mkdir(parents=True)
    (tmp_path / "secret.mp4").write_bytes(b"not yours")
    proc = watcher(tmp_path, "replay", "../../secret.mp4", "--compute", "local", env={})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "object key with a '.' or '..' segment" in proc.stderr
    assert not (tmp_path / "bucket" / "output").exists() and not any((tmp_path / ".vastdrop" / "instances").iterdir())
