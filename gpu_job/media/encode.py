"""Output streams: the video encoder (NVENC when present, else libx264) and the audio plan
(copy unchanged when the container accepts the codec, AAC only when it must)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction

import av

from vastdrop.errors import ConfigError

logger = logging.getLogger(__name__)

NVENC = "h264_nvenc"
X264 = "libx264"
X264_PRESET = "medium"
NVENC_PRESET = "p5"


@dataclass
class EncoderChoice:
    name: str
    options: dict[str, str]
    notes: list[str] = field(default_factory=list)


def _encoder_opens(name: str, width: int, height: int, rate: Fraction) -> bool:
    """Encoders can be compiled in yet unusable (NVENC without a GPU): open a throwaway context."""
    try:
        ctx = av.CodecContext.create(name, "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
        ctx.time_base = 1 / rate
        ctx.open()
        return True
    except (av.error.FFmpegError, ValueError) as exc:
        logger.info("encoder %s cannot open here: %s", name, exc)
        return False


def _options(name: str, crf: int) -> dict[str, str]:
    if "nvenc" in name:
        return {"rc": "vbr", "cq": str(crf), "preset": NVENC_PRESET}
    if name in (X264, "libx265"):
        return {"crf": str(crf), "preset": X264_PRESET}
    return {}


def choose_encoder(requested: str, width: int, height: int, rate: Fraction, crf: int, gpu: bool) -> EncoderChoice:
    if requested == "auto":
        if gpu and NVENC in av.codecs_available and _encoder_opens(NVENC, width, height, rate):
            return EncoderChoice(NVENC, _options(NVENC, crf))
        return EncoderChoice(X264, _options(X264, crf))
    if requested not in av.codecs_available:
        raise ConfigError(f"unknown video encoder {requested!r}")
    if _encoder_opens(requested, width, height, rate):
        return EncoderChoice(requested, _options(requested, crf))
    return EncoderChoice(X264, _options(X264, crf), [f"encoder {requested} could not open here; used {X264}"])


def add_video_stream(output: av.container.OutputContainer, choice: EncoderChoice, width: int, height: int,
                     rate: Fraction, time_base: Fraction) -> av.VideoStream:
    stream = output.add_stream(choice.name, rate=rate, options=choice.options)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.time_base = time_base
    return stream
