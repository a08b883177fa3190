"""s3:// adapter on boto3 (AWS S3, SeaweedFS, B2's S3 API, MinIO...).

URLs are `s3://bucket/key` with the key verbatim (not percent-encoded), as the AWS CLI writes them;
build them with s3_url() and take them apart with parse_s3_url(). The endpoint comes from boto3's
own configuration (AWS_ENDPOINT_URL_S3, ~/.aws/config): this module never reads os.environ.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import math
import os
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions as bce
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from s3transfer.utils import ReadFileChunk

from vastdrop.errors import ConfigError, NotFoundError, PermanentError, TransientError
from vastdrop.jobspec import redact_url
from vastdrop.join import Part, Piece, plan_parts
from vastdrop.storage.base import ObjectInfo
from vastdrop.storage.local import CHUNK, atomic_writer, os_error

log = logging.getLogger(__name__)

MiB = 1 << 20
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PARTS = 10_000
MAX_COPY_BYTES = 5 * 1000**3  # S3's CopyObject limit (5 GB); above it, a multipart copy
MAX_RESUMES = 3  # a download whose stream breaks continues with a Range request this many times

_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchBucket", "NoSuchVersion"}
_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequests",
}  # fmt: skip
# Errors of the connection or of a response stream that was cut: worth another try.
_NETWORK_ERRORS: tuple[type[Exception], ...] = (
    bce.HTTPClientError,  # ConnectionClosedError, Read/ConnectTimeoutError...
    bce.ConnectionError,  # EndpointConnectionError: nothing listening, DNS, refused
    bce.ResponseStreamingError,
    bce.IncompleteReadError,
    bce.FlexibleChecksumError,  # the bytes received don't match the checksum the store sent
)
_STREAM_ERRORS = (bce.ResponseStreamingError, bce.IncompleteReadError, bce.ReadTimeoutError,
                  bce.ConnectionClosedError)  # fmt: skip


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/key` -> ("bucket", "some/key"); the key may be empty (a bucket or prefix)."""
    if not url.startswith("s3://"):
        raise PermanentError(f"not an s3:// URL: {redact_url(url)}")
    bucket, _sep, key = url[len("s3://") :].partition("/")
    if not bucket:
        raise PermanentError(f"s3:// URL without a bucket: {redact_url(url)}")
    return bucket, key


def s3_url(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def _object(url: str) -> tuple[str, str]:
    bucket, key = parse_s3_url(url)
    if not key:
        raise PermanentError(f"s3:// URL without a key: {url}")
    return bucket, key


def default_config() -> Config:
    """SigV4 everywhere (presigned URLs included: botocore may still presign with SigV2 otherwise),
    and botocore's standard retry mode for throttling, 5xx and connection errors."""
    return Config(
        signature_version="s3v4",
        retries={"mode": "standard", "max_attempts": 5},
        tcp_keepalive=True,
    )


class S3Storage:
    """Storage for s3:// URLs.

    Small files go up in one PutObject; files of `multipart_threshold` bytes or more as a multipart
    upload of `part_size` parts (grown if the file would need more than 10,000), `max_concurrency`
    parts at a time. Downloads are one streamed GetObject pinned to the HEAD's ETag (If-Match).
    """

    def __init__(
        self,
        session: boto3.Session | None = None,
        client: Any = None,
        multipart_threshold: int = 64 * MiB,
        part_size: int = 16 * MiB,
        max_concurrency: int = 4,
        copy_threshold: int = MAX_COPY_BYTES,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        if multipart_threshold < 1 or max_concurrency < 1:
            raise ValueError("multipart_threshold and max_concurrency must be positive")
        if client is None:
            session = session or boto3.Session()
            client = session.client("s3", config=default_config())
        self.client = client
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self.copy_threshold = copy_threshold

    # ---- the Storage port ---------------------------------------------------------------------

    def head(self, url: str) -> ObjectInfo:
        bucket, key = _object(url)
        with _translate("head", url):
            resp = self.client.head_object(Bucket=bucket, Key=key)
        return _info(url, resp, resp["ContentLength"])

    def download(self, url: str, dest: Path) -> ObjectInfo:
        """HEAD, then one GetObject with If-Match on that ETag, streamed in CHUNK reads into a temp
        file next to `dest`, renamed when complete. An overwrite during the transfer makes the store
        answer 412, reported as TransientError, instead of a file mixing two versions. A stream cut
        mid-way resumes with a Range request (same If-Match) up to MAX_RESUMES times."""
        bucket, key = _object(url)
        info = self.head(url)
        pinned: dict[str, str] = {"IfMatch": info.etag}
        if info.version_id and info.version_id != "null":
            pinned["VersionId"] = info.version_id
        written = 0
        resumes = 0
        with _translate("download", url), atomic_writer(Path(dest)) as out:
            while True:
                ranged = {"Range": f"bytes={written}-"} if written else {}
                resp = self.client.get_object(Bucket=bucket, Key=key, **pinned, **ranged)
                body = resp["Body"]
                try:
                    if ranged and not resp.get("ContentRange"):
                        raise TransientError(f"download {url}: the store ignored a Range request")
                    for chunk in body.iter_chunks(CHUNK):
                        out.write(chunk)
                        written += len(chunk)
                    break
                except _STREAM_ERRORS as exc:
                    resumes += 1
                    if resumes > MAX_RESUMES or written >= info.size:
                        raise
                    log.warning("download %s: stream broke at byte %d (%s), resuming",
                                url, written, type(exc).__name__)  # fmt: skip
                finally:
                    body.close()
        if written != info.size:
            raise TransientError(f"download {url}: got {written} bytes, expected {info.size}")
        return info

    def upload(
        self, src: Path, url: str, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        """Returns the ETag of this very upload (a `"<md5>-<parts>"` one when multipart).

        Why not s3transfer's upload_file: it discards the PutObject/CompleteMultipartUpload
        responses, so the ETag it produced is lost, and a HEAD afterwards could already see
        someone else's overwrite. So: one PutObject below the threshold, else our own multipart."""
        bucket, key = _object(url)
        size = _local_size(src, url)
        with _translate("upload", url):
            if size < self.multipart_threshold:
                with open(src, "rb") as body:  # streamed by botocore, never read whole
                    resp = self.client.put_object(
                        Bucket=bucket,
                        Key=key,
                        Body=body,
                        ContentLength=size,
                        ContentType=content_type,
                    )
            else:
                resp = self._multipart_upload(src, size, bucket, key, content_type)
        return _info(url, resp, size)

    def put_bytes(
        self, data: bytes, url: str, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        bucket, key = _object(url)
        with _translate("put", url):
            resp = self.client.put_object(
                Bucket=bucket, Key=key, Body=data, ContentType=content_type
            )
        return _info(url, resp, len(data))

    def get_bytes(self, url: str, max_bytes: int = 16 << 20) -> bytes:
        bucket, key = _object(url)
        with _translate("get", url):
            resp = self.client.get_object(Bucket=bucket, Key=key)
            body = resp["Body"]
            try:
                if resp.get("ContentLength", 0) > max_bytes:
                    raise PermanentError(f"{url} is larger than {max_bytes} bytes")
                data = body.read(max_bytes + 1)
            finally:
                body.close()
        if len(data) > max_bytes:
            raise PermanentError(f"{url} is larger than {max_bytes} bytes")
        return data

    # ---- beyond the port (control plane) --------------------------------------------------------

    def copy(self, src_url: str, dst_url: str, if_match: str | None = None) -> ObjectInfo:
        """Server-side copy within the store; no byte passes through us. With `if_match`, only
        that version of the source is copied (else TransientError: it changed). Up to
        `copy_threshold` one CopyObject; above it s3transfer's multipart copy (UploadPartCopy),
        since CopyObject stops at 5 GB. Returns the new object's HEAD."""
        src_bucket, src_key = _object(src_url)
        bucket, key = _object(dst_url)
        extra = {"CopySourceIfMatch": if_match} if if_match else {}
        part = max(self.part_size, MIN_PART_SIZE)
        config = TransferConfig(multipart_threshold=self.copy_threshold, multipart_chunksize=part,
                                max_concurrency=self.max_concurrency, use_threads=True)
        with _translate("copy", dst_url):
            self.client.copy({"Bucket": src_bucket, "Key": src_key}, bucket, key, ExtraArgs=extra, Config=config)
        return self.head(dst_url)

    def read_range(self, url: str, start: int, length: int, if_match: str | None = None) -> bytes:
        """Bytes [start, start + length) of the object (fewer at its end); with `if_match`, only of
        that version (else TransientError)."""
        bucket, key = _object(url)
        extra = {"IfMatch": if_match} if if_match else {}
        with _translate("get", url):
            resp = self.client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{start + length - 1}", **extra)
            with contextlib.closing(resp["Body"]) as body:
                return body.read(length)

    def compose(self, dst_url: str, pieces: builtins.list[Piece], content_type: str = "application/octet-stream") -> ObjectInfo:
        """One object of the pieces' bytes in order, as a multipart upload whose parts are copied
        server-side from the sources (UploadPartCopy, each pinned to its source's ETag); pieces too
        short for a part are gathered through us (vastdrop.join). Nothing is visible at `dst_url`
        until it is complete; a failure aborts the upload."""
        bucket, key = _object(dst_url)
        # A join cut short (a crash, a Lambda timeout) left its upload open at this very key: its
        # copied parts would stay billed, and no staging prefix covers the final key.
        self.abort_uploads(dst_url, exact_key=True)
        with _translate("compose", dst_url):
            upload_id = self.client.create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type)["UploadId"]
            upload = {"Bucket": bucket, "Key": key, "UploadId": upload_id}
            try:
                done = [self._compose_part(upload, number, part)
                        for number, part in enumerate(plan_parts(pieces), start=1)]
                self.client.complete_multipart_upload(**upload, MultipartUpload={"Parts": done})
            except BaseException:
                with contextlib.suppress(Exception):  # the original error matters more
                    self.client.abort_multipart_upload(**upload)
                raise
        return self.head(dst_url)

    def _compose_part(self, upload: dict[str, Any], number: int, part: Part) -> dict[str, Any]:
        if part.copied:
            (piece,) = part.pieces
            src_bucket, src_key = _object(piece.url)
            extra = {"CopySourceIfMatch": piece.etag} if piece.etag else {}
            resp = self.client.upload_part_copy(**upload, PartNumber=number, CopySource={"Bucket": src_bucket, "Key": src_key},
                                                CopySourceRange=f"bytes={piece.start}-{piece.end - 1}", **extra)
            return {"PartNumber": number, "ETag": resp["CopyPartResult"]["ETag"]}
        data = b"".join(self.read_range(p.url, p.start, p.size, p.etag) for p in part.pieces)
        if len(data) != part.size:
            raise TransientError(f"a join's source is shorter than expected ({len(data)} of {part.size} bytes)")
        resp = self.client.upload_part(**upload, PartNumber=number, Body=data)
        return {"PartNumber": number, "ETag": resp["ETag"]}

    def presign_get(self, url: str, expires_s: int) -> str:
        """An http(s) URL anyone can GET for `expires_s` seconds. Never log it unredacted."""
        bucket, key = _object(url)
        with _translate("presign", url):
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=int(expires_s)
            )

    def presign_put(self, url: str, expires_s: int, content_type: str | None = None) -> str:
        """An http(s) URL anyone can PUT to for `expires_s` seconds. With `content_type`, the
        signature covers it: the PUT must then carry exactly that Content-Type (HttpsStorage.upload's
        content_type); without, the PUT should carry none (the store then picks or sniffs one)."""
        bucket, key = _object(url)
        params = {"Bucket": bucket, "Key": key}
        if content_type:
            params["ContentType"] = content_type
        with _translate("presign", url):
            return self.client.generate_presigned_url(
                "put_object", Params=params, ExpiresIn=int(expires_s)
            )

    def list(self, prefix_url: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with the URL's key part (`s3://bucket/` for all)."""
        bucket, prefix = parse_s3_url(prefix_url)
        with _translate("list", prefix_url):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    yield ObjectInfo(
                        url=s3_url(bucket, obj["Key"]),
                        etag=obj.get("ETag", ""),
                        size=obj.get("Size", 0),
                        last_modified=_ts(obj.get("LastModified")),
                    )

    def delete(self, url: str) -> None:
        """Delete the object; deleting an absent key succeeds (S3 semantics)."""
        bucket, key = _object(url)
        with _translate("delete", url):
            self.client.delete_object(Bucket=bucket, Key=key)

    # ---- multipart uploads by a job (vastdrop.multipart) ------------------------------------------

    def presign_parts(self, url: str, expires_s: int, content_type: str, count: int) -> tuple[builtins.list[str], str]:
        """Start a multipart upload to `url`; presigned URLs for its parts 1..`count` (UploadPart,
        PUT) and for completing it (CompleteMultipartUpload, POST). Never log them unredacted."""
        bucket, key = _object(url)
        with _translate("presign", url):
            upload_id = self.client.create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type)["UploadId"]
            upload = {"Bucket": bucket, "Key": key, "UploadId": upload_id}
            parts = [self.client.generate_presigned_url("upload_part", Params={**upload, "PartNumber": n},
                                                        ExpiresIn=int(expires_s)) for n in range(1, count + 1)]
            complete = self.client.generate_presigned_url("complete_multipart_upload", Params=upload,
                                                          ExpiresIn=int(expires_s))
        return parts, complete

    def abort_uploads(self, prefix_url: str, *, exact_key: bool = False) -> int:
        """Abort every multipart upload under the prefix (with exact_key, to that very key) that was
        never completed: its parts are stored, and billed, until then. Returns how many."""
        bucket, prefix = parse_s3_url(prefix_url)
        aborted = 0
        with _translate("abort", prefix_url):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix)
            for page in pages:
                for upload in page.get("Uploads", []):
                    if exact_key and upload["Key"] != prefix:
                        continue
                    self.client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                    aborted += 1
        return aborted

    # ---- multipart ----------------------------------------------------------------------------

    def _multipart_upload(
        self, src: Path, size: int, bucket: str, key: str, content_type: str
    ) -> dict[str, Any]:
        part_size = max(self.part_size, math.ceil(size / MAX_PARTS))
        count = math.ceil(size / part_size)
        created = self.client.create_multipart_upload(
            Bucket=bucket, Key=key, ContentType=content_type
        )
        upload_id = created["UploadId"]
        try:
            parts = self._upload_parts(src, size, bucket, key, upload_id, part_size, count)
            return self.client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            # parts of an unfinished upload are stored (and billed) until aborted
            try:
                self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except Exception as abort_exc:  # the original error matters more
                log.warning("abort of multipart upload to s3://%s/%s failed: %s",
                            bucket, key, type(abort_exc).__name__)  # fmt: skip
            raise

    def _upload_parts(
        self,
        src: Path,
        size: int,
        bucket: str,
        key: str,
        upload_id: str,
        part_size: int,
        count: int,
    ) -> builtins.list[dict[str, Any]]:  # `list` is a method here
        def one(number: int) -> dict[str, Any]:
            start = (number - 1) * part_size
            length = min(part_size, size - start)
            # a seekable window on the file: streamed, and rewindable for botocore's retries
            with ReadFileChunk.from_filename(
                str(src), start, length, enable_callbacks=False
            ) as body:
                resp = self.client.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
                    Body=body, ContentLength=length,
                )  # fmt: skip
            return {"PartNumber": number, "ETag": resp["ETag"]}

        # the pool's `with` waits for parts in flight, so an abort after a failure comes last
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, count)) as pool:
            futures = [pool.submit(one, n) for n in range(1, count + 1)]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for fut in pending:
                fut.cancel()
            for fut in futures:
                if fut in done and (exc := fut.exception()) is not None:
                    raise exc
        return [fut.result() for fut in futures]


# ---- translation --------------------------------------------------------------------------------


def _info(url: str, resp: dict[str, Any], size: int) -> ObjectInfo:
    etag = resp.get("ETag")
    if not etag:
        raise PermanentError(f"{url}: the store returned no ETag")
    return ObjectInfo(
        url=url,
        etag=etag,
        size=size,
        version_id=resp.get("VersionId"),
        last_modified=_ts(resp.get("LastModified")),
    )


def _ts(value: Any) -> float | None:
    return value.timestamp() if value is not None and hasattr(value, "timestamp") else None


def _local_size(src: Path, url: str) -> int:
    try:
        return os.stat(src).st_size
    except OSError as exc:
        raise os_error("upload", url, exc, local=True) from exc


@contextlib.contextmanager
def _translate(op: str, url: str) -> Iterator[None]:
    """botocore's exceptions -> the vastdrop family, messages without credentials or query strings."""
    try:
        yield
    except bce.ClientError as exc:
        raise _from_client_error(op, url, exc) from exc
    except _NETWORK_ERRORS as exc:
        raise TransientError(f"{op} {url}: {type(exc).__name__} talking to S3") from exc
    except (bce.NoCredentialsError, bce.PartialCredentialsError, bce.NoRegionError) as exc:
        raise ConfigError(f"{op} {url}: {type(exc).__name__}: S3 client is not configured") from exc
    except bce.ParamValidationError as exc:
        raise PermanentError(f"{op} {url}: invalid request: {exc}") from exc
    except bce.BotoCoreError as exc:
        raise PermanentError(f"{op} {url}: {type(exc).__name__}") from exc
    except OSError as exc:  # the local side: the file being read or written
        raise os_error(op, url, exc, local=True) from exc


def _from_client_error(op: str, url: str, exc: bce.ClientError) -> Exception:
    err = exc.response.get("Error", {}) or {}
    code = str(err.get("Code", "") or "")
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    message = str(err.get("Message", "") or "")
    what = f"{op} {url}: {code or 'error'} (HTTP {status or '?'})" + (
        f": {message}" if message else ""
    )
    if code in _NOT_FOUND_CODES or status == 404:
        return NotFoundError(what)
    if code in ("PreconditionFailed",) or status == 412:
        # only our own If-Match sends preconditions: the object changed under us
        return TransientError(what + " (object changed during the transfer)")
    if code in _TRANSIENT_CODES or status == 429 or status >= 500:
        return TransientError(what)
    return PermanentError(what)
