"""The opt-in compiled path (issue 11 item 3; JOB_COMPILE): a network's forward through torch.compile,
for the one frame size a video has.

A video's frames all have one size, so one graph serves it, provided the batch has one size too.
The graph is compiled for the first call of the full batch (`batch`: the plan's batch_size; None:
the first call's). Before that, calls run the plain network: RIFE's first call on CUDA is a single
pair, whose peak memory gpu_job.memory.MeasuredBatch measures. After it, a call with fewer items
(a video's last batch) is padded with copies of its last item, and the extra outputs are dropped; a
call with more runs in pieces. A call that runs out of memory padded stops the padding: the smaller
batches that gpu_job.memory.BatchLimit then sends run the plain network. So does any other shape:
a frame too large to upscale whole goes through in tiles of several sizes. Inputs are made
contiguous, so that a strided view (a tile) meets the graph's guards. The frames never depend on the
path taken except through the compiled kernels' own arithmetic, which the tests hold to the plain
path's.

Modes: "compile" is torch.compile's default (inductor kernels); "cuda-graphs" adds CUDA graphs
(torch.compile's "reduce-overhead"), which replay a whole forward with one launch, worth most for
small frames where launches dominate. The compiling call takes tens of seconds on a GPU, minutes on
a CPU; if it fails (no compiler on the host, an operator inductor cannot take), the plain network
runs for the rest of the job, and the job's notes say why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

logger = logging.getLogger(__name__)

MODES = {"compile": "default", "cuda-graphs": "reduce-overhead"}


class FixedShape:
    """`net`, compiled for one input shape (its full batch); other calls run `net` itself."""

    def __init__(self, net: Callable[..., torch.Tensor], mode: str, notes: list[str], batch: int | None = None,
                 backend: str | Callable = "inductor") -> None:
        """backend: torch.compile's (another than inductor takes no mode: for tests)."""
        if mode not in MODES:
            raise ValueError(f"compile mode must be one of {', '.join(MODES)}; got {mode!r}")
        self.net, self.mode, self.notes, self.batch = net, mode, notes, batch
        how = {"mode": MODES[mode]} if backend == "inductor" else {"backend": backend}
        self._compiled: Callable[..., torch.Tensor] | None = torch.compile(net, dynamic=False, **how)
        self._items: tuple[tuple[int, ...], ...] | None = None  # each input's shape after the batch, once compiled
        self._pad = True  # False once a padded call ran out of memory

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        batch = inputs[0].shape[0]
        if self._compiled is None:
            return self.net(*inputs)
        if self._items is None:
            return self._first(inputs) if batch == (self.batch or batch) else self.net(*inputs)
        if tuple(x.shape[1:] for x in inputs) != self._items:
            return self.net(*inputs)
        size = self.batch
        assert size is not None
        if batch > size:
            return torch.cat([self(*(x[i:i + size] for x in inputs)) for i in range(0, batch, size)])
        if batch < size and not self._pad:
            return self.net(*inputs)
        if batch < size:  # padded with copies of the last item: the same graph, the extra outputs dropped
            inputs = tuple(torch.cat([x, x[-1:].expand(size - batch, *x.shape[1:])]) for x in inputs)
        try:
            return self._run(inputs)[:batch]
        except torch.OutOfMemoryError:
            self._pad = self._pad and batch == size  # padded too large: smaller batches go plain from now on
            raise

    def _first(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Compile for these shapes; if that fails, the plain network from now on."""
        try:
            out = self._run(inputs)
        except Exception as exc:  # inductor's errors are of many kinds; the plain path always works
            root = _root(exc)
            if isinstance(root, torch.OutOfMemoryError):
                raise root from None  # the batch, not the compiler: BatchLimit halves it
            self._compiled = None
            out = self.net(*inputs)  # a fault of the network itself is raised here, not blamed on the compiler
            self.notes.append(f"torch.compile ({self.mode}) failed, the plain network ran instead: {_reason(exc)}")
            logger.warning("torch.compile failed; running the plain network", extra={"error": type(exc).__name__})
            return out
        self.batch, self._items = inputs[0].shape[0], tuple(x.shape[1:] for x in inputs)
        shapes = " and ".join("x".join(map(str, x.shape)) for x in inputs)
        self.notes.append(f"network compiled with torch.compile ({self.mode}) for inputs of shape {shapes}")
        return out

    def _run(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        assert self._compiled is not None
        out = self._compiled(*(x.contiguous() for x in inputs))
        # CUDA graphs reuse their output buffers on the next replay: keep this call's frames.
        return out.clone() if self.mode == "cuda-graphs" else out


def _root(exc: BaseException) -> BaseException:
    """The error that started it: dynamo wraps a backend's in its own."""
    while getattr(exc, "inner_exception", None) is not None or exc.__cause__ is not None:
        exc = getattr(exc, "inner_exception", None) or exc.__cause__  # type: ignore[assignment]
    return exc


def _reason(exc: BaseException) -> str:
    """The root error, on one line."""
    exc = _root(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
