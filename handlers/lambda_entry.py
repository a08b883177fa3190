"""AWS Lambda adapters (template.yaml): each parses its event and delegates to a pure handler.

The environment is read once per container, in the composition root (vastdrop.compose); tests call
`configure()` with dependencies pointed at loopback servers instead.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from typing import Any

from handlers.deps import Deps
from handlers.events import parse_events, route
from handlers.finished import manifest_job_id, on_job_finished, on_manifest_key
from handlers.reaper import reap
from vastdrop import signing
from vastdrop.errors import PermanentError

logger = logging.getLogger(__name__)



@dataclass
class Runtime:
    deps: Deps
    sqs: Any  # boto3 SQS client
    queue_url: str | None
    webhook_secret: str | None
    callback_secret: str | None


_runtime: Runtime | None = None


def configure(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


def _rt() -> Runtime:
    global _runtime
    if _runtime is None:  # cold start: the one place the environment is read
        import boto3

        from vastdrop import logs
        from vastdrop.compose import build_deps
        from vastdrop.settings import ControlSettings

        logs.configure()
        settings = ControlSettings(state="/tmp/vastdrop")
        _runtime = Runtime(
            deps=build_deps(settings), sqs=boto3.client("sqs"), queue_url=settings.queue_url,
            webhook_secret=settings.webhook_secret.get_secret_value() if settings.webhook_secret else None,
            callback_secret=settings.callback_secret.get_secret_value() if settings.callback_secret else None,
        )
    return _runtime


def _http(status: int, payload: dict) -> dict:
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(payload)}


def _raw_body(event: dict) -> bytes:
    body = event.get("body") or ""
    return base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()


def _header(event: dict, name: str) -> str | None:
    return {k.lower(): v for k, v in (event.get("headers") or {}).items()}.get(name.lower())


def webhook(event: dict, context: Any = None) -> dict:
    """HTTP API -> verify B2's signature over the raw body -> enqueue to SQS -> 202."""
    rt = _rt()
    body = _raw_body(event)
    if not signing.verify(rt.webhook_secret or "", body, _header(event, signing.B2_SIGNATURE_HEADER)):
        return _http(401, {"error": "bad or missing signature"})
    try:
        events = parse_events(body)
    except PermanentError as exc:
        return _http(400, {"error": str(exc)})
    if events:
        rt.sqs.send_message(QueueUrl=rt.queue_url, MessageBody=body.decode())
    return _http(202, {"accepted": len(events)})


def launcher(event: dict, context: Any = None) -> dict:
    """SQS batch -> on_object_created / on_manifest_key per event; failed messages go back (then DLQ)."""
    rt = _rt()
    failures = []
    for message in event.get("Records", []):
        try:
            for obj in parse_events(message["body"]):
                route(obj, rt.deps)
        except PermanentError as exc:  # a malformed message never succeeds: let the DLQ keep it
            logger.error("bad message %s: %s", message.get("messageId"), exc)
            failures.append({"itemIdentifier": message["messageId"]})
        except Exception:
            logger.exception("message %s failed", message.get("messageId"))
            failures.append({"itemIdentifier": message["messageId"]})
    return {"batchItemFailures": failures}


def completion(event: dict, context: Any = None) -> dict:
    """Manifest object events (S3 notifications) or a job's signed callback over HTTP."""
    rt = _rt()
    if "Records" in event:
        for obj in parse_events(event):
            if rt.deps.layout.is_manifest(obj.key):
                on_manifest_key(obj.key, rt.deps)
        return {"ok": True}
    body = _raw_body(event)
    if not signing.verify(rt.callback_secret or "", body, _header(event, signing.CALLBACK_SIGNATURE_HEADER)):
        return _http(401, {"error": "bad or missing signature"})
    job_id = manifest_job_id(body)
    if job_id is None:
        return _http(400, {"error": "not a manifest"})
    return _http(200, {"result": on_job_finished(job_id, rt.deps)})


def reaper(event: dict, context: Any = None) -> dict:
    return {"actions": dict(reap(_rt().deps))}
