"""Event payloads -> ObjectEvents: B2 event notifications and S3-style (AWS, MinIO) records."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

from handlers.created import ObjectEvent, on_object_created
from handlers.deps import Deps
from handlers.finished import on_manifest_key
from vastdrop.errors import PermanentError

B2_CREATED_PREFIX = "b2:ObjectCreated:"
S3_CREATED_PREFIX = "ObjectCreated:"


def parse_events(body: bytes | str | dict[str, Any]) -> list[ObjectEvent]:
    """Object-created events in the payload, in order; other event types are ignored."""
    try:
        payload = json.loads(body) if isinstance(body, bytes | str) else body
    except ValueError as exc:
        raise PermanentError("event body is not JSON") from exc
    if not isinstance(payload, dict):
        raise PermanentError("event body is not a JSON object")
    if "events" in payload:  # Backblaze B2 event notifications
        return [_b2(e) for e in payload["events"] if str(e.get("eventType", "")).startswith(B2_CREATED_PREFIX)]
    if "Records" in payload:  # S3 event notifications
        return [_s3(r) for r in payload["Records"] if str(r.get("eventName", "")).startswith(S3_CREATED_PREFIX)]
    raise PermanentError("unknown event payload (want B2 'events' or S3 'Records')")


def route(event: ObjectEvent, deps: Deps) -> object:
    """Manifests finish jobs; everything else may start one (on_object_created skips non-inputs)."""
    if deps.layout.is_manifest(event.key):
        return on_manifest_key(event.key, deps)
    return on_object_created(event, deps)


def _b2(e: dict[str, Any]) -> ObjectEvent:
    return ObjectEvent(key=e["objectName"], size=e.get("objectSize"), version_id=e.get("objectVersionId"),
                       source="webhook")


def _s3(r: dict[str, Any]) -> ObjectEvent:
    obj = r["s3"]["object"]
    etag = obj.get("eTag")
    return ObjectEvent(key=unquote_plus(obj["key"]), etag=f'"{etag}"' if etag and not etag.startswith('"') else etag,
                       size=obj.get("size"), version_id=obj.get("versionId"), source="s3-event")
