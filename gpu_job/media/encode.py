"""Output streams: the video encoder (NVENC when present, else libx264; HEVC Main10 for sources
deeper than 8 bits), tagged with the source's colour. The other streams
(audio, subtitles, ...) are planned in gpu_job.media.streams."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction

import av

from gpu_job.media.colour import Colour, tag
from vastdrop.errors import ConfigError, TransientError

logger = logging.getLogger(__name__)

NVENC = "h264_nvenc"
X264 = "libx264"
HEVC_NVENC = "hevc_nvenc"
X265 = "libx265"
# Encoders to which PyAV can hand HDR10 static metadata: through their own params (PyAV 18 cannot
# attach mastering-display side data to a frame it makes, so NVENC and the rest cannot get it).
HDR_PARAMS = {X265: ("x265-params", "master-display", "max-cll"), X264: ("x264-params", "mastering-display", "cll")}
X264_PRESET = "medium"
NVENC_PRESET = "p5"


@dataclass
class EncoderChoice:
    name: str
    options: dict[str, str]
    notes: list[str] = field(default_factory=list)
    pix_fmt: str = "yuv420p"

    @property
    def bit_depth(self) -> int:
        return 10 if self.pix_fmt in ("yuv420p10le", "p010le") else 8


def _encoder_opens(name: str, width: int, height: int, rate: Fraction, pix_fmt: str = "yuv420p") -> bool:
    """Encoders can be compiled in yet unusable (NVENC without a GPU): open a throwaway context."""
    try:
        ctx = av.CodecContext.create(name, "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
        ctx.time_base = 1 / rate
        ctx.open()
        return True
    except (av.error.FFmpegError, ValueError) as exc:
        logger.info("encoder %s cannot open here: %s", name, exc)
        return False


def _options(name: str, crf: int) -> dict[str, str]:
    if "nvenc" in name:
        return {"rc": "vbr", "cq": str(crf), "preset": NVENC_PRESET}
    if name in (X264, X265):
        return {"crf": str(crf), "preset": X264_PRESET}
    return {}


def _pix_fmt(name: str, deep: bool) -> str | None:
    """The 4:2:0 format `name` takes at the wanted depth (10-bit planar, or P010 for NVENC), if any."""
    formats = {f.name for f in (av.codec.Codec(name, "w").video_formats or [])}
    wanted = ("yuv420p10le", "p010le") if deep else ("yuv420p", "nv12")
    return next((f for f in wanted if f in formats), None)


def _try(name: str, deep: bool, width: int, height: int, rate: Fraction, crf: int) -> EncoderChoice | None:
    pix_fmt = _pix_fmt(name, deep)
    if pix_fmt and _encoder_opens(name, width, height, rate, pix_fmt):
        return EncoderChoice(name, _options(name, crf), pix_fmt=pix_fmt)
    return None


def choose_encoder(requested: str, width: int, height: int, rate: Fraction, crf: int, gpu: bool,
                   colour: Colour | None = None, *, same_on_every_host: bool = False) -> EncoderChoice:
    """The encoder and its pixel format. A source deeper than 8 bits gets a 10-bit 4:2:0 encode
    (auto: hevc_nvenc on a GPU unless HDR10 metadata must be carried, else libx265); when the encoder
    cannot keep something of the source's colour, its notes say what was lost.

    `same_on_every_host` (a segment: its fragments will follow segment 0's init segment, made on
    another host) wants the codec configuration not to depend on the host: auto means the software
    encoder, whose configuration is the image's, not the GPU's (hosts without NVENC, an H100's
    included, would fall back to it anyway); a requested encoder that cannot open here is an error
    worth another host, never a fallback that makes a segment the join must refuse."""
    colour = colour or Colour()
    deep, hdr_meta = colour.deep, bool(colour.mastering or colour.light)
    gpu = gpu and not same_on_every_host
    if requested == "auto":
        if deep:  # NVENC cannot be handed HDR10 metadata from PyAV: libx265 keeps it
            names = ([HEVC_NVENC] if gpu and not hdr_meta else []) + [X265]
        else:
            names = ([NVENC] if gpu else []) + [X264]
        choice = next((c for n in names if n in av.codecs_available and (c := _try(n, deep, width, height, rate, crf))), None)
        choice = choice or EncoderChoice(X264, _options(X264, crf))
    else:
        if requested not in av.codecs_available:
            raise ConfigError(f"unknown video encoder {requested!r}")
        choice = _try(requested, deep, width, height, rate, crf)
        if choice is None and deep and same_on_every_host and _pix_fmt(requested, True):
            # It has a 10-bit mode that does not open here (NVENC on an older GPU): 8 bits here, 10
            # elsewhere would not be one configuration. (Without one at all, 8 bits is every host's.)
            raise TransientError(f"encoder {requested} has no 10-bit mode on this host, and every segment of a job "
                                 "must be encoded by the same encoder")
        if choice is None and deep and (choice := _try(requested, False, width, height, rate, crf)):
            choice.notes.append(f"encoder {requested} has no 10-bit 4:2:0 mode here: the {colour.bit_depth}-bit source was written in 8 bits")
        if choice is None and same_on_every_host:
            raise TransientError(f"encoder {requested} cannot open on this host, and every segment of a job must "
                                 "be encoded by the same encoder")
        if choice is None:
            fallback = X265 if deep else X264
            choice = _try(fallback, deep, width, height, rate, crf) or EncoderChoice(X264, _options(X264, crf))
            choice.notes.append(f"encoder {requested} could not open here; used {choice.name}")
    _hdr_metadata(choice, colour)
    return choice


def _hdr_metadata(choice: EncoderChoice, colour: Colour) -> None:
    """HDR10 static metadata (mastering display, content light) as the encoder's own parameters."""
    if colour.hdr and choice.bit_depth == 8:
        choice.notes.append(f"{colour.hdr} source written in 8 bits by {choice.name}: banding likely")
    if not (colour.mastering or colour.light):
        return
    if choice.name not in HDR_PARAMS:
        choice.notes.append(f"HDR10 mastering-display and content-light metadata dropped: {choice.name} cannot take it here")
        return
    key, display, light = HDR_PARAMS[choice.name]
    params = ([f"{display}={colour.mastering.x265()}"] if colour.mastering else []) + (
        [f"{light}={colour.light.max_cll},{colour.light.max_fall}"] if colour.light else [])
    choice.options[key] = ":".join(params)


def add_video_stream(output: av.container.OutputContainer, choice: EncoderChoice, width: int, height: int,
                     rate: Fraction, time_base: Fraction, colour: Colour | None = None) -> av.VideoStream:
    """The video stream, tagged with `colour` (matrix, range, primaries, transfer) so players read
    the result as they read the source."""
    stream = output.add_stream(choice.name, rate=rate, options=choice.options)
    stream.width, stream.height, stream.pix_fmt = width, height, choice.pix_fmt
    stream.time_base = time_base
    # Frame and slice threads, as ffmpeg's CLI asks for: PyAV's default (slice only) makes libx264
    # and libx265 run sliced threads, slower and a different stream than the CLI's.
    stream.codec_context.thread_type = "AUTO"
    if colour is not None:
        tag(stream.codec_context, colour)
    return stream
