"""The embedded ledger: one SQLite file, safe across threads and processes.

Why it holds up when a watcher is SIGKILLed mid-write or two watchers share the file:
- WAL journal: readers never block the writer, and a killed writer's uncommitted frames are simply
  ignored by the next opener (the OS drops its file locks when the process dies).
- every write runs inside `BEGIN IMMEDIATE`, which takes the write lock up front (waiting up to the
  busy timeout), so a conditional UPDATE and the read of its result see one consistent state and
  never hit SQLite's "cannot upgrade read lock" deadlock.
- every state change is `UPDATE ... WHERE job_id = ? AND state = ?`: whoever comes second matches no
  row and gets None, no matter how many threads or processes race.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random

from vastdrop.errors import PermanentError, TransientError
from vastdrop.ledger.base import JSON_FIELDS, JobRecord, check_changes, check_transition
from vastdrop.states import JobState

BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process's transaction before giving up
SCHEMA_VERSION = 5  # PRAGMA user_version; bump with a migration when the table changes

COLUMNS = tuple(f.name for f in fields(JobRecord))

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id          TEXT PRIMARY KEY,
    bucket          TEXT NOT NULL,
    key             TEXT NOT NULL,
    input_url       TEXT NOT NULL,
    input_etag      TEXT NOT NULL,
    input_size      INTEGER NOT NULL,
    params          TEXT NOT NULL,  -- JSON object
    state           TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    first_attempt   INTEGER NOT NULL DEFAULT 1,
    preemptions     INTEGER NOT NULL DEFAULT 0,
    instance_id     TEXT,
    offer_id        TEXT,
    gpu_name        TEXT,
    dph             REAL,
    rates           TEXT,  -- JSON object
    running_at      REAL,
    unhealthy_since REAL,
    error_kind      TEXT,
    error           TEXT,
    result_etag     TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    launched_at     REAL,
    finished_at     REAL,
    next_attempt_at REAL,
    deadline        REAL,
    cost            REAL NOT NULL,
    segments        INTEGER,
    parent_id       TEXT,
    segment         TEXT,  -- JSON object
    version         INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE INDEX IF NOT EXISTS jobs_instance ON jobs (instance_id);
"""
# Columns added since version 1, for ledgers made before them (ALTER TABLE ADD COLUMN keeps the rows).
ADDED_COLUMNS = {"rates": "TEXT", "running_at": "REAL", "unhealthy_since": "REAL",
                 "first_attempt": "INTEGER NOT NULL DEFAULT 1", "preemptions": "INTEGER NOT NULL DEFAULT 0",
                 "segments": "INTEGER", "parent_id": "TEXT", "segment": "TEXT"}

# Messages SQLite uses when a lock could not be had in time, or the disk hiccupped: worth retrying.
TRANSIENT_MESSAGES = ("locked", "busy", "disk i/o error")


def _is_locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc).lower()


def _encode(name: str, value: Any) -> Any:
    if name in JSON_FIELDS:
        return None if value is None and name != "params" else json.dumps(value)
    if name == "state":
        return JobState(value).value
    return value


class SqliteLedger:
    def __init__(self, path: str | Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()  # one connection per thread (sqlite3 objects are not shared)
        self._opened: list[sqlite3.Connection] = []
        self._opened_lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._translated("open"):
            self._create_schema()

    # ---- connections and transactions ------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        # Keyed by pid too: a connection inherited through fork() must never be used by the child.
        cached = getattr(self._local, "conn", None)
        if cached is not None and cached[0] == os.getpid():
            return cached[1]
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        # Switching a new file to WAL needs an exclusive lock that SQLite does not wait for (no busy
        # handler), so processes opening a new ledger at once take turns here.
        Retrying(retry=retry_if_exception(_is_locked), stop=stop_after_delay(self.busy_timeout_s),
                 wait=wait_random(0.005, 0.05), reraise=True)(conn.execute, "PRAGMA journal_mode = WAL")
        # FULL: a commit that returned survives power loss too; ledger writes are few, so it is cheap.
        conn.execute("PRAGMA synchronous = FULL")
        self._local.conn = (os.getpid(), conn)
        with self._opened_lock:
            self._opened.append(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding SQLite's write lock from its first statement."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            if any(m in str(exc).lower() for m in TRANSIENT_MESSAGES):
                raise TransientError(f"sqlite ledger {action} ({self.path}): {exc}") from exc
            raise PermanentError(f"sqlite ledger {action} ({self.path}): {exc}") from exc
        except sqlite3.Error as exc:
            raise PermanentError(f"sqlite ledger {action} ({self.path}): {exc}") from exc

    def _create_schema(self) -> None:
        with self._tx() as conn:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            have = {row["name"] for row in conn.execute("PRAGMA table_info(jobs)")}
            for name, kind in ADDED_COLUMNS.items():
                if name not in have:
                    conn.execute(f'ALTER TABLE jobs ADD COLUMN "{name}" {kind}')
            conn.execute("CREATE INDEX IF NOT EXISTS jobs_parent ON jobs (parent_id)")  # after its column exists
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        """Close every connection this object opened (all threads). Optional; for tests and shutdown."""
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()
        self._local = threading.local()

    # ---- the Ledger protocol ---------------------------------------------------------------

    def claim(self, record: JobRecord) -> bool:
        data = record.to_dict()
        names = ", ".join(f'"{c}"' for c in COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        sql = f"INSERT INTO jobs ({names}) VALUES ({marks}) ON CONFLICT (job_id) DO NOTHING"
        with self._translated("claim"), self._tx() as conn:
            cur = conn.execute(sql, [_encode(c, data[c]) for c in COLUMNS])
            return cur.rowcount == 1

    def get(self, job_id: str) -> JobRecord | None:
        with self._translated("get"):
            row = self._conn().execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else _decode(row)

    def transition(
        self, job_id: str, expected: JobState, target: JobState, **changes: Any
    ) -> JobRecord | None:
        check_transition(job_id, expected, target, changes)
        return self._write(job_id, "state = ?", JobState(expected).value, {**changes, "state": target})

    def update(self, job_id: str, expected_version: int, **changes: Any) -> JobRecord | None:
        check_changes(changes)
        return self._write(job_id, "version = ?", expected_version, changes)

    def list(self, states: set[JobState] | None = None) -> list[JobRecord]:
        sql, args = "SELECT * FROM jobs", []
        if states is not None:
            if not states:
                return []
            sql += f" WHERE state IN ({', '.join('?' for _ in states)})"
            args = [JobState(s).value for s in states]
        with self._translated("list"):
            rows = self._conn().execute(sql + " ORDER BY created_at, job_id", args).fetchall()
        return [_decode(r) for r in rows]

    def find_by_instance(self, instance_id: str) -> JobRecord | None:
        # Instance ids are unique per launch; if a stale row still names one, the newest write wins.
        sql = "SELECT * FROM jobs WHERE instance_id = ? ORDER BY updated_at DESC LIMIT 1"
        with self._translated("find_by_instance"):
            row = self._conn().execute(sql, (instance_id,)).fetchone()
        return None if row is None else _decode(row)

    # ---- helpers ---------------------------------------------------------------------------

    def _write(self, job_id: str, guard: str, guard_value: Any, changes: dict[str, Any]) -> JobRecord | None:
        """One conditional UPDATE (bumping version), then the row as it now is, in one transaction."""
        changes = {"updated_at": time.time(), **changes}
        sets = ", ".join(f'"{name}" = ?' for name in changes)
        sql = f"UPDATE jobs SET {sets}, version = version + 1 WHERE job_id = ? AND {guard}"
        args = [_encode(n, v) for n, v in changes.items()] + [job_id, guard_value]
        with self._translated("write"), self._tx() as conn:
            if conn.execute(sql, args).rowcount != 1:
                return None  # not in the expected state/version any more: someone else won
            row = conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return _decode(row)


def _decode(row: sqlite3.Row) -> JobRecord:
    data = dict(row)
    for name in JSON_FIELDS:
        if data.get(name) is not None:
            data[name] = json.loads(data[name])
    return JobRecord.from_dict(data)
