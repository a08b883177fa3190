"""Job states and the one table of allowed transitions (ARCHITECTURE.md section 2).

Both ledgers enforce this table with conditional writes: a transition is applied only if the job is
still in the state the caller saw, so two handlers racing on one job cannot both win.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"  # claimed for an object version; nothing launched yet (or waiting for capacity)
    LAUNCHING = "launching"  # a compute launch was requested (instance may not exist yet)
    RUNNING = "running"  # an instance exists and carries our label
    VERIFYING = "verifying"  # a manifest arrived; checking it against the stored result
    SPLIT = "split"  # runs as segments, each its own job (handlers.segments); joined when all succeeded
    RETRYING = "retrying"  # a transient failure; waits for its backoff, then launches again
    SUCCEEDED = "succeeded"  # manifest verified against the result's ETag and size (terminal)
    FAILED = "failed"  # bad input, or attempts exhausted (terminal)
    CANCELLED = "cancelled"  # stopped by a user (terminal)

    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

S = JobState
ALLOWED_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # queued -> succeeded: a claim whose final manifest already describes this very input and params
    # (the ledger forgot the job, e.g. DynamoDB's TTL): nothing is launched again.
    # queued -> split: a long input is processed as segments (its own instances are theirs).
    S.QUEUED: frozenset({S.LAUNCHING, S.SPLIT, S.CANCELLED, S.FAILED, S.SUCCEEDED}),
    # launching -> queued: no capacity now (our caps or the provider's); the attempt is not used up.
    S.LAUNCHING: frozenset({S.QUEUED, S.RUNNING, S.VERIFYING, S.RETRYING, S.FAILED, S.CANCELLED}),
    S.RUNNING: frozenset({S.VERIFYING, S.RETRYING, S.FAILED, S.CANCELLED}),
    S.VERIFYING: frozenset({S.SUCCEEDED, S.RETRYING, S.FAILED, S.RUNNING, S.CANCELLED}),
    S.RETRYING: frozenset({S.LAUNCHING, S.FAILED, S.CANCELLED}),
    # split -> succeeded: every segment verified and the result joined from them; failed: a segment failed.
    S.SPLIT: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    # Terminal states only leave by an explicit `replay --force`, which starts a new attempt.
    S.SUCCEEDED: frozenset({S.QUEUED}),
    S.FAILED: frozenset({S.QUEUED}),
    S.CANCELLED: frozenset({S.QUEUED}),
}


def can_transition(current: JobState, target: JobState) -> bool:
    return target in ALLOWED_TRANSITIONS[current]
