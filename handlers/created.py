"""on_object_created: an input object appeared -> at most one job per object version and params."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from handlers import jobs
from handlers.deps import Deps
from handlers.finished import load_manifest
from vastdrop.errors import PermanentError
from vastdrop.jobid import job_id_for
from vastdrop.ledger.base import JobRecord
from vastdrop.manifest import Manifest
from vastdrop.states import JobState

logger = logging.getLogger(__name__)
MAX_KEY_BYTES = 1024  # S3's and B2's limit on an object name
MAX_NAME_BYTES = 255  # one path component on common local file systems


@dataclass(frozen=True)
class ObjectEvent:
    key: str
    etag: str | None = None
    size: int | None = None
    version_id: str | None = None
    source: str = "poll"  # poll | webhook | s3-event | replay
    # A poller that lists the whole prefix already knows the other inputs writing the same result:
    # it passes the first of them (or None) and saves a LIST request per new key.
    rivals_known: bool = False
    first_rival: str | None = None


@dataclass(frozen=True)
class Outcome:
    action: str  # launched | skipped | duplicate | resumed | retrying | failed | lost-race
    job_id: str | None = None
    reason: str = ""


def on_object_created(event: ObjectEvent, deps: Deps, *, force: bool = False) -> Outcome:
    layout = deps.layout
    if not layout.is_input(event.key, event.size):
        return Outcome("skipped", reason="not an input (folder marker, empty, hidden or outside the prefix)")
    if len(event.key.encode()) > MAX_KEY_BYTES:  # no store holds it: a forged or broken event
        logger.warning("skipped a key of %d bytes (over %d)", len(event.key.encode()), MAX_KEY_BYTES)
        return Outcome("skipped", reason=f"key longer than {MAX_KEY_BYTES} bytes")
    try:
        deps.inputs.url(event.key)  # a key the store cannot hold safely (file:// with `..`, NUL)
    except PermanentError as exc:
        logger.warning("skipped an unusable key: %s", exc)
        return Outcome("skipped", reason=str(exc)[:300])
    etag, size = event.etag, event.size
    if etag is None or size is None:  # events from some sources carry neither: ask the store
        info = deps.inputs.head(event.key)
        if info is None:
            return Outcome("skipped", reason="object no longer exists")
        etag, size = info.etag, info.size
        if not layout.is_input(event.key, size):
            return Outcome("skipped", reason="empty object")
    params = deps.config.params()
    # The ETag, not the version id: every event source (poll, webhook, replay) must agree on the id.
    job_id = job_id_for(deps.inputs.bucket, event.key, etag, params)
    record = JobRecord(job_id=job_id, bucket=deps.inputs.bucket, key=event.key, input_url=deps.inputs.url(event.key),
                       input_etag=etag, input_size=size, params=params)
    log = jobs.log_for(record)
    if deps.ledger.claim(record):
        log.info("claimed job for %s (%s)", event.key, event.source, extra={"source": event.source})
        refusal = _key_too_long(event.key, job_id, deps) or (
            (_collision_text(event.first_rival, event.key, deps) if event.first_rival else None)
            if event.rivals_known else _output_collision(event.key, deps))
        if refusal:  # e.g. two inputs would write one result: refuse rather than overwrite silently
            deps.ledger.transition(job_id, JobState.QUEUED, JobState.FAILED, error_kind="bad_input",
                                   error=refusal, finished_at=deps.clock())
            log.error(refusal)
            return Outcome("failed", job_id, reason=refusal)
        if not force and (published := _already_published(record, deps)) is not None:
            return published
        return _launched(jobs.launch(_past_old_staging(record, deps), deps, JobState.QUEUED), job_id)
    existing = deps.ledger.get(job_id)
    if existing is None:
        return Outcome("lost-race", job_id)
    if force and existing.state.is_terminal():
        # A new run whose attempts have new numbers, so new staging keys: nothing an earlier attempt
        # (or a host still holding its URLs) wrote can stand in for this run's work.
        fresh = existing.attempt + 1
        requeued = deps.ledger.transition(job_id, existing.state, JobState.QUEUED, attempt=fresh,
                                          first_attempt=fresh, preemptions=0, segments=None, segment=None, error=None, error_kind=None,
                                          finished_at=None, instance_id=None, next_attempt_at=None)
        if requeued is None:
            return Outcome("lost-race", job_id)
        log.info("replay --force: job requeued from %s", existing.state.value)
        return _launched(jobs.launch(requeued, deps, JobState.QUEUED), job_id)
    if existing.state == JobState.QUEUED and (existing.next_attempt_at or 0) <= deps.clock():
        # Resume first: a claim whose launch never happened (a crash in between) is launched now.
        resumed = jobs.launch(existing, deps, JobState.QUEUED)
        return Outcome("resumed", job_id) if resumed else Outcome("lost-race", job_id)
    return Outcome("duplicate", job_id, reason=f"job already {existing.state.value}")


def _already_published(record: JobRecord, deps: Deps) -> Outcome | None:
    """A claim for a job whose final manifest already describes this very input version and params
    (the ledger forgot it: DynamoDB's TTL, a new state file) is succeeded again, not relaunched.
    Final manifests are written only by the control plane, after verification (finished.publish)."""
    manifest = load_manifest(jobs.manifest_key(record, deps), deps)
    if not isinstance(manifest, Manifest) or not manifest.succeeded or manifest.job_id != record.job_id \
            or manifest.input.etag != record.input_etag or manifest.params != record.params:
        return None
    result = deps.outputs.head(jobs.result_key(record, deps))
    if result is None or result.etag != manifest.result.etag:
        return None  # published once, since changed or removed: process it again
    done = deps.ledger.transition(record.job_id, JobState.QUEUED, JobState.SUCCEEDED, result_etag=result.etag,
                                  finished_at=deps.clock())
    if done is None:
        return Outcome("lost-race", record.job_id)
    jobs.log_for(record).info("already published (%s): not launched again", result.etag)
    return Outcome("duplicate", record.job_id, reason="already published for this input version")


def _past_old_staging(record: JobRecord, deps: Deps) -> JobRecord:
    """A new claim for a job id the ledger forgot (TTL, a new state file) must not reuse an attempt
    number whose staging folder still holds what an earlier run's host wrote: its attempts start
    after the highest one found there, and that old staging is removed."""
    root = deps.layout.staging_root + record.job_id + "/"
    folders = {key[len(root):].split("/", 1)[0] for key, _ in deps.outputs.list(root)}
    attempts = {int(f) for f in folders if f.isascii() and f.isdigit()}
    if not attempts:
        return record
    fresh = max(attempts) + 1
    deps.outputs.delete_prefix(root)
    jobs.log_for(record).warning("old staging found for attempts up to %d: removed; this run starts at %d",
                                 fresh - 1, fresh)
    return deps.ledger.update(record.job_id, record.version, attempt=fresh, first_attempt=fresh, preemptions=0) or record


def _key_too_long(key: str, job_id: str, deps: Deps) -> str | None:
    """Every key the job would need must fit the store (S3 and B2: 1024 bytes of UTF-8; a local
    file name 255 bytes): refused at claim rather than failing at the end of a paid run."""
    layout = deps.layout
    result = layout.result_key(key)
    keys = (result, layout.manifest_key(result), layout.staged_manifest_key(job_id, 999),
            layout.staged_result_key(job_id, 999), layout.log_key(job_id))
    for derived in keys:
        if len(derived.encode()) > MAX_KEY_BYTES:
            return f"derived key too long for the store ({len(derived.encode())} > {MAX_KEY_BYTES} bytes): {derived[:80]}…"
        if deps.outputs.is_local and any(len(part.encode()) > MAX_NAME_BYTES for part in derived.split("/")):
            return f"derived file name too long (over {MAX_NAME_BYTES} bytes): {derived[:80]}…"
    return None


def _output_collision(key: str, deps: Deps) -> str | None:
    """Inputs that differ only by extension map to one result key. The first in key order keeps it."""
    layout = deps.layout
    target = layout.result_key(key)
    rivals = sorted(k for k in deps.inputs.same_stem(key)
                    if k != key and layout.is_input(k) and layout.result_key(k) == target)
    first = min([key, *rivals])
    return None if first == key else _collision_text(first, key, deps)


def _collision_text(first: str, key: str, deps: Deps) -> str:
    return (f"output collision: {first} and {key} both map to {deps.layout.result_key(key)}; "
            f"{first} keeps it (rename one of them)")


def _launched(record: JobRecord | None, job_id: str) -> Outcome:
    if record is None:
        return Outcome("lost-race", job_id)
    return Outcome(record.state.value if record.state != JobState.RUNNING else "launched", job_id)
