"""Super-resolution through spandrel: Real-ESRGAN-family `.pth` files (RRDBNet, SRVGGNetCompact).

The wrapper owns the model's quirks: it pads to the architecture's required multiple and minimum
size, runs under inference_mode, clamps, and crops back, so any frame size works.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from vastdrop.errors import ModelLoadError

# Architectures of the Real-ESRGAN family, as spandrel names them.
REAL_ESRGAN_FAMILY = {"ESRGAN", "Compact"}
# Frames larger than this (input pixels per side) are upscaled in tiles, so activation memory is
# bounded whatever the frame size (RRDB x4 on a whole 4K frame does not fit on most GPUs).
DEFAULT_TILE_PX = 512
TILE_OVERLAP_PX = 16  # context each tile borrows from its neighbours; cropped away afterwards
MIN_TILE_PX = 64  # on out-of-memory the tile is halved down to this


class Upscaler:
    def __init__(self, descriptor, name: str, device: torch.device, dtype: torch.dtype,
                 tile_px: int = DEFAULT_TILE_PX) -> None:
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
        self.tile_px = tile_px

    @classmethod
    def from_file(cls, path: str | Path, device: torch.device, dtype: torch.dtype = torch.float32,
                  tile_px: int = DEFAULT_TILE_PX) -> Upscaler:
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
        return cls(descriptor, path.stem, device, dtype, tile_px)

    def _padding(self, height: int, width: int) -> tuple[int, int]:
        def pad(n: int) -> int:
            target = max(n, self._minimum)
            return -(-target // self._multiple) * self._multiple - n

        return pad(height), pad(width)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> [B, 3, H*scale, W*scale] in [0, 1], float32."""
        with torch.inference_mode():
            x = batch.to(self.device, self.dtype)
            while True:
                try:
                    return self._tiled(x)
                except torch.OutOfMemoryError:
                    if self.tile_px <= MIN_TILE_PX:
                        raise
                    self.tile_px //= 2  # remembered for the rest of the video
                    torch.cuda.empty_cache()

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        tile, overlap, s = self.tile_px, TILE_OVERLAP_PX, self.scale
        if height <= tile and width <= tile:
            return self._run(x)
        out = torch.empty((*x.shape[:-2], height * s, width * s), device=x.device, dtype=torch.float32)
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
        height, width = x.shape[-2:]
        pad_h, pad_w = self._padding(height, width)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        y = self.descriptor.model(x).float().clamp_(0, 1)
        return y[..., : height * self.scale, : width * self.scale]
