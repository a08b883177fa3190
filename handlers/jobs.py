"""Operations shared by the handlers: launch an attempt, stop an instance, end an attempt.

Every state change is one conditional ledger write; a write that loses a race returns None and the
caller simply stops (someone else is handling that job).
"""

from __future__ import annotations

import datetime as dt
import logging
import random

from handlers.deps import Deps
from vastdrop import logs
from vastdrop.errors import CapacityError, PermanentError, TransientError
from vastdrop.jobspec import JobSpec
from vastdrop.ledger.base import JobRecord
from vastdrop.states import JobState

logger = logging.getLogger(__name__)
S = JobState


def log_for(record: JobRecord) -> logs.ContextLogger:
    return logs.ContextLogger(logger, {"job_id": record.job_id, "key": record.key})


def result_key(record: JobRecord, deps: Deps) -> str:
    return deps.layout.result_key(record.key)


def manifest_key(record: JobRecord, deps: Deps) -> str:
    return deps.layout.manifest_key(result_key(record, deps))


def build_spec(record: JobRecord, deps: Deps, deadline: float) -> JobSpec:
    cfg = deps.config
    expires = int(deadline - deps.clock() + cfg.url_expiry_margin_s)
    out_key = result_key(record, deps)
    return JobSpec(
        id=record.job_id,
        attempt=record.attempt,
        input_url=deps.inputs.job_get_url(record.key, expires),
        output_url=deps.outputs.job_put_url(out_key, expires, "video/mp4"),
        manifest_url=deps.outputs.job_put_url(deps.layout.manifest_key(out_key), expires, "application/json"),
        log_url=deps.outputs.job_put_url(deps.layout.log_key(record.job_id), expires, "text/plain; charset=utf-8"),
        target_fps=record.params.get("target_fps"),
        upscale=int(record.params.get("upscale") or 1),
        interpolation_model=cfg.interpolation_model,
        upscale_model=cfg.upscale_model,
        device=cfg.device,
        video_codec=cfg.video_codec,
        crf=cfg.crf,
        deadline=deadline,
        callback_url=cfg.callback_url,
        callback_secret=cfg.callback_secret,
    )


def launch(record: JobRecord, deps: Deps, expected: JobState) -> JobRecord | None:
    """expected (queued or retrying) -> launching -> running. A failed launch becomes a retry."""
    now = deps.clock()
    deadline = now + deps.config.job_timeout_s
    attempt = record.attempt + (1 if expected == S.RETRYING else 0)
    claimed = deps.ledger.transition(record.job_id, expected, S.LAUNCHING, attempt=attempt, launched_at=now,
                                     deadline=deadline, instance_id=None, next_attempt_at=None)
    if claimed is None:
        return None
    log = log_for(claimed)
    spec = build_spec(claimed, deps, deadline)
    try:
        instance = deps.compute.launch(spec, spec.to_env())
    except CapacityError as exc:  # not the job's fault: back in the queue, the attempt is not used up
        log.info("waiting for capacity: %s", exc)
        return deps.ledger.transition(claimed.job_id, S.LAUNCHING, S.QUEUED,
                                      next_attempt_at=now + _jittered(deps.config.capacity_wait_s))
    except TransientError as exc:
        log.warning("launch failed, will retry: %s", exc)
        return end_attempt(claimed, deps, S.LAUNCHING, "transient", f"launch failed: {exc}")
    except PermanentError as exc:
        log.error("launch failed permanently: %s", exc)
        return end_attempt(claimed, deps, S.LAUNCHING, "bad_input", f"launch failed: {exc}")
    running = deps.ledger.transition(
        claimed.job_id, S.LAUNCHING, S.RUNNING, instance_id=instance.id, offer_id=instance.offer_id,
        gpu_name=instance.gpu_name, dph=instance.dph,
    )
    if running is None:  # cancelled meanwhile: don't leave the new instance billing
        stop_instance(claimed, instance.id, deps, "job changed state during launch")
        return None
    log.info("launched instance %s (attempt %d, %s, $%s/h)", instance.id, running.attempt,
             instance.gpu_name or deps.compute.name, instance.dph, extra={"instance_id": instance.id})
    return running


def stop_instance(record: JobRecord | None, instance_id: str | None, deps: Deps, reason: str,
                  job_id: str | None = None) -> None:
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
    if record and record.dph and record.launched_at:
        cost = record.cost + record.dph * max(0.0, deps.clock() - record.launched_at) / 3600
        current = deps.ledger.get(record.job_id)
        if current is not None:
            deps.ledger.update(record.job_id, current.version, cost=round(cost, 6))


def backoff_s(attempt: int, deps: Deps) -> float:
    base = deps.config.retry_backoff_s * (2 ** max(0, attempt - 1))
    return _jittered(min(deps.config.retry_backoff_max_s, base))


def _jittered(seconds: float) -> float:
    """±20%, so jobs that failed or waited together do not all come back in the same instant."""
    return seconds * random.uniform(0.8, 1.2)


def end_attempt(record: JobRecord, deps: Deps, expected: JobState, kind: str, message: str) -> JobRecord | None:
    """A failed attempt: bad input fails the job; anything else retries until attempts run out."""
    now = deps.clock()
    if kind == "bad_input":
        target, changes = S.FAILED, {"finished_at": now}
    elif record.attempt >= deps.config.max_attempts:
        target, changes = S.FAILED, {"finished_at": now}
        message = f"{message} (gave up after {record.attempt} attempts)"
    else:
        target, changes = S.RETRYING, {"next_attempt_at": now + backoff_s(record.attempt, deps)}
    updated = deps.ledger.transition(record.job_id, expected, target, error_kind=kind, error=message[:500], **changes)
    if updated is not None:
        log_for(record).log(logging.WARNING if target == S.RETRYING else logging.ERROR,
                            "attempt %d ended: %s -> %s", record.attempt, message, target.value)
    return updated
