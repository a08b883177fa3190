"""HMAC-SHA256 signatures for webhooks and job callbacks: `v1=<hex>` over the raw body."""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "v1="
B2_SIGNATURE_HEADER = "x-bz-event-notification-signature"  # B2 event notifications
CALLBACK_SIGNATURE_HEADER = "X-Signature"  # job callbacks (ARCHITECTURE.md section 3)


def sign(secret: str | bytes, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return PREFIX + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """Constant-time comparison; a missing or malformed header is simply not valid."""
    if not header or not secret:
        return False
    candidates = [part.strip() for part in header.split(",")]  # tolerate several signatures
    expected = sign(secret, body)
    return any(hmac.compare_digest(expected.encode(), c.encode()) for c in candidates if c.startswith(PREFIX))


def job_key(secret: str | bytes, job_id: str) -> str:
    """The key one job signs its callback with: HMAC(secret, job id), hex. A host holds only its
    own job's key, so it cannot sign a callback for any other job (ARCHITECTURE.md section 8)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, b"vastdrop-callback:" + job_id.encode(), hashlib.sha256).hexdigest()
