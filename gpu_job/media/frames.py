"""The currency between pipeline stages: an RGB frame with an exact timestamp.

RGB images are integers: uint8 for 8-bit sources, uint16 (full 16-bit scale) for deeper ones, so a
10-bit source keeps its precision through the float models. YUV <-> RGB is gpu_job.media.colour's
job, with the source's matrix and range; nothing here converts colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from gpu_job.lazy import lazy_import
from gpu_job.media.colour import Converter

torch = lazy_import("torch")  # imported on first use: the YUV-only path never needs it


def rgb_format(dtype: torch.dtype) -> str:
    """The RGB pixel format that holds a TimedFrame's image as it is (RGB -> RGB: no matrix involved)."""
    return {torch.uint8: "rgb24", torch.uint16: "rgb48le"}[dtype]


@dataclass
class TimedFrame:
    image: torch.Tensor  # uint8 or uint16 [H, W, 3] RGB, on the CPU or on the processing device
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

    @property
    def rgb_format(self) -> str:
        """The PyAV RGB pixel format of this image (rgb24 or rgb48le)."""
        return rgb_format(self.image.dtype)

    def numpy(self) -> np.ndarray:
        return self.image.cpu().numpy()

    def to_av(self) -> av.VideoFrame:
        """An RGB PyAV frame (for RGB filters such as scale); never a YUV one."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(self.numpy()), format=self.rgb_format)
        frame.pts = self.pts
        frame.time_base = self.time_base
        return frame


def from_av(frame: av.VideoFrame, width: int, height: int, pts: int, time_base: Fraction,
            converter: Converter) -> TimedFrame:
    """Decoded frame -> RGB tensor on the converter's device, with the stream's matrix and range.
    Frames whose size changed mid-stream are scaled (YUV -> YUV, same matrix) to the stream's size."""
    if frame.width != width or frame.height != height:
        frame = frame.reformat(width=width, height=height, interpolation="LANCZOS")
    return TimedFrame(converter.to_rgb(frame), pts, time_base)


def image_scale(dtype: torch.dtype) -> float:
    return float(torch.iinfo(dtype).max)


def to_float_batch(frames: list[TimedFrame], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] on `device`: one transfer for the whole batch."""
    stacked = torch.stack([f.image for f in frames]).to(device, non_blocking=True)
    return stacked.permute(0, 3, 1, 2).to(dtype).div_(image_scale(stacked.dtype))


def to_images(batch: torch.Tensor, like: torch.dtype) -> list[torch.Tensor]:
    """[B, 3, H, W] float in [0, 1] -> B integer [H, W, 3] tensors of dtype `like` (left on the
    batch's device): the source frames' own depth, so a 10-bit source is not cut to 8 bits."""
    # One float copy (mul), rounded and clamped in place: at 8K x4 each float copy of a frame is 6 GB.
    top = image_scale(like)
    images = batch.mul(top).round_().clamp_(0, top)
    images = (images.to(torch.int32) if like == torch.uint16 else images).to(like).permute(0, 2, 3, 1)
    return [img.contiguous() for img in images]


def to_uint8_images(batch: torch.Tensor) -> list[torch.Tensor]:
    return to_images(batch, torch.uint8)
