"""Results larger than one presigned PUT takes (S3 and B2: 5 GB), uploaded by the job itself as an S3
multipart upload through presigned part URLs (ARCHITECTURE.md section 8).

At launch the control plane starts a multipart upload for the attempt's staged result, presigns an
UploadPart URL for each part that the largest allowed result needs and a CompleteMultipartUpload
URL, and writes them as a PartsPlan into the attempt's staging folder; the job gets a presigned GET
of that document (JOB_OUTPUT_PARTS_URL: a few hundred part URLs would not fit Vast's 32 KB of env).
A result up to `single_put_max_bytes` still goes in one PUT. A larger one goes in parts of
`part_size` bytes, and the job completes the upload itself, so that its manifest carries the ETag
the store gave it, as after a PUT, and the completion handler verifies it the same way. An upload
that was never completed is aborted with its staging folder.

Every URL in a plan is for the attempt's own staged key only: a host can neither read the bucket
nor write anywhere else. The plan is the control plane's own document; the job still bounds it.
"""

from __future__ import annotations

import html
import math
import re
from xml.sax.saxutils import escape

from pydantic import BaseModel, ConfigDict, Field

MIN_PART_BYTES = 5 * (1 << 20)  # S3's and B2's least part (all but the last); B2 counts 5 MB, the larger reading
MAX_PART_BYTES = 5 * 10**9  # S3's and B2's largest part (B2 counts 10^9-byte GB, the smaller reading)
MAX_PARTS = 10_000  # S3's and B2's most parts in one upload
MAX_SINGLE_PUT_BYTES = 5 * 10**9  # the most one PUT may carry: S3 5 GiB, B2 5 GB (the smaller)
# Each part URL is presigned at launch (about 0.4 ms and 400 bytes each): parts of 500 MB (B2 recommends
# 100 MB, allows 5 GB) keep a 200 GB plan at 400 URLs; a failed part costs at most 500 MB again.
DEFAULT_PART_BYTES = 500 * 10**6
DEFAULT_MAX_RESULT_BYTES = 200 * 10**9  # a 4K upscale of a feature film, twice over
MAX_PLAN_BYTES = 16 << 20  # what the job reads of a plan (10,000 URLs of ~1 KB fit)
# The store's answer to CompleteMultipartUpload: an ETag, or (even with HTTP 200) an <Error>.
_ETAG = re.compile(rb"<ETag>\s*([^<]{1,200}?)\s*</ETag>")
_ERROR_CODE = re.compile(rb"<Error>\s*<Code>([A-Za-z0-9.]{1,64})</Code>")


class PartsPlan(BaseModel):
    """What the job needs to upload its result in parts: written by the control plane, read by the job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = Field(1, ge=1, le=1)
    single_put_max_bytes: int = Field(MAX_SINGLE_PUT_BYTES, ge=1, le=MAX_SINGLE_PUT_BYTES,
                                      description="results up to this size go in one PUT to JOB_OUTPUT_URL")
    part_size: int = Field(ge=1, le=MAX_PART_BYTES, description="bytes per part (all but the last)")
    part_urls: list[str] = Field(min_length=1, max_length=MAX_PARTS, description="presigned UploadPart URLs, part 1 first")
    complete_url: str = Field(description="presigned CompleteMultipartUpload (POST) URL")

    @property
    def max_bytes(self) -> int:
        """The largest result these part URLs can carry."""
        return self.part_size * len(self.part_urls)

    def parts_for(self, size: int) -> list[tuple[int, int, int]]:
        """(part number, offset, length) of each part of a `size`-byte result."""
        count = max(1, math.ceil(size / self.part_size))
        if count > len(self.part_urls):
            raise ValueError(f"{size} bytes need {count} parts of {self.part_size}; the plan has {len(self.part_urls)}")
        return [(n + 1, n * self.part_size, min(self.part_size, size - n * self.part_size)) for n in range(count)]

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes) -> PartsPlan:
        return cls.model_validate_json(data)


def plan_size(max_result_bytes: int, part_bytes: int) -> tuple[int, int]:
    """(part size, number of parts) covering `max_result_bytes`: parts of `part_bytes`, grown when
    10,000 of them would not be enough."""
    part = max(MIN_PART_BYTES, min(part_bytes, MAX_PART_BYTES), math.ceil(max_result_bytes / MAX_PARTS))
    if part > MAX_PART_BYTES:
        raise ValueError(f"{max_result_bytes} bytes is more than one multipart upload takes")
    return part, max(1, math.ceil(max_result_bytes / part))


def complete_body(etags: list[str]) -> bytes:
    """The CompleteMultipartUpload request: each part's number and the ETag its upload returned."""
    parts = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{escape(etag)}</ETag></Part>"
                    for n, etag in enumerate(etags, start=1))
    return f'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{parts}</CompleteMultipartUpload>'.encode()


def completed_etag(body: bytes) -> str:
    """The new object's ETag from CompleteMultipartUpload's answer. S3 may answer 200 and put an
    error in the body (the upload failed after the headers went out): ValueError names its code."""
    error = _ERROR_CODE.search(body)
    if error:
        raise ValueError(f"the store refused to complete the upload: {error.group(1).decode()}")
    found = _ETAG.search(body)
    if not found:
        raise ValueError("the store's answer to completing the upload carried no ETag")
    return html.unescape(found.group(1).decode())  # S3 writes &quot;, SeaweedFS &#34;
