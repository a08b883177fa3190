"""The pacer: slots no closer than the documented interval, count-per-period windows, refusals."""

from __future__ import annotations

import threading

from vastdrop.ratelimit import Limit, Pacer, pacer_for


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def _pacer(limit: Limit, margin_s: float = 0.0) -> tuple[Pacer, FakeTime]:
    t = FakeTime()
    return Pacer(limit, margin_s, clock=t.clock, sleep=t.sleep), t


def test_calls_are_spaced_by_the_interval_plus_margin() -> None:
    pacer, t = _pacer(Limit(interval_s=4.5), margin_s=0.25)
    times = []
    for _ in range(4):
        pacer.acquire()
        times.append(t.now)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps == [4.75, 4.75, 4.75]
    assert times[0] == 1000.0  # the first call goes at once


def test_a_count_per_period_limit_lets_a_burst_through_then_waits_for_the_window() -> None:
    pacer, t = _pacer(Limit(count=10, period_s=60.0))
    times = []
    for _ in range(12):
        pacer.acquire()
        times.append(t.now)
    assert times[:10] == [1000.0] * 10
    assert times[10] == 1060.0 and times[11] == 1060.0
    window = [x for x in times if times[-1] - 60 < x <= times[-1]]
    assert len(window) <= 10


def test_acquire_with_a_bound_reserves_nothing_when_the_slot_is_too_far() -> None:
    pacer, t = _pacer(Limit(interval_s=4.5))
    assert pacer.acquire(max_wait_s=1.0)
    assert not pacer.acquire(max_wait_s=1.0)
    assert t.now == 1000.0  # did not sleep
    assert pacer.delay() == 4.5
    assert pacer.acquire(max_wait_s=5.0) and t.now == 1004.5


def test_a_refusal_blocks_for_the_penalty_and_a_quota_until_its_reset() -> None:
    pacer, t = _pacer(Limit(interval_s=4.5, penalty_s=12.0))
    pacer.acquire()
    assert pacer.refused() == 12.0
    pacer.acquire()
    assert t.now == 1012.0
    quota, q = _pacer(Limit(count=10, period_s=60.0))
    quota.refused(until=q.now + 3600)
    assert quota.delay() == 3600


def test_one_pacer_per_identity_and_kind_for_the_whole_process() -> None:
    a = pacer_for("https://x|k1", "create", Limit(interval_s=4.5))
    assert pacer_for("https://x|k1", "create", Limit(interval_s=4.5)) is a
    assert pacer_for("https://x|k2", "create", Limit(interval_s=4.5)) is not a
    assert pacer_for("https://x|k1", "list", Limit(interval_s=1.0)) is not a


def test_threads_share_slots_without_collisions() -> None:
    import time

    pacer = Pacer(Limit(interval_s=0.03))
    times: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            pacer.acquire()
            with lock:
                times.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    times.sort()
    assert len(times) == 20
    assert times[-1] - times[0] >= 19 * 0.03 - 0.005  # 20 slots, each its own: never two at once
