"""AWS Lambda adapters (template.yaml): each turns its event into calls of the same pure handlers the
local watcher uses.

    webhook     API Gateway HTTP API (payload 2.0), POST /webhook: B2 event notifications. Verifies
                the signature over the raw body, then enqueues: new inputs to the launch queue,
                manifests to the completion queue, each event verbatim in B2's own payload shape
                (split across messages when a delivery is larger than SQS takes). It answers within
                B2's few-second timeout because it does nothing else.
    launcher    SQS batch from the launch queue -> on_object_created per event; failed messages are
                reported (ReportBatchItemFailures) and come back, then go to the dead-letter queue.
    completion  SQS batch from the completion queue (manifest events) -> on_manifest_key; or a
                job's signed callback, POST /callback -> on_job_finished; or S3 notifications.

Every event in a batch is handled on its own: one that raises is logged with its key and marks only
its own message as failed (a redelivered message repeats its other events, which are idempotent:
the ledger's claim); the loop goes on. Events older than `event_max_age_s` are never acted on.
    reaper      EventBridge schedule -> reap.

Settings are read once per cold start, in `_rt()`, the one place that touches the environment:
WATCHER_* variables plus the Secrets Manager secret named by WATCHER_SECRET_ID. The handlers'
dependencies are built from them on first use and kept while the container stays warm.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from handlers import callback
from handlers.created import ObjectEvent, on_object_created
from handlers.deps import Deps
from handlers.events import load_payload, parse_events, regroup, without_stale
from handlers.finished import on_manifest_key
from handlers.reaper import reap
from vastdrop import signing
from vastdrop.errors import ConfigError, PermanentError, VastdropError
from vastdrop.layout import Layout
from vastdrop.location import Location
from vastdrop.settings import ControlSettings

logger = logging.getLogger(__name__)

LAMBDA_STATE_DIR = "/tmp/vastdrop"  # the only writable path on Lambda; nothing durable lives here
MAX_BODY_BYTES = 1 << 20  # as `watcher serve`: B2 deliveries are small, a manifest is at most 1 MiB


class ColdStartError(ConfigError):
    """The function cannot configure itself (settings, secret); nothing was processed."""


@contextmanager
def _configuring() -> Iterator[None]:
    """Configuration failures as ColdStartError, logged with field names and reasons only (values
    may be secrets)."""
    from pydantic import ValidationError

    try:
        yield
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        logger.error("cold start failed: invalid settings: %s", fields)
        raise ColdStartError(f"invalid settings: {fields}") from None
    except VastdropError as exc:
        logger.error("cold start failed: %s", exc)
        raise ColdStartError(str(exc)) from None


@dataclass
class Runtime:
    """What a warm container keeps. The handlers' dependencies are built on first use: the webhook
    never needs them (it classifies keys by the layout alone), and building them (S3 and DynamoDB
    clients, the Vast SDK) is about half of a cold start; only the webhook needs the SQS client."""

    settings: ControlSettings
    layout: Layout

    @functools.cached_property
    def deps(self) -> Deps:
        from vastdrop.compose import build_deps
        from vastdrop.mp4probe import probe_source

        with _configuring():
            # The bundle has no PyAV: MP4 and MOV inputs are probed for segments from their index.
            return dataclasses.replace(build_deps(self.settings), probe=probe_source)

    @functools.cached_property
    def sqs(self) -> Any:  # boto3 SQS client: the webhook's only
        import boto3

        return boto3.client("sqs")

    def secret(self, name: str) -> str | None:
        value = getattr(self.settings, name)
        return value.get_secret_value() if value is not None else None


_runtime: Runtime | None = None


def configure(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


def _rt() -> Runtime:
    global _runtime
    if _runtime is None:  # cold start
        from vastdrop import logs
        from vastdrop.compose import register_secrets
        from vastdrop.settings import load_settings

        logs.configure()
        with _configuring():
            settings = load_settings(state=LAMBDA_STATE_DIR)
            register_secrets(settings)
            (_, input_prefix), (_, output_prefix) = map(Location.root_and_prefix, (settings.input, settings.output))
        _runtime = Runtime(settings=settings, layout=Layout(input_prefix=input_prefix, output_prefix=output_prefix))
    return _runtime


def _http(status: int, payload: dict) -> dict:
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(payload)}


def _raw_body(event: dict) -> bytes:
    """The request body as sent, at most MAX_BODY_BYTES; PermanentError (-> 400) otherwise."""
    body = event.get("body") or ""
    if not isinstance(body, str) or len(body) > 2 * MAX_BODY_BYTES:  # base64 or UTF-8: within 2x of the bytes
        raise PermanentError("body too large")
    try:
        raw = base64.b64decode(body, validate=True) if event.get("isBase64Encoded") else body.encode()
    except (ValueError, UnicodeError):
        raise PermanentError("body is not valid base64 or text") from None
    if len(raw) > MAX_BODY_BYTES:
        raise PermanentError("body too large")
    return raw


def _header(event: dict, name: str) -> str | None:
    return {k.lower(): v for k, v in (event.get("headers") or {}).items()}.get(name.lower())


def _is_sqs_batch(event: dict) -> bool:
    records = event.get("Records") or []
    return bool(records) and all(r.get("eventSource") == "aws:sqs" for r in records)


def _answers_500_when_misconfigured(entry: Callable[[dict], dict]) -> Callable[..., dict]:
    """For HTTP entries: a function that cannot configure itself answers 500 (B2 and jobs retry;
    the log says what is wrong). Queue and schedule entries let ColdStartError raise instead, so
    their messages come back and end in the dead-letter queue rather than being lost."""

    @functools.wraps(entry)
    def answered(event: dict, context: Any = None) -> dict:
        try:
            return entry(event)
        except ColdStartError:
            return _http(500, {"error": "the function is misconfigured; see its log"})

    return answered


@_answers_500_when_misconfigured
def webhook(event: dict) -> dict:
    """HTTP API -> verify B2's signature over the raw body -> enqueue -> 202."""
    rt = _rt()
    try:
        body = _raw_body(event)
    except PermanentError as exc:
        return _http(400, {"error": str(exc)})
    if not signing.verify(rt.secret("webhook_secret") or "", body, _header(event, signing.B2_SIGNATURE_HEADER)):
        return _http(401, {"error": "bad or missing signature"})
    layout = rt.layout
    try:  # signed by B2 but malformed: 400 (a 500 would have B2 deliver it again and again)
        payload, stale = without_stale(load_payload(body), time.time(), rt.settings.event_max_age_s)
        total = len(parse_events(payload))
        # Each queue gets the events that are its work, in B2's own shape, split to fit SQS.
        to_launch, inputs = regroup(payload, lambda e: layout.is_input(e.key, e.size))
        to_complete, manifests = regroup(payload, lambda e: layout.is_manifest(e.key))
    except PermanentError as exc:
        return _http(400, {"error": str(exc)})
    try:
        for queue_url, bodies in ((rt.settings.launch_queue_url, to_launch),
                                  (rt.settings.completion_queue_url, to_complete)):
            for message in bodies:
                rt.sqs.send_message(QueueUrl=queue_url, MessageBody=message)
    except Exception as exc:  # B2 retries a failed delivery; say so rather than crash
        logger.error("could not enqueue webhook events: %s", type(exc).__name__)
        return _http(503, {"error": "could not enqueue; retry"})
    # Events too old to act on count as ignored, and the delivery is still answered 202: B2 retries
    # anything else, so refusing it would only bring the same old delivery back.
    return _http(202, {"inputs": inputs, "manifests": manifests, "ignored": total - inputs - manifests + stale})


class _SomeEventsFailed(Exception):
    """Some of a message's events raised (each logged on its own); the message is reported failed."""


def _each_event(body: str | dict, deps: Deps, handle: Callable[[ObjectEvent], object]) -> None:
    """`handle` for each fresh created event, each on its own: one that raises is logged with its
    key, the others still run; then, if any raised, the message as a whole fails (comes back)."""
    payload, _ = without_stale(load_payload(body), deps.clock(), deps.config.event_max_age_s)
    events = parse_events(payload)
    failed = 0
    for obj in events:
        try:
            handle(obj)
        except Exception:
            failed += 1
            logger.exception("event failed", extra={"key": obj.key, "source": obj.source})
    if failed:
        raise _SomeEventsFailed(f"{failed} of {len(events)} events failed")


def _each_message(event: dict, handle: Callable[[str], object]) -> dict:
    """Run `handle(body)` per SQS message; report the ones that failed so only they come back."""
    failures = []
    for message in event.get("Records", []):
        try:
            handle(message["body"])
        except (PermanentError, _SomeEventsFailed) as exc:  # already logged, or never succeeds: the DLQ keeps it
            logger.error("message %s failed: %s", message.get("messageId"), exc)
            failures.append({"itemIdentifier": message["messageId"]})
        except Exception:
            logger.exception("message %s failed", message.get("messageId"))
            failures.append({"itemIdentifier": message["messageId"]})
    return {"batchItemFailures": failures}


def launcher(event: dict, context: Any = None) -> dict:
    """Launch queue batch -> on_object_created per new input (manifests are the completion's)."""
    deps = _rt().deps

    def launch(obj: ObjectEvent) -> None:
        if not deps.layout.is_manifest(obj.key):
            on_object_created(obj, deps)

    return _each_message(event, lambda body: _each_event(body, deps, launch))


def completion(event: dict, context: Any = None) -> dict:
    """Completion queue batch, S3 notification, or a job's signed callback over HTTP."""
    if "Records" not in event:
        return _callback(event)
    deps = _rt().deps

    def complete(obj: ObjectEvent) -> None:
        if deps.layout.is_manifest(obj.key):
            on_manifest_key(obj.key, deps)

    if _is_sqs_batch(event):
        return _each_message(event, lambda body: _each_event(body, deps, complete))
    # An S3 bucket notifying this function directly (asynchronously): raising has Lambda retry it.
    _each_event(event, deps, complete)
    return {"ok": True}


@_answers_500_when_misconfigured
def _callback(event: dict) -> dict:
    """POST /callback: a job's manifest, signed with that job's own key (handlers/callback.py)."""
    rt = _rt()
    try:
        body = _raw_body(event)
        job_id = callback.verified_job_id(rt.secret("callback_secret"), body,
                                          _header(event, signing.CALLBACK_SIGNATURE_HEADER))
    except PermanentError as exc:
        return _http(400, {"error": str(exc)})
    except callback.CallbackRefused as refused:
        return _http(refused.status, {"error": refused.reason})
    callback.act(job_id, rt.deps)
    return _http(202, callback.ACCEPTED)


def reaper(event: dict, context: Any = None) -> dict:
    """EventBridge schedule -> one reaper pass."""
    actions = dict(reap(_rt().deps))
    logger.info("reaper pass %s: %s", event.get("id", "-"), actions or "nothing to do")
    return {"actions": actions}
