"""The stable job id: one per (bucket, key, object version, processing parameters)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

JOB_ID_PREFIX = "vd-"
JOB_ID_HEX_CHARS = 20  # 80 bits: collisions are not a practical concern


def job_id_for(bucket: str, key: str, etag_or_version: str, params: dict[str, Any]) -> str:
    """Same object version + same params -> same id, so duplicate or replayed events find the same job."""
    material = json.dumps([bucket, key, etag_or_version, params], sort_keys=True, separators=(",", ":"))
    return JOB_ID_PREFIX + hashlib.sha256(material.encode()).hexdigest()[:JOB_ID_HEX_CHARS]
