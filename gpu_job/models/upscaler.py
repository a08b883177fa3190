"""Super-resolution through spandrel: Real-ESRGAN-family `.pth` files (RRDBNet, SRVGGNetCompact).

The wrapper owns the model's quirks: it pads to the architecture's required multiple and minimum
size, runs under inference_mode, clamps, and crops back, so any frame size works. It also owns its
memory: tile size, frames per call and where the stitched output lives follow the device's free
memory (gpu_job.memory), planned once per frame size, so a large output tiles instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from gpu_job import memory
from vastdrop.errors import ModelLoadError

# Architectures of the Real-ESRGAN family, as spandrel names them.
REAL_ESRGAN_FAMILY = {"ESRGAN", "Compact"}
# Frames larger than the planned tile (input pixels per side) are upscaled in tiles, so activation
# memory is bounded whatever the frame size (RRDB x4 on a whole 4K frame does not fit on most GPUs).
TILE_OVERLAP_PX = 16  # context each tile borrows from its neighbours; cropped away afterwards
MIN_TILE_PX = memory.MIN_TILE_PX  # on out-of-memory the tile is halved down to this
# Channels at output resolution, by architecture: RRDB upsamples its features and convolves them
# there (num_feat wide, read from the weights: None); Compact's pixel shuffle makes only its result.
_HR_CHANNELS = {"ESRGAN": None, "Compact": 3}


class Upscaler:
    def __init__(self, descriptor, name: str, device: torch.device, dtype: torch.dtype,
                 tile_px: int | None = None, free_bytes: Callable[[], int] | None = None) -> None:
        """tile_px: a fixed tile instead of the planned one. free_bytes: the device's free memory
        (default: asked of the device, gpu_job.memory.free_bytes)."""
        self.descriptor = descriptor.to(device).eval()
        if dtype == torch.float16 and descriptor.supports_half:
            self.descriptor = self.descriptor.half()
        else:
            dtype = torch.float32
        self.name = name
        self.scale: int = int(descriptor.scale)
        self.arch: str = descriptor.architecture.name
        self.device, self.dtype = device, dtype
        req = descriptor.size_requirements
        self._multiple = max(1, int(req.multiple_of))
        self._minimum = max(1, int(req.minimum))
        self.fixed_tile_px = tile_px
        self.free_bytes = free_bytes or (lambda: memory.free_bytes(device))
        self.footprint = _footprint(self.descriptor.model, descriptor.architecture.id, self.scale, dtype)
        self._plans: dict[tuple[int, int, int], memory.MemoryPlan] = {}
        self._shrunk: int | None = None  # the tile after an out-of-memory, kept for the rest of the video
        self.net: Callable[[torch.Tensor], torch.Tensor] = self.descriptor.model

    def compile(self, mode: str, notes: list[str], batch: int | None = None) -> None:
        """The opt-in compiled path (JOB_COMPILE): the network compiled for the video's frame (or tile)
        size (gpu_job.models.compiled); what came of it is appended to `notes`."""
        from gpu_job.models.compiled import FixedShape

        self.net = FixedShape(self.descriptor.model, mode, notes, batch)

    def plan(self, height: int, width: int, batch: int) -> memory.MemoryPlan:
        """The memory plan for frames of this size, made once (free memory measured then)."""
        key = (height, width, batch)
        if key not in self._plans:
            self._plans[key] = memory.plan(self.free_bytes(), height, width, batch, self.footprint, TILE_OVERLAP_PX)
        return self._plans[key]

    def frames_per_call(self, height: int, width: int, requested: int) -> int:
        """How many frames of this size one call may take: fewer when whole frames crowd the device."""
        return self.plan(height, width, requested).batch

    @property
    def tile_px(self) -> int | None:
        """The tile in use (None before the first call)."""
        if self._shrunk is not None:
            return self._shrunk
        if self.fixed_tile_px is not None:
            return self.fixed_tile_px
        return next(iter(self._plans.values())).tile_px if self._plans else None

    @classmethod
    def from_file(cls, path: str | Path, device: torch.device, dtype: torch.dtype = torch.float32,
                  tile_px: int | None = None, free_bytes: Callable[[], int] | None = None) -> Upscaler:
        from spandrel import ImageModelDescriptor, ModelLoader

        path = Path(path)
        try:
            descriptor = ModelLoader(device="cpu").load_from_file(path)
        except Exception as exc:  # spandrel raises many kinds: unsupported, corrupt, unpickling
            raise ModelLoadError(f"cannot load upscale model {path.name}: {exc}") from exc
        if not isinstance(descriptor, ImageModelDescriptor) or descriptor.purpose != "SR":
            raise ModelLoadError(f"{path.name} is not a super-resolution model ({descriptor.architecture.name})")
        if descriptor.architecture.id not in REAL_ESRGAN_FAMILY:
            raise ModelLoadError(
                f"{path.name} is a {descriptor.architecture.name} model; supported: Real-ESRGAN family "
                f"({', '.join(sorted(REAL_ESRGAN_FAMILY))})"
            )
        return cls(descriptor, path.stem, device, dtype, tile_px, free_bytes)

    def _padding(self, height: int, width: int) -> tuple[int, int]:
        def pad(n: int) -> int:
            target = max(n, self._minimum)
            return -(-target // self._multiple) * self._multiple - n

        return pad(height), pad(width)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> [B, 3, H*scale, W*scale] in [0, 1], float32 (in host memory when
        the plan says the device cannot hold the whole outputs)."""
        height, width = batch.shape[-2:]
        plan = self.plan(height, width, batch.shape[0])
        host = torch.device("cpu")
        out_device = host if plan.output_on_host else self.device
        with torch.inference_mode():
            x = batch.to(host if plan.input_on_host else self.device, self.dtype)
            while True:
                tile = self._shrunk or self.fixed_tile_px or plan.tile_px
                try:
                    return self._tiled(x, tile, out_device)
                except torch.OutOfMemoryError:  # the estimate was wrong: smaller tiles, if any are left
                    if tile <= MIN_TILE_PX:
                        raise
                    self._shrunk = max(MIN_TILE_PX, tile // 2)
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()

    def _tiled(self, x: torch.Tensor, tile: int, out_device: torch.device) -> torch.Tensor:
        height, width = x.shape[-2:]
        overlap, s = TILE_OVERLAP_PX, self.scale
        if height <= tile and width <= tile:
            return self._run(x).to(out_device)
        out = torch.empty((*x.shape[:-2], height * s, width * s), device=out_device, dtype=torch.float32)
        for top in range(0, height, tile):
            for left in range(0, width, tile):
                bottom, right = min(top + tile, height), min(left + tile, width)
                y0, x0 = max(0, top - overlap), max(0, left - overlap)
                piece = self._run(x[..., y0 : min(height, bottom + overlap), x0 : min(width, right + overlap)])
                out[..., top * s : bottom * s, left * s : right * s] = piece[
                    ..., (top - y0) * s : (bottom - y0) * s, (left - x0) * s : (right - x0) * s
                ]
        return out

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """One piece: padded to the architecture's multiple and minimum, cropped back."""
        x = x.to(self.device)  # a no-op unless the frame waits in host memory
        height, width = x.shape[-2:]
        pad_h, pad_w = self._padding(height, width)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        y = self.net(x).float().clamp_(0, 1)
        return y[..., : height * self.scale, : width * self.scale]


def _footprint(model: torch.nn.Module, arch: str, scale: int, dtype: torch.dtype) -> memory.Footprint:
    """The widest convolution (inputs or outputs: RRDB's dense blocks concatenate up to 5 maps)."""
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    widest = max((max(c.in_channels, c.out_channels) for c in convs), default=64)
    hr = _HR_CHANNELS.get(arch)
    if hr is None:  # RRDB (or an unknown member): assume its features run at output resolution
        hr = max((c.out_channels for c in convs if c.out_channels != 3 * scale * scale), default=widest)
    return memory.Footprint(lr_channels=widest, hr_channels=hr, scale=scale,
                            elem_bytes=torch.tensor([], dtype=dtype).element_size())
