"""https:// (and http://) adapter for presigned URLs: GET to read, PUT to write, nothing else.

A presigned URL carries its credentials in the query string, so no message or log line here ever
contains one: URLs go through redact_url, and the text of foreign exceptions (requests and urllib3
put the full URL in theirs) is scrubbed before it is chained.

Signatures are per method, so a URL presigned for GetObject cannot HEAD: head() is a GET of the
first byte (`Range: bytes=0-0`), the total size taken from Content-Range.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import requests
import tenacity
import urllib3.exceptions
from s3transfer.utils import ReadFileChunk

from vastdrop.errors import NotFoundError, PermanentError, TransientError
from vastdrop.jobspec import redact_url
from vastdrop.multipart import MAX_SINGLE_PUT_BYTES, PartsPlan, complete_body, completed_etag
from vastdrop.storage.base import ObjectInfo
from vastdrop.storage.local import CHUNK, atomic_writer, os_error

log = logging.getLogger(__name__)

T = TypeVar("T")

_CONTENT_RANGE = re.compile(r"bytes\s+(?:\d+-\d+|\*)/(\d+)\s*$", re.I)
_S3_CODE = re.compile(rb"<Code>([A-Za-z0-9.]{1,64})</Code>")
_QUERY = re.compile(r"\?[^\s'\")>]*")
_TRANSIENT_STATUS = {408, 425, 429}
PART_CONCURRENCY = 4  # parts in flight at once: a rented host's uplink is rarely filled by one stream
_NETWORK_ERRORS = (
    requests.ConnectionError,  # includes ConnectTimeout, SSLError, ProxyError
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    urllib3.exceptions.HTTPError,  # raised as is by resp.raw (ProtocolError, ReadTimeoutError...)
)


class HttpsStorage:
    """Storage for presigned http(s) URLs.

    Transient failures (connection errors, timeouts, 5xx, 408/429) are retried up to
    `max_attempts` times with jittered exponential backoff; other 4xx never are."""

    def __init__(
        self,
        session: requests.Session | None = None,
        timeout_s: float = 60.0,
        *,
        max_attempts: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
    ) -> None:
        self.session = session or requests.Session()
        # (connect, read): read is per socket read, not the whole transfer
        self.timeout = (min(10.0, timeout_s), timeout_s)
        self.max_attempts = max(1, max_attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s

    # ---- the Storage port ---------------------------------------------------------------------

    def head(self, url: str) -> ObjectInfo:
        return self._retrying(lambda: self._head_once(url))

    def download(self, url: str, dest: Path) -> ObjectInfo:
        return self._retrying(lambda: self._download_once(url, Path(dest)))

    def upload(self, src: Path, url: str, content_type: str | None = None) -> ObjectInfo:
        """PUT the file, streamed, with an explicit Content-Length. A Content-Type header is sent
        only when `content_type` is given: the presigned signature may cover it (SigV2 always does,
        SigV4 when the signer passed ContentType), so it must be exactly what the signer used, and
        the default (None) matches a plain generate_presigned_url("put_object", Bucket, Key)."""
        try:
            size = os.stat(src).st_size
        except OSError as exc:
            raise os_error("upload", url, exc, local=True) from exc
        if size > MAX_SINGLE_PUT_BYTES:  # the same file would be refused on every retry
            raise PermanentError(
                f"upload {redact_url(url)}: {size / 1e9:.2f} GB is more than one presigned PUT takes "
                f"({MAX_SINGLE_PUT_BYTES / 1e9:g} GB) and no multipart upload plan was given; "
                "a lower upscale or a higher CRF makes a smaller result")
        return self._retrying(lambda: self._upload_once(src, size, url, content_type))

    def upload_in_parts(self, src: Path, plan: PartsPlan) -> ObjectInfo:
        """The file as a multipart upload through the plan's presigned URLs (vastdrop.multipart):
        each part a seekable window on the file, retried on its own; then the upload completed, and
        the ETag that the store gave the whole object returned."""
        try:
            size = os.stat(src).st_size
        except OSError as exc:
            raise os_error("upload", plan.complete_url, exc, local=True) from exc
        if size > plan.max_bytes:  # the same file would be too large on every retry
            raise PermanentError(
                f"the result is {size / 1e9:.2f} GB, more than its multipart upload takes ({plan.max_bytes / 1e9:g} GB "
                "in all); a lower upscale or a higher CRF makes a smaller result")
        parts = plan.parts_for(size)

        def one(part: tuple[int, int, int]) -> str:
            number, offset, length = part
            return self._retrying(lambda: self._put_part(src, plan.part_urls[number - 1], offset, length))

        with ThreadPoolExecutor(max_workers=min(PART_CONCURRENCY, len(parts)), thread_name_prefix="vastdrop-part") as pool:
            etags = list(pool.map(one, parts))
        etag = self._retrying(lambda: self._complete(plan.complete_url, etags))
        return ObjectInfo(url=plan.complete_url, etag=etag, size=size)

    def put_bytes(self, data: bytes, url: str, content_type: str | None = None) -> ObjectInfo:
        return self._retrying(lambda: self._put(url, data, len(data), content_type))

    def get_bytes(self, url: str, max_bytes: int = 16 << 20) -> bytes:
        return self._retrying(lambda: self._get_bytes_once(url, max_bytes))

    def read_range(self, url: str, start: int, length: int, if_match: str | None = None) -> bytes:
        """Bytes [start, start + length) of the object (fewer at its end). A presigned GET signs
        neither Range nor If-Match, so both may be sent; with `if_match`, a replaced object is a
        TransientError (412), as S3Storage.read_range."""
        if length <= 0:  # no such range to ask for (bytes=N-(N-1) is invalid, and ignored)
            return b""
        if if_match and if_match.startswith("W/"):  # a weak ETag never matches If-Match: it would 412 forever
            if_match = None
        return self._retrying(lambda: self._read_range_once(url, start, length, if_match))

    # ---- one attempt each -----------------------------------------------------------------------

    def _read_range_once(self, url: str, start: int, length: int, if_match: str | None) -> bytes:
        headers = {"Accept-Encoding": "identity", "Range": f"bytes={start}-{start + length - 1}"}
        if if_match:
            headers["If-Match"] = if_match
        with self._request("GET", url, stream=True, headers=headers) as resp:
            if resp.status_code == 412:
                raise TransientError(f"get {redact_url(url)}: the object changed (ETag no longer {if_match})")
            if resp.status_code == 416:  # past the end: nothing there
                return b""
            _raise_for_status(resp, "get", url)
            with _network("get", url):
                if resp.status_code != 200:
                    if not resp.headers.get("Content-Range", "").strip().startswith(f"bytes {start}-"):
                        raise TransientError(f"get {redact_url(url)}: the store answered another range")
                    return resp.raw.read(length, decode_content=False)
                skip = start  # the server ignored Range: the whole object, skipped to the start a chunk at a time
                while skip > 0:
                    chunk = resp.raw.read(min(CHUNK, skip), decode_content=False)
                    if not chunk:  # the object ends before the range
                        return b""
                    skip -= len(chunk)
                return resp.raw.read(length, decode_content=False)

    def _head_once(self, url: str) -> ObjectInfo:
        with self._request("GET", url, stream=True, headers={"Range": "bytes=0-0"}) as resp:
            if resp.status_code == 416:
                # an empty object has no byte 0 (SeaweedFS: 416, `Content-Range: bytes */0`, no ETag)
                if _total_from_content_range(resp) == 0:
                    return self._head_empty(url)
            _raise_for_status(resp, "head", url)
            if resp.status_code == 206:
                size = _total_from_content_range(resp)
                if size is None:
                    raise PermanentError(f"head {redact_url(url)}: no total size in Content-Range")
            else:  # 200: the server ignored Range; don't read the body, the length is in the headers
                size = _content_length(resp)
                if size is None:
                    raise PermanentError(f"head {redact_url(url)}: no Content-Length")
            return _info(url, resp, size)

    def _head_empty(self, url: str) -> ObjectInfo:
        with self._request("GET", url, stream=True) as resp:
            _raise_for_status(resp, "head", url)
            return _info(url, resp, _content_length(resp) or 0)

    def _download_once(self, url: str, dest: Path) -> ObjectInfo:
        # identity: the bytes as stored, even if an intermediary would like to compress them
        headers = {"Accept-Encoding": "identity"}
        with self._request("GET", url, stream=True, headers=headers) as resp:
            _raise_for_status(resp, "download", url)
            expected = _content_length(resp)
            written = 0
            with _network("download", url), atomic_writer(dest) as out:
                for chunk in resp.raw.stream(CHUNK, decode_content=False):
                    out.write(chunk)
                    written += len(chunk)
                if expected is not None and written != expected:
                    raise TransientError(
                        f"download {redact_url(url)}: got {written} bytes, Content-Length said {expected}"
                    )
            return _info(url, resp, written)

    def _upload_once(self, src: Path, size: int, url: str, content_type: str | None) -> ObjectInfo:
        if size == 0:
            # requests turns an empty *file* body into `Transfer-Encoding: chunked`; bytes it sends as-is
            return self._put(url, b"", 0, content_type)
        try:
            fh = open(src, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise os_error("upload", url, exc, local=True) from exc
        with fh:  # a fresh handle per attempt, so a retry starts from byte 0
            return self._put(url, fh, size, content_type)

    def _put_part(self, src: Path, url: str, offset: int, length: int) -> str:
        # A fresh window per attempt, so a retry sends the part from its first byte.
        with ReadFileChunk.from_filename(str(src), offset, length, enable_callbacks=False) as body:
            return self._put(url, body, length, None).etag

    def _complete(self, url: str, etags: list[str]) -> str:
        body = complete_body(etags)
        with self._request("POST", url, data=body, headers={"Content-Length": str(len(body))}) as resp:
            _raise_for_status(resp, "complete upload", url)
            with _network("complete upload", url):
                answer = resp.content[:65536]
        try:
            return completed_etag(answer)
        except ValueError as exc:  # S3's 200 with an <Error> inside: InternalError and the like, worth a retry
            raise TransientError(f"complete upload {redact_url(url)}: {exc}") from None

    def _put(self, url: str, body: object, size: int, content_type: str | None) -> ObjectInfo:
        headers = {"Content-Length": str(size)}
        if content_type:
            headers["Content-Type"] = content_type
        # requests streams a file body in blocks (http.client), never reading it whole
        with self._request("PUT", url, data=body, headers=headers) as resp:
            _raise_for_status(resp, "upload", url)
            if not resp.headers.get("ETag"):
                raise PermanentError(f"upload {redact_url(url)}: the response carried no ETag")
            return _info(url, resp, size)

    def _get_bytes_once(self, url: str, max_bytes: int) -> bytes:
        with self._request(
            "GET", url, stream=True, headers={"Accept-Encoding": "identity"}
        ) as resp:
            _raise_for_status(resp, "get", url)
            length = _content_length(resp)
            if length is not None and length > max_bytes:
                raise PermanentError(f"{redact_url(url)} is larger than {max_bytes} bytes")
            with _network("get", url):
                data = resp.raw.read(max_bytes + 1, decode_content=False)
        if len(data) > max_bytes:
            raise PermanentError(f"{redact_url(url)} is larger than {max_bytes} bytes")
        return data

    # ---- plumbing ------------------------------------------------------------------------------

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        if not url.lower().startswith(("https://", "http://")):
            raise PermanentError(f"not an http(s) URL: {redact_url(url)}")
        with _network(method, url):
            try:
                return self.session.request(
                    method, url, timeout=self.timeout, allow_redirects=False, **kwargs
                )
            except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                    requests.exceptions.InvalidSchema) as exc:  # fmt: skip
                _scrub(exc)
                raise PermanentError(f"{method} {redact_url(url)}: invalid URL") from exc

    def _retrying(self, attempt: Callable[[], T]) -> T:
        retryer = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientError),
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=tenacity.wait_random_exponential(
                multiplier=self.backoff_s, max=self.max_backoff_s
            ),
            before_sleep=_log_retry,
            reraise=True,
        )
        return retryer(attempt)


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning(
        "attempt %d failed (%s), retrying", state.attempt_number, exc
    )  # messages are redacted


def _info(url: str, resp: requests.Response, size: int) -> ObjectInfo:
    version = resp.headers.get("x-amz-version-id")
    return ObjectInfo(url=url, etag=resp.headers.get("ETag", ""), size=size, version_id=version)


def _content_length(resp: requests.Response) -> int | None:
    value = resp.headers.get("Content-Length")
    return int(value) if value and value.strip().isdigit() else None


def _total_from_content_range(resp: requests.Response) -> int | None:
    match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", "").strip())
    return int(match.group(1)) if match else None


def _raise_for_status(resp: requests.Response, op: str, url: str) -> None:
    status = resp.status_code
    if status < 300:
        return
    code = ""
    if status >= 400:
        with contextlib.suppress(Exception):  # S3-style XML error: keep only the <Code>
            consumed = getattr(resp, "_content_consumed", False)
            head = resp.content[:4096] if consumed else resp.raw.read(4096, decode_content=True)
            found = _S3_CODE.search(head or b"")
            code = found.group(1).decode() if found else ""
    what = f"{op} {redact_url(url)}: HTTP {status}" + (f" {code}" if code else "")
    if status == 404:
        raise NotFoundError(what)
    if status >= 500 or status in _TRANSIENT_STATUS:
        raise TransientError(what)
    if 300 <= status < 400:
        raise PermanentError(what + " (redirects are not followed)")
    raise PermanentError(what)


def _scrub(exc: BaseException) -> None:
    """requests/urllib3 put the full URL, query included, into their messages: cut the queries out
    of the exception (and of its causes) before it is chained to ours."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        with contextlib.suppress(Exception):
            cur.args = tuple(_QUERY.sub("?<redacted>", str(a)) for a in cur.args)
        cur = cur.__cause__ or cur.__context__


@contextlib.contextmanager
def _network(op: str, url: str) -> Iterator[None]:
    try:
        yield
    except _NETWORK_ERRORS as exc:
        _scrub(exc)
        raise TransientError(f"{op} {redact_url(url)}: {type(exc).__name__}") from exc
    except requests.RequestException as exc:
        _scrub(exc)
        raise PermanentError(f"{op} {redact_url(url)}: {type(exc).__name__}") from exc
    except OSError as exc:  # the local side: the file being written or read
        raise os_error(op, url, exc, local=True) from exc
