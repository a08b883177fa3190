"""The input read through ranged GETs as the demuxer asks for bytes, not downloaded whole first
(issue 12: a segment job reads the header, its own span and a little around it; each of N segment
jobs downloading the whole film would bill its bandwidth N times).

The bytes land in a sparse local file, block by block, and every block is fetched once however many
containers read it (the scan, the probe, the decoder each open the input afresh). One thread does
all the fetching: the block a reader waits for first, else the next missing blocks ahead of the
latest read (growing to READ_AHEAD while the reads run on), so the network runs while the decoder
works. Every range is pinned to the
ETag the input had when the job began: an input replaced mid-job fails it (TransientError, worth a
retry on the new version) instead of mixing two versions' bytes.

A whole job (issue 11 item 4) reads every byte, so it sweeps: a second thread fetches the whole
object in order from the start, in GETs that grow to SWEEP_RUN, a download that stays ahead of the
decoder, which starts at once instead of after the last byte. The first thread still fetches what
readers wait for elsewhere (an MP4's index at the file's end, say) without queueing behind the
sweep; a block already on its way in either thread is not asked for again.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from vastdrop.errors import TransientError

logger = logging.getLogger(__name__)

BLOCK = 256 << 10  # the unit of the cache
RUN = 8  # blocks in one GET at most (2 MiB): few requests, and a wait is never long
READ_AHEAD = 16  # blocks fetched ahead of the latest read (4 MiB): the decoder seldom waits on the network
# The read-ahead starts at this and doubles with each read that follows on from the last, up to
# READ_AHEAD; a seek starts it afresh (as Linux's page cache does): headers and the first group of
# pictures, read before the seek to a segment's span, cost little more than themselves.
FIRST_READ_AHEAD = 1
# A sweep's GETs double from FIRST_SWEEP_RUN to SWEEP_RUN blocks: the first small, so that the
# decoder starts on the first bytes; later ones large enough that a request's round trip costs little
# of a fast link (8 MiB is 134 ms at 500 Mbit/s), small enough that a reader waiting on one of their
# blocks waits a fraction of a second.
FIRST_SWEEP_RUN = 2
SWEEP_RUN = 32

ReadRange = Callable[[int, int], bytes]  # (start, length) -> bytes [start, start + length), fewer at the end


class RangedInput:
    """An object of `size` bytes read through `read_range`, cached in `cache` (a sparse file)."""

    def __init__(self, read_range: ReadRange, size: int, cache: Path, *, block: int = BLOCK, run: int = RUN,
                 read_ahead: int = READ_AHEAD, sweep: bool = False, sweep_run: int = SWEEP_RUN) -> None:
        """sweep: fetch the whole object in order besides what readers ask for (a whole job's input)."""
        self.size, self.block, self.run, self.read_ahead = size, block, run, read_ahead
        self.sweep_run = sweep_run
        self._sweeping = sweep  # until the sweep is done, or a fetch of its own failed
        self._swept = 0  # every block before this one was here or on its way when the sweep passed it
        self._sweep_step = min(FIRST_SWEEP_RUN, sweep_run)  # the sweep's next GET, in blocks
        self._read_range = read_range
        self._blocks = (size + block - 1) // block
        self._have = bytearray(self._blocks)
        self._coming = bytearray(self._blocks)  # asked for by either thread, not here yet
        self._wanted: list[int] = []  # blocks readers wait for, in the order asked
        self._cursor = 0  # the block after the latest read: read-ahead starts here
        self._ahead = 0  # blocks to read ahead of it (the latest reader's; none before the first read)
        self._error: BaseException | None = None
        self._closed = False
        self._cond = threading.Condition()
        self.fetched_bytes = 0
        self.requests = 0
        self.started_at = time.monotonic()
        self.completed_at: float | None = None  # when the last missing block arrived
        self.last_fetch_at: float | None = None  # when the latest block arrived
        cache.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(cache, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self._fd, size)  # sparse: only what is fetched takes disk
        self._fetchers = [threading.Thread(target=self._fetch_loop, args=(self._next_run,), daemon=True,
                                           name="vastdrop-ranged-input")]
        if sweep:
            self._fetchers.append(threading.Thread(target=self._fetch_loop, args=(self._next_sweep,), daemon=True,
                                                   name="vastdrop-ranged-sweep"))
        for fetcher in self._fetchers:
            fetcher.start()

    def open(self) -> RangedReader:
        """A fresh, seekable file object for a container (PyAV reads any such)."""
        return RangedReader(self)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for fetcher in self._fetchers:
            fetcher.join()
        os.close(self._fd)

    def __enter__(self) -> RangedInput:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- for readers ------------------------------------------------------------------------------
    def pread(self, offset: int, length: int, ahead: int = 0) -> bytes:
        """Bytes [offset, offset + length), fewer at the end; then `ahead` blocks are read ahead."""
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        first, last = offset // self.block, (offset + length - 1) // self.block
        with self._cond:
            if self._closed:  # a reader that outlived the input (a measure left behind): never the fd
                raise TransientError("the input was closed")
            # While it sweeps, the sweep reads ahead: a read-ahead as well would only cut it into pieces.
            self._cursor, self._ahead = last + 1, 0 if self._sweeping else min(ahead, self.read_ahead)
            missing = [b for b in range(first, last + 1) if not self._have[b]]
            self._wanted.extend(b for b in missing if b not in self._wanted)
            self._cond.notify_all()
            while not all(self._have[b] for b in missing):
                if self._error is not None:
                    raise TransientError(f"reading the input failed: {self._error}") from self._error
                if self._closed:
                    raise TransientError("the input was closed while a read waited")
                self._cond.wait()
        return os.pread(self._fd, length, offset)

    # -- the fetching threads ---------------------------------------------------------------------
    def _next_run(self) -> tuple[int, int] | None:
        """(first block, count) to fetch now, or None: a waited-for block first, else read-ahead."""
        while self._wanted and self._have[self._wanted[0]]:
            self._wanted.pop(0)
        start = next((b for b in self._wanted if not self._have[b] and not self._coming[b]), None)
        if start is not None:
            limit = max(start + 1, self._cursor + self._ahead)  # the read's blocks, and its read-ahead
        else:
            limit = self._cursor + self._ahead
            ahead = range(self._cursor, min(self._blocks, limit))
            start = next((b for b in ahead if not self._have[b] and not self._coming[b]), None)
            if start is None:
                return None
        return start, self._run_from(start, limit, self.run)

    def _next_sweep(self) -> tuple[int, int] | None:
        """(first block, count) of the sweep's next GET, or None once it has asked for every block."""
        while self._swept < self._blocks and (self._have[self._swept] or self._coming[self._swept]):
            self._swept += 1
        if not self._sweeping or self._swept == self._blocks:
            self._sweeping = False
            return None
        step, self._sweep_step = self._sweep_step, min(2 * self._sweep_step, self.sweep_run)
        return self._swept, self._run_from(self._swept, self._swept + step, step)

    def _run_from(self, start: int, limit: int, longest: int) -> int:
        """How many missing blocks from `start` one GET takes: at most `longest`, none past `limit`,
        none that is here or on its way."""
        stop = start
        while stop < min(self._blocks, start + longest, limit) and not self._have[stop] and not self._coming[stop]:
            stop += 1
        return stop - start

    def _fetch_loop(self, next_run: Callable[[], tuple[int, int] | None]) -> None:
        sweeper = next_run == self._next_sweep
        while True:
            with self._cond:
                while not self._closed and (job := next_run()) is None:
                    if sweeper and not self._sweeping:
                        return  # swept: every block was asked for
                    self._cond.wait()
                if self._closed:
                    return
                start, count = job
                self._coming[start:start + count] = b"\x01" * count
            offset = start * self.block
            length = min(count * self.block, self.size - offset)
            try:
                data = self._read_range(offset, length)
                if len(data) != length:  # the object is shorter than it was: another version
                    raise TransientError(f"got {len(data)} bytes at offset {offset}, expected {length}")
                view = memoryview(data)
                while view:  # pwrite may write less (a disk filling up): never leave a hole marked fetched
                    view = view[os.pwrite(self._fd, view, offset + len(data) - len(view)):]
            except BaseException as exc:
                with self._cond:
                    self._coming[start:start + count] = bytes(count)
                    self._cond.notify_all()  # the other thread fetches what a reader still waits for
                    if sweeper:  # the store's own retries are spent: readers still get their blocks, each asked for
                        self._sweeping = False
                        logger.warning("the input's sweep stopped; reading on demand from here",
                                       extra={"offset": offset, "error": type(exc).__name__})
                        return
                    if any(b in self._wanted for b in range(start, start + count)):
                        self._error = exc  # a reader needs these bytes: surfaced by the reader that waits
                        return
                    self._ahead = 0  # only read ahead: no harm done; no more until the next read
                continue
            with self._cond:
                self._have[start:start + count] = b"\x01" * count
                self._coming[start:start + count] = bytes(count)
                self.fetched_bytes += length
                self.requests += 1
                self.last_fetch_at = time.monotonic()
                if self.fetched_bytes == self.size:
                    self.completed_at = self.last_fetch_at
                self._cond.notify_all()


class RangedReader(io.RawIOBase):
    """One container's view of a RangedInput: its own position, the shared cache."""

    def __init__(self, source: RangedInput) -> None:
        self._source, self._pos = source, 0
        self._ahead, self._next = 0, None  # this reader's read-ahead, and where its reads run on

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._source.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._source.size - self._pos
        follows = self._next is not None and self._pos == self._next
        self._ahead = min(2 * self._ahead, self._source.read_ahead) if follows and self._ahead else FIRST_READ_AHEAD
        data = self._source.pread(self._pos, size, self._ahead)
        self._pos += len(data)
        self._next = self._pos
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
