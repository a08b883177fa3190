"""Event payloads -> ObjectEvents: B2 event notifications and S3-style (AWS, MinIO) records."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from handlers.created import ObjectEvent, on_object_created
from handlers.deps import Deps
from handlers.finished import on_manifest_key
from vastdrop.errors import PermanentError

B2_CREATED_PREFIX = "b2:ObjectCreated:"
S3_CREATED_PREFIX = "ObjectCreated:"
SQS_MESSAGE_MAX_BYTES = 256 * 1024 - 1024  # SQS takes 256 KiB per message; a margin for attributes


def parse_events(body: bytes | str | dict[str, Any]) -> list[ObjectEvent]:
    """Object-created events in the payload, in order; other event types are ignored."""
    _, items, parse = _created_items(body)
    return [parse(item) for item in items]


def regroup(body: bytes | str | dict[str, Any], keep: Callable[[ObjectEvent], bool],
            max_bytes: int = SQS_MESSAGE_MAX_BYTES) -> tuple[list[str], int]:
    """The created events `keep` accepts, as payloads in the provider's own shape (B2 `events` or
    S3 `Records`, each event verbatim) of at most `max_bytes` each: one queue message apiece, however
    many events one delivery carries. Also how many events were kept."""
    field, items, parse = _created_items(body)
    kept = [item for item in items if keep(parse(item))]
    bodies: list[str] = []
    chunk: list[dict[str, Any]] = []
    size = 0
    for item in kept:
        item_size = len(json.dumps(item)) + 2  # the separator too
        if chunk and size + item_size > max_bytes - 32:  # room for the wrapping object
            bodies.append(json.dumps({field: chunk}))
            chunk, size = [], 0
        chunk.append(item)
        size += item_size
    if chunk:
        bodies.append(json.dumps({field: chunk}))
    return bodies, len(kept)


def load_payload(body: bytes | str | dict[str, Any]) -> dict[str, Any]:
    """The payload as a JSON object (decoded once, then passed to the functions above)."""
    try:
        payload = json.loads(body) if isinstance(body, bytes | str) else body
    except ValueError as exc:
        raise PermanentError("event body is not JSON") from exc
    if not isinstance(payload, dict):
        raise PermanentError("event body is not a JSON object")
    return payload


def _created_items(body: bytes | str | dict[str, Any]) -> tuple[str, list[dict[str, Any]],
                                                                 Callable[[dict[str, Any]], ObjectEvent]]:
    """The payload's field, its object-created items, and the parser for them."""
    payload = load_payload(body)
    if "events" in payload:  # Backblaze B2 event notifications
        items = [e for e in payload["events"] if str(e.get("eventType", "")).startswith(B2_CREATED_PREFIX)]
        return "events", items, _b2
    if "Records" in payload:  # S3 event notifications
        items = [r for r in payload["Records"] if str(r.get("eventName", "")).startswith(S3_CREATED_PREFIX)]
        return "Records", items, _s3
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
