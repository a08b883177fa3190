"""How much of a device's memory a video's upscaling may use, and how it is split between whole
frames and tiles, so that any output under the pixel budget (gpu_job.media.bounds) fits.

The estimate, per video (one frame size): a tile of t x t input pixels, for b frames at once, needs
    b * t^2 * ACTIVATION_MAPS * elem * (lr_channels + hr_channels * scale^2)   bytes,
lr_channels being the widest layer at input resolution and hr_channels the widest at output
resolution (RRDB runs its last convolutions there; Compact only its 3-channel result). Whole frames
on the device cost their input (3 channels, model dtype) and their output (3 channels, float32,
OUTPUT_COPIES times: the buffer the tiles are stitched into and the copies made while converting it
to 8 bits). Of the free memory (torch.cuda.mem_get_info on CUDA, psutil's available memory on the
CPU) HEADROOM is planned for: the rest is for the allocator's fragmentation, cuDNN's workspaces, the
encoder and the decoder. Frames take at most half of the plan, tiles the rest; when even one output
frame does not fit in that half, outputs are stitched in host memory, one frame a call, and only
the input and the tiles go to the device (only the tiles, when not even the input fits).
An estimate that is still wrong is caught by the upscaler, which halves its tile on out-of-memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

HEADROOM = 0.5
ACTIVATION_MAPS = 4  # live maps at the widest layer: its input, its output, a residual and a concat
OUTPUT_COPIES = 3
MIN_TILE_PX = 64  # below this the overlap costs more than the tile: halving stops here


def free_bytes(device: torch.device) -> int:
    """Memory the process may still take on `device`, now."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil  # the job's image has it (vastai depends on it)

    return int(psutil.virtual_memory().available)


@dataclass(frozen=True)
class Footprint:
    """A model's memory cost per input pixel of a tile, for one frame."""

    lr_channels: int
    hr_channels: int
    scale: int
    elem_bytes: int

    @property
    def per_px(self) -> int:
        return ACTIVATION_MAPS * self.elem_bytes * (self.lr_channels + self.hr_channels * self.scale**2)


@dataclass(frozen=True)
class MemoryPlan:
    batch: int  # frames per model call
    tile_px: int  # input pixels per tile side (the whole frame when it is at least the frame's size)
    output_on_host: bool  # stitched outputs live in host memory: the device holds only input and tiles
    input_on_host: bool  # the input frames too (not even one fits): the device holds only tiles
    budget_bytes: int  # what the plan may use
    peak_bytes: int  # what it is expected to use, at most budget_bytes unless MIN_TILE_PX forces more


def plan(free: int, height: int, width: int, requested_batch: int, fp: Footprint, overlap: int) -> MemoryPlan:
    budget = int(free * HEADROOM)
    frame_in = 3 * height * width * fp.elem_bytes
    frame_out = 3 * height * width * fp.scale**2 * 4 * OUTPUT_COPIES
    on_host = frame_in + frame_out > budget // 2
    input_on_host = on_host and frame_in > budget // 2  # then even the input goes up tile by tile
    per_frame = 0 if input_on_host else frame_in if on_host else frame_in + frame_out
    # Outputs in host memory: one frame per call (host memory holds them; such frames gain nothing
    # from batching, their tiles are the unit of work).
    batch = 1 if on_host else max(1, min(requested_batch, (budget // 2) // max(per_frame, 1)))
    tile_budget = max(budget - batch * per_frame, 0)
    side = math.isqrt(tile_budget // (batch * fp.per_px)) if tile_budget else 0
    tile = max(MIN_TILE_PX, side - 2 * overlap)
    tile = min(tile, max(height, width))  # a tile at least the frame's size: no tiling at all
    span = min(tile + 2 * overlap, height) * min(tile + 2 * overlap, width)
    peak = batch * (per_frame + span * fp.per_px)
    return MemoryPlan(batch=batch, tile_px=tile, output_on_host=on_host, input_on_host=input_on_host,
                      budget_bytes=budget, peak_bytes=peak)


class BatchLimit:
    """The largest batch a model call has shown the device holds. A call that runs out of memory is
    split in halves and run again, and later calls are split alike: the estimate that set the batch
    (or the user's batch_size) was wrong on this device, and one frame's worth is still tried before
    the job gives up (failures.resource_exhausted then retries it on another host)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.most: int | None = None  # None: nothing failed yet

    def run(self, model, *inputs: torch.Tensor) -> torch.Tensor:
        """model(*inputs) for inputs batched on their first dimension, in pieces the device holds."""
        n = inputs[0].shape[0]
        while True:
            size = min(n, self.most or n)
            try:
                outs = [model(*(x[i:i + size] for x in inputs)) for i in range(0, n, size)]
                return outs[0] if len(outs) == 1 else torch.cat(outs)
            except torch.OutOfMemoryError:
                if size == 1:
                    raise
                self.most = max(1, size // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()


class CudaMemory:
    """What a CUDA device has free for more batches, and the peak a call takes (the allocator's
    statistics). Memory PyTorch holds cached but unused counts as free: its next call reuses it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._base = 0

    def free(self) -> int:
        cached = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        return free_bytes(self.device) + max(0, cached)

    def start(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self._base = torch.cuda.memory_allocated(self.device)

    def peak(self) -> int:
        torch.cuda.synchronize(self.device)
        return max(0, torch.cuda.max_memory_allocated(self.device) - self._base)


class MeasuredBatch:
    """How many items (RIFE's frame pairs) a model call takes, chosen from the device's free memory:
    the first call runs one item and its peak memory is measured; later calls take as many as
    HEADROOM of the free memory holds at that peak each, at most `most` (the plan's batch_size).
    Without allocator statistics (the CPU: `memory` None) every call takes `most`. An estimate that
    is still wrong is caught by BatchLimit, which splits a call that runs out of memory."""

    def __init__(self, most: int, memory: CudaMemory | None) -> None:
        self.most = max(1, most)
        self.memory = memory
        self.per_item: int | None = None  # bytes, once measured

    @classmethod
    def for_device(cls, most: int, device: torch.device) -> MeasuredBatch:
        return cls(most, CudaMemory(device) if device.type == "cuda" else None)

    def __call__(self) -> int:
        """The items the next call should take."""
        if self.memory is None:
            return self.most
        if self.per_item is None:
            return 1
        return max(1, min(self.most, int(self.memory.free() * HEADROOM) // self.per_item))

    def run(self, call, items: int):
        """call() for a batch of `items`; the first one measured."""
        if self.memory is None or self.per_item is not None:
            return call()
        self.memory.start()
        out = call()
        self.per_item = max(1, self.memory.peak() // max(1, items))
        return out
