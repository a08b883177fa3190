"""Pacing calls to an API whose limits are documented, so they do not collide with them.

Vast.ai documents a minimum interval per endpoint and identity (create one per 4.5 s, list one per
second, ...), sometimes a count per period (offer search: 10 a minute), answers a call that comes
too soon with a 429 that carries no Retry-After, and for create adds a penalty. Colliding and
backing off wastes the penalty and a job attempt; pacing never collides. One `Pacer` per kind of
call, shared by every path of the process (launch, reaper, destroy, status): `pacer_for` keeps them
in a process-wide registry keyed by API identity and kind.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """A documented limit: at least `interval_s` between calls, and at most `count` per `period_s`."""

    interval_s: float = 0.0
    count: int | None = None
    period_s: float = 60.0
    penalty_s: float = 0.0  # how long the API refuses after a call that came too soon


class Pacer:
    """Hands out call slots no closer than the limit allows. Thread-safe; slots are reserved in order."""

    def __init__(self, limit: Limit, margin_s: float = 0.0, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.limit = limit
        self.margin_s = margin_s  # network jitter: the server sees arrivals, not our send times
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._next = 0.0  # the earliest moment the next call may go
        self._blocked_until = 0.0  # refused for a while (penalty, quota): nobody calls before this
        self._recent: deque[float] = deque()  # the last `count` call times, for count-per-period limits

    def _earliest(self) -> float:
        earliest = max(self._next, self._blocked_until)
        count = self.limit.count
        if count is not None and len(self._recent) >= count:
            earliest = max(earliest, self._recent[-count] + self.limit.period_s + self.margin_s)
        return earliest

    def delay(self) -> float:
        """Seconds until the next free slot (0: now)."""
        with self._lock:
            return max(0.0, self._earliest() - self._clock())

    def acquire(self, max_wait_s: float | None = None) -> bool:
        """Reserve the next slot and sleep until it; False (nothing reserved) if that is over max_wait_s."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._earliest())
            if max_wait_s is not None and slot - now > max_wait_s:
                return False
            self._next = slot + self.limit.interval_s + self.margin_s
            if self.limit.count is not None:
                self._recent.append(slot)
                while len(self._recent) > self.limit.count:
                    self._recent.popleft()
        if slot > now:
            self._sleep(slot - now)
        return True

    def refused(self, until: float | None = None) -> float:
        """The API answered 429 anyway (another process shares the identity, or our clock drifted): no
        call before `until` (monotonic), or before the documented penalty/interval has passed.
        Returns the seconds to wait."""
        with self._lock:
            now = self._clock()
            limit = self.limit
            wait = max(limit.penalty_s, limit.interval_s, limit.period_s / limit.count if limit.count else 0.0)
            self._blocked_until = max(self._blocked_until, until if until is not None else now + wait + self.margin_s)
            return self._blocked_until - now


_registry: dict[tuple[str, str], Pacer] = {}
_registry_lock = threading.Lock()


def pacer_for(identity: str, kind: str, limit: Limit, margin_s: float = 0.0) -> Pacer:
    """The process-wide pacer of one kind of call for one API identity (created on first use)."""
    with _registry_lock:
        pacer = _registry.get((identity, kind))
        if pacer is None or pacer.limit != limit:
            pacer = _registry[(identity, kind)] = Pacer(limit, margin_s)
        return pacer
