"""on_job_finished: a manifest was written (object event, callback, or the reaper found it).

The manifest is the commit point: the job is done with its GPU, so the instance is destroyed first,
whatever the outcome. A success manifest is then verified: HEAD of the result must agree with its
ETag (an opaque string) and size at every check over a short window; the first check happens here,
the later ones on the reaper's next ticks (`continue_verification`), so nothing sleeps and nothing
bills while we wait. Only then is the job succeeded.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from handlers import jobs
from handlers.deps import Deps
from vastdrop.errors import PermanentError
from vastdrop.ledger.base import JobRecord
from vastdrop.manifest import MAX_MANIFEST_BYTES, Manifest
from vastdrop.states import JobState

logger = logging.getLogger(__name__)
S = JobState
ACTIVE = (S.LAUNCHING, S.RUNNING)


def read_manifest(record: JobRecord, deps: Deps) -> Manifest | None | str:
    """The manifest for this job's result key, None if absent, or a string saying why it is unusable."""
    try:
        raw = deps.outputs.get_bytes(jobs.manifest_key(record, deps), MAX_MANIFEST_BYTES)
    except PermanentError:  # the host wrote something huge: that job's problem alone
        return f"invalid manifest: larger than {MAX_MANIFEST_BYTES} bytes"
    if raw is None:
        return None
    try:
        return Manifest.from_json(raw)
    except ValidationError as exc:
        return f"invalid manifest: {exc.error_count()} validation errors"


def manifest_job_id(raw: bytes | str) -> str | None:
    """The job a manifest body belongs to (a manifest object, or a job's callback); None if not one."""
    try:
        return Manifest.from_json(raw).job_id
    except ValidationError:
        return None


def on_manifest_key(manifest_key: str, deps: Deps) -> str:
    """Entry point for a manifest object event: find the job by the id inside the manifest."""
    try:
        raw = deps.outputs.get_bytes(manifest_key, MAX_MANIFEST_BYTES)
    except PermanentError:
        return "invalid manifest"
    if raw is None:
        return "manifest vanished"
    job_id = manifest_job_id(raw)
    return "invalid manifest" if job_id is None else on_job_finished(job_id, deps)


def on_job_finished(job_id: str, deps: Deps) -> str:
    record = deps.ledger.get(job_id)
    if record is None:
        return "unknown job"
    if record.state == S.VERIFYING:
        return continue_verification(record, deps)
    if record.state not in ACTIVE:
        return f"already {record.state.value}"
    manifest = read_manifest(record, deps)
    if manifest is None:
        return "no manifest yet"
    if isinstance(manifest, Manifest) and (manifest.job_id != job_id or manifest.attempt < record.attempt):
        return "manifest of an earlier attempt"
    verifying = deps.ledger.transition(job_id, record.state, S.VERIFYING)
    if verifying is None:
        return "lost race"
    if isinstance(manifest, str):
        jobs.stop_instance(verifying, verifying.instance_id, deps, manifest)
        jobs.end_attempt(verifying, deps, S.VERIFYING, "internal", manifest)
        return manifest
    if manifest.status != "succeeded":
        error = manifest.error
        kind = error.kind.value if error else "internal"
        jobs.stop_instance(verifying, verifying.instance_id, deps, f"job failed ({kind})")
        jobs.end_attempt(verifying, deps, S.VERIFYING, kind, error.message if error else "failed without an error")
        return f"failed ({kind})"
    jobs.stop_instance(verifying, verifying.instance_id, deps, "manifest written",
                       bytes_up=manifest.result.size if manifest.result else 0,
                       job_s=_number(manifest.timings_s.get("total")))
    return continue_verification(deps.ledger.get(job_id) or verifying, deps, manifest)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def continue_verification(record: JobRecord, deps: Deps, manifest: Manifest | None = None) -> str:
    """One check of a verifying job; succeeded once every check over the window agreed."""
    log = jobs.log_for(record)
    if manifest is None:
        found = read_manifest(record, deps)
        manifest = found if isinstance(found, Manifest) else None
    problem = "the manifest disappeared or became invalid" if manifest is None else _check_result(manifest, record, deps)
    if problem is not None:
        log.error("manifest does not match the stored result: %s", problem)
        jobs.end_attempt(record, deps, S.VERIFYING, "transient", problem)
        return "verification failed"
    cfg = deps.config
    window_s = cfg.verify_interval_s * max(0, cfg.verify_attempts - 1)
    if deps.clock() - record.updated_at < window_s:
        return "verifying"
    done = deps.ledger.transition(record.job_id, S.VERIFYING, S.SUCCEEDED, result_etag=manifest.result.etag,
                                  finished_at=deps.clock(), error=None, error_kind=None)
    if done is None:
        return "lost race"
    log.info("succeeded: result %s verified", manifest.result.etag)
    return "succeeded"


def _check_result(manifest: Manifest, record: JobRecord, deps: Deps) -> str | None:
    info = deps.outputs.head(jobs.result_key(record, deps))
    if info is None:
        return "the result object is missing"
    if info.etag != manifest.result.etag or info.size != manifest.result.size:
        return (f"stored result has ETag {info.etag} size {info.size}, manifest says "
                f"{manifest.result.etag} size {manifest.result.size}")
    return None
