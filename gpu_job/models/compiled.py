"""The opt-in compiled path (issue 11 item 3; JOB_COMPILE): a network's forward through torch.compile,
for the one frame size a video has.

A video's frames all have one size, so one graph serves it, provided the batch has one size too:
a call with fewer frames than the first call's is padded with copies of its last frame, and the
extra outputs are dropped; a call with more is run in pieces. Any other shape (a tile at a frame's
edge, another resolution) runs the plain network, so the frames never depend on the path taken
except through the compiled kernels' own arithmetic, which the tests hold to the plain path's.

Modes: "compile" is torch.compile's default (inductor kernels); "cuda-graphs" adds CUDA graphs
(torch.compile's "reduce-overhead"), which replay a whole forward with one launch, worth most for
small frames where launches dominate. The first call compiles (tens of seconds on a GPU, minutes on
a CPU); a failure there (no compiler on the host, an operator inductor cannot take) falls back to
the plain network for the rest of the job, and says so in the job's notes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

logger = logging.getLogger(__name__)

MODES = {"compile": "default", "cuda-graphs": "reduce-overhead"}


class FixedShape:
    """`net`, compiled for the shape of its first call; calls of another shape run `net` itself."""

    def __init__(self, net: Callable[..., torch.Tensor], mode: str, notes: list[str],
                 backend: str | Callable = "inductor") -> None:
        """backend: torch.compile's (another than inductor takes no mode: for tests)."""
        if mode not in MODES:
            raise ValueError(f"compile mode must be one of {', '.join(MODES)}; got {mode!r}")
        self.net, self.mode, self.notes = net, mode, notes
        how = {"mode": MODES[mode]} if backend == "inductor" else {"backend": backend}
        self._compiled: Callable[..., torch.Tensor] | None = torch.compile(net, dynamic=False, **how)
        self._size: int | None = None  # the compiled batch
        self._items: tuple[tuple[int, ...], ...] = ()  # each input's shape after the batch

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self._compiled is None:
            return self.net(*inputs)
        if self._size is None:
            return self._first(inputs)
        if tuple(x.shape[1:] for x in inputs) != self._items:
            return self.net(*inputs)
        batch, size = inputs[0].shape[0], self._size
        if batch > size:
            return torch.cat([self(*(x[i:i + size] for x in inputs)) for i in range(0, batch, size)])
        if batch < size:  # padded with copies of the last item: the same graph, the extra outputs dropped
            inputs = tuple(torch.cat([x, x[-1:].expand(size - batch, *x.shape[1:])]) for x in inputs)
        return self._run(inputs)[:batch]

    def _first(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Compile for these shapes; on failure, the plain network from now on."""
        try:
            out = self._run(inputs)
        except Exception as exc:  # inductor's errors are of many kinds; the plain path always works
            if isinstance(exc, torch.OutOfMemoryError):
                raise
            self._compiled = None
            self.notes.append(f"torch.compile ({self.mode}) failed, the plain network ran instead: {_reason(exc)}")
            logger.warning("torch.compile failed; running the plain network", extra={"error": type(exc).__name__})
            return self.net(*inputs)
        self._size, self._items = inputs[0].shape[0], tuple(x.shape[1:] for x in inputs)
        shapes = " and ".join("x".join(map(str, x.shape)) for x in inputs)
        self.notes.append(f"network compiled with torch.compile ({self.mode}) for inputs of shape {shapes}")
        return out

    def _run(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        assert self._compiled is not None
        out = self._compiled(*inputs)
        # CUDA graphs reuse their output buffers on the next replay: keep this call's frames.
        return out.clone() if self.mode == "cuda-graphs" else out


def _reason(exc: BaseException) -> str:
    """The error that started it (dynamo wraps a backend's in its own), on one line."""
    while getattr(exc, "inner_exception", None) is not None or exc.__cause__ is not None:
        exc = getattr(exc, "inner_exception", None) or exc.__cause__  # type: ignore[assignment]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
