"""The compute port: start one job container, watch it, destroy it. Vast.ai or a local process."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from vastdrop.jobspec import JobSpec

LABEL_PREFIX = "vastdrop:"  # every instance we start is labelled LABEL_PREFIX + job_id


def label_for(job_id: str) -> str:
    return LABEL_PREFIX + job_id


def job_id_from_label(label: str | None) -> str | None:
    return label[len(LABEL_PREFIX) :] if label and label.startswith(LABEL_PREFIX) else None


class InstanceState(StrEnum):
    PENDING = "pending"  # requested, not yet loading (provisioning)
    LOADING = "loading"  # pulling the image / starting
    RUNNING = "running"
    EXITED = "exited"  # the container stopped (or could not start); still billed until destroyed
    UNHEALTHY = "unhealthy"  # the host lost contact (unknown, offline) or the container is frozen
    PREEMPTED = "preempted"  # an interruptible instance the market stopped (outbid); bills storage until destroyed
    GONE = "gone"  # destroyed or never existed


@dataclass
class Instance:
    id: str
    label: str | None
    state: InstanceState
    exit_code: int | None = None
    gpu_name: str | None = None
    dph: float | None = None
    offer_id: str | None = None
    started_at: float | None = None  # unix seconds the instance was created
    rates: dict | None = None  # vastdrop.pricing.Rates.to_dict() of what it bills; None: free (local)
    extra: dict = field(default_factory=dict)

    @property
    def job_id(self) -> str | None:
        return job_id_from_label(self.label)


class Compute(Protocol):
    name: str

    def launch(self, spec: JobSpec, env: dict[str, str]) -> Instance:
        """Start the job container with exactly `env`; label it label_for(spec.id).
        Raises TransientError (no offer now, throttled, 5xx) or PermanentError."""
        ...

    def get(self, instance_id: str) -> Instance:
        """Current state; InstanceState.GONE if it does not exist."""
        ...

    def list_ours(self) -> list[Instance]:
        """Every live instance carrying our label prefix (for the reaper's orphan check)."""
        ...

    def destroy(self, instance_id: str) -> None:
        """Idempotent: an instance that no longer exists counts as destroyed."""
        ...

    def logs(self, instance_id: str, tail: int = 200) -> str: ...
