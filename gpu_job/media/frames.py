"""The currency between pipeline stages: an RGB frame with an exact timestamp."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import torch


@dataclass
class TimedFrame:
    image: torch.Tensor  # uint8 [H, W, 3] RGB, on the CPU or on the processing device
    pts: int
    time_base: Fraction

    @property
    def time(self) -> Fraction:
        return self.pts * self.time_base

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    def numpy(self) -> np.ndarray:
        return self.image.cpu().numpy()

    def to_av(self) -> av.VideoFrame:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(self.numpy()), format="rgb24")
        frame.pts = self.pts
        frame.time_base = self.time_base
        return frame


def from_av(frame: av.VideoFrame, width: int, height: int, pts: int, time_base: Fraction) -> TimedFrame:
    """Decoded frame -> RGB tensor. Frames whose size changed mid-stream are scaled to the stream's size."""
    if frame.width != width or frame.height != height:
        frame = frame.reformat(width=width, height=height, interpolation="LANCZOS")
    rgb = frame.to_ndarray(format="rgb24")
    return TimedFrame(torch.from_numpy(rgb), pts, time_base)


def to_float_batch(frames: list[TimedFrame], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] on `device`: one transfer for the whole batch."""
    stacked = torch.stack([f.image for f in frames]).to(device, non_blocking=True)
    return stacked.permute(0, 3, 1, 2).to(dtype).div_(255.0)


def to_uint8_images(batch: torch.Tensor) -> list[torch.Tensor]:
    """[B, 3, H, W] float in [0, 1] -> B uint8 [H, W, 3] tensors (left on the batch's device)."""
    # One float copy (mul), rounded and clamped in place: at 8K x4 each float copy of a frame is 6 GB.
    images = batch.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return [img.contiguous() for img in images]
