"""The ledger port: one record per job, every state change one conditional write."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

from vastdrop.errors import PermanentError
from vastdrop.states import JobState, can_transition


class TransitionError(PermanentError):
    """A transition that the state table forbids (a bug in the caller, not a race)."""


@dataclass
class JobRecord:
    job_id: str
    bucket: str  # the input's bucket (or the file:// root)
    key: str  # the input object's key
    input_url: str  # where the job reads it (s3://, file://)
    input_etag: str
    input_size: int
    params: dict[str, Any] = field(default_factory=dict)
    state: JobState = JobState.QUEUED
    attempt: int = 1  # never reused: each attempt has its own staging keys (and presigned URLs)
    first_attempt: int = 1  # where this run's attempts began (a `replay --force` starts a new run)
    preemptions: int = 0  # attempts of this run the market ended (interruptible): not counted as tries
    instance_id: str | None = None
    offer_id: str | None = None
    gpu_name: str | None = None
    dph: float | None = None  # $/hour of the instance, storage included (what the offer showed)
    rates: dict[str, float] | None = None  # the instance's prices (vastdrop.pricing.Rates.to_dict())
    running_at: float | None = None  # when the current instance was first seen running (GPU billing)
    unhealthy_since: float | None = None  # when its host was first seen unknown/offline/frozen
    error_kind: str | None = None
    error: str | None = None
    result_etag: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    launched_at: float | None = None  # when the current attempt's launch was requested
    finished_at: float | None = None
    next_attempt_at: float | None = None  # earliest relaunch time while retrying
    deadline: float | None = None  # unix seconds the current attempt must finish by
    cost: float = 0.0  # $ billed so far over all attempts (vastdrop.pricing: GPU, storage, bandwidth)
    # Segments (issue 12, handlers.segments). On a job split into segments: how many (0: decided not
    # to split) and its plan {"spans": [[start_s, end_s], ...]}. On a segment: its whole job's id and
    # its span {"index", "count", "start_s", "end_s", "parent_attempt"}.
    segments: int | None = None
    parent_id: str | None = None
    segment: dict[str, Any] | None = None
    version: int = 0  # bumped by every write: the optimistic-concurrency token

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["state"] = JobState(values["state"])
        return cls(**values)


# Stored as JSON text by both ledgers (a DynamoDB map would turn 2.0 into 2).
JSON_FIELDS = frozenset({"params", "rates", "segment"})

# Managed by the ledger itself; callers change them only through transition()/version guards.
PROTECTED_FIELDS = frozenset({"job_id", "state", "version"})


def check_changes(changes: dict[str, Any]) -> None:
    unknown = set(changes) - {f.name for f in fields(JobRecord)}
    if unknown:
        raise TypeError(f"unknown JobRecord fields: {sorted(unknown)}")
    protected = set(changes) & PROTECTED_FIELDS
    if protected:
        raise TypeError(f"fields managed by the ledger cannot be set directly: {sorted(protected)}")


def check_transition(job_id: str, expected: JobState, target: JobState, changes: dict[str, Any]) -> None:
    """What both ledgers check before their conditional write: the table, then the fields."""
    if not can_transition(expected, target):
        raise TransitionError(f"{job_id}: {expected.value} -> {target.value} is not allowed")
    check_changes(changes)


class Ledger(Protocol):
    def claim(self, record: JobRecord) -> bool:
        """Insert the job if its id is new; False if it already exists (a duplicate event)."""
        ...

    def get(self, job_id: str) -> JobRecord | None: ...

    def transition(self, job_id: str, expected: JobState, target: JobState, **changes: Any) -> JobRecord | None:
        """Move job_id from `expected` to `target` and apply `changes`, atomically, only if it is still in
        `expected`. Returns the new record, or None if someone else moved it first. Raises
        TransitionError if the table forbids expected -> target."""
        ...

    def update(self, job_id: str, expected_version: int, **changes: Any) -> JobRecord | None:
        """Change fields without a state change (cost, instance facts), guarded by the record version."""
        ...

    def list(self, states: set[JobState] | None = None) -> list[JobRecord]: ...

    def find_by_instance(self, instance_id: str) -> JobRecord | None: ...
