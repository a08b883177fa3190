"""The streaming media path: demux -> decode -> [interpolate] -> [upscale] -> encode -> mux.

Frames flow through generators one batch at a time; no frame ever touches the disk. Audio packets are
muxed as they are demuxed, so the output stays interleaved. Interpolation runs before upscaling:
RIFE is trained at native resolution, and minterpolate on upscaled frames would cost scale^2 more.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import torch
import torch.nn.functional as F

from gpu_job.media import colour as colours
from gpu_job.media import encode, filters, geometry, interlace, offsets, streams
from gpu_job.media.frames import TimedFrame, from_av, to_float_batch, to_images
from gpu_job.media.probe import open_input
from gpu_job.media.retime import RetimeStats, fps_fraction, output_frame_count, retime
from vastdrop.errors import BadInputError

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 4


@dataclass
class Plan:
    """What to do to the video; models already loaded (or None for the libavfilter fallback)."""

    target_fps: float | None = None
    upscale: int = 1
    interpolator: Callable | None = None  # RifeInterpolator
    upscaler: Callable | None = None  # Upscaler
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    video_codec: str = "auto"
    container: str = "mp4"  # the result's: mp4 or mkv (gpu_job.media.streams.MUXERS)
    crf: int = 18
    batch_size: int = DEFAULT_BATCH_SIZE


@dataclass
class Report:
    interpolation: str | None = None
    upscale: str | None = None
    encoder: str | None = None
    audio: str | None = None
    streams: list[streams.StreamEntry] = field(default_factory=list)  # every other input stream's fate
    geometry: dict = field(default_factory=dict)  # orientation, aspect, deinterlace (engine.geometry)
    notes: list[str] = field(default_factory=list)
    frames_in: int = 0
    frames_out: int = 0
    retime: RetimeStats = field(default_factory=RetimeStats)
    stage_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # decode, model, encode

    @contextmanager
    def timing(self, stage: str, device: torch.device | None = None):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if device is not None and device.type == "cuda":
                torch.cuda.synchronize(device)  # GPU work is asynchronous: charge it to its stage
            self.stage_s[stage] += time.perf_counter() - t0


# Called after each output frame with the count so far; may raise (deadline) to stop the job.
OnFrame = Callable[[int], None]


def expected_output_frames(plan: Plan, input_frames: int, duration_s: float) -> int:
    if plan.target_fps is None:
        return input_frames
    return _retimed_count(plan.target_fps, duration_s)


def _retimed_count(target_fps: float, duration_s: float) -> int:
    return output_frame_count(Fraction(duration_s).limit_denominator(10**6), fps_fraction(target_fps))


def process(src: Path, dst: Path, plan: Plan, duration_s: float, on_frame: OnFrame | None = None) -> Report:
    report = Report()
    with open_input(src) as container:
        vin = container.streams.video[0]
        vin.thread_type = "AUTO"
        # Shape and scan (geometry.py, interlace.py): the display matrix is applied to the pixels, the
        # sample aspect ratio kept, interlaced frames deinterlaced (bwdif) before any other step.
        geo = geometry.inspect(src)
        deint = interlace.plan_for(geo, plan.target_fps is not None)
        report.notes += geometry.notes(geo, plan.upscale) + ([deint.note()] if deint else [])
        report.geometry = {**geometry.manifest_entry(geo), "deinterlace": deint.manifest_entry() if deint else None}
        width, height = geo.display_size
        out_w, out_h = _even(width * plan.upscale), _even(height * plan.upscale)
        if (out_w, out_h) != (width * plan.upscale, height * plan.upscale):
            report.notes.append(
                f"output {width * plan.upscale}x{height * plan.upscale} cropped to {out_w}x{out_h}: yuv420p needs even sizes"
            )
        if plan.target_fps is not None:
            rate = fps_fraction(plan.target_fps)
            time_base = 1 / rate
        else:
            rate = Fraction(vin.average_rate or vin.guessed_rate or 25)
            time_base = Fraction(vin.time_base)
        # Colour: read with the source's own matrix and range, written and tagged with the same (colour.py).
        source_colour = colours.of_file(src)
        choice = encode.choose_encoder(plan.video_codec, out_w, out_h, rate, plan.crf, plan.device.type == "cuda",
                                       source_colour)
        report.encoder, report.notes = choice.name, report.notes + choice.notes
        out_colour, colour_notes = colours.for_output(source_colour, choice.bit_depth)
        report.notes += colour_notes
        if source_colour.deep and plan.target_fps is not None and plan.interpolator is None:
            report.notes.append("minterpolate works in 8 bits: the frames it makes are 8-bit precise")
        reader = colours.Converter(source_colour, plan.device)
        writer = colours.Converter(out_colour, plan.device)

        with streams.open_output(dst, plan.container) as output:
            vout = encode.add_video_stream(output, choice, out_w, out_h, rate, time_base, out_colour)
            geometry.configure_stream(vout, geo, time_base)
            others = streams.OtherStreams(container, output, vin, plan.container)
            others.tag_video(vout)
            report.audio, report.streams, report.notes = others.audio_mode, others.entries, report.notes + others.notes

            frames = _decode(container, vin, others, report, reader, geo.orientation, deint)
            frames = _interpolate_stage(frames, plan, duration_s, report)
            frames = _upscale_stage(frames, plan, report)
            origin: int | None = None
            lead = round(offsets.video_lead(vin) / time_base)  # another stream may start before the picture
            for frame in frames:
                image = frame.image[:out_h, :out_w]
                origin = frame.pts if origin is None else origin
                with report.timing("encode"):
                    av_frame = writer.to_frame(image, choice.pix_fmt, frame.pts - origin + lead, time_base)
                    output.mux(vout.encode(av_frame))
                report.frames_out += 1
                if on_frame:
                    on_frame(report.frames_out)
            with report.timing("encode"):
                output.mux(vout.encode())
            others.flush()
    report.notes += streams.check_output(dst, report.streams)
    return report


def _even(n: int) -> int:
    return n - (n % 2)


def _decode(container, vin, others: streams.OtherStreams, report: Report, reader: colours.Converter,
            orientation: geometry.Orientation, deint: interlace.Deinterlace | None) -> Iterator[TimedFrame]:
    """Decoded video frames in order; other streams' packets are handed to their paths on the way.
    Only demuxing and decoding errors mean a bad input; anything downstream is our own failure."""
    width, height = vin.codec_context.width, vin.codec_context.height
    time_base = Fraction(vin.time_base)
    last_pts: int | None = None
    deinterlacer = interlace.Deinterlacer(deint, time_base) if deint else None
    for packet, decoded in _demux_decode(container, [vin, *others.inputs], vin, report):
        if packet.stream is not vin:
            others.packet(packet)
            continue
        for frame in decoded:
            pts = frame.pts if frame.pts is not None else (last_pts or 0) + 1
            if last_pts is not None and pts <= last_pts:
                report.notes.append(f"dropped a frame with a non-increasing timestamp ({pts})")
                continue
            last_pts = pts
            report.frames_in += 1
            frame.pts = pts
            for picture in deinterlacer.push(frame) if deinterlacer else [frame]:
                yield _picture(picture, width, height, reader, orientation, report)
    for picture in deinterlacer.flush() if deinterlacer else []:
        yield _picture(picture, width, height, reader, orientation, report)


def _picture(frame: av.VideoFrame, width: int, height: int, reader: colours.Converter,
             orientation: geometry.Orientation, report: Report) -> TimedFrame:
    """A decoded (and deinterlaced) frame as RGB, turned as the display matrix says."""
    with report.timing("decode"):
        timed = from_av(frame, width, height, frame.pts, Fraction(frame.time_base), reader)
        return TimedFrame(orientation.apply(timed.image), timed.pts, timed.time_base)


def _demux_decode(container, wanted, vin, report: Report) -> Iterator[tuple[av.Packet, list]]:
    packets = container.demux(*wanted)
    while True:
        try:
            with report.timing("decode"):
                packet = next(packets, None)
                if packet is None:
                    return
                decoded = packet.decode() if packet.stream is vin else []
        except av.error.FFmpegError as exc:
            where = "cannot be decoded" if report.frames_in == 0 else f"is corrupt after frame {report.frames_in}"
            raise BadInputError(f"the video {where}: {exc}") from exc
        yield packet, decoded


def _interpolate_stage(frames: Iterator[TimedFrame], plan: Plan, duration_s: float, report: Report) -> Iterator[TimedFrame]:
    if plan.target_fps is None:
        return frames
    rate = fps_fraction(plan.target_fps)
    count = _retimed_count(plan.target_fps, duration_s)
    if plan.interpolator is None:
        report.interpolation = "ffmpeg-minterpolate"
        report.notes.append("no interpolation model given: frame rate by libavfilter minterpolate (non-learned)")
        return _timed_stage(filters.minterpolate(frames, rate, count), report)
    model = plan.interpolator
    report.interpolation = model.name

    def run(lefts: list[TimedFrame], rights: list[TimedFrame], steps: list[float]) -> list[torch.Tensor]:
        # A batch reuses few source frames (24 -> 60: 8 slots, ~3 frames): move each to the device once.
        unique = list({id(f): f for f in lefts + rights}.values())
        slot = {id(f): i for i, f in enumerate(unique)}
        images = to_float_batch(unique, plan.device, plan.dtype)
        img0 = images[[slot[id(f)] for f in lefts]]
        img1 = images[[slot[id(f)] for f in rights]]
        t = torch.tensor(steps, device=plan.device, dtype=plan.dtype)
        with report.timing("model", plan.device):
            return to_images(model(img0, img1, t), lefts[0].image.dtype)

    return retime(frames, rate, count, run, plan.batch_size, report.retime)


def _upscale_stage(frames: Iterator[TimedFrame], plan: Plan, report: Report) -> Iterator[TimedFrame]:
    if plan.upscale == 1:
        return frames
    if plan.upscaler is None:
        report.upscale = "lanczos"
        report.notes.append(f"no upscale model given: x{plan.upscale} by libavfilter lanczos scale (non-learned)")
        return _timed_stage(filters.lanczos_scale(frames, plan.upscale), report)
    model = plan.upscaler
    report.upscale = model.name
    if model.scale != plan.upscale:
        report.notes.append(f"model {model.name} is x{model.scale}; resized to x{plan.upscale} (bicubic, antialiased)")
    return _batched_upscale(frames, plan, model, report)


def _timed_stage(stage: Iterator[TimedFrame], report: Report) -> Iterator[TimedFrame]:
    """A libavfilter stage pulls its input inside next(): subtract the upstream decode time."""
    while True:
        before = report.stage_s["decode"]
        t0 = time.perf_counter()
        frame = next(stage, None)
        report.stage_s["model"] += time.perf_counter() - t0 - (report.stage_s["decode"] - before)
        if frame is None:
            return
        yield frame


def _batched_upscale(frames: Iterator[TimedFrame], plan: Plan, model, report: Report) -> Iterator[TimedFrame]:
    batch: list[TimedFrame] = []

    def flush() -> Iterator[TimedFrame]:
        with report.timing("model", plan.device):
            x = to_float_batch(batch, plan.device, plan.dtype)
            y = model(x)
            target = (x.shape[-2] * plan.upscale, x.shape[-1] * plan.upscale)
            if tuple(y.shape[-2:]) != target:
                y = F.interpolate(y, size=target, mode="bicubic", antialias=True, align_corners=False)
            images = to_images(y, batch[0].image.dtype)
        for src, image in zip(batch, images, strict=True):
            yield TimedFrame(image, src.pts, src.time_base)
        batch.clear()

    size: int | None = None  # frames per call: as many as the device's memory takes, up to the plan's
    for frame in frames:
        if size is None:
            fits = getattr(model, "frames_per_call", None)
            size = fits(frame.height, frame.width, plan.batch_size) if fits else plan.batch_size
        batch.append(frame)
        if len(batch) >= size:
            yield from flush()
    if batch:
        yield from flush()
