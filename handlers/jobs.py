"""Operations shared by the handlers: launch an attempt, stop an instance, end an attempt.

Every state change is one conditional ledger write; a write that loses a race returns None and the
caller simply stops (someone else is handling that job).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import random

from handlers import segments
from handlers.deps import Deps
from vastdrop import logs, signing
from vastdrop.errors import AccountError, CapacityError, PermanentError, TransientError
from vastdrop.jobspec import JobSpec
from vastdrop.layout import DEFAULT_CONTAINER, Layout, content_type_for
from vastdrop.ledger.base import JobRecord
from vastdrop.pricing import Rates, cost
from vastdrop.states import JobState

logger = logging.getLogger(__name__)
S = JobState


def log_for(record: JobRecord) -> logs.ContextLogger:
    return logs.ContextLogger(logger, {"job_id": record.job_id, "key": record.key})


def container_of(record: JobRecord) -> str:
    """The result's container the job was launched with (jobs recorded before there was a choice: MP4)."""
    return container_in(record.params)


def container_in(params: dict) -> str:
    return str(params.get("container") or DEFAULT_CONTAINER)


def layout_for(record: JobRecord, deps: Deps) -> Layout:
    """The job's own keys: their extension follows its container, whatever the configuration says now."""
    return deps.layout.for_container(container_of(record))


def result_key(record: JobRecord, deps: Deps) -> str:
    """The final, published result (written only by the control plane, after verification); a
    segment's goes into its whole job's staging, to be joined (handlers.segments)."""
    if record.segment is not None and record.parent_id:
        return layout_for(record, deps).segment_key(record.parent_id, int(record.segment["parent_attempt"]),
                                                    int(record.segment["index"]))
    return layout_for(record, deps).result_key(record.key)


def manifest_key(record: JobRecord, deps: Deps) -> str:
    """The final manifest, next to the published result."""
    return deps.layout.manifest_key(result_key(record, deps))


def staged_result_key(record: JobRecord, deps: Deps) -> str:
    return layout_for(record, deps).staged_result_key(record.job_id, record.attempt)


def staged_parts_plan_key(record: JobRecord, deps: Deps) -> str:
    return deps.layout.staged_parts_plan_key(record.job_id, record.attempt)


def staged_manifest_key(record: JobRecord, deps: Deps) -> str:
    """The current attempt's own manifest: the only manifest its host can write."""
    return deps.layout.staged_manifest_key(record.job_id, record.attempt)


def remove_staging(record: JobRecord, deps: Deps) -> None:
    """Staging is scratch: removed once published or failed. A failure here costs storage only
    (the lifecycle rule on the staging prefix expires what is left), so it is logged, not raised."""
    try:
        deps.outputs.delete_prefix(deps.layout.staging_prefix(record.job_id, record.attempt))
    except Exception as exc:  # noqa: BLE001 - never let cleanup fail a verified job
        log_for(record).warning("staging not removed (the lifecycle rule will): %s", exc)


def build_spec(record: JobRecord, deps: Deps, deadline: float) -> JobSpec:
    """The job's URLs: GET for its input, PUT only for its own attempt's staging keys and its log
    (and the part URLs of a multipart upload to its staged result, should it be larger than one PUT
    takes). Starting that upload talks to the store: a TransientError here is a launch that failed."""
    cfg = deps.config
    expires = int(deadline - deps.clock() + cfg.url_expiry_margin_s)
    result, content_type = staged_result_key(record, deps), content_type_for(container_of(record))
    return JobSpec(
        id=record.job_id,
        attempt=record.attempt,
        input_url=deps.inputs.job_get_url(record.key, expires),
        output_url=deps.outputs.job_put_url(result, expires, content_type),
        output_parts_url=deps.outputs.job_parts_url(
            result, staged_parts_plan_key(record, deps), expires, content_type, part_bytes=cfg.result_part_bytes,
            max_result_bytes=cfg.max_result_bytes, single_put_max_bytes=cfg.single_put_max_bytes),
        manifest_url=deps.outputs.job_put_url(staged_manifest_key(record, deps), expires, "application/json"),
        log_url=deps.outputs.job_put_url(deps.layout.log_key(record.job_id), expires, "text/plain; charset=utf-8"),
        target_fps=record.params.get("target_fps"),
        upscale=int(record.params.get("upscale") or 1),
        interpolation_model=cfg.interpolation_model,
        upscale_model=cfg.upscale_model,
        device=cfg.device,
        video_codec=cfg.video_codec,
        crf=cfg.crf,
        compile=cfg.compile,
        container=container_of(record),
        deadline=deadline,
        max_duration_s=cfg.max_duration_s,
        max_output_pixels=cfg.max_output_pixels,
        callback_url=cfg.callback_url,
        # Its own key: a host can sign callbacks for its job only (signing.job_key).
        callback_secret=signing.job_key(cfg.callback_secret, record.job_id) if cfg.callback_secret else None,
        segment_start_s=record.segment["start_s"] if record.parent_id and record.segment else None,
        segment_end_s=record.segment["end_s"] if record.parent_id and record.segment else None,
    )


def launch(record: JobRecord, deps: Deps, expected: JobState) -> JobRecord | None:
    """expected (queued or retrying) -> launching -> running. A failed launch becomes a retry. A long
    input, when segments are asked for, becomes `split` instead (handlers.segments)."""
    if expected == S.QUEUED and segments.may_split(record, deps):
        was_split, record = segments.split(record, deps)
        if was_split or record is None:
            return record
    if record.parent_id and not segments.belongs(record, deps):  # its whole job failed or was replayed
        deps.ledger.transition(record.job_id, expected, S.CANCELLED, finished_at=deps.clock(),
                               error="its job is no longer split into this segment")
        return None
    now = deps.clock()
    deadline = now + deps.config.job_timeout_s
    attempt = record.attempt + (1 if expected == S.RETRYING else 0)
    claimed = deps.ledger.transition(record.job_id, expected, S.LAUNCHING, attempt=attempt, launched_at=now,
                                     deadline=deadline, instance_id=None, next_attempt_at=None)
    if claimed is None:
        return None
    log = log_for(claimed)
    try:
        spec = build_spec(claimed, deps, deadline)
        instance = deps.compute.launch(spec, spec.to_env())
    except CapacityError as exc:
        # Not the job's fault (our caps, the API's pace, the account): back in the queue, attempt kept.
        # `status` shows why it waits.
        wait = exc.retry_after_s if exc.retry_after_s is not None else deps.config.capacity_wait_s
        log.log(logging.WARNING if isinstance(exc, AccountError) else logging.INFO, "waiting: %s", exc)
        return deps.ledger.transition(claimed.job_id, S.LAUNCHING, S.QUEUED, error_kind="waiting",
                                      error=logs.bounded(exc, 500), next_attempt_at=now + _jittered(max(wait, 0.1)))
    except TransientError as exc:
        log.warning("launch failed, will retry: %s", exc)
        return end_attempt(claimed, deps, S.LAUNCHING, "transient", f"launch failed: {exc}")
    except PermanentError as exc:
        log.error("launch failed permanently: %s", exc)
        return end_attempt(claimed, deps, S.LAUNCHING, "bad_input", f"launch failed: {exc}")
    running = deps.ledger.transition(
        claimed.job_id, S.LAUNCHING, S.RUNNING, instance_id=instance.id, offer_id=instance.offer_id,
        gpu_name=instance.gpu_name, dph=instance.dph, rates=instance.rates, running_at=None,
        launched_at=deps.clock(),  # storage bills from the create, not from our request (paced, it may wait)
        unhealthy_since=None, **_no_wait(claimed),
    )
    if running is None:  # cancelled meanwhile: don't leave the new instance billing
        stop_instance(claimed, instance.id, deps, "job changed state during launch")
        return None
    log.info("launched instance %s (attempt %d, %s, $%s/h)", instance.id, running.attempt,
             instance.gpu_name or deps.compute.name, instance.dph, extra={"instance_id": instance.id})
    return running


def _no_wait(record: JobRecord) -> dict:
    """Clear a 'waiting' note once the job stops waiting (a failure's message stays)."""
    return {"error": None, "error_kind": None} if record.error_kind == "waiting" else {}


def attempt_cost(record: JobRecord, now: float, bytes_up: int = 0, job_s: float | None = None) -> float:
    """What the current attempt's instance billed by now, as Vast bills (vastdrop.pricing): storage
    for its whole life (from its create), GPU while it ran, bandwidth for the input down and the
    result up. GPU time is the job's own run time when its manifest gave one (the host's word, only
    ever used for this estimate, bounded by the instance's life), else from when the instance was
    first seen running, else its whole life (never an under-count)."""
    if not record.launched_at:
        return 0.0
    if record.rates:
        rates = Rates.from_dict(record.rates)
    elif record.dph:
        rates = Rates(gpu_dph=record.dph)  # recorded before rates were
    else:
        return 0.0
    exists_s = max(0.0, now - record.launched_at)
    if job_s is not None and math.isfinite(job_s):
        running_s = max(0.0, job_s)
    elif record.running_at is not None:
        running_s = max(0.0, now - record.running_at)
    else:
        running_s = exists_s
    return cost(rates, running_s=min(running_s, exists_s), exists_s=exists_s,
                bytes_down=record.input_size, bytes_up=bytes_up).total


def stop_instance(record: JobRecord | None, instance_id: str | None, deps: Deps, reason: str,
                  job_id: str | None = None, bytes_up: int = 0, job_s: float | None = None) -> None:
    """Destroy, log the line operators grep for, and add what it cost to the job (when there is one;
    an orphan or a user's destroy may have no record: `job_id` then names it from the label)."""
    if not instance_id:
        return
    when = dt.datetime.fromtimestamp(deps.clock(), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    job = record.job_id if record else job_id or "-"
    log = log_for(record) if record else logger
    log.info("STOPPING INSTANCE %s job=%s reason=%s at=%s", instance_id, job, reason, when,
             extra={"instance_id": instance_id, "reason": reason})
    deps.compute.destroy(instance_id)
    mine = record is not None and record.instance_id == instance_id
    spent = attempt_cost(record, deps.clock(), bytes_up, job_s) if record and mine else 0.0
    if record and spent:
        current = deps.ledger.get(record.job_id)
        if current is not None:
            deps.ledger.update(record.job_id, current.version, cost=round(record.cost + spent, 9))


def backoff_s(attempt: int, deps: Deps) -> float:
    base = deps.config.retry_backoff_s * (2 ** max(0, attempt - 1))
    return _jittered(min(deps.config.retry_backoff_max_s, base))


def _jittered(seconds: float) -> float:
    """±20%, so jobs that failed or waited together do not all come back in the same instant."""
    return seconds * random.uniform(0.8, 1.2)


def attempts_tried(record: JobRecord, preemptions: int | None = None) -> int:
    """The attempts of this run that counted: preemptions are not the job's failures."""
    return record.attempt - record.first_attempt + 1 - (record.preemptions if preemptions is None else preemptions)


def end_attempt(record: JobRecord, deps: Deps, expected: JobState, kind: str, message: str) -> JobRecord | None:
    """A failed attempt: bad input fails the job; anything else retries until attempts run out.
    kind "preempted" (the market stopped an interruptible instance) is not the job's failure: it
    relaunches soon and uses no attempt, up to max_preemptions in a run."""
    message = logs.bounded(message, 500)  # often the host's words (its manifest's error): bounded, scrubbed
    now = deps.clock()
    preempted = kind == "preempted"
    preemptions = record.preemptions + (1 if preempted else 0)
    tried = attempts_tried(record, preemptions)
    if kind == "bad_input":
        target, changes = S.FAILED, {"finished_at": now}
    elif preempted and preemptions > deps.config.max_preemptions:
        target, changes = S.FAILED, {"finished_at": now}
        message = f"{message} (gave up after {preemptions} preemptions)"
    elif preempted:
        target, changes = S.RETRYING, {"next_attempt_at": now + _jittered(deps.config.retry_backoff_s)}
    elif tried >= deps.config.max_attempts:
        target, changes = S.FAILED, {"finished_at": now}
        message = f"{message} (gave up after {tried} attempts)"
    else:
        target, changes = S.RETRYING, {"next_attempt_at": now + backoff_s(tried, deps)}
    updated = deps.ledger.transition(record.job_id, expected, target, error_kind=kind, error=message[:500],
                                     preemptions=preemptions, **changes)
    if updated is not None:
        log_for(record).log(logging.WARNING if target == S.RETRYING else logging.ERROR,
                            "attempt %d ended: %s -> %s", record.attempt, message, target.value)
        remove_staging(record, deps)  # its instance is gone: nothing of this attempt is published
    return updated
