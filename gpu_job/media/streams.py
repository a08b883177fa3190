"""Every stream but the processed video: audio, subtitles, attachments, data; plus chapters and tags.

Each stream is copied when the output container accepts it unchanged (asked of the muxer itself),
converted when it does not but a conversion keeps its content (audio to AAC, text subtitles to the
container's text codec), and otherwise dropped with its reason. Every decision is one StreamEntry in
the manifest (engine.streams), and every conversion or loss is also a note: nothing is dropped silently.
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av

from gpu_job.media import offsets
from gpu_job.media.cuetrack import micro
from vastdrop.fmp4 import SEGMENT_AUDIO_CODECS, TEXT_SUBTITLES

logger = logging.getLogger(__name__)

# The result's container: the muxer and its options. MP4 puts its index first so players start at once.
MUXERS = {"mp4": ("mp4", {"movflags": "+faststart"}), "mkv": ("matroska", {})}
# The text codec each container stores subtitles in, when the source's own cannot be copied.
TEXT_SUBTITLE_CODEC = {"mp4": "mov_text", "mkv": "subrip"}
# What MP4's text track is timed in: microseconds, as ffmpeg's CLI writes it. FFmpeg's muxer writes an
# empty sample at a cue's end once a packet of any stream comes whose timestamp, counted in that
# stream's own ticks, is the larger: counted in milliseconds, the next video packet set it off at
# once, and a cue that started before that end was moved to it (2 s late after a 5 s cue overlapped
# by 2 s). In microseconds, only the next cue sets it off.
TEXT_TICKS = Fraction(1, 1_000_000)
# How far a re-encoded frame's own time may lie from the end of the one before and still follow it:
# beyond, a real gap or overlap, kept. Matroska rounds times to the millisecond.
SAMPLE_CLOCK_SLACK_S = Fraction(1, 1000)
# The layout FLAC's format assigns each channel count (FLAC in MP4 stores no other): a reader gives
# 5.1(side) to any six channels, so a 5.1 (back) or 6.0 source is mixed into it, and said to be.
_FLAC_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0(side)", 6: "5.1(side)", 7: "6.1", 8: "7.1"}
# Named channel layouts for re-encoded audio, by channel count (AAC refuses unnamed layouts).
_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
# Tags that describe the source's encoding, not its content: the muxer writes its own.
_STALE_TAGS = frozenset({"encoder", "major_brand", "minor_version", "compatible_brands", "duration",
                         "number_of_frames", "number_of_bytes", "bps"})
# The flags a player acts on, as recorded per stream in the manifest.
_DISPOSITIONS = ("default", "forced", "hearing_impaired", "visual_impaired", "comment", "original", "dub")
# A minimal ASS header for text encoders, when the source decoder offers none (the encoders require one).
DEFAULT_ASS_HEADER = (b"[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n[V4+ Styles]\n"
               b"Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, "
               b"Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, "
               b"Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n"
               b"Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\n\n"
               b"[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n")


def open_output(dst: Path, container: str, options: dict[str, str] | None = None) -> av.container.OutputContainer:
    """The result's muxer; `options` replace the container's own (a segment's: gpu_job.media.segment)."""
    fmt, defaults = MUXERS[container]
    return av.open(str(dst), "w", format=fmt, options=dict(defaults if options is None else options))


def start_shift(vin: av.VideoStream, time_base: Fraction | None) -> int:
    """Ticks (of `time_base`) to subtract from a copied stream's timestamps. Every stream, the video
    and the chapters included, moves by the same amount (from the earliest stream's start: the rule
    is gpu_job.media.offsets', issue 10 item 5), so each keeps its place relative to the picture."""
    return offsets.shift(vin.container, time_base)


def copy_accepted(template: av.stream.Stream, container: str) -> bool:
    """Ask the muxer itself: add the stream to a throwaway in-memory file and write its header."""
    fmt, _ = MUXERS[container]
    try:
        with av.open(io.BytesIO(), "w", format=fmt) as probe:
            probe.add_stream_from_template(template)
            probe.start_encoding()
        return True
    except (av.error.FFmpegError, ValueError) as exc:
        logger.info("%s stream %s cannot be copied into %s: %s", template.type, _codec(template), container, exc)
        return False


@dataclass
class StreamEntry:
    """One input stream and what became of it (engine.streams in the manifest)."""

    index: int
    kind: str  # audio | subtitle | attachment | data | video
    codec: str | None
    action: str  # kept | converted | dropped
    language: str | None = None
    title: str | None = None
    filename: str | None = None  # an attachment's
    disposition: list[str] | None = None
    to: str | None = None  # the codec it was converted to
    output_index: int | None = None
    reason: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _codec(stream: av.stream.Stream) -> str | None:
    """The codec's own name (subrip, hdmv_pgs_subtitle), not its decoder's (srt, pgssub)."""
    if stream.codec_context is not None:
        return stream.codec_context.codec.canonical_name
    name = stream.metadata.get("mimetype") if stream.type == "attachment" else getattr(stream, "name", None)
    return name or stream.metadata.get("handler_name") or None


def _flags(stream: av.stream.Stream) -> list[str]:
    return [name for name in _DISPOSITIONS if stream.disposition & getattr(av.stream.Disposition, name)]


def content_tags(metadata: dict[str, str]) -> dict[str, str]:
    """Tags about the content (title, language, creation time, ...), without those about the encoding."""
    return {k: v for k, v in metadata.items()
            if k.lower() not in _STALE_TAGS and not k.lower().startswith("_statistics")}


def _entry(stream: av.stream.Stream, action: str, **extra) -> StreamEntry:
    return StreamEntry(index=stream.index, kind=stream.type, codec=_codec(stream), action=action,
                       language=stream.metadata.get("language"), title=stream.metadata.get("title"),
                       filename=stream.metadata.get("filename"), disposition=_flags(stream) or None, **extra)


def _moved(packet: av.Packet, stream: av.stream.Stream, shift: int) -> av.Packet:
    """A copied packet, for `stream`, moved by `shift` ticks."""
    packet.pts = None if packet.pts is None else packet.pts - shift
    packet.dts -= shift
    packet.stream = stream
    return packet


class _Copy:
    """Packets copied unchanged, moved by the video's start. A segment's mov_text cues go to its
    `cues` instead (gpu_job.media.cuetrack: the segment writes that track itself)."""

    def __init__(self, output: av.container.OutputContainer, sin: av.stream.Stream, vin: av.VideoStream) -> None:
        self.output, self.stream = output, output.add_stream_from_template(sin)
        self.text = _codec(sin) == "mov_text"
        if self.text:
            self.stream.time_base = TEXT_TICKS
        self.shift = start_shift(vin, sin.time_base)
        self.cues = None

    def packet(self, packet: av.Packet) -> None:
        if packet.dts is None:  # the demuxer's flush packet
            return
        if self.cues is None:
            self.output.mux(_moved(packet, self.stream, self.shift))
        elif packet.pts is not None:
            tb = Fraction(packet.time_base)
            self.cues.add(micro(packet.pts - self.shift, tb), micro(packet.duration or 0, tb), bytes(packet))

    def flush(self) -> None:
        pass


class AudioPath:
    """Copies audio packets unchanged when the container accepts the codec; otherwise re-encodes it:
    to AAC, or to FLAC (`lossless`: a split job's, whose segments must join without a seam).
    In a segment (`hold`), each copied packet is held until the next one's time says how long it
    lasts: a fragment's last sample keeps the duration its packet says, which Matroska's do not say.
    A segment's last packet lasts until the next segment's first, seen past its end (`until`).
    A segment's re-encoded audio is decoded from every packet read and keeps the frames it `owns`."""

    def __init__(self, output: av.container.OutputContainer, ain: av.AudioStream, vin: av.VideoStream,
                 container: str = "mp4", lossless: bool = False) -> None:
        self.output, self.ain = output, ain
        self.hold = False
        self.held: av.Packet | None = None
        self.owns = None  # a segment's: whether a decoded frame is its own
        self.starts_track = True  # its first packet is the track's first (not in a later segment)
        self.track_start: int | None = None  # a later segment's: the track's first sample (track_start)
        self.next_sample: int | None = None  # where the next re-encoded frame goes (_on_sample_clock)
        self.owned = False  # whether the last decoded frame was the segment's own
        self.skipped = 0  # unreadable packets of re-encoded audio, left out
        # A split job copies only what is tested to join sample for sample (vastdrop.fmp4).
        copied = copy_accepted(ain, container) and (not lossless or _codec(ain) in SEGMENT_AUDIO_CODECS)
        self.mode = "copy" if copied else "flac" if lossless else "aac"
        if self.mode == "copy":
            self.stream = output.add_stream_from_template(ain)
        else:
            self.stream = output.add_stream(self.mode, rate=ain.codec_context.sample_rate or 48000)
            channels = len(ain.codec_context.layout.channels) if ain.codec_context.layout else 2
            # By channel count: a source layout may be unnamed ("2 channels"), which AAC refuses, and
            # FLAC in MP4 records only the count: a reader gives the layout FLAC's format assigns it.
            layouts = _FLAC_LAYOUTS if self.mode == "flac" else _DEFAULT_LAYOUTS
            self.stream.layout = layouts.get(channels, "stereo")
            # Said where the source names its channels and they are not the output's (unnamed ones,
            # "1 channels", keep their order).
            source = ain.codec_context.layout
            named = source is not None and all(ch.name not in ("NONE", "UNKNOWN") for ch in source.channels)
            same = named and [ch.name for ch in source.channels] == [ch.name for ch in self.stream.layout.channels]
            self.remixed = source.name if named and not same else None
            # FLAC keeps 16-bit sources in 16 bits, anything deeper in 32-bit integers, of which its
            # encoder keeps 24 bits: a 24-bit source whole, float to 2^-23.
            deep = ain.codec_context.format is not None and ain.codec_context.format.bytes > 2
            self.stream.format = "fltp" if self.mode == "aac" else "s32" if deep else "s16"
            self.resampler = av.AudioResampler(format=self.stream.format, layout=self.stream.layout,
                                               rate=self.stream.rate)
        self.shift = start_shift(vin, ain.time_base)

    def packet(self, packet: av.Packet) -> None:
        if self.mode == "copy":
            if packet.dts is None:  # the demuxer's flush packet
                return
            at = packet.dts
            packet = self._in_samples(packet) if self.ain.codec_context.sample_rate else \
                _moved(packet, self.stream, self.shift)
            if not self.hold:
                self.output.mux(packet)
                return
            self.until(at, Fraction(self.ain.time_base))
            self._release()
            self.held = packet
            return
        try:
            frames = packet.decode()
        except av.error.FFmpegError as exc:  # one unreadable packet costs its own sound, not the job
            logger.info("audio stream %d: packet at %s unreadable: %s", self.ain.index, packet.pts, exc)
            self.skipped += 1
            return
        for frame in frames:
            if self.owns is not None:  # a frame without a time (a decoder's last) goes where the one before went
                self.owned = self.owned if frame.pts is None else self.owns(frame)
                if not self.owned:
                    continue
            self._on_sample_clock(frame)
            for resampled in self.resampler.resample(frame):
                self.output.mux(self.stream.encode(resampled))

    def _on_sample_clock(self, frame: av.AudioFrame) -> None:
        """The frame's place on the timeline (moved like every stream: offsets.py), counted in samples:
        it follows the frame before unless its own time lies further than SAMPLE_CLOCK_SLACK_S from
        there (a real gap or overlap). A container's clock may round it (Matroska's milliseconds: 24
        samples at 48 kHz), and the encoder's packets would carry that rounding."""
        rate = self.stream.rate
        if frame.pts is None and self.next_sample is None:
            return
        at = self.next_sample if frame.pts is None else round((frame.pts - self.shift) * Fraction(frame.time_base) * rate)
        if self.next_sample is None or abs(at - self.next_sample) > SAMPLE_CLOCK_SLACK_S * rate:
            self.next_sample = at
        frame.pts, frame.time_base = self.next_sample, Fraction(1, rate)
        self.next_sample += frame.samples

    def _offset(self, time_base: Fraction) -> int:
        """Samples subtracted from a copied packet's time on the input's clock (_in_samples)."""
        rate = self.ain.codec_context.sample_rate
        return self.track_start if self.track_start is not None else round(self.shift * time_base * rate)

    def _in_samples(self, packet: av.Packet) -> av.Packet:
        """A copied packet timed in samples, moved as every stream is (its time on the input's clock,
        rounded to a sample, less the offset): the track's first packet starts at track_start's."""
        tb, rate = Fraction(packet.time_base), self.ain.codec_context.sample_rate
        dts = round(packet.dts * tb * rate)
        end = round((packet.dts + packet.duration) * tb * rate) if packet.duration else None
        if self.starts_track:
            self.starts_track = False
            dts = track_start(packet.dts, packet.dts + (packet.duration or 0), tb, self.ain.codec_context)
        pts = None if packet.pts is None else dts + round((packet.pts - packet.dts) * tb * rate)
        offset = self._offset(tb)
        packet.time_base = Fraction(1, rate)
        packet.dts, packet.pts = dts - offset, None if pts is None else pts - offset
        packet.duration = end - dts if end is not None else 0
        packet.stream = self.stream
        return packet

    def until(self, at: int, time_base: Fraction) -> None:
        """The next packet's decoding time is `at` (ticks of `time_base`, on the input's clock)."""
        if self.held is None:
            return
        if self.ain.codec_context.sample_rate:
            at = round(at * time_base * self.ain.codec_context.sample_rate) - self._offset(time_base)
        else:
            at -= self.shift
        if at > self.held.dts:
            self.held.duration = at - self.held.dts

    def _release(self) -> None:
        if self.held is not None:
            self.output.mux(self.held)
            self.held = None

    def flush(self) -> None:
        self._release()
        if self.mode != "copy":
            for resampled in self.resampler.resample(None):
                self.output.mux(self.stream.encode(resampled))
            self.output.mux(self.stream.encode())


def track_start(first_dts: int, first_end: int, time_base: Fraction, codec: av.AudioCodecContext) -> int:
    """A copied audio track's first sample, in samples on the input's clock: its first packet's time,
    or, where that packet is stamped on a coarser clock than its samples and lasts less than a whole
    frame (Matroska's milliseconds: AAC's 1024 samples of priming as 21 ms, 1008 samples), its end
    less one frame. The edit list that hides the priming then covers the whole packet: covering
    1008 of its 1024 samples, FFmpeg's reader of a fragmented file gave a 16-sample frame at the first
    picture's time and the next frame at that time too, which players warn of."""
    rate, frame = codec.sample_rate, codec.frame_size
    start = round(first_dts * time_base * rate)
    if frame and first_end > first_dts:
        start = min(start, round(first_end * time_base * rate) - frame)
    return start


class SubtitlePath:
    """Text subtitles decoded and re-encoded in the container's text codec, each cue at its own time
    (a segment's go to its `cues`, as _Copy's)."""

    def __init__(self, output: av.container.OutputContainer, sin: av.SubtitleStream, vin: av.VideoStream,
                 codec: str) -> None:
        self.output, self.sin = output, sin
        decoder = sin.codec_context
        decoder.open()  # the decoder makes the ASS header the encoder needs
        self.stream = output.add_stream(codec)
        self.stream.time_base = TEXT_TICKS if codec == "mov_text" else sin.time_base
        self.stream.codec_context.time_base = sin.time_base
        self.stream.codec_context.subtitle_header = decoder.subtitle_header or DEFAULT_ASS_HEADER
        self.shift = start_shift(vin, sin.time_base)
        self.skipped = 0
        self.text = codec == "mov_text"
        self.cues = None

    def packet(self, packet: av.Packet) -> None:
        if packet.dts is None or packet.pts is None:
            return
        try:
            cues = self.sin.codec_context.decode2(packet)
        except av.error.FFmpegError as exc:  # one unreadable cue costs that cue, not the job
            logger.info("subtitle stream %d: cue at %s unreadable: %s", self.sin.index, packet.pts, exc)
            self.skipped += 1
            return
        if cues is None or len(cues) == 0:
            return
        out = self.stream.codec_context.encode_subtitle(cues)
        # The encoder stamps the packet in AVSubtitle units (microseconds, milliseconds): restamp it
        # with the source packet's own time and duration, in the source's time base.
        out.time_base = self.sin.time_base
        out.pts = out.dts = packet.pts - self.shift
        out.duration = packet.duration or _cue_duration(cues, self.sin.time_base)
        if self.cues is not None:
            tb = Fraction(self.sin.time_base)
            self.cues.add(micro(out.pts, tb), micro(out.duration, tb), bytes(out))
            return
        out.stream = self.stream
        self.output.mux(out)

    def flush(self) -> None:
        pass


def _cue_duration(cues, time_base: Fraction) -> int:
    ms = max(0, cues.end_display_time - cues.start_display_time)  # AVSubtitle display times are in ms
    return round(Fraction(ms, 1000) / time_base)


class OtherStreams:
    """Every input stream except the processed video, planned at once (before the header is written):
    each is copied, converted or dropped, and routed packet by packet while the video is demuxed."""

    def __init__(self, container: av.container.InputContainer, output: av.container.OutputContainer,
                 vin: av.VideoStream, fmt: str, *, write_chapters: bool = True, lossless_audio: bool = False) -> None:
        """write_chapters False: the chapters are planned (self.chapters) but not written, as for a
        later segment of a split job (the join keeps segment 0's header, which has them).
        lossless_audio: audio that cannot be copied becomes FLAC, not AAC (a split job's)."""
        self.container, self.output, self.vin, self.fmt = container, output, vin, fmt
        self.lossless_audio = lossless_audio
        self.entries: list[StreamEntry] = []
        self.notes: list[str] = []
        self.routes: dict[int, object] = {}
        self.audio: list[AudioPath] = []
        self.timecode: str | None = vin.metadata.get("timecode")
        for stream in container.streams:
            if stream is not vin:
                self._plan(stream)
        output.metadata.update(content_tags(container.metadata))
        self.chapters = _shifted_chapters(container.chapters(), vin)
        if self.chapters and write_chapters:
            output.set_chapters(self.chapters)

    @property
    def inputs(self) -> list[av.stream.Stream]:
        """The input streams whose packets are wanted (attachments have none: they are in the header)."""
        return [s for s in self.container.streams if s.index in self.routes]

    @property
    def audio_mode(self) -> str | None:
        """The manifest's engine.audio: copy, aac or flac (at least one track re-encoded so), or None (no audio)."""
        if not self.audio:
            return None
        return next((a.mode for a in self.audio if a.mode != "copy"), "copy")

    @property
    def text_routes(self) -> dict[int, object]:
        """The routes (by input stream index) that write MP4's text track (mov_text), copied or converted."""
        return {index: route for index, route in self.routes.items() if getattr(route, "text", False)}

    def chooses_own(self, packet: av.Packet) -> bool:
        """Whether this packet's route takes every packet read and keeps a segment's share itself:
        re-encoded audio (its decoder needs the packets before) and text cues (SegmentCues)."""
        route = self.routes.get(packet.stream.index)
        return getattr(route, "owns", None) is not None or getattr(route, "cues", None) is not None

    def packet(self, packet: av.Packet) -> None:
        route = self.routes.get(packet.stream.index)
        if route is not None:
            route.packet(packet)

    def flush(self) -> None:
        for index, route in self.routes.items():
            route.flush()
            if getattr(route, "skipped", 0):
                what = "audio stream {}: {} unreadable packet(s)" if isinstance(route, AudioPath) \
                    else "subtitle stream {}: {} unreadable cue(s)"
                self.notes.append(what.format(index, route.skipped) + " left out")

    def tag_video(self, vout: av.VideoStream) -> None:
        """The processed video keeps its language, title and flags."""
        vout.metadata.update({k: v for k, v in content_tags(self.vin.metadata).items()
                              if k in ("language", "title", "handler_name")})
        if self.timecode:  # the muxer writes it as MP4's timecode track or Matroska's tag
            vout.metadata["timecode"] = self.timecode
        vout.disposition = self.vin.disposition

    def manifest(self) -> list[dict]:
        return [e.as_dict() for e in self.entries]

    # -- planning --------------------------------------------------------------------------------
    def _plan(self, stream: av.stream.Stream) -> None:
        kind, codec = stream.type, _codec(stream)
        if stream.discard == av.stream.Discard.all and kind == "data":  # MP4's chapter text track
            self._add(stream, "converted", None, to="chapters", reason="the source's chapter track: its chapters are copied")
            return
        if kind == "data" and stream.metadata.get("timecode"):  # a camera's tmcd track
            self.timecode = self.timecode or stream.metadata["timecode"]
            self._add(stream, "converted", None, to="timecode",
                      reason="the source's timecode track: its start timecode is a tag of the video")
            return
        if kind == "video":
            what = "cover art (an attached picture)" if stream.disposition & av.stream.Disposition.attached_pic \
                else "a second video stream"
            self._drop(stream, f"{what} is not carried: only the first video stream is processed")
            return
        if kind == "audio":
            path = AudioPath(self.output, stream, self.vin, self.fmt, lossless=self.lossless_audio)
            self.audio.append(path)
            if path.mode != "copy":
                self._add(stream, "converted", path, to=path.mode, reason=f"{codec} cannot be stored in {self.fmt.upper()}")
                why = " (lossless: a split job's segments would join AAC with a seam)" if path.mode == "flac" else ""
                self.notes.append(f"audio codec {codec} cannot be copied into {self.fmt.upper()}: "
                                  f"stream {stream.index} re-encoded to {path.mode.upper()}{why}")
                if path.remixed:
                    self.notes.append(f"audio stream {stream.index}: its channels ({path.remixed}) are mixed into "
                                      f"{path.stream.layout.name} for {path.mode.upper()}")
            else:
                self._add(stream, "kept", path)
            return
        if copy_accepted(stream, self.fmt):
            self._add(stream, "kept", _Copy(self.output, stream, self.vin))
            return
        if kind == "subtitle" and codec in TEXT_SUBTITLES:
            target = TEXT_SUBTITLE_CODEC[self.fmt]
            self._add(stream, "converted", SubtitlePath(self.output, stream, self.vin, target), to=target,
                      reason=f"{codec} cannot be stored in {self.fmt.upper()}")
            if codec in ("ass", "ssa"):
                self.notes.append(f"subtitle stream {stream.index} ({codec}) converted to {target}: "
                                  "the text and times are kept, the styling is not")
            return
        hint = " (JOB_CONTAINER=mkv keeps it)" if self.fmt != "mkv" and copy_accepted(stream, "mkv") else ""
        what = "bitmap subtitles" if kind == "subtitle" else f"{kind} streams" if kind != "attachment" else "attachments"
        self._drop(stream, f"{what} ({codec or 'unknown codec'}) cannot be stored in {self.fmt.upper()}{hint}")

    def _add(self, stream: av.stream.Stream, action: str, route, **extra) -> None:
        entry = _entry(stream, action, **extra)
        if route is not None:
            out = route.stream
            out.metadata.update(content_tags(stream.metadata))
            out.disposition = stream.disposition
            entry.output_index = out.index
            if stream.type != "attachment":
                self.routes[stream.index] = route
        self.entries.append(entry)

    def _drop(self, stream: av.stream.Stream, reason: str) -> None:
        self.entries.append(_entry(stream, "dropped", reason=reason))
        self.notes.append(f"dropped {stream.type} stream {stream.index}: {reason}")


def _shifted_chapters(chapters: list[dict], vin: av.VideoStream) -> list[dict]:
    """The chapters, moved like every stream so each still starts on the same picture."""
    moved = []
    for chapter in chapters:
        shift = start_shift(vin, chapter["time_base"])
        start, end = max(0, chapter["start"] - shift), max(0, chapter["end"] - shift)
        moved.append({**chapter, "start": start, "end": max(start, end)})
    return moved


def check_output(dst: Path, entries: list[StreamEntry]) -> list[str]:
    """Read the result back as a player would and say where a kept stream's language or flags differ
    from the source's (MP4 marks the first track of a kind enabled when none is default)."""
    notes = []
    with av.open(str(dst)) as result:
        for entry in entries:
            if entry.output_index is None or entry.kind == "attachment":
                continue
            out = result.streams[entry.output_index]
            flags = _flags(out) or None
            if flags != entry.disposition:
                notes.append(f"{entry.kind} stream {entry.index}: flags {entry.disposition or []} are "
                             f"{flags or []} in the result (as the container stores them)")
            language = out.metadata.get("language")
            if entry.language and language != entry.language:
                notes.append(f"{entry.kind} stream {entry.index}: language {entry.language!r} reads as {language!r}")
    return notes
