"""The storage port: every adapter moves whole objects between a URL and a local file, streaming.

Adapters translate foreign errors at this boundary into vastdrop.errors:
NotFoundError (no such object), TransientError (network, throttling, 5xx), PermanentError (auth, bad URL).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ObjectInfo:
    url: str
    etag: str  # opaque, exactly as the store returned it (quotes included)
    size: int
    version_id: str | None = None
    last_modified: float | None = None  # unix seconds, when the store tells


class Storage(Protocol):
    """One adapter per URL scheme. URLs are full URLs (s3://bucket/key, file:///abs, https://...)."""

    def head(self, url: str) -> ObjectInfo:
        """Size and ETag of the object; NotFoundError if absent."""
        ...

    def download(self, url: str, dest: Path) -> ObjectInfo:
        """Stream the object into `dest`; returns what was downloaded (etag/size of that version)."""
        ...

    def upload(self, src: Path, url: str, content_type: str = "application/octet-stream") -> ObjectInfo:
        """Stream `src` to `url`; returns the ETag that this very upload produced (multipart when large)."""
        ...

    def put_bytes(self, data: bytes, url: str, content_type: str = "application/octet-stream") -> ObjectInfo:
        """Small objects (manifests, logs) in one request."""
        ...

    def get_bytes(self, url: str, max_bytes: int = 16 << 20) -> bytes:
        """Small objects only; PermanentError when larger than max_bytes."""
        ...
