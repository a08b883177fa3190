"""`watcher serve` under abuse, over real HTTP on 127.0.0.1: what a sender can cost it is bounded
(body size, idle and trickling connections, connections at once), malformed requests get a clear
400 rather than a traceback, job callbacks are signed with each job's own key and answered 202
whatever the job's state, and B2 events older than the ledger can remember are never acted on."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from handlers.deps import ControlConfig, Deps
from vastdrop import signing
from vastdrop.manifest import ErrorInfo, Manifest, ObjectRef
from vastdrop.storage.local import file_url_to_path
from watcher.server import MAX_BODY_BYTES, EventServer

WEBHOOK_SECRET = "0123456789abcdefghijABCDEFGHIJ01"
CALLBACK_SECRET = "callback-secret-for-server-tests"
MAX_CONNECTIONS = 4
READ_TIMEOUT_S = 0.5
DEADLINE_S = 2.0
WEEK_S = 7 * 24 * 3600


@pytest.fixture  # `deps`: the embedded default, from tests/conftest.py
def server(deps) -> Iterator[EventServer]:
    srv = EventServer(deps, "127.0.0.1", 0, WEBHOOK_SECRET, CALLBACK_SECRET, max_connections=MAX_CONNECTIONS,
                      read_timeout_s=READ_TIMEOUT_S, deadline_s=DEADLINE_S).start()
    try:
        yield srv
    finally:
        srv.stop()


def _url(server: EventServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def _raw(server: EventServer, head: bytes, timeout: float = 3.0) -> tuple[int, bytes, float]:
    """Send `head` (request line and headers, no body) on a raw socket; (status, body, seconds)."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2], time.monotonic() - start


def _put_input(deps: Deps, key: str, data: bytes = b"video bytes") -> None:
    path = file_url_to_path(deps.inputs.url(key))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _b2_delivery(key: str, size: int, timestamp_s: float) -> tuple[bytes, dict[str, str]]:
    event = {"eventType": "b2:ObjectCreated:Upload", "objectName": key, "objectSize": size,
             "bucketName": "b", "eventTimestamp": int(timestamp_s * 1000)}
    body = json.dumps({"events": [event]}).encode()
    return body, {signing.B2_SIGNATURE_HEADER: signing.sign(WEBHOOK_SECRET, body)}


def _manifest(job_id: str) -> bytes:
    return Manifest(job_id=job_id, status="failed", input=ObjectRef(url="s3://b/input/a.mp4"),
                    error=ErrorInfo(kind="transient", message="out of disk")).to_json()


# -- Content-Length -----------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    b"",  # none at all
    b"Content-Length: abc\r\n",
    b"Content-Length: -1\r\n",
    b"Content-Length: 1_0\r\n",  # int() would take it
    b"Content-Length: +5\r\n",
    b"Content-Length: 5\r\nContent-Length: 6\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: %d\r\n" % (MAX_BODY_BYTES + 1),
    b"Content-Length: %d\r\n" % (400 << 20),  # 400 MiB: once read whole, signature unchecked
], ids=["missing", "letters", "negative", "underscore", "plus", "two", "chunked", "cap+1", "400MiB"])
@pytest.mark.parametrize("path", ["/webhook", "/callback"])
def test_a_body_without_one_plain_capped_length_is_refused_before_it_is_read(server, path, headers):
    """GIVEN a POST whose Content-Length is missing, not one plain number, or above 1 MiB
    WHEN its headers arrive (and no body ever does)
    THEN it gets a 400 at once, with JSON saying what is wanted: the server never waits for the body."""
    status, body, seconds = _raw(server, b"POST %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (path.encode(), headers))
    assert status == 400 and seconds < READ_TIMEOUT_S  # not a read that timed out
    assert "Content-Length" in json.loads(body)["error"]


def test_a_body_at_the_cap_is_read_and_checked(server):
    body = b" " * MAX_BODY_BYTES
    answer = requests.post(_url(server, "/webhook"), data=body, timeout=5)
    assert answer.status_code == 401  # read whole, then refused for its signature


def test_a_body_shorter_than_declared_is_dropped_after_the_read_timeout(server):
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly this")
        assert sock.recv(65536) == b""  # closed without an answer
    assert READ_TIMEOUT_S <= time.monotonic() - start < DEADLINE_S


# -- connections --------------------------------------------------------------------------------


def test_an_idle_connection_is_dropped_after_the_read_timeout(server):
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        assert sock.recv(1) == b""
    assert READ_TIMEOUT_S * 0.9 <= time.monotonic() - start < READ_TIMEOUT_S + 1


def test_a_sender_trickling_bytes_is_dropped_at_the_connection_deadline(server):
    """Each byte arrives within the read timeout, so only the whole connection's deadline stops it."""
    start = time.monotonic()
    request = b"POST /webhook HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000
    closed = False
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(READ_TIMEOUT_S / 3)
            if time.monotonic() - start > DEADLINE_S + 2:
                break
        if not closed:
            sock.settimeout(1)
            try:
                closed = sock.recv(1) == b""
            except ConnectionResetError:
                closed = True
    assert closed and time.monotonic() - start < DEADLINE_S + 2


def test_connections_beyond_the_cap_get_503_at_once_and_hold_no_thread(deps):
    """GIVEN 50 idle senders against a cap of 4
    THEN the server runs at most 4 handler threads; every other sender gets 503 at once;
    and once the idle ones are dropped (read timeout), a real request is answered again."""
    read_timeout_s = 1.5
    server = EventServer(deps, "127.0.0.1", 0, WEBHOOK_SECRET, None, max_connections=MAX_CONNECTIONS,
                         read_timeout_s=read_timeout_s).start()
    threads_before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(50)]
    try:
        time.sleep(0.3)
        ready, _, _ = select.select(idle, [], [], 0)  # those answered already
        assert threading.active_count() - threads_before <= MAX_CONNECTIONS
        assert len(ready) == 50 - MAX_CONNECTIONS
        assert all(sock.recv(64).startswith(b"HTTP/1.0 503") for sock in ready)
        status, _, seconds = _raw(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 503 and seconds < 0.5  # still full: refused at once
        time.sleep(read_timeout_s + 0.5)  # the four held slots time out and are given back
        assert requests.get(_url(server, "/healthz"), timeout=5).json() == {"ok": True}
    finally:
        for sock in idle:
            sock.close()
        server.stop()


# -- webhook payloads ---------------------------------------------------------------------------


MALFORMED = {
    "not JSON": b"not json",
    "not UTF-8": b'{"events": ["\xff\xfe"]}',
    "a list": b"[1, 2]",
    "nested too deep": b"[" * 5_000,
    "events not a list": b'{"events": "many"}',
    "an event not an object": b'{"events": [1]}',
    "no objectName": b'{"events": [{"eventType": "b2:ObjectCreated:Upload", "eventTimestamp": 1}]}',
    "objectName a number": b'{"events": [{"eventType": "b2:ObjectCreated:Upload", "objectName": 5, "eventTimestamp": 1}]}',
    "objectSize a string": b'{"events": [{"eventType": "b2:ObjectCreated:Upload", "objectName": "input/a.mp4", '
                           b'"objectSize": "big", "eventTimestamp": 1}]}',
    "eventTimestamp a string": b'{"events": [{"eventType": "b2:ObjectCreated:Upload", "objectName": "input/a.mp4", '
                               b'"eventTimestamp": "yesterday"}]}',
    "S3 record without key": b'{"Records": [{"eventName": "ObjectCreated:Put", "eventTime": '
                             b'"2026-01-01T00:00:00Z", "s3": {"object": {}}}]}',
    "neither shape": b'{"something": []}',
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_signed_but_malformed_delivery_gets_400_and_changes_nothing(server, deps, body):
    headers = {signing.B2_SIGNATURE_HEADER: signing.sign(WEBHOOK_SECRET, body)}
    answer = requests.post(_url(server, "/webhook"), data=body, headers=headers, timeout=5)
    assert answer.status_code == 400 and answer.json()["error"]
    assert "Traceback" not in answer.text and server.work.unfinished_tasks == 0
    assert deps.ledger.list() == []


def test_events_older_than_the_ledger_remembers_are_answered_202_and_ignored(server, deps):
    """GIVEN a validly signed B2 delivery replayed eight days later (the ledger has forgotten the job)
    THEN it is answered 202 (B2 would otherwise deliver it again and again) and nothing is claimed;
    the same delivery fresh launches its job."""
    _put_input(deps, "input/a.mp4")
    body, headers = _b2_delivery("input/a.mp4", 11, time.time() - WEEK_S - 24 * 3600)
    answer = requests.post(_url(server, "/webhook"), data=body, headers=headers, timeout=5)
    assert (answer.status_code, answer.json()) == (202, {"accepted": 0, "ignored": 1})
    server.work.join()
    assert deps.ledger.list() == []
    body, headers = _b2_delivery("input/a.mp4", 11, time.time() - 60)
    answer = requests.post(_url(server, "/webhook"), data=body, headers=headers, timeout=5)
    assert (answer.status_code, answer.json()) == (202, {"accepted": 1, "ignored": 0})
    server.work.join()
    assert len(deps.ledger.list()) == 1


def test_the_event_age_limit_is_configurable(server, deps):
    deps.config = ControlConfig(event_max_age_s=60)
    _put_input(deps, "input/b.mp4")
    body, headers = _b2_delivery("input/b.mp4", 11, time.time() - 120)
    answer = requests.post(_url(server, "/webhook"), data=body, headers=headers, timeout=5)
    assert answer.json() == {"accepted": 0, "ignored": 1}
    server.work.join()
    assert deps.ledger.list() == []


# -- job callbacks --------------------------------------------------------------------------------


def _callback(server: EventServer, body: bytes, key: str | None) -> requests.Response:
    headers = {signing.CALLBACK_SIGNATURE_HEADER: signing.sign(key, body)} if key else {}
    return requests.post(_url(server, "/callback"), data=body, headers=headers, timeout=5)


def test_a_callback_must_be_signed_with_its_own_jobs_key(server):
    """A host holds only its own job's key, HMAC(callback secret, job id): a body naming another job,
    or signed with the shared secret itself, is refused; the refusals say nothing about jobs."""
    mine, theirs = _manifest("vd-mine"), _manifest("vd-theirs")
    own_key = signing.job_key(CALLBACK_SECRET, "vd-mine")
    assert _callback(server, mine, own_key).status_code == 202
    refusals = [_callback(server, theirs, own_key), _callback(server, mine, CALLBACK_SECRET),
                _callback(server, mine, None), _callback(server, mine, signing.job_key("wrong", "vd-mine"))]
    assert [r.status_code for r in refusals] == [401] * 4
    assert {r.text for r in refusals} == {'{"error": "bad or missing signature"}'}
    for not_manifest in (b'{"job_id": "vd-mine"}', b"[]", b"not json", b'{"job_id": 5}'):
        answer = _callback(server, not_manifest, own_key)
        assert answer.status_code == 400 and "vd-mine" not in answer.text
    # Two job ids in one body: both readers take the last one, so the key must be that job's.
    twice = mine[:-1] + b', "job_id": "vd-theirs"}'
    assert _callback(server, twice, own_key).status_code == 401


def test_a_validly_signed_callback_gets_the_same_202_whatever_its_jobs_state(server, deps):
    """Known or unknown, running or finished: the answer is one and the same, so a host learns nothing."""
    from handlers.created import ObjectEvent, on_object_created

    _put_input(deps, "input/c.mp4")
    known = on_object_created(ObjectEvent("input/c.mp4"), deps).job_id
    answers = {_callback(server, _manifest(job), signing.job_key(CALLBACK_SECRET, job)).text
               for job in (known, "vd-unknown", known)}
    assert answers == {'{"accepted": true}'}
    server.work.join()  # and the worker handled them without raising
