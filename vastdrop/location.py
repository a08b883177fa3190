"""A place in a bucket: a root (`s3://bucket/`, `file:///abs/dir/`) and a key prefix (`input/`).

The control plane speaks in keys; this turns them into URLs for the storage adapters and into
presigned, expiring URLs for a job (ARCHITECTURE.md section 8). For file:// there is nothing to sign:
local jobs get plain file URLs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vastdrop.errors import ConfigError, NotFoundError
from vastdrop.join import Piece
from vastdrop.multipart import PartsPlan, plan_size
from vastdrop.storage import ObjectInfo, storage_for
from vastdrop.storage.local import file_url_to_path, key_path, path_to_file_url


@dataclass
class Location:
    root: str  # "s3://bucket/" or "file:///abs/bucket/" (always ends with "/")
    prefix: str  # "input/" ("" for the whole bucket)
    storage: Any

    @classmethod
    def parse(cls, url: str, *, s3_session: Any = None) -> Location:
        """`s3://b/input/` -> root s3://b/, prefix input/. `file://./bucket/input/` (relative to the
        working directory) or `file:///abs/bucket/input/` -> root the parent dir, prefix input/."""
        root, prefix = cls.root_and_prefix(url)
        return cls(root, prefix, storage_for(root, s3_session=s3_session))

    @staticmethod
    def root_and_prefix(url: str) -> tuple[str, str]:
        """What `parse` makes of a URL, without building a storage client (an S3 client costs
        ~0.1 s to create: the webhook function needs the prefixes only)."""
        if url.startswith("s3://"):
            bucket, _, key = url[len("s3://") :].partition("/")
            if not bucket:
                raise ConfigError(f"no bucket in {url!r}")
            return f"s3://{bucket}/", _dir(key)
        if url.startswith("file://"):
            raw = url[len("file://") :]
            path = file_url_to_path(url) if raw.startswith("/") else Path(os.path.abspath(raw))
            path = path.resolve()
            return path_to_file_url(path.parent) + "/", path.name + "/"
        raise ConfigError(f"unsupported location {url!r} (want s3://bucket/prefix/ or file://path/)")

    @property
    def is_local(self) -> bool:
        return self.root.startswith("file://")

    @property
    def bucket(self) -> str:
        return self.root.rstrip("/").rsplit("/", 1)[-1]

    def url(self, key: str) -> str:
        if self.is_local:
            return path_to_file_url(key_path(file_url_to_path(self.root), key))  # refuses keys escaping the root
        return self.root + key

    def key_of(self, url: str) -> str:
        if self.is_local:
            return file_url_to_path(url).relative_to(file_url_to_path(self.root)).as_posix()
        return url[len(self.root) :]

    def list(self, prefix: str | None = None) -> Iterator[tuple[str, ObjectInfo]]:
        for info in self.storage.list(self.url(self.prefix if prefix is None else prefix)):
            yield self.key_of(info.url), info

    def same_stem(self, key: str) -> list[str]:
        """Keys next to `key` with its stem, bare or followed by a dot (a, a.mp4, a.mov, a.b.mp4): the
        candidates for mapping to the same result key. Callers compare result keys to decide."""
        folder, _, name = key.rpartition("/")
        stem = name.rsplit(".", 1)[0] if "." in name else name
        bare = f"{folder}/{stem}" if folder else stem
        if self.is_local:
            directory = file_url_to_path(self.root) / folder
            names = [p.name for p in directory.glob(f"{_glob_escape(stem)}.*") if p.is_file()]
            keys = [f"{folder}/{n}" if folder else n for n in names]
            has_bare = (directory / stem).is_file()
        else:
            keys = [k for k, _ in self.list(bare + ".")]
            has_bare = self.head(bare) is not None
        siblings = [k for k in keys if "/" not in k[len(bare) :]]
        return sorted(siblings + ([bare] if has_bare else []))

    def head(self, key: str) -> ObjectInfo | None:
        try:
            return self.storage.head(self.url(key))
        except NotFoundError:
            return None

    def get_bytes(self, key: str, max_bytes: int = 16 << 20) -> bytes | None:
        try:
            return self.storage.get_bytes(self.url(key), max_bytes)
        except NotFoundError:
            return None

    def copy(self, src_key: str, dst_key: str, if_match: str | None = None) -> ObjectInfo:
        """Server-side copy of exactly the `if_match` version (publishing a verified result)."""
        return self.storage.copy(self.url(src_key), self.url(dst_key), if_match)

    def read_range(self, key: str, start: int, length: int, if_match: str | None = None) -> bytes:
        return self.storage.read_range(self.url(key), start, length, if_match)

    def compose(self, dst_key: str, pieces: list[tuple[str, int, int, str | None]], content_type: str) -> ObjectInfo:
        """One object at `dst_key` of the byte ranges (key, start, end, ETag), joined server-side
        where the store can (vastdrop.join)."""
        return self.storage.compose(self.url(dst_key), [Piece(self.url(k), s, e, t) for k, s, e, t in pieces],
                                    content_type)

    def put_bytes(self, key: str, data: bytes, content_type: str) -> ObjectInfo:
        return self.storage.put_bytes(data, self.url(key), content_type)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix` (a staging folder); returns how many."""
        keys = [key for key, _info in self.list(prefix)]
        for key in keys:
            self.storage.delete(self.url(key))
        if not self.is_local:  # a multipart upload the job never completed (vastdrop.multipart)
            self.storage.abort_uploads(self.url(prefix))
        if self.is_local:  # S3 has no folders; a local tree should not keep their empty shells
            _remove_empty_dirs(file_url_to_path(self.root), prefix)
        return len(keys)

    def job_get_url(self, key: str, expires_s: int) -> str:
        return self.url(key) if self.is_local else self.storage.presign_get(self.url(key), expires_s)

    def job_put_url(self, key: str, expires_s: int, content_type: str) -> str:
        if self.is_local:
            return self.url(key)
        return self.storage.presign_put(self.url(key), expires_s, content_type)

    def job_parts_url(self, key: str, plan_key: str, expires_s: int, content_type: str, *, part_bytes: int,
                      max_result_bytes: int, single_put_max_bytes: int) -> str | None:
        """For a result too large for one PUT: a multipart upload to `key`, its presigned part URLs
        written as a PartsPlan at `plan_key`, and a presigned GET of that plan for the job. None for
        file://, where the job writes the file itself, whatever its size."""
        if self.is_local:
            return None
        part_size, count = plan_size(max_result_bytes, part_bytes)
        part_urls, complete_url = self.storage.presign_parts(self.url(key), expires_s, content_type, count)
        plan = PartsPlan(single_put_max_bytes=single_put_max_bytes, part_size=part_size, part_urls=part_urls,
                         complete_url=complete_url)
        self.storage.put_bytes(plan.to_json(), self.url(plan_key), "application/json")
        return self.storage.presign_get(self.url(plan_key), expires_s)


def _remove_empty_dirs(root: Path, prefix: str) -> None:
    """Empty folders under `prefix` and then its own empty parents, up to (not including) root."""
    top = root / prefix
    if top.is_dir():
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):  # not empty (a file written meanwhile): kept
                Path(dirpath).rmdir()
    for parent in top.parents:
        if parent == root or root not in parent.parents:
            break
        with contextlib.suppress(OSError):
            parent.rmdir()


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _dir(prefix: str) -> str:
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"
