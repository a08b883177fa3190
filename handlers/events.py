"""Event payloads -> ObjectEvents: B2 event notifications and S3-style (AWS, MinIO) records.

A delivery comes from the network: its created events are validated whole (shape and types, by
pydantic) before any of it is used, so anything malformed is one PermanentError (the caller answers
400) rather than a KeyError halfway through. Other event types are ignored, whatever their shape.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from pydantic import AwareDatetime, BaseModel, Field, StrictInt, StrictStr, ValidationError

from handlers.created import ObjectEvent, on_object_created
from handlers.deps import Deps
from handlers.finished import on_manifest_key
from vastdrop.errors import PermanentError

logger = logging.getLogger(__name__)

B2_CREATED_PREFIX = "b2:ObjectCreated:"
S3_CREATED_PREFIX = "ObjectCreated:"
SQS_MESSAGE_MAX_BYTES = 256 * 1024 - 1024  # SQS takes 256 KiB per message; a margin for attributes


class _B2Created(BaseModel):  # tests/events/b2_object_created.json
    key: StrictStr = Field(alias="objectName")
    size: StrictInt | None = Field(None, alias="objectSize")
    version_id: StrictStr | None = Field(None, alias="objectVersionId")
    # B2 always sends it, and its signature covers it: a replayed delivery cannot lose it.
    timestamp_ms: StrictInt | None = Field(None, alias="eventTimestamp")


class _S3Object(BaseModel):
    key: StrictStr
    size: StrictInt | None = None
    etag: StrictStr | None = Field(None, alias="eTag")
    version_id: StrictStr | None = Field(None, alias="versionId")


class _S3Entity(BaseModel):
    object: _S3Object


class _S3Created(BaseModel):  # tests/events/s3_object_created.json
    time: AwareDatetime | None = Field(None, alias="eventTime")
    s3: _S3Entity


# One created event: the item verbatim (what the queues carry), its ObjectEvent, its time (epoch
# seconds; None when the sender gave none: B2 and S3 always do).
Created = tuple[dict[str, Any], ObjectEvent, float | None]


def parse_events(body: bytes | str | dict[str, Any]) -> list[ObjectEvent]:
    """Object-created events in the payload, in order; other event types are ignored."""
    _, created = _created_items(body)
    return [event for _, event, _ in created]


def without_stale(body: bytes | str | dict[str, Any], now: float, max_age_s: float) -> tuple[dict[str, Any], int]:
    """The payload without its created events older than `max_age_s`, and how many were dropped.

    Why: the ledger forgets finished jobs (DynamoDB TTL), so an old delivery replayed after that
    (validly signed: it is B2's own) would launch the job again. An event older than the ledger can
    remember is therefore never acted on. Callers still answer 2xx for it: B2 redelivers anything
    else, so a 4xx would bring the same old delivery back again and again."""
    payload = load_payload(body)
    field, created = _created_items(payload)
    stale = [(item, event, now - at) for item, event, at in created if at is not None and now - at > max_age_s]
    for _, event, age in stale:
        logger.warning("refused an event older than %.0f s", max_age_s,
                       extra={"key": event.key, "age_s": round(age), "source": event.source})
    if not stale:
        return payload, 0
    refused = {id(item) for item, _, _ in stale}
    return {**payload, field: [item for item in payload[field] if id(item) not in refused]}, len(stale)


def regroup(body: bytes | str | dict[str, Any], keep: Callable[[ObjectEvent], bool],
            max_bytes: int = SQS_MESSAGE_MAX_BYTES) -> tuple[list[str], int]:
    """The created events `keep` accepts, as payloads in the provider's own shape (B2 `events` or
    S3 `Records`, each event verbatim) of at most `max_bytes` each: one queue message apiece, however
    many events one delivery carries. Also how many events were kept."""
    field, created = _created_items(body)
    kept = [item for item, event, _ in created if keep(event)]
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
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, or nested beyond reason
        raise PermanentError("event body is not JSON") from exc
    if not isinstance(payload, dict):
        raise PermanentError("event body is not a JSON object")
    return payload


def _created_items(body: bytes | str | dict[str, Any]) -> tuple[str, list[Created]]:
    """The payload's field (`events` or `Records`) and its object-created events, all validated."""
    payload = load_payload(body)
    if "events" in payload:  # Backblaze B2 event notifications
        field, type_field, prefix, parse = "events", "eventType", B2_CREATED_PREFIX, _b2
    elif "Records" in payload:  # S3 event notifications
        field, type_field, prefix, parse = "Records", "eventName", S3_CREATED_PREFIX, _s3
    else:
        raise PermanentError("unknown event payload (want B2 'events' or S3 'Records')")
    items = payload[field]
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise PermanentError(f"event payload: '{field}' is not a list of objects")
    created = []
    for n, item in enumerate(items):
        kind = item.get(type_field)
        if isinstance(kind, str) and kind.startswith(prefix):
            try:
                created.append((item, *parse(item)))
            except ValidationError as exc:  # field names and reasons only: values are the sender's
                where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
                raise PermanentError(f"event payload: {field}[{n}] is malformed: {where}") from None
    return field, created


def route(event: ObjectEvent, deps: Deps) -> object:
    """Manifests finish jobs; everything else may start one (on_object_created skips non-inputs)."""
    if deps.layout.is_manifest(event.key):
        return on_manifest_key(event.key, deps)
    return on_object_created(event, deps)


def _b2(e: dict[str, Any]) -> tuple[ObjectEvent, float | None]:
    m = _B2Created.model_validate(e)
    at = m.timestamp_ms / 1000 if m.timestamp_ms is not None else None
    return ObjectEvent(key=m.key, size=m.size, version_id=m.version_id, source="webhook"), at


def _s3(r: dict[str, Any]) -> tuple[ObjectEvent, float | None]:
    m = _S3Created.model_validate(r)
    obj = m.s3.object
    etag = f'"{obj.etag}"' if obj.etag and not obj.etag.startswith('"') else obj.etag
    return ObjectEvent(key=unquote_plus(obj.key), etag=etag, size=obj.size, version_id=obj.version_id,
                       source="s3-event"), m.time.timestamp() if m.time else None
