"""Storage adapters behind one port: s3://, file://, https:// (presigned; http:// for loopback)."""

from __future__ import annotations

from typing import Any

from vastdrop.errors import PermanentError
from vastdrop.jobspec import redact_url
from vastdrop.storage.base import ObjectInfo, Storage

__all__ = ["ObjectInfo", "Storage", "storage_for"]


def storage_for(url: str, *, s3_session: Any = None, http_session: Any = None) -> Storage:
    """The adapter for the URL's scheme (adapters are cheap; build one per URL or keep yours)."""
    scheme = url.partition(":")[0].lower()
    if scheme == "s3":
        from vastdrop.storage.s3 import S3Storage  # boto3 is slow to import: only when needed

        return S3Storage(session=s3_session)
    if scheme == "file":
        from vastdrop.storage.local import LocalStorage

        return LocalStorage()
    if scheme in ("https", "http"):
        from vastdrop.storage.https import HttpsStorage

        return HttpsStorage(session=http_session)
    raise PermanentError(
        f"no storage adapter for {redact_url(url)!r} (want s3://, file://, https://)"
    )
