"""The local driver: poll the input prefix, run the handlers, reap, until done (--once) or forever."""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Iterable

from handlers.created import ObjectEvent, on_object_created
from handlers.deps import Deps
from handlers.reaper import reap
from vastdrop import logs
from vastdrop.errors import TransientError
from vastdrop.jobid import job_id_for
from vastdrop.states import JobState

logger = logging.getLogger(__name__)
HEARTBEAT_S = 15.0  # a long wait still prints a line this often, even when nothing changed
REAP_DURING_POLL_S = 5.0  # a poll that launches a large backlog still reaps this often


class Poller:
    """Lists the input prefix; hands each new (key, ETag) to on_object_created once per process."""

    def __init__(self, deps: Deps, reap_every_s: float = REAP_DURING_POLL_S) -> None:
        self.deps = deps
        self.seen: set[tuple[str, str]] = set()
        self.reap_every_s = reap_every_s

    def poll(self) -> list[str]:
        """Job ids of every input currently present (new ones are handled on the way)."""
        job_ids = []
        params = self.deps.config.params()
        last_reap = time.monotonic()
        first_for_result: dict[str, str] = {}  # listings come in key order: the first key wins a result
        layout = self.deps.layout
        for key, info in self.deps.inputs.list():
            if time.monotonic() - last_reap >= self.reap_every_s:
                # Launching a long backlog takes a while: jobs launched early finish meanwhile, and
                # their instances must not wait for the end of the listing to be destroyed.
                safe_reap(self.deps)
                last_reap = time.monotonic()
            if not layout.is_input(key, info.size):
                continue
            first = first_for_result.setdefault(layout.result_key(key), key)
            job_ids.append(job_id_for(self.deps.inputs.bucket, key, info.etag, params))
            if (key, info.etag) in self.seen:
                continue
            self.seen.add((key, info.etag))
            event = ObjectEvent(key, info.etag, info.size, source="poll", rivals_known=True,
                                first_rival=None if first == key else first)
            try:
                outcome = on_object_created(event, self.deps)
            except TransientError as exc:  # seen again on the next poll
                self.seen.discard((key, info.etag))
                logger.warning("%s: not handled yet: %s", key, exc, extra={"key": key})
                continue
            except Exception as exc:  # one input must not stop the poll for the others
                logger.error("%s: could not be handled: %s: %s", key, type(exc).__name__, logs.bounded(exc, 300),
                             extra={"key": key})
                continue
            logger.info("%s: %s %s", key, outcome.action, outcome.reason, extra={"key": key, "job_id": outcome.job_id})
        return job_ids


def wait_for(job_ids: Iterable[str], deps: Deps, tick_s: float, show_progress: bool = True,
             timeout_s: float | None = None) -> dict[str, JobState]:
    """Reap and watch until every job is terminal; one status line to stderr when counts change."""
    ids = list(dict.fromkeys(job_ids))
    started, last_line, last_print = time.monotonic(), "", 0.0
    while True:
        safe_reap(deps)
        states = {}
        for job_id in ids:
            record = deps.ledger.get(job_id)
            states[job_id] = record.state if record else JobState.QUEUED
        counts = Counter(s.value for s in states.values())
        line = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        now = time.monotonic()
        if show_progress and (line != last_line or now - last_print >= HEARTBEAT_S):
            print(f"[{now - started:6.1f}s] {line}", file=sys.stderr, flush=True)
            last_line, last_print = line, now
        if all(s.is_terminal() for s in states.values()):
            return states
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            return states
        time.sleep(tick_s)


def run_once(deps: Deps, tick_s: float) -> bool:
    poller = Poller(deps)
    job_ids = poller.poll()
    if not job_ids:
        print("nothing to process", file=sys.stderr)
        return True
    states = wait_for(job_ids, deps, tick_s)
    return all(s == JobState.SUCCEEDED for s in states.values())


def run_forever(deps: Deps, poll: bool, poll_interval_s: float, tick_s: float) -> None:
    poller = Poller(deps)
    next_poll = 0.0
    while True:
        if poll and time.monotonic() >= next_poll:
            try:
                poller.poll()
            except TransientError as exc:  # the store is down for a moment: try again next time
                logger.warning("poll failed: %s", exc)
            next_poll = time.monotonic() + poll_interval_s
        actions = safe_reap(deps)
        if actions:
            logger.info("reaper: %s", dict(actions))
        time.sleep(tick_s)


def safe_reap(deps: Deps) -> Counter:
    """One reaper pass; a passing outage (API throttled, store unreachable) waits for the next tick
    instead of stopping the watcher that is keeping instances from billing idle."""
    try:
        return reap(deps)
    except TransientError as exc:
        logger.warning("reaper pass failed, retrying next tick: %s", exc)
        return Counter()
