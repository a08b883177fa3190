"""Storage adapters against a real SeaweedFS (see tests/support/seaweed.py); no mocks of the store."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
import traceback
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.support.seaweed import SeaweedServer, free_ports
from vastdrop.errors import NotFoundError, PermanentError, TransientError
from vastdrop.location import Location
from vastdrop.storage import storage_for
from vastdrop.storage.base import ObjectInfo
from vastdrop.storage.https import HttpsStorage
from vastdrop.storage.local import LocalStorage, file_url_to_path, key_path, path_to_file_url
from vastdrop.storage.s3 import S3Storage, parse_s3_url, s3_url

MiB = 1 << 20
ODD_NAME = "dir with space/ünïcødé 'single' \"double\" +&=%20#?.bin"


def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def write_random(path: Path, size: int) -> Path:
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, 4 * MiB)
            fh.write(os.urandom(n))
            left -= n
    return path


def everything_said(exc: BaseException) -> str:
    """The message and the whole chained traceback, as a log line with exc_info would show them."""
    return str(exc) + "\n" + "".join(traceback.format_exception(exc))


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random(tmp_path_factory.mktemp("big") / "big.bin", 40 * MiB)


@pytest.fixture
def s3(seaweed: SeaweedServer) -> S3Storage:
    return S3Storage(client=seaweed.client(), multipart_threshold=6 * MiB, part_size=5 * MiB)


@pytest.fixture(scope="module")
def raw(seaweed: SeaweedServer):
    """A plain boto3 client to check what the adapters did."""
    return seaweed.client()


@pytest.fixture(scope="module")
def shared_bucket(seaweed: SeaweedServer) -> Iterator[str]:
    """Most tests share one bucket under a prefix of their own: each new bucket costs SeaweedFS
    a volume allocation (~0.3 s); the `bucket` fixture is used where a fresh bucket matters."""
    name = seaweed.create_bucket()
    yield name
    seaweed.delete_bucket(name)


@dataclass(frozen=True)
class Place:
    """Where a test puts its objects: a shared bucket, a key prefix of its own."""

    bucket: str
    prefix: str

    def key(self, name: str) -> str:
        return self.prefix + name

    def url(self, name: str) -> str:
        return s3_url(self.bucket, self.prefix + name)


@pytest.fixture
def place(shared_bucket: str) -> Place:
    return Place(shared_bucket, f"t-{uuid.uuid4().hex[:12]}/")


# ---- s3:// ------------------------------------------------------------------------------------


def test_s3_single_put_etag_equals_head(s3: S3Storage, raw, place: Place, tmp_path: Path) -> None:
    src = write_random(tmp_path / "small.bin", 1 * MiB + 7)
    url = place.url("in/small.bin")
    info = s3.upload(src, url, content_type="video/mp4")
    head = raw.head_object(Bucket=place.bucket, Key=place.key("in/small.bin"))
    assert info.etag == head["ETag"] == f'"{md5_file(src)}"'
    assert info.size == head["ContentLength"] == src.stat().st_size
    assert head["ContentType"] == "video/mp4"
    assert s3.head(url).etag == info.etag

    put = s3.put_bytes(b'{"a": 1}', place.url("m.json"), content_type="application/json")
    assert put.etag == raw.head_object(Bucket=place.bucket, Key=place.key("m.json"))["ETag"]
    assert s3.get_bytes(place.url("m.json")) == b'{"a": 1}'
    with pytest.raises(PermanentError, match="larger than"):
        s3.get_bytes(place.url("m.json"), max_bytes=3)

    empty = s3.put_bytes(b"", place.url("empty"))
    got = s3.download(place.url("empty"), tmp_path / "empty")
    assert (got.etag, got.size, (tmp_path / "empty").read_bytes()) == (empty.etag, 0, b"")


def test_s3_multipart_etag_is_dash_n_and_equals_head(
    s3: S3Storage, raw, place: Place, tmp_path: Path
) -> None:
    src = write_random(tmp_path / "twelve.bin", 12 * MiB)
    url = place.url("out/twelve.bin")
    info = s3.upload(src, url)
    head = raw.head_object(Bucket=place.bucket, Key=place.key("out/twelve.bin"))
    assert info.etag.endswith('-3"'), info.etag
    assert info.etag == head["ETag"]
    assert info.size == head["ContentLength"] == 12 * MiB
    # the S3 recipe: md5 of the concatenated binary part md5s, then -<parts>
    data = src.read_bytes()
    parts = [hashlib.md5(data[i : i + 5 * MiB]).digest() for i in range(0, len(data), 5 * MiB)]
    assert info.etag == f'"{hashlib.md5(b"".join(parts)).hexdigest()}-3"'
    back = s3.download(url, tmp_path / "back.bin")
    assert back.etag == info.etag and md5_file(tmp_path / "back.bin") == md5_file(src)


def test_s3_copy_is_server_side_pinned_to_the_verified_version_and_multipart_when_large(
    seaweed: SeaweedServer, raw, place: Place, tmp_path: Path
) -> None:
    """Publishing a staged result: CopyObject up to the threshold (5 GB in production, lowered
    here), UploadPartCopy above it; either copies only the ETag that was verified (If-Match)."""
    s3 = S3Storage(client=seaweed.client(), part_size=5 * MiB, copy_threshold=8 * MiB)
    small = s3.upload(write_random(tmp_path / "small.bin", MiB), place.url("stage/small.bin"), "video/mp4")
    copied = s3.copy(small.url, place.url("final/small.bin"), if_match=small.etag)
    assert copied.etag == small.etag and copied.size == MiB
    assert raw.head_object(Bucket=place.bucket, Key=place.key("final/small.bin"))["ContentType"] == "video/mp4"

    src = write_random(tmp_path / "big.bin", 12 * MiB)
    big = s3.upload(src, place.url("stage/big.bin"))
    copied = s3.copy(big.url, place.url("final/big.bin"), if_match=big.etag)
    assert copied.etag.endswith('-3"'), copied.etag  # three UploadPartCopy parts, not one CopyObject
    assert copied.size == 12 * MiB
    back = s3.download(copied.url, tmp_path / "back.bin")
    assert md5_file(tmp_path / "back.bin") == md5_file(src) and back.etag == copied.etag

    # The host overwrote its staged result after verification: nothing is copied.
    s3.put_bytes(b"swapped", place.url("stage/small.bin"))
    with pytest.raises(TransientError, match="changed"):
        s3.copy(small.url, place.url("final/other.bin"), if_match=small.etag)
    assert [i.url for i in s3.list(place.url("final/other"))] == []


def test_file_copy_checks_the_version_on_the_bytes_it_copies(tmp_path: Path) -> None:
    local = LocalStorage()
    src, dst = path_to_file_url(tmp_path / "a" / "r.mp4"), path_to_file_url(tmp_path / "b" / "r.mp4")
    put = local.put_bytes(b"result", src)
    assert local.copy(src, dst, if_match=put.etag).etag == put.etag == local.head(dst).etag
    local.put_bytes(b"other", src)
    with pytest.raises(TransientError, match="changed"):
        local.copy(src, path_to_file_url(tmp_path / "b" / "x.mp4"), if_match=put.etag)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["r.mp4"]  # no partial file left


def test_s3_multipart_failure_aborts_the_upload(
    seaweed: SeaweedServer, raw, bucket: str, tmp_path: Path
) -> None:
    class FailSecondPart:  # the real client, with one upload_part that fails
        def __init__(self, client) -> None:
            self._client = client

        def __getattr__(self, name):
            return getattr(self._client, name)

        def upload_part(self, **kwargs):
            if kwargs["PartNumber"] == 2:
                raise ConnectionResetError("injected")
            return self._client.upload_part(**kwargs)

    s3 = S3Storage(client=FailSecondPart(raw), multipart_threshold=5 * MiB, part_size=5 * MiB)
    src = write_random(tmp_path / "eleven.bin", 11 * MiB)
    with pytest.raises(TransientError):  # ConnectionResetError is an OSError: local side, transient
        s3.upload(src, s3_url(bucket, "aborted.bin"))
    assert raw.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with pytest.raises(NotFoundError):
        S3Storage(client=raw).head(s3_url(bucket, "aborted.bin"))


def test_s3_download_returns_what_was_downloaded_and_streams(
    s3: S3Storage, raw, place: Place, big_file: Path, tmp_path: Path
) -> None:
    with open(big_file, "rb") as fh:
        raw.put_object(Bucket=place.bucket, Key=place.key("big.bin"), Body=fh)
    head = raw.head_object(Bucket=place.bucket, Key=place.key("big.bin"))
    dest = tmp_path / "sub" / "dir" / "big.bin"  # parents are created
    tracemalloc.start()
    try:
        info = s3.download(place.url("big.bin"), dest)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, f"download allocated {peak / MiB:.1f} MiB at peak for a 40 MiB object"
    assert info.etag == head["ETag"] and info.size == 40 * MiB
    assert md5_file(dest) == md5_file(big_file)
    assert [p.name for p in dest.parent.iterdir()] == ["big.bin"]  # no temp file left


def test_s3_upload_streams(s3: S3Storage, place: Place, big_file: Path) -> None:
    tracemalloc.start()
    try:
        s3.upload(big_file, place.url("up.bin"))  # multipart: 8 parts of 5 MiB
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB, f"upload allocated {peak / MiB:.1f} MiB at peak for a 40 MiB file"


def test_s3_download_refuses_a_changed_object(
    seaweed: SeaweedServer, raw, place: Place, tmp_path: Path
) -> None:
    """If-Match pins the GET to the HEAD's version: here the HEAD is stale, as after an overwrite."""

    class StaleHead(S3Storage):
        def head(self, url: str) -> ObjectInfo:
            real = super().head(url)
            return ObjectInfo(url=url, etag='"00000000000000000000000000000000"', size=real.size)

    raw.put_object(Bucket=place.bucket, Key=place.key("v.bin"), Body=b"version two")
    dest = tmp_path / "v.bin"
    with pytest.raises(TransientError, match="changed"):
        StaleHead(client=raw).download(place.url("v.bin"), dest)
    assert list(tmp_path.iterdir()) == []


def test_s3_odd_keys_round_trip_list_and_delete(
    s3: S3Storage, raw, place: Place, tmp_path: Path
) -> None:
    src = tmp_path / "x.bin"
    src.write_bytes(b"odd key payload")
    url = place.url("odd/" + ODD_NAME)
    assert parse_s3_url(url) == (place.bucket, place.key("odd/" + ODD_NAME))
    info = s3.upload(src, url)
    assert (
        raw.head_object(Bucket=place.bucket, Key=place.key("odd/" + ODD_NAME))["ETag"] == info.etag
    )
    listed = list(s3.list(place.url("odd/")))
    assert [(o.url, o.etag, o.size) for o in listed] == [(url, info.etag, 15)]
    assert s3.download(url, tmp_path / "y.bin").etag == info.etag
    assert (tmp_path / "y.bin").read_bytes() == b"odd key payload"
    s3.delete(url)
    s3.delete(url)  # absent: still fine
    assert list(s3.list(place.url("odd/"))) == []


def test_s3_list_paginates(seaweed: SeaweedServer, place: Place) -> None:
    s3 = S3Storage(client=seaweed.client())
    for i in range(5):
        s3.put_bytes(b"x", place.url(f"p/{i}"))
    s3.client.meta.events.register(  # force small pages: MaxKeys=2
        "before-parameter-build.s3.ListObjectsV2", lambda params, **_: params.update(MaxKeys=2)
    )
    assert [o.url for o in s3.list(place.url("p/"))] == [place.url(f"p/{i}") for i in range(5)]


def test_s3_missing_object_is_not_found(s3: S3Storage, bucket: str, tmp_path: Path) -> None:
    url = s3_url(bucket, "nope/missing.bin")
    for call in (
        lambda: s3.head(url),
        lambda: s3.download(url, tmp_path / "m.bin"),
        lambda: s3.get_bytes(url),
        lambda: s3.head(s3_url("vd-no-such-bucket-here", "k")),
    ):
        with pytest.raises(NotFoundError):
            call()
    assert not (tmp_path / "m.bin").exists()


def test_s3_storage_from_environment(
    seaweed: SeaweedServer, place: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a subprocess gets: boto3 finds the endpoint in AWS_ENDPOINT_URL_S3 by itself."""
    for key, value in seaweed.env().items():
        monkeypatch.setenv(key, value)
    store = storage_for(place.url("env.txt"))
    assert isinstance(store, S3Storage)
    info = store.put_bytes(b"from env", place.url("env.txt"))
    assert store.head(place.url("env.txt")).etag == info.etag


def test_s3_errors_never_show_the_secret(
    seaweed: SeaweedServer, place: Place, tmp_path: Path
) -> None:
    wrong = "not-the-secret-" + seaweed.secret_key[::-1]
    bad = boto3.Session(
        aws_access_key_id=seaweed.access_key,
        aws_secret_access_key=wrong,
        region_name=seaweed.region,
    ).client("s3", endpoint_url=seaweed.endpoint_url, config=Config(retries={"max_attempts": 1}))
    with pytest.raises(PermanentError) as info:
        S3Storage(client=bad).head(place.url("k"))
    assert "SignatureDoesNotMatch" in str(info.value) or "403" in str(info.value)
    assert wrong not in everything_said(info.value)

    good = S3Storage(client=seaweed.client())
    errors = []
    for call in (
        lambda: good.head(place.url("missing")),
        lambda: good.download(place.url("missing"), tmp_path / "d"),
        lambda: good.upload(tmp_path / "no-such-local-file", place.url("k")),
        lambda: good.head("s3://"),
    ):
        with pytest.raises(PermanentError) as info:
            call()
        errors.append(info.value)
    for err in errors:
        assert seaweed.secret_key not in everything_said(err)


# ---- file:// --------------------------------------------------------------------------------


def test_file_url_helpers_round_trip(tmp_path: Path) -> None:
    path = tmp_path / ODD_NAME
    url = path_to_file_url(path)
    assert url.startswith("file:///") and " " not in url and "?" not in url and "#" not in url
    assert file_url_to_path(url) == path
    assert file_url_to_path("file://localhost/tmp/a%20b") == Path("/tmp/a b")
    for bad in ("file://host/x", "s3://b/k", "file:relative"):
        with pytest.raises(PermanentError):
            file_url_to_path(bad)


def test_file_etag_is_quoted_md5_and_round_trips(tmp_path: Path) -> None:
    store = LocalStorage()
    src = write_random(tmp_path / "src.bin", 3 * MiB + 1)
    url = path_to_file_url(tmp_path / "store" / "deep" / ODD_NAME)  # parents created
    info = store.upload(src, url)
    assert info.etag == f'"{md5_file(src)}"'
    assert store.head(url) == ObjectInfo(
        url, info.etag, info.size, None, store.head(url).last_modified
    )
    back = store.download(url, tmp_path / "back" / "b.bin")
    assert back.etag == info.etag and md5_file(tmp_path / "back" / "b.bin") == md5_file(src)
    assert sorted(p.name for p in file_url_to_path(url).parent.iterdir()) == [Path(ODD_NAME).name]

    small = store.put_bytes(b"hello", path_to_file_url(tmp_path / "h.txt"))
    assert small.etag == '"' + hashlib.md5(b"hello").hexdigest() + '"'
    assert store.get_bytes(path_to_file_url(tmp_path / "h.txt")) == b"hello"
    with pytest.raises(PermanentError, match="larger than"):
        store.get_bytes(path_to_file_url(tmp_path / "h.txt"), max_bytes=4)
    store.delete(path_to_file_url(tmp_path / "h.txt"))
    store.delete(path_to_file_url(tmp_path / "h.txt"))


def test_file_download_streams(big_file: Path, tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        LocalStorage().download(path_to_file_url(big_file), tmp_path / "copy.bin")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB


def test_file_missing_is_not_found(tmp_path: Path) -> None:
    store = LocalStorage()
    url = path_to_file_url(tmp_path / "missing.bin")
    for call in (
        lambda: store.head(url),
        lambda: store.download(url, tmp_path / "d.bin"),
        lambda: store.get_bytes(url),
    ):
        with pytest.raises(NotFoundError):
            call()
    with pytest.raises(
        PermanentError
    ) as info:  # a missing *local* source is not "object not found"
        store.upload(tmp_path / "no-src", path_to_file_url(tmp_path / "dst"))
    assert not isinstance(info.value, NotFoundError)


# ---- https:// (presigned) ---------------------------------------------------------------------


@pytest.fixture
def https() -> HttpsStorage:
    return HttpsStorage(timeout_s=10, backoff_s=0.01, max_backoff_s=0.05)


def test_presigned_put_and_get_through_https(
    s3: S3Storage, raw, https: HttpsStorage, place: Place, big_file: Path, tmp_path: Path
) -> None:
    url = place.url("pre/" + ODD_NAME)
    put_url = s3.presign_put(url, 300)
    assert put_url.startswith("http://127.0.0.1:") and "X-Amz-Signature=" in put_url
    tracemalloc.start()
    try:
        info = https.upload(big_file, put_url)  # no Content-Type: matches a signature without one
        _, up_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    head = raw.head_object(Bucket=place.bucket, Key=place.key("pre/" + ODD_NAME))
    assert info.etag == head["ETag"] == f'"{md5_file(big_file)}"'
    assert info.size == head["ContentLength"] == 40 * MiB
    assert up_peak < 8 * MiB, f"presigned PUT allocated {up_peak / MiB:.1f} MiB"

    get_url = s3.presign_get(url, 300)
    assert https.head(get_url) == ObjectInfo(get_url, head["ETag"], 40 * MiB, None, None)
    tracemalloc.start()
    try:
        got = https.download(get_url, tmp_path / "got.bin")
        _, down_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert down_peak < 8 * MiB, f"presigned GET allocated {down_peak / MiB:.1f} MiB"
    assert got.etag == head["ETag"] and got.size == 40 * MiB
    assert md5_file(tmp_path / "got.bin") == md5_file(big_file)


def test_presigned_put_with_signed_content_type(
    s3: S3Storage, raw, https: HttpsStorage, place: Place
) -> None:
    url = place.url("typed.json")
    put_url = s3.presign_put(url, 300, content_type="application/json")
    info = https.put_bytes(b"{}", put_url, content_type="application/json")
    head = raw.head_object(Bucket=place.bucket, Key=place.key("typed.json"))
    assert info.etag == head["ETag"] and head["ContentType"] == "application/json"
    with pytest.raises(PermanentError, match="403"):  # the signature covers the type
        https.put_bytes(b"{}", put_url)
    assert https.get_bytes(s3.presign_get(url, 300)) == b"{}"

    # what the job runner does: SigV4 signed without a type, PUT with one -> accepted (unsigned header)
    untyped = place.url("untyped.mp4")
    info = https.put_bytes(b"mp4", s3.presign_put(untyped, 300), content_type="video/mp4")
    head = raw.head_object(Bucket=place.bucket, Key=place.key("untyped.mp4"))
    assert info.etag == head["ETag"] and head["ContentType"] == "video/mp4"


def test_presigned_put_from_plain_boto3_defaults(
    seaweed: SeaweedServer, https: HttpsStorage, place: Place, tmp_path: Path
) -> None:
    """A URL from a client with botocore's defaults (SigV2 query auth against this endpoint, where
    Content-Type is always signed): the adapter's default of sending no Content-Type works."""
    plain = seaweed.session().client("s3", endpoint_url=seaweed.endpoint_url)
    put_url = plain.generate_presigned_url(
        "put_object", Params={"Bucket": place.bucket, "Key": place.key("plain.bin")}
    )
    src = tmp_path / "plain.bin"
    src.write_bytes(b"plain presigned")
    info = https.upload(src, put_url)
    assert info.etag == plain.head_object(Bucket=place.bucket, Key=place.key("plain.bin"))["ETag"]
    get_url = plain.generate_presigned_url(
        "get_object", Params={"Bucket": place.bucket, "Key": place.key("plain.bin")}
    )
    assert https.head(get_url).etag == info.etag


def test_presigned_empty_object(
    s3: S3Storage, https: HttpsStorage, place: Place, tmp_path: Path
) -> None:
    url = place.url("empty")
    src = tmp_path / "empty"
    src.write_bytes(b"")
    info = https.upload(src, s3.presign_put(url, 300))
    assert info.etag == f'"{hashlib.md5(b"").hexdigest()}"' == s3.head(url).etag
    get_url = s3.presign_get(url, 300)
    assert https.head(get_url).size == 0 and https.head(get_url).etag == info.etag
    assert https.download(get_url, tmp_path / "e2").size == 0


def test_tampered_presigned_url_is_permanent_and_redacted(
    s3: S3Storage, https: HttpsStorage, place: Place, tmp_path: Path
) -> None:
    url = place.url("t.bin")
    s3.put_bytes(b"tamper", url)
    get_url = s3.presign_get(url, 300)
    tampered = get_url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    query = tampered.partition("?")[2]
    for call in (
        lambda: https.head(tampered),
        lambda: https.download(tampered, tmp_path / "t.bin"),
        lambda: https.upload(tmp_path / "t.bin", tampered),
    ):
        (tmp_path / "t.bin").write_bytes(b"x")
        with pytest.raises(PermanentError) as info:
            call()
        assert not isinstance(info.value, NotFoundError)
        assert "403" in str(info.value)
        said = everything_said(info.value)
        assert (
            query not in said and "X-Amz-Signature" not in said and "X-Amz-Credential" not in said
        )


def test_https_missing_object_is_not_found(
    s3: S3Storage, https: HttpsStorage, place: Place, tmp_path: Path
) -> None:
    get_url = s3.presign_get(place.url("missing.bin"), 300)
    for call in (
        lambda: https.head(get_url),
        lambda: https.download(get_url, tmp_path / "m.bin"),
        lambda: https.get_bytes(get_url),
    ):
        with pytest.raises(NotFoundError) as info:
            call()
        assert "?<redacted>" in str(info.value) and "Signature" not in str(info.value)
    assert not (tmp_path / "m.bin").exists()


def test_https_connection_error_is_transient_and_redacted(tmp_path: Path) -> None:
    https = HttpsStorage(timeout_s=2, max_attempts=2, backoff_s=0.01, max_backoff_s=0.02)

    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}/b/k?X-Amz-Signature=SECRETSIG&X-Amz-Credential=AKIA"
    with pytest.raises(TransientError) as info:
        https.download(url, tmp_path / "x")
    assert "SECRETSIG" not in everything_said(info.value)
    assert "AKIA" not in everything_said(info.value)


# ---- https retries and length checks, against a tiny loopback server --------------------------


class _Scripted(http.server.BaseHTTPRequestHandler):
    script: list[tuple[int, dict[str, str], bytes]] = []
    seen: list[str] = []

    def _reply(self) -> None:
        type(self).seen.append(self.command)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, headers, body = type(self).script.pop(0) if type(self).script else (500, {}, b"")
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = _reply

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[tuple[str, type[_Scripted]]]:
    handler = type("Handler", (_Scripted,), {"script": [], "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/obj?sig=s3cr3t", handler
    finally:
        server.shutdown()
        server.server_close()


def test_https_retries_5xx_and_429_but_not_4xx(
    scripted, https: HttpsStorage, tmp_path: Path
) -> None:
    url, handler = scripted
    handler.script += [(503, {}, b""), (429, {}, b""), (200, {"ETag": '"e"'}, b"payload")]
    info = https.download(url, tmp_path / "ok.bin")
    assert (info.etag, info.size) == ('"e"', 7) and handler.seen == ["GET"] * 3

    handler.seen.clear()
    handler.script += [(403, {}, b"<Error><Code>AccessDenied</Code></Error>")]
    with pytest.raises(PermanentError, match="403 AccessDenied") as err:
        https.download(url, tmp_path / "no.bin")
    assert handler.seen == ["GET"] and "s3cr3t" not in everything_said(err.value)

    handler.seen.clear()
    with pytest.raises(TransientError, match="500"):  # the script is empty: 500 every time
        https.head(url)
    assert handler.seen == ["GET"] * 4


def test_https_short_body_is_transient(scripted, https: HttpsStorage, tmp_path: Path) -> None:
    url, handler = scripted
    short = (200, {"ETag": '"e"', "Content-Length": "100"}, b"only ten b")
    handler.script += [short] * 4
    with pytest.raises(TransientError):
        https.download(url, tmp_path / "short.bin")
    assert not (tmp_path / "short.bin").exists()


def test_https_upload_sends_length_and_no_type_by_default(
    scripted, https: HttpsStorage, tmp_path: Path
) -> None:
    url, handler = scripted
    seen_headers: list[dict[str, str]] = []
    original = handler._reply

    def capture(self) -> None:
        seen_headers.append(dict(self.headers))
        original(self)

    handler.do_PUT = capture
    handler.script += [(200, {"ETag": '"up"'}, b""), (200, {"ETag": '"up2"'}, b"")]
    src = tmp_path / "u.bin"
    src.write_bytes(b"12345")
    assert https.upload(src, url).etag == '"up"'
    assert https.upload(src, url, content_type="video/mp4").etag == '"up2"'
    assert seen_headers[0].get("Content-Length") == "5" and "Content-Type" not in seen_headers[0]
    assert "Transfer-Encoding" not in seen_headers[0]
    assert seen_headers[1].get("Content-Type") == "video/mp4"


def test_https_refuses_a_file_larger_than_one_put_before_sending(
    scripted, https: HttpsStorage, tmp_path: Path
) -> None:
    from vastdrop.storage.https import MAX_SINGLE_PUT_BYTES

    url, handler = scripted
    huge = tmp_path / "huge.mp4"
    with huge.open("wb") as f:  # sparse: no disk used
        f.truncate(MAX_SINGLE_PUT_BYTES + 1)
    with pytest.raises(PermanentError, match="5.00 GB is more than one presigned PUT takes") as err:
        https.upload(huge, url)
    assert handler.seen == [] and "s3cr3t" not in everything_said(err.value)


# ---- dispatch ---------------------------------------------------------------------------------


def test_storage_for_dispatches_on_scheme() -> None:
    assert isinstance(storage_for("file:///tmp/x"), LocalStorage)
    assert isinstance(storage_for("https://example.com/x?sig=1"), HttpsStorage)
    assert isinstance(storage_for("http://127.0.0.1:1/x"), HttpsStorage)
    with pytest.raises(PermanentError) as info:
        storage_for("ftp://host/x?token=abc")
    assert "abc" not in str(info.value)


# ---- file:// keys cannot leave the bucket folder (issue 9 item 6) ----------------------------

ESCAPING_KEYS = ["input/../../etc/passwd", "../outside.mp4", "input/..", "/etc/passwd", "input/./a.mp4",
                 "input/a\0.mp4", "input/a.mp4\0/../../x"]


@pytest.mark.parametrize("key", ESCAPING_KEYS)
def test_keys_that_could_leave_the_root_are_refused(tmp_path: Path, key: str) -> None:
    root = tmp_path / "bucket"
    with pytest.raises(PermanentError, match="object key") as refused:
        key_path(root, key)
    assert "\0" not in str(refused.value)  # shown escaped, never as a raw NUL
    location = Location(path_to_file_url(root) + "/", "input/", LocalStorage())
    with pytest.raises(PermanentError, match="object key"):
        location.url(key)
    with pytest.raises(PermanentError, match="object key"):
        location.head(key)  # never a stat of a file outside, never a ValueError


@pytest.mark.parametrize("key", ["input/a..b.mp4", "input/..hidden/x.mp4", "input/a\\..\\..\\b.mp4", "input/", ""])
def test_odd_but_harmless_keys_stay_inside_the_root(tmp_path: Path, key: str) -> None:
    """On POSIX a backslash is part of a name, not a separator: it cannot climb out."""
    root = tmp_path / "bucket"
    path = key_path(root, key)
    assert path == root / key and os.path.normpath(path).startswith(str(root))


@pytest.mark.parametrize("url", ["file:///tmp/bucket/../../etc/passwd", "file:///tmp/a%00b", "file:///tmp/%2e%2e/x"])
def test_file_urls_with_dot_dot_or_nul_are_refused(url: str) -> None:
    with pytest.raises(PermanentError, match="file:// URL with"):
        file_url_to_path(url)
    with pytest.raises(PermanentError):
        LocalStorage().head(url)  # a NUL used to escape as ValueError from open()
