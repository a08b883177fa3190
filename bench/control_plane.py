"""Benchmark (not a test): vastdrop's control plane with real parts, on loopback.

Part 1 -- N jobs end to end. A fresh SeaweedFS (S3) bucket gets N small objects under `input/` (some
keys with spaces, unicode, quotes, deep paths), then the watcher's own driver runs in this process:
`watcher.driver.run_once(deps, tick)` with Deps = SeaweedFS + SqliteLedger + VastCompute talking,
through the real `vastai` SDK, to the Vast API emulator. The emulator runs in a *separate process*
(so this process's CPU and RSS are the watcher's) and starts one real job process per instance: the
stub job (tests/support/stub_job.py, via bench/_timed_stub.py) with a fixed duration.

Part 2 -- one poll over a large prefix (100,000 keys by default) in another bucket: the bare listing
(`Location.list`) and `Poller.poll()` on first sight, in steady state, and after a watcher restart.

Every server binds 127.0.0.1 and everything is stopped at the end (checked with `ps`). Progress goes
to stderr, figures to stdout. Run: `.venv/bin/python bench/control_plane.py --help`.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import itertools
import logging
import math
import multiprocessing as mp
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TIMED_STUB = REPO / "bench" / "_timed_stub.py"
T_START = time.monotonic()
MARK_RE = re.compile(r"^BENCH_MANIFEST_PUT (\d+\.\d+) (\d+\.\d+)$", re.M)


def progress(msg: str) -> None:
    print(f"[bench {time.monotonic() - T_START:7.1f}s] {msg}", file=sys.stderr, flush=True)


# ---- small statistics ------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """Percentile with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def dist(values: list[float], unit: str = "s", digits: int = 3) -> str:
    if not values:
        return "n=0"
    f = f"{{:.{digits}f}}{unit}"
    return (f"p50 {f.format(pct(values, 50))}  p99 {f.format(pct(values, 99))}  "
            f"max {f.format(max(values))}  (n={len(values)})")


def cpu_self() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def proc_cpu_s(pid: int) -> float | None:
    """utime+stime of a live process from /proc (for weed, which is not our waited-for child yet)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# ---- the emulator, in its own process -----------------------------------------------------------------


def market(n: int) -> list[dict[str, Any]]:
    """n single-GPU offers, prices a little apart; a rental takes one off the market (offers_single_use)."""
    return [{"id": 33_000_000 + i, "gpu_name": "RTX 4090", "gpu_ram": 24564, "dph_base": 0.30 + 0.001 * i,
             "storage_cost": 0.15, "inet_down_cost": 0.004, "inet_up_cost": 0.008, "reliability2": 0.99,
             "cuda_max_good": 12.8, "compute_cap": 890, "inet_down": 900.0, "disk_space": 120.0}
            for i in range(n)]


def _emulator_main(conn: Any, command: list[str], loading_s: float, kill_grace_s: float, offers: int) -> None:
    """Child process: run a VastEmulator until told to stop; answer report requests."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the `with` below still kills the jobs
    logging.basicConfig(level=logging.ERROR)
    from tests.support.vast_emulator import VastEmulator

    # The strict emulator: Vast's documented value limits and per-endpoint rate limits, plain-text 429s.
    with VastEmulator(command=command, loading_s=loading_s, kill_grace_s=kill_grace_s, offers=market(offers),
                      offers_single_use=True) as emu:
        conn.send({"url": emu.url, "api_key": emu.api_key, "pid": os.getpid()})
        while True:
            msg = conn.recv()
            if msg == "report":
                instances = emu.all_instances()
                marks = {}
                for inst in instances:
                    found = MARK_RE.findall(emu.read_log(inst["id"]))
                    if found:
                        marks[inst["id"]] = (float(found[-1][0]), float(found[-1][1]))
                slim = [{k: v for k, v in i.items() if k not in ("workdir", "log_path", "docker_opts")}
                        | {"job_attempt": i["env"].get("JOB_ATTEMPT")} for i in instances]
                for s in slim:
                    s.pop("env", None)  # presigned URLs: not needed by the parent
                calls = Counter(f"{r['method']} {re.sub(r'[0-9]+', 'N', r['path'])}" for r in emu.request_log)
                conn.send({"instances": slim, "creates": emu.create_requests, "destroys": emu.destroy_requests,
                           "calls": dict(calls), "rate_limited": emu.rate_limited,
                           "billing": {i["id"]: emu.billing(i["id"]) for i in instances},
                           "marks": marks, "live": [i["id"] for i in emu.live_instances()]})
            elif msg == "stop":
                break
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    conn.send({"cpu_self": own.ru_utime + own.ru_stime, "cpu_children": kids.ru_utime + kids.ru_stime,
               "maxrss_mib": own.ru_maxrss / 1024.0})


class EmulatorProcess:
    def __init__(self, command: list[str], loading_s: float, kill_grace_s: float, offers: int) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_emulator_main, args=(child, command, loading_s, kill_grace_s, offers),
                                name="vast-emulator")
        self.proc.start()
        child.close()
        if not self.conn.poll(60):
            self.kill()
            raise RuntimeError("vast emulator did not start within 60 s")
        hello = self.conn.recv()
        self.url, self.api_key, self.pid = hello["url"], hello["api_key"], hello["pid"]
        self.final: dict[str, Any] | None = None

    def report(self) -> dict[str, Any]:
        self.conn.send("report")
        return self.conn.recv()

    def stop(self) -> None:
        if not self.proc.is_alive():
            return
        with contextlib.suppress(OSError, EOFError, BrokenPipeError):
            self.conn.send("stop")
            if self.conn.poll(30):
                self.final = self.conn.recv()
        self.proc.join(15)
        self.kill()

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()  # SIGTERM: the child's handler unwinds VastEmulator.stop()
            self.proc.join(15)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


# ---- instrumentation that leaves product code alone -------------------------------------------------


def make_timed_location(location_cls: type) -> type:
    @dataclass
    class TimedLocation(location_cls):  # type: ignore[misc, valid-type]
        """Location whose list() notes when each key was first handed to the caller (wall clock)."""

        def __post_init__(self) -> None:
            self.seen_at: dict[str, float] = {}

        def list(self, prefix: str | None = None) -> Iterator[tuple[str, Any]]:
            for key, info in super().list(prefix):
                self.seen_at.setdefault(key, time.time())
                yield key, info

    return TimedLocation


def make_budget_location(location_cls: type) -> type:
    @dataclass
    class BudgetLocation(location_cls):  # type: ignore[misc, valid-type]
        """Location whose list() stops early: after `limit` keys or once `stop_at` (monotonic) passed."""

        def __post_init__(self) -> None:
            self.limit: int | None = None
            self.stop_at: float | None = None
            self.truncated = False

        def list(self, prefix: str | None = None) -> Iterator[tuple[str, Any]]:
            self.truncated = False
            for i, item in enumerate(super().list(prefix)):
                if (self.limit is not None and i >= self.limit) or (
                        self.stop_at is not None and time.monotonic() > self.stop_at):
                    self.truncated = True
                    return
                yield item

    return BudgetLocation


class RefusingCompute:
    """A compute whose every launch fails at once with TransientError (part 2: nothing is rented)."""

    name = "refusing"

    def __init__(self) -> None:
        from vastdrop.errors import TransientError

        self._error = TransientError
        self.launches = 0

    def launch(self, spec, env):
        self.launches += 1
        raise self._error("bench: launches refused")

    def get(self, instance_id):
        from vastdrop.compute.base import Instance, InstanceState

        return Instance(id=instance_id, label=None, state=InstanceState.GONE)

    def list_ours(self):
        return []

    def destroy(self, instance_id):
        return None

    def logs(self, instance_id, tail=200):
        return ""


class LevelCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter = Counter()
        self.first: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.levelname] += 1
        msg = record.getMessage()
        self.first.setdefault(re.sub(r"\d+", "N", msg)[:90], msg[:200])


def configure_logging(path: Path) -> LevelCounter:
    """As the watcher CLI does without --verbose (JSON lines, WARNING and up), but into a file, so a
    run's logging costs stay in the CPU figures without flooding the terminal."""
    from vastdrop.logs import JsonFormatter

    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.WARNING)
    fh = logging.FileHandler(path, encoding="utf-8")
    fh.setFormatter(JsonFormatter())
    counter = LevelCounter()
    root.addHandler(fh)
    root.addHandler(counter)
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return counter


class Watchdog:
    """Interrupts the main thread (KeyboardInterrupt) if a phase overruns, so cleanup still runs."""

    def __init__(self, seconds: float, what: str) -> None:
        self.fired = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(seconds, what), daemon=True)
        self._thread.start()

    def _run(self, seconds: float, what: str) -> None:
        if not self._done.wait(seconds):
            self.fired = True
            progress(f"TIMEOUT: {what} still running after {seconds:.0f}s; interrupting")
            _thread.interrupt_main()

    def cancel(self) -> None:
        self._done.set()


# ---- part 1 -----------------------------------------------------------------------------------------


def input_keys(n: int) -> list[str]:
    """N distinct input keys (distinct stems: the result key drops the extension); every fifth is odd."""
    odd = ["input/a b/clip {i:04d}.mp4", "input/ünïcödé/vidéo ✓ {i:04d}.mp4", "input/deep/x/y/z/{i:04d} 'q'.mp4",
           "input/日本語/動画 {i:04d}.mov"]
    keys = []
    for i in range(n):
        if i % 5 == 4:
            keys.append(odd[(i // 5) % len(odd)].format(i=i))
        else:
            keys.append(f"input/batch/file-{i:04d}.mp4")
    return keys


def part1(args: argparse.Namespace, sw: Any, tmp: Path, log: LevelCounter) -> dict[str, Any]:
    from handlers import jobs
    from handlers.deps import ControlConfig, Deps
    from vastdrop.compute.vast import DEFAULT_MAX_DPH, VastCompute, VastConfig
    from vastdrop.jobid import job_id_for
    from vastdrop.ledger.sqlite import SqliteLedger
    from vastdrop.location import Location
    from vastdrop.states import JobState
    from vastdrop.storage.s3 import S3Storage
    from watcher import driver

    n = args.files
    max_instances = args.max_instances or n
    command = ["env", "STUB_MODE=ok", f"STUB_SLEEP_S={args.job_s}", sys.executable, str(TIMED_STUB)]
    progress(f"part 1: starting the Vast emulator (separate process; jobs: stub, {args.job_s}s each)")
    emu = EmulatorProcess(command, loading_s=args.loading_s, kill_grace_s=args.kill_grace_s,
                          offers=max_instances + 5)
    try:
        bucket = sw.create_bucket()
        s3 = sw.client()
        keys = input_keys(n)
        put_at: dict[str, float] = {}
        t0 = time.monotonic()
        for i, key in enumerate(keys):
            s3.put_object(Bucket=bucket, Key=key, Body=f"bench input {i}\n".encode() * 4)
            put_at[key] = time.time()
        progress(f"part 1: dropped {n} objects into s3://{bucket}/input/ in {time.monotonic() - t0:.1f}s")

        storage = S3Storage(client=sw.client())
        root = f"s3://{bucket}/"
        timed_cls = make_timed_location(Location)
        inputs = timed_cls(root, "input/", storage)
        vcfg = VastConfig(image="vastdrop/gpu-job:bench", max_instances=max_instances,
                          max_total_dph=max_instances * DEFAULT_MAX_DPH, backoff_initial_s=0.01,
                          backoff_max_s=0.05, reconcile_interval_s=0.05)
        ccfg = ControlConfig(retry_backoff_s=0.05, retry_backoff_max_s=0.1,
                             verify_interval_s=args.verify_interval_s)
        deps = Deps(inputs=inputs, outputs=Location(root, "output/", storage),
                    ledger=SqliteLedger(tmp / "ledger-part1.sqlite"),
                    compute=VastCompute(api_key=emu.api_key, server_url=emu.url, config=vcfg), config=ccfg)

        reaper_actions: Counter = Counter()
        real_reap = driver.reap

        def counting_reap(d):  # the driver's own reap, with its actions kept (run_once drops them)
            actions = real_reap(d)
            reaper_actions.update(actions)
            return actions

        driver.reap = counting_reap
        stops: list[tuple[str | None, str, float]] = []  # (instance id, reason, when) of every stop_instance
        real_stop = jobs.stop_instance

        def recording_stop(record, instance_id, d, reason, **kw):
            if instance_id:
                stops.append((instance_id, reason, time.time()))
            return real_stop(record, instance_id, d, reason, **kw)

        jobs.stop_instance = recording_stop
        weed_cpu0 = proc_cpu_s(sw.proc.pid)
        rss_before = maxrss_mib()
        progress(f"part 1: driver.run_once(deps, tick_s={args.tick_s}) -- watcher status lines follow")
        dog = Watchdog(args.run_timeout_s, "driver.run_once")
        cpu0, wall0 = cpu_self(), time.monotonic()
        try:
            ok = driver.run_once(deps, args.tick_s)
        finally:
            dog.cancel()
            driver.reap = real_reap
            jobs.stop_instance = real_stop
        wall = time.monotonic() - wall0
        cpu = cpu_self() - cpu0
        rss_peak = maxrss_mib()
        weed_cpu1 = proc_cpu_s(sw.proc.pid)
        progress(f"part 1: run_once returned {ok} after {wall:.1f}s; collecting the emulator's records")
        rep = emu.report()
        records = deps.ledger.list()
        sw.delete_bucket(bucket)
    finally:
        emu.stop()
    progress("part 1: emulator stopped")

    # -- analysis ------------------------------------------------------------------------------------
    params = ccfg.params()
    by_key = {r.key: r for r in records}
    job_of = {key: job_id_for(bucket, key, by_key[key].input_etag if key in by_key else "", params)
              for key in keys}
    creates_by_label: dict[str, list[dict]] = {}
    for c in rep["creates"]:
        creates_by_label.setdefault(c["label"], []).append(c)
    insts = {i["id"]: i for i in rep["instances"]}

    lat_seen, lat_put = [], []
    for key in keys:
        cs = creates_by_label.get("vastdrop:" + job_of[key], [])
        if not cs:
            continue
        first = min(c["time"] for c in cs)
        lat_put.append(first - put_at[key])
        if key in inputs.seen_at:
            lat_seen.append(first - inputs.seen_at[key])
    create_times = sorted(c["time"] for c in rep["creates"] if c["instance_id"] is not None)
    gaps = [b - a for a, b in itertools.pairwise(create_times)]

    # manifest written -> destroy requested, per instance that wrote a manifest and was destroyed
    to_destroy, to_destroy_hi = [], []
    for iid, (t_start_put, t_done_put) in rep["marks"].items():
        inst = insts.get(iid)
        if inst and inst["destroyed_at"] is not None:
            to_destroy.append(inst["destroyed_at"] - t_done_put)
            to_destroy_hi.append(inst["destroyed_at"] - t_start_put)

    waste, waste_usd, billed_usd, billed = [], 0.0, 0.0, []
    for inst in rep["instances"]:
        b = inst["billed_seconds"]
        run = 0.0
        if inst["started_at"] is not None:
            end = inst["exited_at"] if inst["exited_at"] is not None else (inst["destroyed_at"] or time.time())
            run = max(0.0, end - inst["started_at"])
        w = max(0.0, b - run)
        waste.append(w)
        billed.append(b)
        waste_usd += w * inst["dph_total"] / 3600.0
        billed_usd += inst["cost"]

    first_stop: dict[str, str] = {}
    real_orphans, stale_orphans, stop_reasons = 0, 0, Counter()
    for iid, reason, _when in stops:
        stop_reasons[reason.split(" (")[0]] += 1
        if reason.startswith("orphan"):
            if iid in first_stop:
                stale_orphans += 1
            else:
                real_orphans += 1
        first_stop.setdefault(iid, reason)
    destroy_statuses = Counter(d["status"] for d in rep["destroys"])

    per_attempt = Counter((i["label"], i["job_attempt"]) for i in rep["instances"])
    same_attempt_dups = sum(1 for v in per_attempt.values() if v > 1)
    multi_create = sum(1 for v in creates_by_label.values() if len(v) > 1)
    create_statuses = Counter(c["status"] for c in rep["creates"])
    states = Counter(r.state.value for r in records)
    retried = sum(1 for r in records if r.attempt > 1)
    failed = [r for r in records if r.state != JobState.SUCCEEDED]
    unseen = [k for k in keys if k not in by_key]

    return {
        "ok": ok, "n": n, "max_instances": max_instances, "wall": wall, "cpu": cpu, "rss_before": rss_before,
        "rss_peak": rss_peak, "lat_seen": lat_seen, "lat_put": lat_put, "gaps": gaps,
        "to_destroy": to_destroy, "to_destroy_hi": to_destroy_hi, "marks": len(rep["marks"]),
        "waste": waste, "waste_usd": waste_usd, "billed": billed, "billed_usd": billed_usd,
        "instances": len(rep["instances"]), "creates": len(rep["creates"]), "create_statuses": create_statuses,
        "same_attempt_dups": same_attempt_dups, "multi_create": multi_create, "live_end": rep["live"],
        "reaper": reaper_actions, "real_orphans": real_orphans, "stale_orphans": stale_orphans,
        "stop_reasons": stop_reasons, "destroy_statuses": destroy_statuses, "destroys": len(rep["destroys"]),
        "ledger_cost": sum(r.cost for r in records), "calls": rep["calls"],
        "states": states, "retried": retried, "failed": failed, "unseen": unseen,
        "emu": emu.final, "weed_cpu": (weed_cpu1 - weed_cpu0) if None not in (weed_cpu0, weed_cpu1) else None,
        "prices": sorted({i["dph_total"] for i in rep["instances"]}),
        "rate_limited": rep["rate_limited"], "create_times": create_times,
        "billing": rep["billing"],
    }


# ---- part 2 -----------------------------------------------------------------------------------------


def create_objects(sw: Any, bucket: str, count: int, workers: int, budget_s: float) -> tuple[int, float]:
    import botocore.config

    client = sw._session.client(  # one client, shared by the threads (boto3 clients are thread-safe)
        "s3", endpoint_url=sw.endpoint_url,
        config=botocore.config.Config(signature_version="s3v4", max_pool_connections=workers,
                                      retries={"mode": "standard", "max_attempts": 5}))
    counter = itertools.count()
    lock = threading.Lock()
    done = [0]
    stop_at = time.monotonic() + budget_s
    errors: list[BaseException] = []

    def worker() -> None:
        while time.monotonic() < stop_at and not errors:
            with lock:
                i = next(counter)
            if i >= count:
                return
            try:
                client.put_object(Bucket=bucket, Key=f"input/obj-{i:06d}.mp4", Body=b"x")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return
            with lock:
                done[0] += 1

    t0 = time.monotonic()
    next_report = t0 + 10
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(worker) for _ in range(workers)]
        while not all(f.done() for f in futures):
            time.sleep(0.2)
            if time.monotonic() >= next_report:
                next_report += 10
                elapsed = time.monotonic() - t0
                progress(f"part 2: {done[0]}/{count} objects created ({done[0] / elapsed:.0f}/s)")
    if errors:
        raise RuntimeError(f"creating objects failed: {errors[0]!r}")
    return done[0], time.monotonic() - t0


def timed(fn):
    c0, w0 = cpu_self(), time.monotonic()
    out = fn()
    return out, time.monotonic() - w0, cpu_self() - c0


def part2(args: argparse.Namespace, sw: Any, tmp: Path, log: LevelCounter) -> dict[str, Any]:
    from handlers.deps import Deps
    from vastdrop.ledger.sqlite import SqliteLedger
    from vastdrop.location import Location
    from vastdrop.storage.s3 import S3Storage
    from watcher.driver import Poller

    want = args.poll_keys
    bucket = sw.create_bucket()
    progress(f"part 2: creating {want} one-byte objects in s3://{bucket}/input/ with {args.put_workers} threads "
             f"(budget {args.create_budget_s:.0f}s)")
    made, create_s = create_objects(sw, bucket, want, args.put_workers, args.create_budget_s)
    progress(f"part 2: created {made} objects in {create_s:.1f}s")

    storage = S3Storage(client=sw.client())
    root = f"s3://{bucket}/"
    loc = make_budget_location(Location)(root, "input/", storage)
    compute = RefusingCompute()
    ledger = SqliteLedger(tmp / "ledger-part2.sqlite")
    deps = Deps(inputs=loc, outputs=Location(root, "output/", storage), ledger=ledger, compute=compute)
    out: dict[str, Any] = {"want": want, "made": made, "create_s": create_s, "workers": args.put_workers,
                           "budget": args.first_sight_budget_s}

    progress("part 2: bare listing #1")
    n1, out["list1_wall"], out["list1_cpu"] = timed(lambda: sum(1 for _ in loc.list()))
    out["listed"] = n1
    warn0 = log.counts["WARNING"]
    progress(f"part 2: poll #1, first sight (every key new; compute refuses every launch; "
             f"budget {args.first_sight_budget_s:.0f}s)")
    dog = Watchdog(args.run_timeout_s, "first-sight poll")
    # The poll alone: no reaper passes inside it (they would relaunch the refused jobs and be timed too).
    poller = Poller(deps, reap_every_s=float("inf"))
    loc.stop_at = time.monotonic() + args.first_sight_budget_s
    try:
        ids, out["first_wall"], out["first_cpu"] = timed(poller.poll)
    finally:
        dog.cancel()
        loc.stop_at = None
    handled = len(poller.seen)
    out["first_keys"], out["first_truncated"] = handled, loc.truncated
    out["first_launches"] = compute.launches
    out["first_warnings"] = log.counts["WARNING"] - warn0
    if loc.truncated:
        progress(f"part 2: first-sight poll stopped at the budget after {handled} keys; marking the other "
                 f"{n1 - handled} keys seen (untimed) so that poll #2 is the steady state")
        poller.seen.update((key, info.etag) for key, info in loc.list())
    progress("part 2: poll #2, steady state (same Poller: every key already seen)")
    ids2, out["steady_wall"], out["steady_cpu"] = timed(poller.poll)
    out["steady_ids"], out["steady_launches"] = len(ids2), compute.launches - out["first_launches"]
    progress("part 2: bare listing #2")
    _, out["list2_wall"], out["list2_cpu"] = timed(lambda: sum(1 for _ in loc.list()))
    progress("part 2: poll #3, after a watcher restart (new Poller, every job already in the ledger)")
    before = compute.launches
    loc.limit = handled if out["first_truncated"] else None  # only keys the ledger knows (listing order is stable)
    try:
        ids3, out["restart_wall"], out["restart_cpu"] = timed(Poller(deps, reap_every_s=float("inf")).poll)
    finally:
        loc.limit = None
    out["restart_keys"] = handled if out["first_truncated"] else n1
    out["restart_ids"], out["restart_launches"] = len(ids3), compute.launches - before
    out["rss_peak"] = maxrss_mib()
    progress("part 2: deleting the bucket")
    sw.delete_bucket(bucket)
    return out


# ---- report -----------------------------------------------------------------------------------------


def print_part1(r: dict[str, Any], args: argparse.Namespace) -> None:
    p = print
    p("== Part 1: control plane end to end ==")
    p(f"setup: {r['n']} input objects (every 5th key with spaces/unicode/quotes/deep path) in a fresh SeaweedFS "
      f"bucket; stub job sleeping {args.job_s:g}s; emulator loading_s={args.loading_s:g}s, kill_grace_s="
      f"{args.kill_grace_s:g}s; VastConfig max_instances={r['max_instances']}, max_total_dph=${r['max_instances'] * 0.6:.2f}/h; "
      f"ControlConfig retry_backoff_s=0.05 (max 0.1), verify_attempts=3 every {args.verify_interval_s:g}s; "
      f"driver.run_once(deps, tick_s={args.tick_s:g}) in this process; the emulator (its HTTP server "
      f"threads and the job processes) in a separate process.")
    p(f"run_once: returned {r['ok']} in {r['wall']:.1f}s wall")
    p("event -> launch request  [event = wall time the watcher's listing (Location.list inside Poller.poll) first "
      "yielded the key; launch request = the emulator's record of the first create request (PUT /asks/<offer>/) "
      "carrying label vastdrop:<job id>]:")
    p(f"    {dist(r['lat_seen'])}")
    p(f"  same, from the bench's PUT of the object returning (all {r['n']} objects are put before the watcher "
      f"starts, so this adds the drop phase and the interpreter's startup):")
    p(f"    {dist(r['lat_put'])}")
    p(f"  gap between consecutive successful create requests (the launch path is serial): {dist(r['gaps'])}")
    p(f"manifest written -> destroy requested  [manifest written = wall time in the job process right after its "
      f"manifest PUT returned 2xx (bench/_timed_stub.py); destroy requested = the emulator's destroyed_at, "
      f"stamped when it handles DELETE /instances/<id>/, before it kills the process; "
      f"{r['marks']} instances wrote a manifest]:")
    p(f"    {dist(r['to_destroy'])}")
    p(f"  same, from the start of the manifest PUT (upper bound): {dist(r['to_destroy_hi'])}")
    prices = ", ".join(f"${x:g}/h" for x in r["prices"])
    p(f"billed seconds not spent in the job, per instance  [billed = emulator created_at -> destroyed_at "
      f"(Vast bills per second until destroyed); in job = job process started_at -> exited_at (a process killed "
      f"by the destroy exits then); waste = billed - in job; includes the emulator's {args.loading_s:g}s "
      f"'loading']:")
    p(f"    {dist(r['waste'])}")
    p(f"    total wasted ${r['waste_usd']:.6f} at the offers' prices ({prices}); total billed "
      f"${r['billed_usd']:.6f} over {sum(r['billed']):.1f} instance-seconds "
      f"(billed per instance: {dist(r['billed'], digits=2)})")
    p(f"  the ledger's recorded cost (sum of JobRecord.cost): ${r['ledger_cost']:.6f} vs ${r['billed_usd']:.6f} "
      f"billed by the emulator (x{r['ledger_cost'] / r['billed_usd'] if r['billed_usd'] else math.nan:.2f})")
    ct = r["create_times"]
    rate = (len(ct) - 1) / (ct[-1] - ct[0]) * 60 if len(ct) > 1 and ct[-1] > ct[0] else math.nan
    p(f"launch rate: {rate:.1f} creates/min over {len(ct)} creates, against Vast's documented ceiling of "
      f"{60 / 4.5:.1f}/min (one create per 4.5 s per key, create_instance.yaml x-rate-limit); 429s answered "
      f"by the strict emulator: {len(r['rate_limited'])} "
      f"({dict(Counter(x['route'] for x in r['rate_limited']))})")
    b = r["billing"].values()
    p(f"as Vast bills (emulator): GPU ${sum(x['gpu_cost'] for x in b):.6f} + storage "
      f"${sum(x['storage_cost'] for x in b):.6f} + bandwidth ${sum(x['bandwidth_cost'] for x in b):.6f} "
      f"({sum(x['bytes_in'] + x['bytes_out'] for x in b) / 1e6:.2f} MB through the instances)")
    p(f"create requests: {r['creates']} ({dict(r['create_statuses'])} by HTTP status), instances made: "
      f"{r['instances']}")
    p(f"Vast API requests the emulator answered (all of run_once): "
      f"{', '.join(f'{k}: {v}' for k, v in sorted(r['calls'].items(), key=lambda kv: -kv[1]))}")
    p(f"duplicate launches: {r['same_attempt_dups']} jobs with more than one instance for the same attempt; "
      f"{r['multi_create']} jobs with more than one create request in all (retries included)")
    orphans = r["reaper"].get("orphan", 0)
    p(f"orphans: {len(r['live_end'])} instances still live when run_once returned; the reaper counted {orphans} "
      f"'orphan' destroys: {r['real_orphans']} of instances not destroyed before (real orphans), "
      f"{r['stale_orphans']} of instances this watcher had already destroyed (a stale list -- see the report)")
    p(f"destroy requests: {r['destroys']} ({dict(r['destroy_statuses'])} by HTTP status); stop_instance reasons: "
      f"{dict(r['stop_reasons'])}")
    p(f"jobs: {dict(r['states'])}; failed/not succeeded: {len(r['failed'])}; retried (attempt > 1): "
      f"{r['retried']}; never claimed: {len(r['unseen'])}; reaper actions: {dict(r['reaper']) or '{}'}")
    for rec in r["failed"][:5]:
        p(f"    {rec.state.value} {rec.key!r}: {rec.error}")
    p(f"watcher CPU: {r['cpu']:.2f}s (RUSAGE_SELF of this process during run_once, user+sys; excludes the "
      f"emulator process, the job processes and weed); peak RSS {r['rss_peak']:.1f} MiB (ru_maxrss of this process, "
      f"{r['rss_before']:.1f} MiB before run_once)")
    e = r.get("emu") or {}
    weed = f"{r['weed_cpu']:.2f}s" if r["weed_cpu"] is not None else "n/a"
    p(f"  for context, not the watcher: emulator process CPU {e.get('cpu_self', math.nan):.2f}s (its whole life), "
      f"job processes CPU {e.get('cpu_children', math.nan):.2f}s, weed CPU during run_once {weed}")


def print_part2(r: dict[str, Any]) -> None:
    p = print
    n = r["listed"]
    p("== Part 2: one poll over a large prefix ==")
    p(f"creating {r['made']} one-byte objects under input/ (flat, one prefix) with {r['workers']} PUT threads "
      f"(boto3, one client): {r['create_s']:.1f}s ({r['made'] / r['create_s']:.0f} objects/s)")
    if r["made"] < r["want"]:
        p(f"  (creation stopped at the time budget: measured on {r['made']} keys, not {r['want']})")

    def row(label: str, wall: float, cpu: float, keys: int, note: str = "") -> None:
        p(f"  {label}:\n      {keys} keys, {wall:.2f}s wall, {cpu:.2f}s watcher CPU (RUSAGE_SELF), "
          f"{wall / keys * 1e6:.1f} us/key" + (f"; {note}" if note else ""))

    row("bare listing #1, cold (Location.list: list_objects_v2, pages of 1000)", r["list1_wall"], r["list1_cpu"], n)
    fk = r["first_keys"]
    row("poll #1, FIRST SIGHT (Poller.poll, empty ledger: per new key job id, ledger claim, -> launching, 4 presigned "
        "URLs, compute.launch refused at once with TransientError, -> retrying, 2 warning log lines)",
        r["first_wall"], r["first_cpu"], fk,
        f"{r['first_launches']} launch attempts, {r['first_warnings']} warning lines")
    if r["first_truncated"]:
        p(f"      stopped at the {r['budget']:.0f}s budget after {fk} of {n} keys (the listing stops yielding); "
          f"EXTRAPOLATED, not measured: a full first-sight poll of {n} keys ~{r['first_wall'] * n / fk:.0f}s wall, "
          f"~{r['first_cpu'] * n / fk:.0f}s CPU")
    row("poll #2, STEADY STATE (same Poller, every key already seen: list + is_input + job_id_for + set lookup)",
        r["steady_wall"], r["steady_cpu"], n, f"{r['steady_launches']} launch attempts")
    if r["first_truncated"]:
        p("      (keys poll #1 did not reach were added to the Poller's seen set by the bench, untimed)")
    row("bare listing #2, warm", r["list2_wall"], r["list2_cpu"], n)
    rk = r["restart_keys"]
    row("poll #3, AFTER A WATCHER RESTART (new Poller, every job in the ledger: claim is a no-op, get, duplicate)",
        r["restart_wall"], r["restart_cpu"], rk, f"{r['restart_launches']} launch attempts")
    if rk < n:
        p(f"      over the first {rk} keys only (those poll #1 claimed); EXTRAPOLATED to {n} keys: "
          f"~{r['restart_wall'] * n / rk:.0f}s wall")
    lst = r["list2_wall"]
    p(f"  split of the steady-state poll: bare listing (#2, warm) {lst:.2f}s, the rest "
      f"{r['steady_wall'] - lst:+.2f}s = per-key is_input + job_id_for (json + sha256) + seen-set lookup")
    p(f"  peak RSS of this process after part 2: {r['rss_peak']:.1f} MiB")
    if n < r["want"]:
        f = r["want"] / n
        p(f"  EXTRAPOLATION to {r['want']} keys (linear, x{f:.2f}; not measured): listing ~{lst * f:.1f}s, "
          f"steady-state poll ~{r['steady_wall'] * f:.1f}s, first sight ~{r['first_wall'] * n / fk * f:.0f}s, "
          f"restart ~{r['restart_wall'] * n / rk * f:.0f}s, creation ~{r['create_s'] * f:.0f}s")


# ---- cleanup check ----------------------------------------------------------------------------------


def stray_processes(markers: list[str]) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True, check=False).stdout
    me = str(os.getpid())
    return [line.strip() for line in out.splitlines()
            if any(m in line for m in markers) and line.split()[0] != me and "ps -eo" not in line]


# ---- main -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=200, help="input objects / jobs in part 1 (default 200)")
    ap.add_argument("--job-s", type=float, default=2.0, help="the stub job's fixed duration (default 2)")
    ap.add_argument("--max-instances", type=int, default=0,
                    help="VastConfig.max_instances (default: --files); max_total_dph = this x $0.60/h")
    ap.add_argument("--tick-s", type=float, default=1.0, help="driver tick (default 1.0, the watcher's default)")
    ap.add_argument("--verify-interval-s", type=float, default=1.0,
                    help="ControlConfig.verify_interval_s (default 1.0, the product default; 3 checks per job)")
    ap.add_argument("--loading-s", type=float, default=0.2, help="emulator 'loading' time per instance (default 0.2)")
    ap.add_argument("--kill-grace-s", type=float, default=0.5, help="emulator SIGTERM->SIGKILL grace (default 0.5)")
    ap.add_argument("--poll-keys", type=int, default=100_000, help="keys under the prefix for part 2 (default 100000)")
    ap.add_argument("--put-workers", type=int, default=32, help="PUT threads creating part 2's keys (default 32)")
    ap.add_argument("--first-sight-budget-s", type=float, default=90.0,
                    help="stop the first-sight poll's listing after this long and extrapolate (default 90)")
    ap.add_argument("--create-budget-s", type=float, default=300.0,
                    help="stop creating part 2's keys after this long and extrapolate (default 300)")
    ap.add_argument("--run-timeout-s", type=float, default=900.0,
                    help="abort run_once / the first-sight poll after this long (default 900)")
    ap.add_argument("--skip-part1", action="store_true")
    ap.add_argument("--skip-part2", action="store_true")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tests.support.seaweed import SeaweedServer

    tmp = Path(tempfile.mkdtemp(prefix="vd-bench-cp-"))
    log = configure_logging(tmp / "watcher.log")
    progress(f"starting SeaweedFS (weed mini) on 127.0.0.1; scratch dir {tmp}")
    sw = SeaweedServer.start(tmp)
    progress(f"SeaweedFS ready in {sw.startup_s:.1f}s at {sw.endpoint_url}")
    markers = [str(tmp), str(TIMED_STUB)]
    r1 = r2 = None
    try:
        if not args.skip_part1:
            r1 = part1(args, sw, tmp, log)
        if not args.skip_part2:
            r2 = part2(args, sw, tmp, log)
    finally:
        progress("stopping SeaweedFS")
        sw.stop()
        time.sleep(0.5)
        strays = stray_processes(markers)
        logged = dict(log.counts)
        first = list(log.first.values())[:6]
        shutil.rmtree(tmp, ignore_errors=True)
    total = time.monotonic() - T_START
    print(f"# bench/control_plane.py {' '.join(sys.argv[1:]) or '(defaults)'} -- {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}")
    if r1:
        print_part1(r1, args)
    if r2:
        print_part2(r2)
    print("== Run ==")
    print(f"watcher log (JSON lines, WARNING and up, as the CLI without --verbose; into a file): {logged or 'empty'}")
    for msg in first:
        print(f"    e.g. {msg}")
    print(f"stray processes after the run (weed, emulator, jobs): {strays or 'none'}")
    print(f"total bench time: {total:.1f}s")
    return 0 if not strays else 1


if __name__ == "__main__":
    sys.exit(main())
