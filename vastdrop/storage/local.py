"""file:// adapter: the local filesystem behind the storage port (tests, local runs, mounted volumes).

URLs are RFC 8089 file URLs with a percent-encoded absolute path (`file:///tmp/a%20b/%C3%BC.mp4`);
use path_to_file_url / file_url_to_path rather than string concatenation, and key_path to place an
object key under a bucket's root folder: keys come from events and users, and one with `..`, an
absolute path or a NUL byte must never reach a file outside the root (PermanentError instead).
ETag = the quoted MD5 hex of the content, like a single-part S3 upload.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlsplit

from vastdrop.errors import NotFoundError, PermanentError, TransientError, VastdropError
from vastdrop.jobspec import redact_url
from vastdrop.join import Piece
from vastdrop.storage.base import ObjectInfo

CHUNK = 1 << 20
_ETAG_CACHE: dict[tuple[str, int, int], str] = {}


def path_to_file_url(path: str | os.PathLike[str]) -> str:
    """`file:///abs/path` with the path percent-encoded (spaces, unicode, `?`, `#`, `%`)."""
    absolute = os.path.abspath(os.fspath(path))
    return "file://" + quote_from_bytes(os.fsencode(absolute), safe="/")


def file_url_to_path(url: str) -> Path:
    """The absolute Path of a `file:///...` (or `file://localhost/...`) URL; PermanentError otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise PermanentError(f"not a file:// URL: {redact_url(url)}")
    if parts.netloc not in ("", "localhost"):
        raise PermanentError(f"file:// URL with a remote host is not supported: {redact_url(url)}")
    if parts.query or parts.fragment:
        raise PermanentError(
            f"file:// URL with '?' or '#' (percent-encode them): {redact_url(url)}"
        )
    path = os.fsdecode(unquote_to_bytes(parts.path))
    if not path.startswith("/"):
        raise PermanentError(f"file:// URL needs an absolute path: {redact_url(url)}")
    if "\0" in path:  # open() would raise ValueError, which no caller expects
        raise PermanentError(f"file:// URL with a NUL byte: {redact_url(url)}")
    if ".." in _segments(path):
        raise PermanentError(f"file:// URL with a '..' segment (give the path without it): {redact_url(url)}")
    return Path(path)


def key_path(root: Path, key: str) -> Path:
    """The file of object `key` under the bucket folder `root`; PermanentError for a key that could
    name anything outside it: a `.` or `..` segment, an absolute path, a NUL byte. (On S3 such a key
    is just a name; here it would be a path, so it is refused rather than normalised into another.)"""
    if "\0" in key:
        raise PermanentError(f"object key with a NUL byte: {key!r}")
    if key.startswith("/") or os.path.isabs(key) or os.path.splitdrive(key)[0]:
        raise PermanentError(f"object key is an absolute path: {key!r}")
    if {".", ".."} & set(_segments(key)):
        raise PermanentError(f"object key with a '.' or '..' segment: {key!r}")
    return root / key


def _segments(path: str) -> list[str]:
    """Path segments as this OS's filesystem splits them ('/' and, on Windows, '\\')."""
    for sep in {os.sep, os.altsep} - {None, "/"}:
        path = path.replace(sep, "/")
    return path.split("/")


def quoted_md5(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'


class LocalStorage:
    """Storage for file:// URLs. Uploads are atomic (temp file in the same dir, fsync, rename)."""

    def head(self, url: str) -> ObjectInfo:
        path = file_url_to_path(url)
        with _translate("head", url):
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                digest, size = _md5_copy(fh, None)
        return ObjectInfo(url=url, etag=digest, size=size, last_modified=st.st_mtime)

    def download(self, url: str, dest: Path) -> ObjectInfo:
        path = file_url_to_path(url)
        with _translate("download", url):
            with open(path, "rb") as src:
                st = os.fstat(src.fileno())
                with atomic_writer(Path(dest)) as out:
                    digest, size = _md5_copy(src, out)
        return ObjectInfo(url=url, etag=digest, size=size, last_modified=st.st_mtime)

    def upload(
        self, src: Path, url: str, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        path = file_url_to_path(url)
        try:
            fh = open(src, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise os_error("upload", url, exc, local=True) from exc
        with _translate("upload", url), fh:
            with atomic_writer(path) as out:
                digest, size = _md5_copy(fh, out)
            mtime = path.stat().st_mtime
        return ObjectInfo(url=url, etag=digest, size=size, last_modified=mtime)

    def put_bytes(
        self, data: bytes, url: str, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        path = file_url_to_path(url)
        with _translate("put", url):
            with atomic_writer(path) as out:
                out.write(data)
            mtime = path.stat().st_mtime
        return ObjectInfo(url=url, etag=quoted_md5(data), size=len(data), last_modified=mtime)

    def get_bytes(self, url: str, max_bytes: int = 16 << 20) -> bytes:
        path = file_url_to_path(url)
        with _translate("get", url):
            with open(path, "rb") as fh:
                data = fh.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise PermanentError(f"{redact_url(url)} is larger than {max_bytes} bytes")
        return data

    def list(self, prefix_url: str) -> Iterator[ObjectInfo]:
        """Files under a directory URL, recursively, in key order (like an S3 listing). ETags are
        cached by (path, size, mtime) so that polling a large tree rehashes only what changed."""
        root = file_url_to_path(prefix_url)
        if not root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except FileNotFoundError:  # removed while we walked
                    continue
                cache_key = (str(path), st.st_size, st.st_mtime_ns)
                etag = _ETAG_CACHE.get(cache_key)
                if etag is None:
                    with open(path, "rb") as fh:
                        etag, _ = _md5_copy(fh, None)
                    _ETAG_CACHE[cache_key] = etag
                yield ObjectInfo(url=path_to_file_url(path), etag=etag, size=st.st_size, last_modified=st.st_mtime)

    def copy(self, src_url: str, dst_url: str, if_match: str | None = None) -> ObjectInfo:
        """Copy one file to another, atomically; with `if_match`, only if the source's ETag is that
        (else TransientError, as S3's 412), checked on the very bytes copied."""
        src, dest = file_url_to_path(src_url), file_url_to_path(dst_url)
        with _translate("copy", src_url), open(src, "rb") as fh, atomic_writer(dest) as out:
            digest, size = _md5_copy(fh, out)
            if if_match is not None and digest != if_match:  # raised inside: dest is left as it was
                raise TransientError(f"copy {redact_url(src_url)}: object changed (ETag {digest}, want {if_match})")
        return ObjectInfo(url=dst_url, etag=digest, size=size, last_modified=dest.stat().st_mtime)

    def read_range(self, url: str, start: int, length: int, if_match: str | None = None) -> bytes:
        """Bytes [start, start + length) of the file (fewer at its end). `if_match` is S3's; a local
        file's ETag is its whole content's MD5, which a range read cannot check: the join checks it
        when it copies (compose)."""
        with _translate("get", url), open(file_url_to_path(url), "rb") as fh:
            fh.seek(start)
            return fh.read(length)

    def compose(self, dst_url: str, pieces: list[Piece], content_type: str = "application/octet-stream") -> ObjectInfo:
        """One file of the pieces' bytes in order, written atomically; each source must still have
        its ETag (else TransientError, as S3's 412 for a copy source that changed)."""
        dest = file_url_to_path(dst_url)
        md5 = hashlib.md5()
        with _translate("compose", dst_url), atomic_writer(dest) as out:
            for piece in pieces:
                with open(file_url_to_path(piece.url), "rb") as fh:
                    if piece.etag is not None and _md5_copy(fh, None)[0] != piece.etag:
                        raise TransientError(f"compose: {redact_url(piece.url)} changed since it was verified")
                    fh.seek(piece.start)
                    left = piece.size
                    while left > 0:
                        chunk = fh.read(min(CHUNK, left))
                        if not chunk:
                            raise TransientError(f"compose: {redact_url(piece.url)} is shorter than {piece.end} bytes")
                        out.write(chunk)
                        md5.update(chunk)
                        left -= len(chunk)
        return ObjectInfo(url=dst_url, etag=f'"{md5.hexdigest()}"', size=dest.stat().st_size,
                          last_modified=dest.stat().st_mtime)

    def delete(self, url: str) -> None:
        """Remove the file; absent is fine (like S3)."""
        path = file_url_to_path(url)
        with _translate("delete", url), contextlib.suppress(FileNotFoundError):
            path.unlink()


# ---- helpers shared with the other adapters --------------------------------------------------


@contextlib.contextmanager
def atomic_writer(dest: Path) -> Iterator[BinaryIO]:
    """A binary file that becomes `dest` only if the block succeeds: written next to it under a
    temporary name, fsynced, renamed over `dest`. Parent directories are created."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A short fixed-size name: the destination's own name may already be near the 255-byte limit.
    fd, tmp = tempfile.mkstemp(prefix=".vd-", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _md5_copy(src: BinaryIO, out: BinaryIO | None) -> tuple[str, int]:
    """Stream src (into out, if given) in CHUNK reads; returns (quoted md5 hex, size)."""
    md5 = hashlib.md5()
    size = 0
    while chunk := src.read(CHUNK):
        md5.update(chunk)
        size += len(chunk)
        if out is not None:
            out.write(chunk)
    return '"' + md5.hexdigest() + '"', size


@contextlib.contextmanager
def _translate(op: str, url: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise os_error(op, url, exc) from exc


def os_error(op: str, url: str, exc: OSError, *, local: bool = False) -> VastdropError:
    """An OSError as one of ours: absent -> NotFoundError (PermanentError when `local`, i.e. about
    our own file, not the object), our fault (permissions, a directory in the way) ->
    PermanentError, anything else (EIO, ENOSPC, a stale NFS handle...) -> TransientError.
    The other adapters use it with local=True for the file they read or write."""
    what = exc.strerror or type(exc).__name__
    where = f" ({exc.filename})" if exc.filename else ""  # which side: the object or the local file
    message = f"{op} {redact_url(url)}: {what}{where}"
    if isinstance(exc, FileNotFoundError) and not local:
        return NotFoundError(message)
    if isinstance(
        exc, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError
    ):
        return PermanentError(message)
    return TransientError(message)
