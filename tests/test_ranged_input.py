"""The input read through ranged GETs (gpu_job.ranged_input): the bytes as stored, each block
fetched once, only what is read plus a bounded read-ahead, and errors that reach the reader."""

from __future__ import annotations

import http.server
import os
import random
import threading
import uuid
from pathlib import Path

import av
import pytest

from gpu_job.media.probe import measure, readable
from gpu_job.ranged_input import RangedInput
from tests.support.clips import make_clip
from vastdrop.errors import TransientError
from vastdrop.storage.https import HttpsStorage
from vastdrop.storage.s3 import S3Storage, s3_url


def _recording(data: bytes, calls: list[tuple[int, int]]):
    def read(start: int, length: int) -> bytes:
        calls.append((start, length))
        return data[start:start + length]
    return read


def test_reads_from_many_threads_and_handles_give_the_bytes_and_fetch_each_block_once(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 12345)  # not a whole number of blocks
    calls: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    with RangedInput(_recording(data, calls), len(data), tmp_path / "cache", block=64 << 10, run=4,
                     read_ahead=8) as source:

        def reader(seed: int) -> None:
            rng, handle = random.Random(seed), source.open()
            try:
                for _ in range(200):
                    handle.seek(rng.randrange(len(data) + 10))
                    want = rng.randrange(1, 200_000)
                    at = handle.tell()
                    assert handle.read(want) == data[at:at + want]
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors[0]
        whole = source.open()
        assert whole.read() == data and whole.read(10) == b""
        whole.seek(-5, os.SEEK_END)
        assert whole.read() == data[-5:]
    covered = sorted(calls)
    assert all(a + n <= b for (a, n), (b, _) in zip(covered, covered[1:], strict=False)), "a byte fetched twice"
    assert sum(n for _, n in calls) == len(data) == source.fetched_bytes


def test_a_read_fetches_what_it_needs_and_the_read_ahead_grows_only_while_reads_run_on(tmp_path: Path) -> None:
    data, block = os.urandom(8 << 20), 64 << 10
    calls: list[tuple[int, int]] = []

    def settled(source: RangedInput) -> int:
        for _ in range(50):  # the read-ahead runs on in its thread: wait until it stops growing
            before = source.fetched_bytes
            threading.Event().wait(0.02)
            if source.fetched_bytes == before:
                return before
        return source.fetched_bytes

    with RangedInput(_recording(data, calls), len(data), tmp_path / "cache", block=block, run=4,
                     read_ahead=8) as source:
        handle = source.open()
        handle.seek(5 << 20)
        assert handle.read(1000) == data[5 << 20:(5 << 20) + 1000]
        assert settled(source) <= 2 * block  # after a seek: the block read and one ahead
        assert min(start for start, _ in calls) == 5 << 20
        for _ in range(6):  # reads that run on: the read-ahead doubles, to its cap
            handle.read(block)
        read_to = handle.tell()
        assert read_to + 4 * block <= (5 << 20) + settled(source) <= read_to + 9 * block
        handle.seek(0)  # a seek starts it afresh
        handle.read(10)
        settled(source)
        assert sum(n for start, n in calls if start < 5 << 20) <= 2 * block


def test_a_failing_store_reaches_the_waiting_reader_as_transient_and_nothing_hangs(tmp_path: Path) -> None:
    def broken(start: int, length: int) -> bytes:
        raise TransientError("connection reset")

    def short(start: int, length: int) -> bytes:
        return b"x" * (length - 1)  # the object got shorter: another version

    for read in (broken, short):
        with RangedInput(read, 1 << 20, tmp_path / f"cache-{read.__name__}") as source:
            with pytest.raises(TransientError, match="reading the input failed"):
                source.open().read(100)


def test_a_failed_read_ahead_costs_nothing_that_is_cached_or_not_yet_needed(tmp_path: Path) -> None:
    data, block = os.urandom(4 << 20), 64 << 10
    failing = {"from": 1 << 20}

    def read(start: int, length: int) -> bytes:
        if start + length > failing["from"]:
            raise TransientError("connection reset")
        return data[start:start + length]

    with RangedInput(read, len(data), tmp_path / "cache", block=block, run=4, read_ahead=16) as source:
        handle = source.open()
        for _ in range(12):  # reads that run on: the read-ahead reaches past 1 MiB, and fails there
            handle.read(block)
        threading.Event().wait(0.2)
        handle.seek(0)
        assert handle.read(12 * block) == data[:12 * block]  # cached: still served
        failing["from"] = len(data)  # the store is back: a read that needs those bytes gets them
        handle.seek(2 << 20)
        assert handle.read(100) == data[2 << 20:(2 << 20) + 100]
        failing["from"] = 0
        handle.seek(3 << 20)
        with pytest.raises(TransientError, match="reading the input failed"):  # needed, and failing: said
            handle.read(100)


class _IgnoresRange(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200)  # the whole object, whatever Range asked
        self.send_header("Content-Length", str(len(self.body)))
        self.send_header("ETag", '"e"')
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


def test_a_store_that_ignores_range_still_gives_the_range_and_nothing_is_asked_for_nothing() -> None:
    _IgnoresRange.body = os.urandom(3 << 20)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _IgnoresRange)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/object"
        https = HttpsStorage(timeout_s=10, backoff_s=0.01, max_backoff_s=0.05)
        assert https.read_range(url, (2 << 20) + 5, 1000) == _IgnoresRange.body[(2 << 20) + 5:(2 << 20) + 1005]
        assert https.read_range(url, 10, 0) == b""
    finally:
        server.shutdown()
        server.server_close()


def test_a_video_demuxed_through_ranges_measures_as_the_downloaded_file(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", width=96, height=64, fps=12, seconds=2, audio=True)
    data = clip.read_bytes()
    calls: list[tuple[int, int]] = []
    with RangedInput(_recording(data, calls), len(data), tmp_path / "cache", block=4096) as source:
        assert measure(source) == measure(clip)
        with av.open(readable(source)) as container:
            assert sum(1 for _ in container.decode(video=0)) == 24


def test_presigned_ranged_gets_are_pinned_to_the_version_they_began_with(seaweed, bucket, tmp_path: Path) -> None:
    s3 = S3Storage(client=seaweed.client())
    url = s3_url(bucket, f"in/{uuid.uuid4().hex}.bin")
    first = os.urandom(300_000)
    s3.put_bytes(first, url)
    get_url, https = s3.presign_get(url, 300), HttpsStorage(timeout_s=10, backoff_s=0.01, max_backoff_s=0.05)
    info = https.head(get_url)
    assert https.read_range(get_url, 1000, 5000, if_match=info.etag) == first[1000:6000]
    assert https.read_range(get_url, 299_990, 5000, if_match=info.etag) == first[299_990:]  # fewer at the end
    s3.put_bytes(os.urandom(300_000), url)  # replaced while the job reads it
    with pytest.raises(TransientError, match="changed"):
        https.read_range(get_url, 0, 10, if_match=info.etag)
