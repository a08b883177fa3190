"""on_job_finished: a job's manifest was written (object event, callback, or the reaper found it).

A job writes only into its own attempt's staging folder (ARCHITECTURE.md sections 4, 5 and 8). Its
manifest is its commit point: the job is done with its GPU, so the instance is destroyed first,
whatever the manifest says. The manifest must then belong to this very job, attempt and input
version. A success is verified: HEAD of the staged result must agree with the manifest's ETag (an
opaque string) and size at every check over a short window; the first check happens here, the later
ones on the reaper's next ticks (`continue_verification`), so nothing sleeps and nothing bills while
we wait. Only then is it published: a server-side copy of exactly that version to the final result
key, then the final manifest, last, carrying the final object's ETag. A final manifest that says
`succeeded` therefore always describes a verified, published result. Staging is removed after.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from handlers import jobs, segments
from handlers.deps import Deps
from vastdrop import logs
from vastdrop.errors import PermanentError
from vastdrop.ledger.base import JobRecord
from vastdrop.manifest import MAX_MANIFEST_BYTES, Manifest, reported_number
from vastdrop.states import JobState

logger = logging.getLogger(__name__)
S = JobState
ACTIVE = (S.LAUNCHING, S.RUNNING)


def read_manifest(record: JobRecord, deps: Deps) -> Manifest | None | str:
    """The current attempt's staged manifest, None if absent, or a string saying why it is unusable
    (too large, invalid, or about another job, attempt, input version or parameters)."""
    manifest = load_manifest(jobs.staged_manifest_key(record, deps), deps)
    return _not_ours(manifest, record) or manifest if isinstance(manifest, Manifest) else manifest


def load_manifest(key: str, deps: Deps) -> Manifest | None | str:
    """The manifest at `key`, read with a size limit; None if absent, or a string saying why it is
    unusable (too large, invalid)."""
    try:
        raw = deps.outputs.get_bytes(key, MAX_MANIFEST_BYTES)
    except PermanentError:  # the host wrote something huge: that job's problem alone
        return f"invalid manifest: larger than {MAX_MANIFEST_BYTES} bytes"
    if raw is None:
        return None
    try:
        return Manifest.from_json(raw)
    except ValidationError as exc:
        return f"invalid manifest: {exc.error_count()} validation errors"


def _not_ours(manifest: Manifest, record: JobRecord) -> str | None:
    """The host writes the manifest: what it claims must be what the ledger launched."""
    for what, claimed, expected in (("job id", manifest.job_id, record.job_id),
                                    ("attempt", manifest.attempt, record.attempt),
                                    ("input ETag", manifest.input.etag, record.input_etag),
                                    ("params", manifest.params, record.params)):
        if claimed != expected:
            return f"invalid manifest: its {what} is not this job's"
    return None


def manifest_job_id(raw: bytes | str) -> str | None:
    """The job a manifest body says it belongs to (a job's callback); None if not a manifest."""
    try:
        return Manifest.from_json(raw).job_id
    except ValidationError:
        return None


def on_manifest_key(manifest_key: str, deps: Deps) -> str:
    """Entry point for a manifest object event. The key (not the host-written content) says whose
    manifest it is; one from an attempt other than the current one changes nothing."""
    staged = deps.layout.staged_attempt(manifest_key)
    if staged is None:
        return "not a job's manifest"
    job_id, attempt = staged
    record = deps.ledger.get(job_id)
    if record is None:
        return "unknown job"
    if record.attempt != attempt:
        return "manifest of another attempt"
    return on_job_finished(job_id, deps)


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
    verifying = deps.ledger.transition(job_id, record.state, S.VERIFYING)
    if verifying is None:
        return "lost race"
    if isinstance(manifest, str):
        jobs.stop_instance(verifying, verifying.instance_id, deps, manifest)
        jobs.end_attempt(verifying, deps, S.VERIFYING, "internal", manifest)
        return manifest
    if not manifest.succeeded:
        jobs.stop_instance(verifying, verifying.instance_id, deps, f"job failed ({_kind(manifest)})")
        return _failed(verifying, manifest, deps)
    jobs.stop_instance(verifying, verifying.instance_id, deps, "manifest written",
                       bytes_up=manifest.result.size if manifest.result else 0,
                       job_s=reported_number(manifest.timings_s.get("total")))
    return continue_verification(deps.ledger.get(job_id) or verifying, deps, manifest)


def _kind(manifest: Manifest) -> str:
    return manifest.error.kind.value if manifest.error else "internal"


def _failed(record: JobRecord, manifest: Manifest, deps: Deps) -> str:
    """The attempt ends as its failure manifest says (bad input is permanent, the rest retried)."""
    error = manifest.error
    jobs.end_attempt(record, deps, S.VERIFYING, _kind(manifest), error.message if error else "failed without an error")
    return f"failed ({_kind(manifest)})"


def continue_verification(record: JobRecord, deps: Deps, manifest: Manifest | None = None) -> str:
    """One check of a verifying job; published and succeeded once every check over the window agreed."""
    log = jobs.log_for(record)
    if manifest is None:
        found = read_manifest(record, deps)
        manifest = found if isinstance(found, Manifest) else None
    if manifest is not None and not manifest.succeeded:
        # A failure manifest whose first handling was cut short (a crash, a destroy that failed),
        # or a host that rewrote its success meanwhile: the attempt ends as it now says.
        return _failed(record, manifest, deps)
    cfg = deps.config
    # A backstop, never the normal path: a check that keeps failing (a store that stays down) ends the
    # attempt after as long as a whole attempt may take, not forever in `verifying`.
    if deps.clock() - record.updated_at > cfg.job_timeout_s + cfg.verify_interval_s * cfg.verify_attempts:
        jobs.end_attempt(record, deps, S.VERIFYING, "transient", "verification did not finish in time")
        return "verification failed"
    problem = "the manifest disappeared or became invalid" if manifest is None else _check_staged(manifest, record, deps)
    if problem is not None:
        log.error("manifest does not match the staged result: %s", logs.bounded(problem))
        jobs.end_attempt(record, deps, S.VERIFYING, "transient", problem)
        return "verification failed"
    window_s = cfg.verify_interval_s * max(0, cfg.verify_attempts - 1)
    if deps.clock() - record.updated_at < window_s:
        return "verifying"
    if record.parent_id and (problem := segments.unjoinable(record, manifest, deps)) is not None:
        log.error("segment not published: %s", logs.bounded(problem))
        if jobs.attempts_tried(record) < 2:
            jobs.end_attempt(record, deps, S.VERIFYING, "transient", problem)  # a stray host: redone elsewhere
            return "verification failed"
        # Again, on another host: the odd one out may be the published segment, or every host encodes
        # so. More attempts would pay for more segments the join refuses: the job fails now.
        failed = deps.ledger.transition(record.job_id, S.VERIFYING, S.FAILED, error_kind="internal",
                                        error=logs.bounded(f"{problem} (again, on another host)", 500),
                                        finished_at=deps.clock())
        if failed is not None:
            jobs.remove_staging(failed, deps)
            segments.on_segment_done(failed, deps)  # its whole job fails, its other segments stopped
        return "verification failed"
    final_etag = publish(record, manifest, deps)
    if final_etag is None:
        jobs.end_attempt(record, deps, S.VERIFYING, "transient", "the published copy differs from the staged result")
        return "verification failed"
    done = deps.ledger.transition(record.job_id, S.VERIFYING, S.SUCCEEDED, result_etag=final_etag,
                                  finished_at=deps.clock(), error=None, error_kind=None)
    if done is None:
        return "lost race"
    jobs.remove_staging(done, deps)
    log.info("succeeded: result %s verified and published as %s", manifest.result.etag, final_etag)
    if done.parent_id:  # a segment: its job may now be joined
        segments.on_segment_done(done, deps)
    return "succeeded"


def _check_staged(manifest: Manifest, record: JobRecord, deps: Deps) -> str | None:
    info = deps.outputs.head(jobs.staged_result_key(record, deps))
    if info is None:
        return "the staged result is missing"
    if info.etag != manifest.result.etag or info.size != manifest.result.size:
        return (f"staged result has ETag {info.etag} size {info.size}, manifest says "
                f"{manifest.result.etag} size {manifest.result.size}")
    return None


def publish(record: JobRecord, manifest: Manifest, deps: Deps) -> str | None:
    """Copy exactly the verified version (If-Match) to the final key, then write the final manifest,
    last. Returns the final object's ETag, or None if the copy is not what was verified. Running it
    twice (a crash in between, a second handler) gives the same result: both writes are idempotent."""
    final_key = jobs.result_key(record, deps)
    copied = deps.outputs.copy(jobs.staged_result_key(record, deps), final_key, if_match=manifest.result.etag)
    if copied.size != manifest.result.size:
        return None
    result = manifest.result.model_copy(update={"url": deps.outputs.url(final_key), "etag": copied.etag,
                                                "size": copied.size})
    source = manifest.input.model_copy(update={"url": record.input_url})
    final = manifest.model_copy(update={"result": result, "input": source})
    deps.outputs.put_bytes(jobs.manifest_key(record, deps), final.to_json(), "application/json")
    return copied.etag
