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
