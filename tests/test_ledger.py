"""One contract suite for every ledger (SQLite file, DynamoDB on moto), plus each one's own guarantees.

The state table in vastdrop/states.py is the single source of truth: the allowed and forbidden
transition lists below are derived from it, so changing the table changes what is tested.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from vastdrop.errors import ConfigError, PermanentError, TransientError
from vastdrop.ledger import open_ledger
from vastdrop.ledger.base import JobRecord, Ledger, TransitionError
from vastdrop.ledger.dynamodb import TTL_ATTRIBUTE, DynamoLedger, create_table
from vastdrop.ledger.sqlite import SqliteLedger
from vastdrop.states import ALLOWED_TRANSITIONS, JobState

S = JobState
ALLOWED = [(a, b) for a in S for b in S if b in ALLOWED_TRANSITIONS[a]]
FORBIDDEN = [(a, b) for a in S for b in S if b not in ALLOWED_TRANSITIONS[a]]
RACERS = 8  # threads racing for one job
TTL_DAYS = 2.0
SECONDS_PER_DAY = 86_400
CLAIM_IDS = 150  # ids two processes race to claim
PROCESS_TIMEOUT_S = 30
KILL_HOLD_S = 60  # the lock holder would sleep this long; it is SIGKILLed long before
SHORT_BUSY_TIMEOUT_S = 0.2  # so "the db is locked" shows up fast as TransientError


def make(job_id: str, **overrides: Any) -> JobRecord:
    base: dict[str, Any] = {
        "job_id": job_id,
        "bucket": "in",
        "key": f"videos/{job_id}.mp4",
        "input_url": f"s3://in/videos/{job_id}.mp4",
        "input_etag": "etag-1",
        "input_size": 1234,
    }
    return JobRecord(**{**base, **overrides})


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ddb_client(moto_server: Any) -> Any:
    """One boto3 client for the module (clients are thread-safe; building one takes ~0.1 s)."""
    return moto_server.client(max_pool_connections=2 * RACERS)


@pytest.fixture
def dynamo(ddb_client: Any) -> Iterator[DynamoLedger]:
    """A DynamoLedger on a fresh table of its own."""
    client = ddb_client
    name = f"ledger-{uuid.uuid4().hex[:12]}"
    create_table(client, name)
    try:
        yield DynamoLedger(name, client=client, ttl_days=TTL_DAYS)
    finally:
        client.delete_table(TableName=name)


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    ledger = SqliteLedger(tmp_path / "ledger.db")
    try:
        yield ledger
    finally:
        ledger.close()


@pytest.fixture(params=["sqlite", "dynamodb"])
def ledger(request: pytest.FixtureRequest) -> Ledger:
    return request.getfixturevalue("sqlite_ledger" if request.param == "sqlite" else "dynamo")


# ---- the contract ---------------------------------------------------------------------------


def test_claim_once(ledger: Ledger) -> None:
    first = make("job-1", params={"scale": 2})
    assert ledger.claim(first) is True
    assert ledger.claim(make("job-1", params={"scale": 4}, input_etag="other")) is False
    assert ledger.get("job-1") == first  # the duplicate changed nothing
    assert ledger.get("nope") is None


def test_roundtrip_every_field(ledger: Ledger) -> None:
    full = JobRecord(
        job_id="full",
        bucket="bücket",
        key="dir/clip ü.mp4",
        input_url="s3://bücket/dir/clip%20ü.mp4",
        input_etag='"abc-2"',
        input_size=2**40 + 3,
        params={"scale": 2.0, "fps": 60, "model": "rife", "opts": {"l": [1, 0.5, None, True]}},
        state=S.VERIFYING,
        attempt=3,
        first_attempt=2,
        preemptions=1,
        instance_id="i-123",
        offer_id="o-9",
        gpu_name="RTX 4090",
        dph=0.1 + 0.2,  # 0.30000000000000004: must come back bit for bit
        rates={"gpu_dph": 0.3, "storage_dph": 0.004, "down_per_gb": 2.0, "up_per_gb": 0.0},
        running_at=1_700_000_020.5,
        unhealthy_since=1_700_000_030.5,
        error_kind="transient",
        error="network blip",
        result_etag="r-etag",
        created_at=1_700_000_000.123456,
        updated_at=1_700_000_100.654321,
        launched_at=1_700_000_010.5,
        finished_at=1_700_000_090.25,
        next_attempt_at=1_700_000_200.75,
        deadline=1_700_003_600.0,
        cost=1e-7,
        segments=8,
        parent_id="vd-parent",
        segment={"index": 2, "count": 8, "start_s": "12.5", "end_s": None, "parent_attempt": 1},
        version=7,
    )
    # Guard: every field with a default is set to something else, so a new field is noticed here.
    for f in fields(JobRecord):
        if f.default is not MISSING:
            assert getattr(full, f.name) != f.default, f"set {f.name} in this test"
    minimal = make("minimal", error="")  # every optional field None, params empty
    for record in (full, minimal):
        assert ledger.claim(record)
        got = ledger.get(record.job_id)
        assert got == record
        assert type(got.params.get("scale", 0.0)) is float  # 2.0 stays a float, not 2
        assert type(got.dph or 0.0) is float and type(got.input_size) is int


def test_every_allowed_transition(ledger: Ledger) -> None:
    assert ALLOWED
    for a, b in ALLOWED:
        job_id = f"{a}-{b}"
        ledger.claim(make(job_id, state=a))
        before = time.time()
        moved = ledger.transition(job_id, a, b, error=f"{a}->{b}")
        assert moved is not None, (a, b)
        assert (moved.state, moved.version, moved.error) == (b, 1, f"{a}->{b}")
        assert moved.updated_at >= before
        assert ledger.get(job_id) == moved


def test_every_forbidden_transition_raises(ledger: Ledger) -> None:
    assert len(ALLOWED) + len(FORBIDDEN) == len(S) ** 2
    for state in S:
        ledger.claim(make(f"in-{state}", state=state))
    for a, b in FORBIDDEN:
        with pytest.raises(TransitionError):
            ledger.transition(f"in-{a}", a, b)
    for state in S:
        record = ledger.get(f"in-{state}")
        assert record is not None and (record.state, record.version) == (state, 0)


def test_transition_sets_and_clears_fields(ledger: Ledger) -> None:
    ledger.claim(make("j", state=S.RUNNING, instance_id="i-1", gpu_name="A100", dph=1.25))
    moved = ledger.transition(
        "j", S.RUNNING, S.RETRYING, instance_id=None, gpu_name=None, error="boom", cost=0.75,
        next_attempt_at=1_700_000_123.5, params={"scale": 3.0},
    )
    assert moved is not None
    assert (moved.instance_id, moved.gpu_name, moved.dph) == (None, None, 1.25)
    assert (moved.error, moved.cost, moved.next_attempt_at) == ("boom", 0.75, 1_700_000_123.5)
    assert moved.params == {"scale": 3.0}
    assert ledger.get("j") == moved
    with pytest.raises(TypeError):
        ledger.transition("j", S.RETRYING, S.LAUNCHING, no_such_field=1)
    with pytest.raises(TypeError):
        ledger.transition("j", S.RETRYING, S.LAUNCHING, version=9)


def test_transition_from_a_state_it_is_not_in_is_lost(ledger: Ledger) -> None:
    ledger.claim(make("j", state=S.VERIFYING))
    assert ledger.transition("j", S.QUEUED, S.LAUNCHING) is None
    # Target == current state but expected != current: someone already did it; just "lost".
    assert ledger.transition("j", S.RUNNING, S.VERIFYING) is None
    record = ledger.get("j")
    assert record is not None and (record.state, record.version) == (S.VERIFYING, 0)
    assert ledger.transition("missing", S.QUEUED, S.LAUNCHING) is None
    assert ledger.get("missing") is None  # a failed write never creates a record


def _race(count: int, attempt: Any) -> list[Any]:
    """Run attempt(i) in `count` threads released together; their results in thread order."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        results[i] = attempt(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_racing_transitions_have_one_winner(ledger: Ledger) -> None:
    ledger.claim(make("j", state=S.RUNNING))
    results = _race(RACERS, lambda i: ledger.transition("j", S.RUNNING, S.VERIFYING, gpu_name=f"t{i}"))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert ledger.get("j") == winners[0] and winners[0].version == 1


def test_update_is_guarded_by_version(ledger: Ledger) -> None:
    ledger.claim(make("j"))
    updated = ledger.update("j", 0, cost=1.5, dph=0.3, gpu_name="L4")
    assert updated is not None and (updated.version, updated.cost, updated.state) == (1, 1.5, S.QUEUED)
    assert ledger.update("j", 0, cost=99.0) is None  # stale version: lost
    assert ledger.get("j") == updated
    again = ledger.update("j", 1, gpu_name=None)
    assert again is not None and again.gpu_name is None and again.version == 2
    assert ledger.update("missing", 0, cost=1.0) is None
    with pytest.raises(TypeError):
        ledger.update("j", 2, state=S.RUNNING)  # state changes only through transition()
    results = _race(RACERS, lambda i: ledger.update("j", 2, cost=float(i)))
    assert sum(r is not None for r in results) == 1


def test_list_by_states(ledger: Ledger) -> None:
    t0 = 1_700_000_000.0
    plan = [("e", S.FAILED, 5), ("a", S.QUEUED, 1), ("c", S.RUNNING, 3), ("b", S.QUEUED, 2),
            ("d", S.RUNNING, 4)]  # fmt: skip
    for job_id, state, offset in plan:
        ledger.claim(make(job_id, state=state, created_at=t0 + offset))

    def ids(records: list[JobRecord]) -> list[str]:
        return [r.job_id for r in records]

    assert ids(ledger.list()) == ["a", "b", "c", "d", "e"]  # ordered by created_at
    assert ids(ledger.list({S.QUEUED})) == ["a", "b"]
    assert ids(ledger.list({S.RUNNING, S.FAILED})) == ["c", "d", "e"]
    assert ledger.list({S.SUCCEEDED}) == []
    assert ledger.list(set()) == []


def test_find_by_instance(ledger: Ledger) -> None:
    ledger.claim(make("a", state=S.RUNNING, instance_id="i-1"))
    ledger.claim(make("b", state=S.RUNNING, instance_id="i-2"))
    found = ledger.find_by_instance("i-2")
    assert found is not None and found.job_id == "b"
    assert ledger.find_by_instance("i-3") is None
    ledger.transition("b", S.RUNNING, S.RETRYING, instance_id=None)
    assert ledger.find_by_instance("i-2") is None


# ---- DynamoDB only --------------------------------------------------------------------------


def _raw(ledger: DynamoLedger, job_id: str) -> dict[str, Any]:
    return ledger.client.get_item(TableName=ledger.table_name, Key={"job_id": {"S": job_id}})["Item"]


def test_dynamo_terminal_records_expire(dynamo: DynamoLedger) -> None:
    dynamo.claim(make("j", state=S.RUNNING, dph=0.5))
    raw = _raw(dynamo, "j")
    assert TTL_ATTRIBUTE not in raw and "instance_id" not in raw  # None fields are left out
    assert raw["dph"] == {"N": "0.5"}  # floats are numbers, stored via Decimal
    dynamo.transition("j", S.RUNNING, S.VERIFYING)
    assert TTL_ATTRIBUTE not in _raw(dynamo, "j")

    now = time.time()
    dynamo.transition("j", S.VERIFYING, S.SUCCEEDED)
    expires_at = int(_raw(dynamo, "j")[TTL_ATTRIBUTE]["N"])
    assert abs(expires_at - (now + TTL_DAYS * SECONDS_PER_DAY)) < 60

    dynamo.transition("j", S.SUCCEEDED, S.QUEUED)  # a replay must not vanish with the old TTL
    assert TTL_ATTRIBUTE not in _raw(dynamo, "j")


def test_dynamo_create_table_is_idempotent(dynamo: DynamoLedger) -> None:
    create_table(dynamo.client, dynamo.table_name)  # the fixture already created it
    DynamoLedger.create_table(dynamo.client, dynamo.table_name)
    ttl = dynamo.client.describe_time_to_live(TableName=dynamo.table_name)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", TTL_ATTRIBUTE)
    table = dynamo.client.describe_table(TableName=dynamo.table_name)["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("ProvisionedThroughputExceededException", 400, TransientError),
        ("ThrottlingException", 400, TransientError),
        ("RequestLimitExceeded", 400, TransientError),
        ("InternalServerError", 500, TransientError),
        ("ServiceUnavailable", 503, TransientError),
        ("ValidationException", 400, PermanentError),
        ("ResourceNotFoundException", 400, PermanentError),
    ],
)
def test_dynamo_errors_are_translated(ddb_client: Any, code: str, status: int, expected: type) -> None:
    client = ddb_client
    ledger = DynamoLedger("any", client=client)
    with Stubber(client) as stub:
        stub.add_client_error("update_item", service_error_code=code, http_status_code=status)
        with pytest.raises(expected) as info:
            ledger.update("j", 0, cost=1.0)
    assert not isinstance(info.value, TransientError if expected is PermanentError else PermanentError)


def test_dynamo_unreachable_is_transient() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client(
        "dynamodb", endpoint_url=f"http://127.0.0.1:{port}",
        config=Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=2),
    )
    with pytest.raises(TransientError):
        DynamoLedger("any", client=client).get("j")


# ---- open_ledger ----------------------------------------------------------------------------


def test_open_ledger_dispatches(tmp_path: Path) -> None:
    by_url = open_ledger(f"sqlite://{tmp_path}/a.db")
    by_path = open_ledger(str(tmp_path / "b.db"))
    assert isinstance(by_url, SqliteLedger) and by_url.path == tmp_path / "a.db"
    assert isinstance(by_path, SqliteLedger) and by_path.path == tmp_path / "b.db"
    by_url.close()
    by_path.close()
    client = object()
    dynamo = open_ledger("dynamodb://jobs-table", dynamodb_client=client)
    assert isinstance(dynamo, DynamoLedger)
    assert (dynamo.table_name, dynamo.client) == ("jobs-table", client)
    for bad in ("redis://x", "dynamodb://", "sqlite://"):
        with pytest.raises(ConfigError):
            open_ledger(bad)


# ---- SQLite only: several processes on one file ---------------------------------------------
# Workers are module-level so that spawned processes can import them.


def _claim_worker(path: str, ids: list[str], barrier: Any, results: Any) -> None:
    ledger = SqliteLedger(path)
    barrier.wait()
    won = [i for i in ids if ledger.claim(make(i, params={"owner": os.getpid()}))]
    results.put((os.getpid(), won))


def test_sqlite_processes_claim_each_id_once(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.db")
    ids = [f"job-{n}" for n in range(CLAIM_IDS)]
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    orders = [ids, ids[::-1]]  # one forwards, one backwards: they collide in the middle
    procs = [ctx.Process(target=_claim_worker, args=(path, o, barrier, results)) for o in orders]
    for p in procs:
        p.start()
    won = dict(results.get(timeout=PROCESS_TIMEOUT_S) for _ in procs)
    for p in procs:
        p.join(PROCESS_TIMEOUT_S)
        assert p.exitcode == 0
    a, b = won.values()
    assert set(a).isdisjoint(b) and sorted(a + b) == sorted(ids)
    ledger = SqliteLedger(path)
    for pid, claimed in won.items():  # the stored record is the winner's, never overwritten
        assert all(getattr(ledger.get(i), "params", None) == {"owner": pid} for i in claimed)
    ledger.close()


def _hold_write_transaction(path: str, job_id: str, ready: Any) -> None:
    """Test hook: open the ledger's own write transaction, write a lot into it, then hang."""
    ledger = SqliteLedger(path)
    with ledger._tx() as conn:
        conn.execute("UPDATE jobs SET state = 'running', version = version + 1 WHERE job_id = ?", (job_id,))
        conn.execute("CREATE TABLE scratch (blob BLOB)")
        # ~8 MB: more than SQLite's page cache, so uncommitted frames spill into the WAL file.
        conn.executemany("INSERT INTO scratch VALUES (randomblob(4096))", [()] * 2000)
        ready.set()
        time.sleep(KILL_HOLD_S)


def test_sqlite_survives_sigkill_mid_transaction(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.db")
    ledger = SqliteLedger(path, busy_timeout_s=SHORT_BUSY_TIMEOUT_S)
    ledger.claim(make("j"))
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_write_transaction, args=(path, "j", ready))
    holder.start()
    try:
        assert ready.wait(PROCESS_TIMEOUT_S)
        with pytest.raises(TransientError):  # the writer holds the lock: "database is locked"
            ledger.transition("j", S.QUEUED, S.LAUNCHING)
        assert getattr(ledger.get("j"), "state", None) == S.QUEUED  # readers are not blocked and see no dirty data
    finally:
        assert holder.pid is not None
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(PROCESS_TIMEOUT_S)
    assert holder.exitcode == -signal.SIGKILL

    moved = ledger.transition("j", S.QUEUED, S.LAUNCHING)  # the same process proceeds
    assert moved is not None and moved.version == 1
    restarted = SqliteLedger(path)  # and so does a restarted watcher
    assert restarted.get("j") == moved
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "scratch" not in tables  # the killed transaction left nothing behind
    finally:
        conn.close()
    restarted.close()
    ledger.close()


def test_a_version_1_sqlite_ledger_gains_the_new_columns_and_keeps_its_rows(tmp_path) -> None:
    import sqlite3

    from vastdrop.ledger import sqlite as sqlite_ledger

    path = tmp_path / "old.sqlite"
    old_schema = sqlite_ledger.SCHEMA
    for name in sqlite_ledger.ADDED_COLUMNS:
        old_schema = "\n".join(line for line in old_schema.splitlines() if not line.strip().startswith(name + " "))
    conn = sqlite3.connect(path)
    conn.executescript(old_schema + "PRAGMA user_version = 1;")
    conn.execute("INSERT INTO jobs (job_id, bucket, key, input_url, input_etag, input_size, params, state, attempt,"
                 " created_at, updated_at, cost, version) VALUES ('old', 'b', 'input/a.mp4', 'file:///a', '\"e\"', 5,"
                 " '{}', 'running', 1, 1.0, 1.0, 0.5, 3)")
    conn.commit()
    conn.close()
    ledger = sqlite_ledger.SqliteLedger(path)
    record = ledger.get("old")
    assert record is not None and record.cost == 0.5 and record.rates is None and record.running_at is None
    updated = ledger.update("old", record.version, rates={"gpu_dph": 0.2}, running_at=2.0)
    assert updated is not None and updated.rates == {"gpu_dph": 0.2} and updated.running_at == 2.0
