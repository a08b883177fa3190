"""on_job_finished: a manifest was written (object event, callback, or the reaper found it).

Success only when the manifest is valid, says succeeded, and HEAD of the result agrees with its ETag
(an opaque string) and size every time over a short window. Then the instance is destroyed.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from handlers import jobs
from handlers.deps import Deps
from vastdrop.ledger.base import JobRecord
from vastdrop.manifest import Manifest
from vastdrop.states import JobState

logger = logging.getLogger(__name__)
S = JobState
ACTIVE = (S.LAUNCHING, S.RUNNING)


def read_manifest(record: JobRecord, deps: Deps) -> Manifest | None | str:
    """The manifest for this job's result key, None if absent, or a string saying why it is unusable."""
    raw = deps.outputs.get_bytes(jobs.manifest_key(record, deps))
    if raw is None:
        return None
    try:
        return Manifest.from_json(raw)
    except ValidationError as exc:
        return f"invalid manifest: {exc.error_count()} validation errors"


def on_manifest_key(manifest_key: str, deps: Deps) -> str:
    """Entry point for a manifest object event: find the job by the id inside the manifest."""
    raw = deps.outputs.get_bytes(manifest_key)
    if raw is None:
        return "manifest vanished"
    try:
        job_id = Manifest.from_json(raw).job_id
    except ValidationError:
        return "invalid manifest"
    return on_job_finished(job_id, deps)


def on_job_finished(job_id: str, deps: Deps) -> str:
    record = deps.ledger.get(job_id)
    if record is None:
        return "unknown job"
    log = jobs.log_for(record)
    if record.state.is_terminal() or record.state == S.RETRYING:
        return f"already {record.state.value}"
    if record.state not in ACTIVE:
        return f"busy ({record.state.value})"
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
    if manifest.status == "succeeded":
        problem = _verify_result(manifest, verifying, deps)
        jobs.stop_instance(verifying, verifying.instance_id, deps, "succeeded" if problem is None else "result mismatch")
        if problem is None:
            deps.ledger.transition(job_id, S.VERIFYING, S.SUCCEEDED, result_etag=manifest.result.etag,
                                   finished_at=deps.clock(), error=None, error_kind=None)
            log.info("succeeded: result %s verified", manifest.result.etag)
            return "succeeded"
        log.error("manifest does not match the stored result: %s", problem)
        jobs.end_attempt(verifying, deps, S.VERIFYING, "transient", problem)
        return "verification failed"
    error = manifest.error
    kind = error.kind.value if error else "internal"
    jobs.stop_instance(verifying, verifying.instance_id, deps, f"job failed ({kind})")
    jobs.end_attempt(verifying, deps, S.VERIFYING, kind, error.message if error else "failed without an error")
    return f"failed ({kind})"


def _verify_result(manifest: Manifest, record: JobRecord, deps: Deps) -> str | None:
    """Re-check a few times over a short window: a result overwritten after its manifest fails."""
    key = jobs.result_key(record, deps)
    cfg = deps.config
    for check in range(cfg.verify_attempts):
        if check:
            deps.sleep(cfg.verify_interval_s)
        info = deps.outputs.head(key)
        if info is None:
            return "the result object is missing"
        if info.etag != manifest.result.etag or info.size != manifest.result.size:
            return (f"stored result has ETag {info.etag} size {info.size}, manifest says "
                    f"{manifest.result.etag} size {manifest.result.size}")
    return None
