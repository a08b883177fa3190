"""Progress lines at a steady rate (not per frame) and the job's deadline."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from vastdrop.errors import TransientError

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 5.0


class DeadlineExceeded(TransientError):
    """JOB_DEADLINE passed: stop, write a failure manifest, exit 75."""


class Deadline:
    def __init__(self, at: float | None, clock: Callable[[], float] = time.time) -> None:
        self.at, self.clock = at, clock

    def check(self, where: str) -> None:
        if self.at is not None and self.clock() >= self.at:
            raise DeadlineExceeded(f"deadline passed during {where}")


class Progress:
    def __init__(self, total: int, deadline: Deadline, interval_s: float = PROGRESS_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic, extra: dict | None = None) -> None:
        self.total, self.deadline, self.interval_s, self.clock = max(total, 1), deadline, interval_s, clock
        self.started = self.last = clock()
        self.done = 0
        self.extra = extra or {}

    def __call__(self, done: int) -> None:
        self.done = done
        now = self.clock()
        if now - self.last >= self.interval_s:
            self.last = now
            self.log(now)
        if done % 8 == 0:  # a clock read per frame is cheap, but no need
            self.deadline.check("processing")

    def log(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        elapsed = max(now - self.started, 1e-9)
        fps = self.done / elapsed
        eta = (self.total - self.done) / fps if fps > 0 else None
        logger.info(
            "progress %d/%d frames, %.2f fps, eta %s",
            self.done, self.total, fps, "?" if eta is None else f"{eta:.0f}s",
            extra={"frames_done": self.done, "frames_total": self.total, "fps": round(fps, 2),
                   "eta_s": None if eta is None else round(eta, 1), **self.extra},
        )
