"""The streaming media path: demux -> decode -> [interpolate] -> [upscale] -> encode -> mux.

Three stages overlap, each in its own thread, joined by small bounded queues (gpu_job.media.stages):
demux and decode (other streams' packets are muxed there as they are demuxed, so the output stays
interleaved); the device stage (YUV planes to the device, RGB there for the models, YUV planes back);
and encode and mux, in the caller's thread, where the deadline and progress run. No frame touches
the disk. Interpolation runs before upscaling, on the device: RIFE is trained at native resolution,
and its output goes straight into the upscaler.

Without a model the video never leaves YUV: the libavfilter fallbacks (minterpolate, lanczos) work
on the decoded frames, as ffmpeg's CLI does, and the encoder gets them as they come out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
from av.video.frame import PictureType

from gpu_job.lazy import lazy_import
from gpu_job.media import colour as colours
from gpu_job.media import encode, filters, geometry, interlace, offsets, streams
from gpu_job.media.frames import TimedFrame, from_av, to_float_batch, to_images
from gpu_job.media.measuring import Duration
from gpu_job.media.probe import Source, open_input
from gpu_job.media.retime import Count, RetimeStats, fps_fraction, frames_for, retime
from gpu_job.media.segment import (
    LEAD_IN_S,
    MAX_REORDER_PICTURES,
    DecodeDelay,
    Interleaving,
    Segment,
    SegmentCues,
    check_carried,
    muxer_options,
    open_segment,
    route_shares,
    settle_flac,
)
from gpu_job.media.stages import Stages
from vastdrop.errors import BadInputError

torch = lazy_import("torch")  # imported on first use: the YUV-only path never needs it

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 4


@dataclass
class Plan:
    """What to do to the video; models already loaded (or None for the libavfilter fallback)."""

    target_fps: float | None = None
    upscale: int = 1
    interpolator: Callable | None = None  # RifeInterpolator
    upscaler: Callable | None = None  # Upscaler
    # Names, not torch objects: the path that keeps the picture in YUV never imports torch.
    device: str = "cpu"  # a torch device ("cpu", "cuda:0")
    dtype: str = "float32"  # the models' precision, a torch dtype ("float16" on CUDA)
    video_codec: str = "auto"
    container: str = "mp4"  # the result's: mp4 or mkv (gpu_job.media.streams.MUXERS)
    crf: int = 18
    batch_size: int = DEFAULT_BATCH_SIZE
    threads: bool = True  # False: the same stages one after another in one thread (for comparison)
    yuv_passthrough: bool = True  # False: even without a model, every frame goes through RGB
    hw_decode: bool | None = None  # NVDEC; None: when the device is CUDA
    # A segment of a longer job (gpu_job.media.segment): (start, end) seconds from the first picture.
    window: tuple[Fraction, Fraction | None] | None = None

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


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
    # Busy seconds of each kind of work, whichever thread did it: decode (demux, decode, deinterlace),
    # convert (YUV <-> RGB and to and from the device), model (models or libavfilter), encode (and mux).
    stage_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @contextmanager
    def timing(self, stage: str, device: str | None = None):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if device is not None and device.startswith("cuda"):
                torch.cuda.synchronize(device)  # GPU work is asynchronous: charge it to its stage
            with self._lock:  # stages run in several threads
                self.stage_s[stage] += time.perf_counter() - t0

    def model_timing(self):
        """Times libavfilter's work as the model's (a filters.Timing)."""
        return self.timing("model")


# Called after each output frame with the count so far; may raise (deadline) to stop the job.
OnFrame = Callable[[int], None]


def expected_output_frames(plan: Plan, input_frames: int, duration_s: float,
                           window: tuple[Fraction, Fraction | None] | None = None) -> int:
    """The frames the job writes: a segment's own (its input frames, or its span of the retimed
    whole's)."""
    if plan.target_fps is None:
        return input_frames
    count = frames_for(duration_s, fps_fraction(plan.target_fps))
    if window is None:
        return count
    first, stop = Segment(window[0], window[1], 0, Fraction(1), {}).frame_range(fps_fraction(plan.target_fps), count)
    return max(0, stop - first)


def _retimed_count(target_fps: float, duration: float | Duration) -> Count:
    """The retimed output's frame count; while the input is still being measured, its Duration,
    which tells frame by frame (gpu_job.media.measuring)."""
    if isinstance(duration, Duration):
        if duration.exact is None:
            return duration
        duration = duration.exact
    return frames_for(duration, fps_fraction(target_fps))


def process(src: Source, dst: Path, plan: Plan, duration_s: float | Duration,
            on_frame: OnFrame | None = None) -> Report:
    """`duration_s`: the input's, as measured (seconds); or its Duration while a measure reads on
    beside the processing: a retimed output frame waits for it only past the span it has read."""
    report = Report()
    hw_decode = plan.hw_decode if plan.hw_decode is not None else plan.on_cuda
    decode_notes: list[str] = []
    with open_input(src, decode_notes if hw_decode else None) as container:
        report.notes += decode_notes
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
        choice = encode.choose_encoder(plan.video_codec, out_w, out_h, rate, plan.crf, plan.on_cuda,
                                       source_colour, same_on_every_host=plan.window is not None)
        report.encoder, report.notes = choice.name, report.notes + choice.notes
        out_colour, colour_notes = colours.for_output(source_colour, choice.bit_depth)
        report.notes += colour_notes
        if source_colour.deep and plan.target_fps is not None and plan.interpolator is None:
            report.notes.append("minterpolate works in 8 bits: the frames it makes are 8-bit precise")
        keep_yuv = plan.yuv_passthrough and _yuv_throughout(plan, geo, vin, source_colour, choice, (out_w, out_h))

        stages = Stages(plan.threads)
        muxing = None if plan.window is None else muxer_options(plan.window)
        with streams.open_output(dst, plan.container, muxing) as container_out:
            # Other streams' packets are muxed by the decoding thread as they are demuxed, the video by
            # this one as it is encoded: one mux at a time.
            output = SerialMux(container_out)
            vout = encode.add_video_stream(output, choice, out_w, out_h, rate, time_base, out_colour)
            geometry.configure_stream(vout, geo, time_base)
            # Chapters go in the header (moov) and a first fragment: a split job's are segment 0's alone.
            others = streams.OtherStreams(container, output, vin, plan.container,
                                          write_chapters=plan.window is None or plan.window[0] == 0,
                                          lossless_audio=plan.window is not None)
            others.tag_video(vout)
            report.audio, report.streams, report.notes = others.audio_mode, others.entries, report.notes + others.notes
            segment, cues = None, None
            if plan.window is not None:
                check_carried(others.entries)
                texts = others.text_routes
                reencoded = {a.ain.index: a for a in others.audio if a.mode != "copy"}
                segment = open_segment(src, container, vin, plan.window,
                                       [s for s in others.inputs if s.index not in texts], lead_in=_lead_in(plan, vin),
                                       decoded=frozenset(reencoded))
                route_shares(segment, others, texts, reencoded)
                if texts:
                    cues = SegmentCues(segment, texts, container)
                    cues.look_back(src, vin)
            try:
                measuring = duration_s if isinstance(duration_s, Duration) else None
                decoded = _decode(container, vin, others, report, deint, segment, measuring, cues)
                if segment is not None and plan.target_fps is None:
                    # A retimed segment keeps the source frames around its span (interpolation's context).
                    decoded = _own_frames(decoded, segment)
                decoded = stages.thread(decoded, DECODED_QUEUE, "decode")
                if keep_yuv:
                    pictures = _yuv_stages(decoded, plan, duration_s, report, (width, height), choice.pix_fmt,
                                           segment)
                else:
                    reader = colours.Converter(source_colour, plan.device)
                    writer = colours.Converter(out_colour, plan.device)
                    coded = (vin.codec_context.width, vin.codec_context.height)  # turned on the device
                    pictures = _device_stages(decoded, plan, duration_s, report, reader, writer, geo.orientation,
                                              coded, (out_w, out_h), choice.pix_fmt, segment)
                pictures = stages.thread(pictures, ENCODE_QUEUE, "device")
                lead = round(offsets.video_lead(vin) / time_base)  # another stream may start before the picture
                # A segment's timestamps are the whole job's: from the first picture, not its own first frame.
                origin = None if segment is None else 0 if plan.target_fps is not None else segment.first_pts
                # Retimed, the output's first pictures are 0, 1, 2, ... in every segment.
                delay = None if segment is None or segment.is_first else DecodeDelay(
                    tuple(range(MAX_REORDER_PICTURES + 1)) if plan.target_fps is not None else segment.opening, lead)
                _encode(pictures, output, vout, out_colour, time_base, lead, report, on_frame, origin,
                        frame_ticks=1 if plan.target_fps is not None else None, delay=delay)
            finally:
                stages.close()
            others.flush()
    if cues is not None:
        report.notes += cues.place(dst, vout)
    if segment is not None and report.audio == "flac":
        settle_flac(dst)
    report.notes += streams.check_output(dst, report.streams)
    return report


# Frames waiting between stages: enough to smooth out a batch's arrival, few enough that 4K frames
# in flight stay a few hundred MB at most.
DECODED_QUEUE = 8
ENCODE_QUEUE = 8
# Source frames minterpolate takes to make the one job's frames when it starts mid-stream: measured,
# it makes them from its 4th (its motion search and scene detection remember the frames before).
MINTERPOLATE_WARMUP_FRAMES = 12


class SerialMux:
    """The output container, muxed from two threads, one packet batch at a time."""

    def __init__(self, container: av.container.OutputContainer) -> None:
        self._container = container
        self._lock = threading.Lock()

    def mux(self, packets) -> None:
        with self._lock:
            self._container.mux(packets)

    def __getattr__(self, name: str):
        return getattr(self._container, name)


@dataclass
class Picture:
    """One output frame on its way to the encoder, at `pts` of the output's time base: either a PyAV
    YUV frame (the path without models, which never leaves YUV) or planes made on the device."""

    pts: int
    frame: av.VideoFrame | None = None
    planes: colours.HostPlanes | None = None


def _encode(pictures: Iterator[Picture], output: SerialMux, vout: av.VideoStream, colour: colours.Colour,
            time_base: Fraction, lead: int, report: Report, on_frame: OnFrame | None,
            origin: int | None = None, frame_ticks: int | None = None, delay: DecodeDelay | None = None) -> None:
    """Encode and mux in this (the calling) thread, so the deadline and progress callback run here.
    Timestamps count from `origin` (None: the first picture's). A segment's packets say how long
    each frame lasts (`frame_ticks` for a constant rate, else the frame's own duration): the muxer
    would guess the last one of every fragment from the average frame rate; a later segment's
    packets are placed on segment 0's timeline (`delay`)."""
    durations: dict[int, int] | None = {} if origin is not None else None

    def timed(packets: list[av.Packet]) -> list[av.Packet]:
        if durations is not None:
            for packet in packets:
                packet.duration = durations.pop(packet.pts, packet.duration)
        return delay(packets) if delay is not None else packets

    for picture in pictures:
        origin = picture.pts if origin is None else origin
        with report.timing("encode"):
            frame = picture.frame if picture.frame is not None else picture.planes.frame()
            colours.tag(frame, colour)
            # A decoded frame remembers its coded type: left so, the encoder would copy the source's GOP.
            frame.pict_type = PictureType.NONE
            frame.pts, frame.time_base = picture.pts - origin + lead, time_base
            if delay is not None:
                delay.picture(frame.pts)
            if durations is not None and (frame_ticks or frame.duration):
                durations[frame.pts] = frame_ticks or frame.duration
            output.mux(timed(vout.encode(frame)))
        report.frames_out += 1
        if on_frame:
            on_frame(report.frames_out)
    with report.timing("encode"):
        output.mux(timed(vout.encode()))


def _even(n: int) -> int:
    return n - (n % 2)


# Pixel formats with the same planes, bit depth and chroma siting, told apart only by their packing
# (or, for yuvj420p, the old way of saying full range): a frame in one is repacked into the other by
# swscale, its range named on both sides, without any arithmetic on its values.
_SAME_LAYOUT = {"yuv420p": {"yuv420p", "nv12"}, "nv12": {"yuv420p", "nv12"}, "yuvj420p": {"yuv420p", "nv12"},
                "yuv420p10le": {"yuv420p10le", "p010le"}, "p010le": {"yuv420p10le", "p010le"}}


def _yuv_throughout(plan: Plan, geo: geometry.Geometry, vin: av.VideoStream, source: colours.Colour,
                    choice: encode.EncoderChoice, out_size: tuple[int, int]) -> bool:
    """Whether the video can stay in its decoded YUV from decoder to encoder: no model runs (the
    libavfilter fallbacks work on YUV as ffmpeg's CLI does), nothing turns the picture, no odd size
    must be cropped, and the source's planes are the encoder's (so no matrix and no chroma
    resampling is involved: the RGB route's chroma filters have nothing to do)."""
    width, height = geo.display_size
    learned = ((plan.target_fps is not None and plan.interpolator is not None)
               or (plan.upscale > 1 and plan.upscaler is not None))
    return (not learned and geo.orientation.identity and out_size == (width * plan.upscale, height * plan.upscale)
            and source.matrix != colours.SPC_RGB and (plan.target_fps is None or not source.deep)
            and choice.pix_fmt in _SAME_LAYOUT.get(vin.codec_context.pix_fmt or "", ()))


def _yuv_stages(frames: Iterator[av.VideoFrame], plan: Plan, duration: float | Duration, report: Report,
                size: tuple[int, int], pix_fmt: str, segment: Segment | None = None) -> Iterator[Picture]:
    """The path without models: decoded frames, kept in YUV, through libavfilter (minterpolate,
    lanczos) when the plan asks for them."""
    frames = _same_shape(frames, size, pix_fmt, report)
    if plan.target_fps is not None:
        _say_minterpolate(report)
        rate = fps_fraction(plan.target_fps)
        count = _retimed_count(plan.target_fps, duration)
        stop, where = _share(segment, rate, count)
        retimed = filters.minterpolate_frames(frames, rate, stop, report.model_timing, **where)
    else:
        retimed = ((frame.pts, frame) for frame in frames)
    if plan.upscale == 1:
        for pts, frame in retimed:
            yield Picture(pts, frame=frame)
        return
    _say_lanczos(report, plan.upscale)
    waiting: deque[int] = deque()  # scale gives one frame per frame, in order: the pts travel beside it

    def unstamped() -> Iterator[av.VideoFrame]:
        for pts, frame in retimed:
            waiting.append(pts)
            yield frame

    for frame in filters.lanczos_frames(unstamped(), plan.upscale, report.model_timing):
        yield Picture(waiting.popleft(), frame=frame)


def _say_minterpolate(report: Report) -> None:
    report.interpolation = "ffmpeg-minterpolate"
    report.notes.append("no interpolation model given: frame rate by libavfilter minterpolate (non-learned)")


def _say_lanczos(report: Report, factor: int) -> None:
    report.upscale = "lanczos"
    report.notes.append(f"no upscale model given: x{factor} by libavfilter lanczos scale (non-learned)")


def _same_shape(frames: Iterator[av.VideoFrame], size: tuple[int, int], pix_fmt: str,
                report: Report) -> Iterator[av.VideoFrame]:
    """Frames in the stream's size and the encoder's packing: one whose size changed mid-stream is
    scaled (YUV -> YUV, its own matrix and range on both sides)."""
    width, height = size
    for frame in frames:
        if (frame.width, frame.height, frame.format.name) != (width, height, pix_fmt):
            with report.timing("decode"):  # a repack (or a resize) of the decoded planes, never to RGB
                frame = frame.reformat(width=width, height=height, format=pix_fmt, interpolation="LANCZOS",
                                       src_colorspace=frame.colorspace, dst_colorspace=frame.colorspace,
                                       src_color_range=frame.color_range, dst_color_range=frame.color_range)
        yield frame


def _device_stages(frames: Iterator[av.VideoFrame], plan: Plan, duration: float | Duration, report: Report,
                   reader: colours.Converter, writer: colours.Converter, orientation: geometry.Orientation,
                   size: tuple[int, int], out_size: tuple[int, int], pix_fmt: str,
                   segment: Segment | None = None) -> Iterator[Picture]:
    """The learned path, all on the plan's device: YUV planes in, RGB for the models, YUV planes out
    (already on their way back to host memory when the encoder gets them). `size` is the decoded
    (coded) size; the display matrix turns the picture after conversion."""
    width, height = size
    out_w, out_h = out_size
    rgb = (_picture(frame, width, height, reader, orientation, report) for frame in frames)
    rgb = _interpolate_stage(rgb, plan, duration, report, segment)
    rgb = _upscale_stage(rgb, plan, report)
    for frame in rgb:
        with report.timing("convert"):
            planes = writer.to_planes(frame.image[:out_h, :out_w], pix_fmt)
        yield Picture(frame.pts, planes=planes)


def _decode(container, vin, others: streams.OtherStreams, report: Report,
            deint: interlace.Deinterlace | None, segment: Segment | None = None,
            measuring: Duration | None = None, cues: SegmentCues | None = None) -> Iterator[av.VideoFrame]:
    """Decoded (and deinterlaced) video frames in order; other streams' packets are handed to their
    paths on the way. Only demuxing and decoding errors mean a bad input; anything downstream is our
    own failure. A segment stops demuxing past its end, and keeps only its own share of the other
    streams' packets. While the input is `measuring`, a frame goes on once the measure has read past
    it (gpu_job.media.measuring)."""
    last_pts: int | None = None
    first_pts: int | None = None
    tb = Fraction(vin.time_base)
    deinterlacer = interlace.Deinterlacer(deint, tb) if deint else None
    stop = segment.past if segment is not None else None
    interleaving = None if segment is None else Interleaving(segment, {a.ain.index: a for a in others.audio}, cues)
    more = interleaving.more if interleaving is not None else None
    watch = cues.seen if cues is not None else None
    for packet, decoded in _demux_decode(container, [vin, *others.inputs], vin, report, stop, more, watch):
        if packet is not None and packet.stream is not vin:
            if interleaving is not None:
                interleaving.packet(packet)
            # A segment's share of the other streams (some routes choose their own from every packet).
            if segment is None or segment.holds_packet(packet) or others.chooses_own(packet):
                others.packet(packet)
            continue
        for frame in decoded:
            pts = frame.pts if frame.pts is not None else (last_pts or 0) + 1
            if last_pts is not None and pts <= last_pts:
                report.notes.append(f"dropped a frame with a non-increasing timestamp ({pts})")
                continue
            last_pts = pts
            if measuring is not None:
                first_pts = pts if first_pts is None else first_pts
                measuring.reach(float((pts - first_pts) * tb))
            report.frames_in += 1
            frame.pts = pts
            if frame.time_base is None:  # drained from the decoder (a segment's end) rather than demuxed
                frame.time_base = vin.time_base
            if deinterlacer is None:
                yield frame
                continue
            with report.timing("decode"):
                pictures = deinterlacer.push(frame)
            yield from pictures
    if deinterlacer is not None:
        with report.timing("decode"):
            pictures = deinterlacer.flush()
        yield from pictures


def _own_frames(frames: Iterator[av.VideoFrame], segment: Segment) -> Iterator[av.VideoFrame]:
    """The segment's own frames, each lasting until the next decoded frame (the next segment's first
    included): its last fragment's last frame then says where the next segment begins."""
    held: av.VideoFrame | None = None
    for frame in frames:
        if held is not None:
            held.duration = frame.pts - held.pts
            yield held
            held = None
        if segment.holds_frame(frame):
            held = frame
    if held is not None:
        yield held


def _picture(frame: av.VideoFrame, width: int, height: int, reader: colours.Converter,
             orientation: geometry.Orientation, report: Report) -> TimedFrame:
    """A decoded (and deinterlaced) frame as RGB on the device, turned as the display matrix says."""
    with report.timing("convert"):
        timed = from_av(frame, width, height, frame.pts, Fraction(frame.time_base), reader)
        return TimedFrame(orientation.apply(timed.image), timed.pts, timed.time_base)


def _demux_decode(container, wanted, vin, report: Report, stop: Callable[[av.Packet], bool] | None = None,
                  more: Callable[[av.Packet], bool] | None = None,
                  watch: Callable[[av.Packet], None] | None = None) -> Iterator[tuple[av.Packet | None, list]]:
    """(packet, the video frames it completed). Once `stop` says so (a segment read far enough), the
    decoder is drained, (None, its last frames): its threads hold frames back, a segment's among them.
    The other streams' packets then go on, undecoded video skipped, while `more` says so. `watch`
    sees every packet read, in the file's order."""
    packets = container.demux(*wanted)
    while True:
        try:
            with report.timing("decode"):
                packet = next(packets, None)
                if packet is None:
                    return
                if watch is not None:
                    watch(packet)
                stopping = stop is not None and stop(packet)
                if stopping:
                    packet, decoded = None, vin.codec_context.decode(None)
                else:
                    decoded = packet.decode() if packet.stream is vin else []
        except av.error.FFmpegError as exc:
            where = "cannot be decoded" if report.frames_in == 0 else f"is corrupt after frame {report.frames_in}"
            raise BadInputError(f"the video {where}: {exc}") from exc
        yield packet, decoded
        if stopping:
            break
    while more is not None:
        try:
            packet = next(packets, None)
        except av.error.FFmpegError as exc:
            raise BadInputError(f"the input is corrupt past the segment's end: {exc}") from exc
        if packet is None:
            return
        if watch is not None:
            watch(packet)
        if packet.stream is not vin:
            yield packet, []
        if not more(packet):
            return


def _interpolate_stage(frames: Iterator[TimedFrame], plan: Plan, duration: float | Duration, report: Report,
                       segment: Segment | None = None) -> Iterator[TimedFrame]:
    if plan.target_fps is None:
        return frames
    rate = fps_fraction(plan.target_fps)
    count = _retimed_count(plan.target_fps, duration)
    if plan.interpolator is None:
        _say_minterpolate(report)
        stop, where = _share(segment, rate, count)
        return filters.minterpolate(frames, rate, stop, report.model_timing, **where)
    model = plan.interpolator
    report.interpolation = model.name
    # torch is imported only once there is a model to run
    from gpu_job.memory import BatchLimit, MeasuredBatch

    limit = BatchLimit(torch.device(plan.device))
    batch = MeasuredBatch.for_device(plan.batch_size, torch.device(plan.device))

    def run(lefts: list[TimedFrame], rights: list[TimedFrame], steps: list[float]) -> list[torch.Tensor]:
        # A batch reuses few source frames (24 -> 60: 8 slots, ~3 frames): move each to the device once.
        unique = list({id(f): f for f in lefts + rights}.values())
        slot = {id(f): i for i, f in enumerate(unique)}
        images = to_float_batch(unique, plan.device, plan.torch_dtype)
        img0 = images[[slot[id(f)] for f in lefts]]
        img1 = images[[slot[id(f)] for f in rights]]
        t = torch.tensor(steps, device=plan.device, dtype=plan.torch_dtype)
        with report.timing("model", plan.device):
            out = batch.run(lambda: limit.run(model, img0, img1, t), len(lefts))
            return to_images(out, lefts[0].image.dtype)

    if segment is None:
        return retime(frames, rate, count, run, batch, report.retime)
    assert isinstance(count, int), "a segment's share is measured before it is processed"
    first, stop = segment.frame_range(rate, count)
    return retime(frames, rate, stop, run, batch, report.retime,
                  origin=segment.first_pts * segment.video_tb, first=first)


def _share(segment: Segment | None, rate: Fraction, count: Count) -> tuple[Count, dict]:
    """The output frames minterpolate makes: (the count to stop at, where a segment's begin: the
    first picture's time and its first frame), or the whole count."""
    if segment is None:
        return count, {}
    assert isinstance(count, int), "a segment's share is measured before it is processed"
    first, stop = segment.frame_range(rate, count)
    return stop, {"origin": segment.first_pts * segment.video_tb, "first": first}


def _lead_in(plan: Plan, vin: av.VideoStream) -> Fraction:
    """How far before its start a segment decodes: interpolation's left-hand frame, and for
    minterpolate (no model) the frames it warms up on before it makes the one job's frames."""
    if plan.target_fps is None or plan.interpolator is not None:
        return LEAD_IN_S
    rate = Fraction(vin.average_rate or vin.guessed_rate or 25)
    return max(LEAD_IN_S, MINTERPOLATE_WARMUP_FRAMES / rate)


def _upscale_stage(frames: Iterator[TimedFrame], plan: Plan, report: Report) -> Iterator[TimedFrame]:
    if plan.upscale == 1:
        return frames
    if plan.upscaler is None:
        _say_lanczos(report, plan.upscale)
        return filters.lanczos_scale(frames, plan.upscale, report.model_timing)
    model = plan.upscaler
    report.upscale = model.name
    if model.scale != plan.upscale:
        report.notes.append(f"model {model.name} is x{model.scale}; resized to x{plan.upscale} (bicubic, antialiased)")
    return _batched_upscale(frames, plan, model, report)


def _batched_upscale(frames: Iterator[TimedFrame], plan: Plan, model, report: Report) -> Iterator[TimedFrame]:
    batch: list[TimedFrame] = []

    def flush() -> Iterator[TimedFrame]:
        with report.timing("model", plan.device):
            x = to_float_batch(batch, plan.device, plan.torch_dtype)
            y = model(x)
            target = (x.shape[-2] * plan.upscale, x.shape[-1] * plan.upscale)
            if tuple(y.shape[-2:]) != target:
                y = torch.nn.functional.interpolate(y, size=target, mode="bicubic", antialias=True, align_corners=False)
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
