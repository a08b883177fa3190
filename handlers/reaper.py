"""reap: the periodic backstop. Nothing is left billing, nothing waits forever.

- retrying jobs whose backoff passed are relaunched; queued claims whose launch never happened too;
- a running job whose manifest exists is finished (a missed event costs a tick, not a GPU-hour);
- verifying jobs get their next check, and succeed once the window has passed;
- past the deadline, stuck in `loading`, or exited without a manifest: destroyed, then retried or failed;
- an interruptible instance the market stopped: destroyed and relaunched, using no attempt;
- a `launching` job with no recorded instance adopts the instance carrying its label, or retries;
- instances carrying our label with no live job (orphans) are destroyed.
"""

from __future__ import annotations

import logging
from collections import Counter

from handlers import jobs, segments
from handlers.deps import Deps
from handlers.finished import continue_verification, on_job_finished, read_manifest
from vastdrop import logs
from vastdrop.compute.base import Instance, InstanceState
from vastdrop.errors import TransientError
from vastdrop.ledger.base import JobRecord
from vastdrop.states import JobState

logger = logging.getLogger(__name__)
S = JobState
BAD_INPUT_EXIT = 65  # ARCHITECTURE.md section 3: permanent, never retried


def reap(deps: Deps) -> Counter:
    actions: Counter = Counter()
    now = deps.clock()
    live = {inst.id: inst for inst in deps.compute.list_ours()}
    for record in deps.ledger.list({S.QUEUED, S.LAUNCHING, S.RUNNING, S.VERIFYING, S.RETRYING, S.SPLIT}):
        try:
            action = _reap_job(record, deps, live, now)
        except TransientError as exc:  # one job's hiccup must not stop the pass for the others
            jobs.log_for(record).warning("reaper skipped this job for now: %s", logs.bounded(exc, 300))
            action = "deferred"
        except Exception as exc:  # nor may anything one job (its host, its manifest) makes us raise
            jobs.log_for(record).error("reaper could not handle this job: %s: %s", type(exc).__name__,
                                       logs.bounded(exc, 300))
            action = "error"
        if action:
            actions[action] += 1
    # Listed again: instances destroyed in the pass above are gone, not orphans to destroy twice.
    actions.update(_destroy_orphans(deps, {inst.id: inst for inst in deps.compute.list_ours()}))
    return actions


def _reap_job(record: JobRecord, deps: Deps, live: dict[str, Instance], now: float) -> str | None:
    cfg = deps.config
    if record.state == S.RETRYING:
        if (record.next_attempt_at or 0) <= now:
            return "relaunched" if jobs.launch(record, deps, S.RETRYING) else None
        return None
    if record.state == S.QUEUED:
        # Waiting for capacity (next_attempt_at), or a claim whose launch never happened (a crash).
        due = record.next_attempt_at if record.next_attempt_at is not None else record.updated_at + cfg.launch_timeout_s
        if now >= due:
            return "resumed" if jobs.launch(record, deps, S.QUEUED) else None
        return None
    if record.state == S.SPLIT:  # its segments are jobs of their own: joined (or failed) once they are done
        result = segments.advance(record, deps)
        return None if result == "running" else {"succeeded": "joined"}.get(result, result)
    if record.state == S.VERIFYING:
        result = continue_verification(record, deps)
        return None if result == "verifying" else "verified" if result == "succeeded" else result
    if record.state == S.LAUNCHING and not record.instance_id:
        if now - (record.launched_at or record.updated_at) <= cfg.launch_timeout_s:
            return None
        return _adopt_or_retry(record, deps, live)
    return _check_running(record, deps, live, now)


def _check_running(record: JobRecord, deps: Deps, live: dict[str, Instance], now: float) -> str | None:
    cfg = deps.config
    instance = live.get(record.instance_id) if record.instance_id else None
    if instance is None and record.instance_id:
        instance = deps.compute.get(record.instance_id)
    state = instance.state if instance else InstanceState.GONE
    record = _note_health(record, state, deps, now)
    # The instance's state is read before the manifest: a job writes its manifest, then exits.
    # Only the current attempt's own staged manifest counts: an earlier attempt's cannot end this one.
    if read_manifest(record, deps) is not None:
        result = on_job_finished(record.job_id, deps)
        return None if result.startswith("no manifest") else "finished"
    if state is InstanceState.PREEMPTED:  # the market took the GPU: not the job's failure, no attempt used
        jobs.stop_instance(record, record.instance_id, deps, "preempted")
        jobs.end_attempt(record, deps, record.state, "preempted",
                         f"interruptible instance stopped by the market ({_says(instance)}); relaunched elsewhere")
        return "preempted"
    if record.deadline and now > record.deadline + cfg.deadline_grace_s:
        return _fail_attempt(record, deps, "deadline passed without a manifest")
    if state in (InstanceState.PENDING, InstanceState.LOADING) and now - (record.launched_at or now) > cfg.loading_timeout_s:
        return _fail_attempt(record, deps, f"stuck in {state.value} for over {cfg.loading_timeout_s:.0f}s")
    if state is InstanceState.UNHEALTHY and record.unhealthy_since is not None \
            and now - record.unhealthy_since > cfg.unhealthy_timeout_s:
        return _fail_attempt(record, deps, f"instance {_says(instance)} for over {cfg.unhealthy_timeout_s:.0f}s")
    if state in (InstanceState.EXITED, InstanceState.GONE):
        code = instance.exit_code if instance else None
        if code == BAD_INPUT_EXIT:  # refused its configuration before it could write a manifest
            jobs.stop_instance(record, record.instance_id, deps, "exited 65 without a manifest")
            jobs.end_attempt(record, deps, record.state, "bad_input",
                             "the job exited 65 (bad input or configuration) without writing a manifest; "
                             "see `python -m watcher logs` for its reason")
            return "reaped"
        return _fail_attempt(record, deps, f"instance {state.value} without a manifest (exit code {code}"
                                           f"{'; ' + _says(instance) if instance else ''})")
    return None


def _note_health(record: JobRecord, state: InstanceState, deps: Deps, now: float) -> JobRecord:
    """Remember when the instance was first seen running (GPU billing starts) and since when its host
    has been unhealthy (replaced after unhealthy_timeout_s); both survive restarts in the ledger."""
    changes: dict = {}
    if state is InstanceState.RUNNING and record.running_at is None:
        changes["running_at"] = now
    if state is InstanceState.UNHEALTHY and record.unhealthy_since is None:
        changes["unhealthy_since"] = now
    elif state is not InstanceState.UNHEALTHY and record.unhealthy_since is not None:
        changes["unhealthy_since"] = None
    if not changes:
        return record
    return deps.ledger.update(record.job_id, record.version, **changes) or record


def _says(instance: Instance | None) -> str:
    """What Vast says of an instance, bounded and printable (status_msg carries the host's daemon text)."""
    if instance is None:
        return "gone"
    status = str(instance.extra.get("actual_status") or instance.state.value)
    msg = str(instance.extra.get("status_msg") or "")
    said = f"{status}: {msg}" if msg else status
    return logs.bounded("".join(ch if ch.isprintable() else " " for ch in said), 200)


def _fail_attempt(record: JobRecord, deps: Deps, reason: str) -> str:
    jobs.stop_instance(record, record.instance_id, deps, reason)
    jobs.end_attempt(record, deps, record.state, "transient", reason)
    return "reaped"


def _adopt_or_retry(record: JobRecord, deps: Deps, live: dict[str, Instance]) -> str:
    """A launch that crashed between create and the ledger write: the label tells which instance."""
    mine = [inst for inst in live.values() if inst.job_id == record.job_id]
    if mine:
        keep, extra = mine[0], mine[1:]
        for inst in extra:
            jobs.stop_instance(record, inst.id, deps, "duplicate instance for one attempt")
        adopted = deps.ledger.transition(record.job_id, S.LAUNCHING, S.RUNNING, instance_id=keep.id,
                                         gpu_name=keep.gpu_name, dph=keep.dph, offer_id=keep.offer_id)
        return "adopted" if adopted else "lost-race"
    jobs.end_attempt(record, deps, S.LAUNCHING, "transient", "launch never completed")
    return "reaped"


def _destroy_orphans(deps: Deps, live: dict[str, Instance]) -> Counter:
    actions: Counter = Counter()
    for inst in live.values():
        if inst.state == InstanceState.GONE:
            continue
        record = deps.ledger.get(inst.job_id) if inst.job_id else None
        if record is not None and record.state == S.LAUNCHING and not record.instance_id:
            continue  # being launched right now: the launcher records it in a moment
        if record is not None and not record.state.is_terminal() and record.state != S.RETRYING \
                and record.instance_id == inst.id:
            continue
        why = "no such job" if record is None else f"job {record.state.value}, instance {record.instance_id}"
        jobs.stop_instance(record, inst.id, deps, f"orphan ({why})", job_id=inst.job_id)
        actions["orphan"] += 1
    return actions

