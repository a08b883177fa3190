"""Results larger than one PUT: a multipart upload through presigned part URLs (vastdrop.multipart),
against a real S3 (SeaweedFS) with real SigV4 signatures; the job holds URLs only."""

from __future__ import annotations

import hashlib
import os
from urllib.parse import unquote, urlsplit

import pytest

from vastdrop.errors import PermanentError
from vastdrop.location import Location
from vastdrop.multipart import (
    MAX_PARTS,
    MIN_PART_BYTES,
    PartsPlan,
    complete_body,
    completed_etag,
    plan_size,
)
from vastdrop.storage.https import HttpsStorage
from vastdrop.storage.s3 import S3Storage

RESULT = "output/.attempts/job-1/1/result.mp4"
PLAN = "output/.attempts/job-1/1/result-parts.json"


def _outputs(seaweed, bucket: str) -> Location:
    return Location(f"s3://{bucket}/", "output/", S3Storage(client=seaweed.client()))


def _plan_for(outputs: Location, max_result_bytes: int, part_bytes: int = MIN_PART_BYTES) -> tuple[str, PartsPlan]:
    url = outputs.job_parts_url(RESULT, PLAN, 600, "video/mp4", part_bytes=part_bytes,
                                max_result_bytes=max_result_bytes, single_put_max_bytes=1)
    assert url is not None and url.startswith("http")
    return url, PartsPlan.from_json(HttpsStorage().get_bytes(url))


def _pending(seaweed, bucket: str) -> list[str]:
    return [u["Key"] for u in seaweed.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def test_a_file_of_three_parts_goes_up_through_presigned_urls_and_its_etag_is_the_stores(seaweed, bucket, tmp_path):
    """GIVEN a plan written by the control plane for a staged result, parts of 5 MiB
    WHEN the host, holding only the plan's URL, uploads a 12 MiB file in parts
    THEN the stored object is that file, with the ETag and size the upload returned, and no
    upload is left pending."""
    outputs = _outputs(seaweed, bucket)
    plan_url, plan = _plan_for(outputs, max_result_bytes=20 * (1 << 20))
    assert plan.part_size == MIN_PART_BYTES and len(plan.part_urls) == 4  # 20 MiB / 5 MiB
    src = tmp_path / "result.mp4"
    data = os.urandom(12 * (1 << 20) + 12345)
    src.write_bytes(data)

    got = HttpsStorage().upload_in_parts(src, plan)

    head = seaweed.client().head_object(Bucket=bucket, Key=RESULT)
    assert got.etag == head["ETag"] and got.size == head["ContentLength"] == len(data)
    assert got.etag.strip('"').endswith("-3")  # three parts: a multipart ETag, not one PUT's
    body = seaweed.client().get_object(Bucket=bucket, Key=RESULT)["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    assert head["ContentType"] == "video/mp4"  # set when the control plane started the upload
    assert _pending(seaweed, bucket) == []


def test_every_url_in_a_plan_is_for_the_attempts_own_staged_key(seaweed, bucket):
    """A host gets URLs for its own staged result only: nothing that lists, reads or writes another key."""
    _url, plan = _plan_for(_outputs(seaweed, bucket), max_result_bytes=12 * (1 << 20))
    for url in [*plan.part_urls, plan.complete_url]:
        assert unquote(urlsplit(url).path) == f"/{bucket}/{RESULT}"
        assert "uploadId=" in urlsplit(url).query


def test_a_result_larger_than_the_plan_is_refused_before_any_byte_is_sent(seaweed, bucket, tmp_path):
    outputs = _outputs(seaweed, bucket)
    _url, plan = _plan_for(outputs, max_result_bytes=MIN_PART_BYTES)
    huge = tmp_path / "huge.mp4"
    with huge.open("wb") as f:  # sparse: no disk used
        f.truncate(plan.max_bytes + 1)
    with pytest.raises(PermanentError, match="more than its multipart upload takes"):
        HttpsStorage().upload_in_parts(huge, plan)
    assert seaweed.client().list_objects_v2(Bucket=bucket, Prefix=RESULT).get("KeyCount", 0) == 0


def test_removing_the_staging_folder_aborts_an_upload_the_job_never_completed(seaweed, bucket, tmp_path):
    """A job that used one PUT (or died mid-upload) leaves a started multipart upload: its parts are
    stored, and billed, until it is aborted with the attempt's staging."""
    outputs = _outputs(seaweed, bucket)
    _url, plan = _plan_for(outputs, max_result_bytes=12 * (1 << 20))
    part = tmp_path / "part"
    part.write_bytes(os.urandom(MIN_PART_BYTES))
    HttpsStorage()._put_part(part, plan.part_urls[0], 0, MIN_PART_BYTES)  # the host died after part 1
    assert _pending(seaweed, bucket) == [RESULT]
    outputs.delete_prefix("output/.attempts/job-1/1/")
    assert _pending(seaweed, bucket) == []
    assert seaweed.client().list_objects_v2(Bucket=bucket, Prefix="output/.attempts/").get("KeyCount", 0) == 0


def test_a_local_bucket_needs_no_plan(tmp_path):
    outputs = Location.parse(f"file://{tmp_path}/bucket/output/")
    assert outputs.job_parts_url(RESULT, PLAN, 600, "video/mp4", part_bytes=MIN_PART_BYTES,
                                 max_result_bytes=1 << 30, single_put_max_bytes=1) is None


@pytest.mark.parametrize(("max_bytes", "part", "want"), [
    (200 * 10**9, 500 * 10**6, (500 * 10**6, 400)),
    (1, 100 * 10**6, (100 * 10**6, 1)),
    (10**9, 1, (MIN_PART_BYTES, 191)),  # parts below S3's least are raised to it
    (5 * 10**12, 100 * 10**6, (500 * 10**6, MAX_PARTS)),  # 10,000 parts at most: the parts grow
])
def test_plan_sizes_keep_to_the_stores_documented_limits(max_bytes, part, want):
    assert plan_size(max_bytes, part) == want


def test_the_completion_answer_is_read_for_its_etag_and_an_error_inside_a_200_is_not_success():
    body = complete_body(['"a"', '"b"'])
    assert b"<PartNumber>2</PartNumber><ETag>&quot;b&quot;</ETag>" in body or b'<ETag>"b"</ETag>' in body
    ok = b'<?xml version="1.0"?><CompleteMultipartUploadResult><ETag>&quot;abc-2&quot;</ETag></CompleteMultipartUploadResult>'
    assert completed_etag(ok) == '"abc-2"'
    seaweed_style = b"<CompleteMultipartUploadResult><ETag>&#34;abc-2&#34;</ETag></CompleteMultipartUploadResult>"
    assert completed_etag(seaweed_style) == '"abc-2"'
    with pytest.raises(ValueError, match="InternalError"):
        completed_etag(b"<Error><Code>InternalError</Code><Message>try again</Message></Error>")
    with pytest.raises(ValueError, match="no ETag"):
        completed_etag(b"<CompleteMultipartUploadResult></CompleteMultipartUploadResult>")


def test_a_plan_is_bounded_and_validated():
    with pytest.raises(ValueError):
        PartsPlan(part_size=MIN_PART_BYTES, part_urls=[], complete_url="https://x/y")
    with pytest.raises(ValueError):
        PartsPlan.from_json(b'{"part_size": 1, "part_urls": ["https://x"], "complete_url": "https://x", "extra": 1}')
    plan = PartsPlan(part_size=10, part_urls=["u1", "u2", "u3"], complete_url="c")
    assert plan.parts_for(25) == [(1, 0, 10), (2, 10, 10), (3, 20, 5)]
    assert plan.parts_for(0) == [(1, 0, 0)]
    with pytest.raises(ValueError):
        plan.parts_for(31)
