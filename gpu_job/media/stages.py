"""Pipeline stages that overlap: each runs in its own thread, joined to the next by a small bounded queue.

A stage is any iterator (the pipeline's generators); `Stages.thread(items)` runs it in a thread and
hands its items on through a queue of `size`, so memory stays bounded whatever the input's length:
a stage that runs ahead blocks on the full queue. PyAV releases the GIL while it decodes, filters and
encodes, and torch while it computes, so the threads really run at once.

An error in any stage reaches its consumer as the same exception (a BadInputError stays one), and
`close()` (the pipeline's `finally`) stops every stage and waits for its thread: nothing is left
running against a closed container. A stage that is stopped raises Stopped inside itself, so it
abandons its work rather than finishing it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")

POLL_S = 0.05  # how often a blocked stage looks whether the pipeline was stopped
_ITEM, _END, _ERROR = range(3)


class Stopped(Exception):
    """The pipeline is being stopped (another stage failed, or the consumer stopped early)."""


class Stages:
    def __init__(self, threaded: bool = True) -> None:
        """threaded=False: every stage runs in its consumer's thread, one step after another (the same
        code and the same frames; for comparison and debugging)."""
        self.threaded = threaded
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def thread(self, items: Iterator[T], size: int, name: str) -> Iterator[T]:
        if not self.threaded:
            return items
        channel: queue.Queue = queue.Queue(maxsize=size)
        worker = threading.Thread(target=self._run, args=(items, channel), name=f"vastdrop-{name}", daemon=True)
        self._threads.append(worker)
        worker.start()
        return self._receive(channel)

    def close(self) -> None:
        """Stop every stage and wait for their threads."""
        self._stop.set()
        for worker in self._threads:
            worker.join()

    def _run(self, items: Iterator[T], channel: queue.Queue) -> None:
        try:
            for item in items:
                self._send(channel, (_ITEM, item))
            self._send(channel, (_END, None))
        except Stopped:
            pass
        except BaseException as exc:  # handed to the consumer, which raises it as its own
            try:
                self._send(channel, (_ERROR, exc))
            except Stopped:
                pass
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a generator's own finally blocks run in its thread

    def _send(self, channel: queue.Queue, entry: tuple) -> None:
        while True:
            if self._stop.is_set():
                raise Stopped
            try:
                channel.put(entry, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def _receive(self, channel: queue.Queue) -> Iterator:
        while True:
            try:
                kind, value = channel.get(timeout=POLL_S)
            except queue.Empty:
                if self._stop.is_set():
                    raise Stopped from None
                continue
            if kind == _END:
                return
            if kind == _ERROR:
                raise value
            yield value
