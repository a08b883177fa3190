"""The GPU job against a real S3 (SeaweedFS): s3:// with credentials, and presigned https:// only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.clips import make_clip
from tests.support.jobs import measure, run_job
from vastdrop.manifest import Manifest
from vastdrop.storage.s3 import S3Storage

pytestmark = pytest.mark.slow

INPUT_KEY = "input/deep dir/ünïcode 'quoted' clip.mp4"
RESULT_KEY = "output/deep dir/ünïcode 'quoted' clip.mp4"
MANIFEST_KEY = RESULT_KEY + ".manifest.json"
LOG_KEY = "logs/job-s3.log"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("remote") / "clip.mp4", width=64, height=48, fps=24, seconds=1.0)


def _head(s3, bucket: str, key: str) -> dict:
    return s3.head_object(Bucket=bucket, Key=key)


def _base_env(job_id: str) -> dict[str, str]:
    return {"JOB_ID": job_id, "JOB_DEVICE": "cpu", "JOB_TARGET_FPS": "48", "JOB_UPSCALE": "2"}


def _s3_env(seaweed, bucket: str, job_id: str) -> dict[str, str]:
    """The job on s3:// URLs with the store's credentials (input, result and manifest keys above)."""
    return {
        **seaweed.env(), **_base_env(job_id),
        "JOB_INPUT_URL": f"s3://{bucket}/{INPUT_KEY}",
        "JOB_OUTPUT_URL": f"s3://{bucket}/{RESULT_KEY}",
        "JOB_MANIFEST_URL": f"s3://{bucket}/{MANIFEST_KEY}",
    }


def test_s3_urls_produce_a_result_whose_etag_and_size_match_the_manifest(seaweed, bucket, clip):
    s3 = seaweed.client()
    s3.upload_file(str(clip), bucket, INPUT_KEY)
    env = {**_s3_env(seaweed, bucket, "job-s3"), "JOB_LOG_URL": f"s3://{bucket}/{LOG_KEY}"}
    proc = run_job(env)
    assert proc.returncode == 0, proc.stderr
    manifest = Manifest.from_json(s3.get_object(Bucket=bucket, Key=MANIFEST_KEY)["Body"].read())
    head = _head(s3, bucket, RESULT_KEY)
    assert manifest.status == "succeeded"
    assert manifest.result.etag == head["ETag"] and manifest.result.size == head["ContentLength"]
    assert manifest.input.etag == _head(s3, bucket, INPUT_KEY)["ETag"]
    assert head["ContentType"] == "video/mp4"
    local = Path(env["JOB_ID"] + ".mp4")
    try:
        s3.download_file(bucket, RESULT_KEY, str(local))
        m = measure(local)
    finally:
        local.unlink(missing_ok=True)
    assert (m.width, m.height, m.frames, m.fps) == (128, 96, 48, 48.0)
    log = s3.get_object(Bucket=bucket, Key=LOG_KEY)["Body"].read().decode()
    assert "manifest written" in log and seaweed.secret_key not in log and seaweed.secret_key not in proc.stderr


def test_presigned_https_urls_only_no_credentials_in_the_job(seaweed, bucket, clip):
    """GIVEN only presigned, expiring URLs (GET input; PUT result, manifest, log) and no AWS credentials
    WHEN the job runs
    THEN it writes all three, the manifest's ETag equals the stored result's, and no URL query leaks."""
    s3 = seaweed.client()
    s3.upload_file(str(clip), bucket, INPUT_KEY)
    storage = S3Storage(client=s3)
    url = f"s3://{bucket}/"
    env = {
        **_base_env("job-https"),
        "JOB_INPUT_URL": storage.presign_get(url + INPUT_KEY, 600),
        "JOB_OUTPUT_URL": storage.presign_put(url + RESULT_KEY, 600, "video/mp4"),
        "JOB_MANIFEST_URL": storage.presign_put(url + MANIFEST_KEY, 600, "application/json"),
        "JOB_LOG_URL": storage.presign_put(url + LOG_KEY, 600, "text/plain; charset=utf-8"),
    }
    proc = run_job(env)
    assert proc.returncode == 0, proc.stderr
    raw = s3.get_object(Bucket=bucket, Key=MANIFEST_KEY)["Body"].read()
    manifest = Manifest.from_json(raw)
    head = _head(s3, bucket, RESULT_KEY)
    assert manifest.result.etag == head["ETag"] and manifest.result.size == head["ContentLength"]
    assert "?" not in json.dumps(json.loads(raw)["result"]["url"]) or "<redacted>" in manifest.result.url
    log = s3.get_object(Bucket=bucket, Key=LOG_KEY)["Body"].read().decode()
    for text in (raw.decode(), log, proc.stderr):
        assert "Signature=" not in text and "X-Amz-Signature" not in text and "X-Amz-Credential" not in text


def test_zero_byte_object_is_bad_input_with_a_failure_manifest_and_no_result(seaweed, bucket):
    s3 = seaweed.client()
    s3.put_object(Bucket=bucket, Key=INPUT_KEY, Body=b"")
    env = _s3_env(seaweed, bucket, "job-empty")
    proc = run_job(env)
    assert proc.returncode == 65, proc.stderr
    manifest = Manifest.from_json(s3.get_object(Bucket=bucket, Key=MANIFEST_KEY)["Body"].read())
    assert manifest.status == "failed" and manifest.error.kind == "bad_input" and manifest.result is None
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert RESULT_KEY not in keys


def test_unreachable_store_is_transient(tmp_path, clip):
    env = {
        **_base_env("job-down"),
        "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y-secret-value", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",  # discard port: nothing listens
        "AWS_MAX_ATTEMPTS": "1",
        "JOB_INPUT_URL": "s3://b/input/a.mp4",
        "JOB_OUTPUT_URL": "s3://b/output/a.mp4",
        "JOB_MANIFEST_URL": (tmp_path / "a.mp4.manifest.json").as_uri(),
    }
    proc = run_job(env, timeout=120)
    assert proc.returncode == 75, proc.stderr
    manifest = Manifest.from_json((tmp_path / "a.mp4.manifest.json").read_bytes())
    assert manifest.error.kind == "transient"
    assert "y-secret-value" not in proc.stderr
