"""One segment of a longer job (issue 12): the result's frames in [start, end), as a fragmented-MP4
media segment that the control plane joins with its neighbours (vastdrop.segments).

Every segment job decodes the same input and places its frames on the same timeline as the whole
job would: times are seconds from the first picture, and every output timestamp stays absolute, so
that segment k's fragments simply follow segment k-1's in the joined file. Exact rationals on both
sides (Fraction of the decimal strings the control plane sends) put each frame in exactly one
segment: none is duplicated or lost at a join.

The decoder starts at the keyframe before the segment (less a margin, so the source frame before
its first output frame is decoded too: interpolation needs it), and stops a little after the end
(the next segment's first source frame is the last interpolation's right-hand frame).
"""

from __future__ import annotations

import functools
import math
from array import array
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from gpu_job.media import streams
from gpu_job.media.cuetrack import MICRO, CueChain, micro, write_tracks
from gpu_job.media.probe import Source, Timeline, declared_s, open_input, open_read, timeline_from
from vastdrop.errors import BadInputError, ConfigError
from vastdrop.fmp4 import (
    FIRST_AUDIO_WITHIN_S,
    MAX_INIT_BYTES,
    SEGMENT_AUDIO_CODECS,
    NotASegment,
    flac_totals_unknown,
    init_length,
)
from vastdrop.manifest import MediaFacts

# Decoded before the segment's start: reaches back past the source frame before the first output frame.
LEAD_IN_S = Fraction(1)
# Demuxed past the end: the next source frame, and copied streams' packets interleaved behind the video.
LOOKAHEAD_S = Fraction(2)
# How far a file's streams may lie apart in it: FFmpeg's muxer lets one run up to max_interleave_delta
# (10 s) ahead of a stream that is late, and a remux of such a file can add as much again (18 s in
# tests/test_segments.py's Matroska film). Demuxing goes on up to this far past the end for copied audio.
INTERLEAVE_S = Fraction(30)
# How far before a later segment's start it looks for a cue still showing there, which it shows again
# from its start (SegmentCues): as far as FFmpeg's Matroska demuxer backs up for a subtitle when it seeks.
CUE_LOOKBACK_S = Fraction(30)
# Demuxers that hand packets over in time order, wherever the file stores them (FFmpeg's for MP4 and
# MOV): a cue comes with the picture of its time. Others (Matroska's) read in the file's order, where
# a muxer may store cues far behind the picture: 18 s in a test, a script that muxes them last.
TIME_ORDERED_DEMUXERS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2"})

# The mp4 muxer's options for a media segment. delay_moov lets the init segment carry each track's
# edit list (the encoder's B-frame delay, AAC's priming), as the whole job's file has them: the join
# keeps the first segment's init. skip_trailer leaves out the mfra index that would point into this
# file alone. Later segments add frag_discont (with avoid_negative_ts=disabled): their fragments keep
# absolute timestamps (tfdt), so they follow the segment before.
_MOVFLAGS = "+frag_keyframe+delay_moov+default_base_moof+skip_trailer"
# Fragments start at video keyframes only (the encoder's groups: at most 250 frames, which the muxer
# holds in memory): a fragment cut anywhere else (frag_duration) misplaced the audio after it by a
# packet, when FFmpeg's empty subtitle sample, stamped at a cue's end ahead of the picture, set it off.
FIRST_SEGMENT_MP4 = {"movflags": _MOVFLAGS, "avoid_negative_ts": "disabled"}
# Segment 0 alone writes the tracks that come after the media in its header, each with its samples in
# its first fragment: the chapters (OtherStreams' write_chapters) and the timecode (write_tmcd). The
# muxer places the chapter track before the timecode track; later segments without either keep the
# media's track IDs, and the join accepts them (vastdrop.fmp4.follows).
LATER_SEGMENT_MP4 = {**FIRST_SEGMENT_MP4, "movflags": _MOVFLAGS + "+frag_discont", "write_tmcd": "0"}


def muxer_options(window: tuple[Fraction, Fraction | None]) -> dict[str, str]:
    return FIRST_SEGMENT_MP4 if window[0] == 0 else LATER_SEGMENT_MP4


# How far into the input the first packet of every audio track is looked for: it starts at most
# FIRST_AUDIO_WITHIN_S after the picture (vastdrop.fmp4.unsplittable), and may be stored up to
# INTERLEAVE_S behind the picture in the file.
FIRST_PACKETS_WITHIN_S = Fraction(FIRST_AUDIO_WITHIN_S) + INTERLEAVE_S
# No encoder holds back more pictures than this before its first packet (H.264's and HEVC's
# max_num_reorder_frames are at most 16): DecodeDelay looks at as many pictures plus one.
MAX_REORDER_PICTURES = 16
# The first video packets a segment reads for them: twice as many hold the first pictures, whatever
# their order.
OPENING_PACKETS = 2 * (MAX_REORDER_PICTURES + 1)


@dataclass(frozen=True)
class Segment:
    start: Fraction  # seconds from the first picture
    end: Fraction | None  # exclusive; None: to the end of the input
    first_pts: int  # the first picture's pts, in the video stream's time base
    video_tb: Fraction
    first_dts: dict[int, int]  # each copied stream's first dts in the input (by stream index)
    first_ends: dict[int, int] = field(default_factory=dict)  # and its first packet's end (dts + duration)
    opening: tuple[int, ...] = ()  # the input's first pictures' pts, ascending (DecodeDelay)

    @property
    def is_first(self) -> bool:
        return self.start == 0  # as muxer_options says

    def seconds(self, pts: int, time_base: Fraction) -> Fraction:
        """A timestamp as seconds from the first picture."""
        return pts * Fraction(time_base) - self.first_pts * self.video_tb

    def holds(self, t: Fraction) -> bool:
        """Whether a frame (or a packet of a copied stream) at t belongs here. The first segment also
        takes what comes before the first picture, the last what comes after the video."""
        return (self.is_first or t >= self.start) and (self.end is None or t < self.end)

    def holds_frame(self, frame: av.VideoFrame) -> bool:
        return self.holds(self.seconds(frame.pts, frame.time_base))

    def holds_packet(self, packet: av.Packet) -> bool:
        """A copied stream's first packet is segment 0's wherever it lies (a soundtrack may start after
        segment 0's end): it starts the track in segment 0's header, which the join keeps; without it
        the track would start at the film's start."""
        if packet.dts is not None and packet.dts == self.first_dts.get(packet.stream.index):
            return self.is_first
        when = packet.pts if packet.pts is not None else packet.dts
        return when is not None and self.holds(self.seconds(when, packet.time_base))

    def holds_sound(self, index: int, frame: av.AudioFrame) -> bool:
        """A re-encoded stream's decoded frame: its first is segment 0's wherever it lies, as a copied
        stream's first packet is (holds_packet)."""
        if frame.pts == self.first_dts.get(index):
            return self.is_first
        return self.holds_frame(frame)

    def past(self, packet: av.Packet) -> bool:
        """Demuxing can stop: this video packet lies well beyond the end (the decoder is then drained
        of the frames it holds, the next segment's first among them)."""
        when = packet.dts if packet.dts is not None else packet.pts
        return (self.end is not None and when is not None and packet.stream.type == "video"
                and self.seconds(when, packet.time_base) > self.end + LOOKAHEAD_S)

    def frame_range(self, fps: Fraction, count: int) -> tuple[int, int]:
        """The retimed output frames k (at k/fps) that are this segment's: [first, stop)."""
        first = math.ceil(self.start * fps)
        stop = count if self.end is None else min(count, math.ceil(self.end * fps))
        return first, stop


def open_segment(src: Source, container: av.container.InputContainer, vin: av.VideoStream,
                 window: tuple[Fraction, Fraction | None], copied: list[av.stream.Stream],
                 lead_in: Fraction = LEAD_IN_S, decoded: frozenset[int] = frozenset()) -> Segment:
    """Find the first picture (the timeline's zero) and the first packet of each copied stream (in a
    second look at the file, so the first segment starts reading where the whole job would: at the
    very first packet), or its first decoded frame for those re-encoded (`decoded`: a decoder may
    make nothing of a first packet), then seek a later segment to the keyframe before its start."""
    start, end = window
    with open_read(src) as scan:
        first_pts, first_dts, first_ends, opening = _firsts(scan, scan.streams[vin.index],
                                                            [scan.streams[s.index] for s in copied], decoded)
    tb = Fraction(vin.time_base)
    segment = Segment(start, end, first_pts, tb, first_dts, first_ends, opening)
    target = first_pts + math.floor((start - lead_in) / tb)
    if target > first_pts:
        container.seek(target, stream=vin, backward=True, any_frame=False)
    return segment


def measure_window(source: Source, window: tuple[Fraction, Fraction | None]) -> tuple[MediaFacts, Timeline]:
    """A segment job's measure of the input: what gpu_job.media.probe.measure says of the whole, for
    the segment's share, read from the packets it demuxes anyway (the first group of pictures, and
    its own span with the margins): demuxing every packet would read the whole film.

    The facts count the frames the segment owns and the seconds it spans: the segments' facts add up
    to the whole input's. The timeline holds every frame read, so that the gaps between them are
    judged as the whole input's are. The timeline's span runs from the first picture to the last packet read,
    which for the last segment is the whole input's span (its output frame count, its duration bound)."""
    start, end = window
    with open_input(source) as container:
        vin = container.streams.video[0]
        tb = Fraction(vin.time_base or Fraction(1, 90000))
        try:
            origin = _first_group_start(container, vin)
            segment = Segment(start, end, origin, tb, {}, {})
            target = origin + math.floor((start - LEAD_IN_S) / tb)
            if target > origin:
                container.seek(target, stream=vin, backward=True, any_frame=False)
            owned, seen, last_end = array("q"), array("q"), origin
            for packet in container.demux(vin):
                if packet.pts is None or packet.size == 0:
                    continue
                if segment.past(packet):
                    break
                last_end = max(last_end, packet.pts + (packet.duration or 0))
                seen.append(packet.pts)
                if segment.holds(segment.seconds(packet.pts, tb)):
                    owned.append(packet.pts)
        except av.error.FFmpegError as exc:
            raise BadInputError(f"the video stream is corrupt: {exc.strerror or exc}") from exc
        whole_s = float((last_end - origin) * tb)
        own_s = float((end if end is not None else Fraction(whole_s)) - start)
        facts = MediaFacts(width=vin.codec_context.width, height=vin.codec_context.height,
                           fps=round(len(owned) / own_s, 4) if own_s > 0 else float(vin.average_rate or 0),
                           frames=len(owned), duration_s=round(max(own_s, 0.0), 4),
                           audio=bool(container.streams.audio), codec=vin.codec_context.name)
        # Gaps are judged on every frame read, the margins' too: a gap at a cut is seen by the segment after it.
        return facts, timeline_from(seen, tb, whole_s, declared_s(container, vin))


def _first_group_start(container: av.container.InputContainer, vin: av.VideoStream) -> int:
    """The least pts of the first group of pictures: the whole input's first picture (the measure's
    zero; later groups cannot show a frame before it)."""
    least, keyframes = None, 0
    for packet in container.demux(vin):
        if packet.pts is None or packet.size == 0:
            continue
        keyframes += packet.is_keyframe
        if keyframes > 1:
            break
        least = packet.pts if least is None else min(least, packet.pts)
    if least is None:
        raise BadInputError("the video stream has no frames")
    container.seek(0)
    return least


class Interleaving:
    """A segment's audio and cues, in a file whose streams lie apart: packets of one time are not side
    by side in the file, and a muxer lets one stream run seconds ahead of another. After the video
    has passed the segment's end (Segment.past), demuxing goes on without decoding the video until
    every audio stream has reached the end too (segment 0 also until a late track's first frame),
    and the text tracks' reach is read (SegmentCues), or the video lies INTERLEAVE_S past it (`more`).
    Each stream's first packet past the end says when the segment's last one ends (AudioPath.until)."""

    def __init__(self, segment: Segment, audio: dict[int, object], cues: SegmentCues | None = None) -> None:
        self.segment = segment
        self.routes = audio  # the audio streams (by index) and their routes
        self.waiting = set(audio)  # those not yet read to the end
        self.cues = cues  # text tracks: read until no cue that starts before the end can still come
        for route in audio.values():
            route.hold = True

    def packet(self, packet: av.Packet) -> None:
        index = packet.stream.index
        if index in self.waiting and packet.dts is not None and self.segment.end is not None \
                and self.segment.seconds(packet.dts, packet.time_base) >= self.segment.end:
            route = self.routes[index]
            if self.segment.is_first and route.mode != "copy" and route.next_sample is None:
                return  # segment 0 waits for a late track's first frame (Segment.holds_sound), which
                # a decoder may make only from the packets after the first
            self.waiting.discard(index)
            route.until(packet.dts, Fraction(packet.time_base))

    def more(self, packet: av.Packet) -> bool:
        """Whether demuxing goes on after the video's end (Segment.past: a segment with an end), this
        packet read (and routed)."""
        when = packet.dts if packet.dts is not None else packet.pts
        if self.segment.end is None or (packet.stream.type == "video" and when is not None and
                                        self.segment.seconds(when, packet.time_base) > self.segment.end + INTERLEAVE_S):
            return False
        return bool(self.waiting) or (self.cues is not None and not self.cues.read_past(self.segment.end))


class DecodeDelay:
    """Places a later segment's video packets so that the joined file shows each picture at the one
    job's time: the fragments of every segment must share segment 0's media timeline.

    The join keeps segment 0's header, whose edit list maps that timeline's zero (segment 0's first
    decoding time: its first picture's time, `lead`, less its encoder's delay) to the picture's
    place. The muxer starts a later segment's track (frag_discont) at its first packet's pts less
    that segment's own delay (the first packet's pts - dts). So a later segment's packets move, both
    times, by segment 0's delay less its own, less `lead`, which the muxer's start then undoes.

    An encoder's first packet waits either a fixed time (as FFmpeg's NVENC stamps it) or for the span of its
    first pictures (x264 and x265: the next one or two): on a variable-rate input, or one timed in
    milliseconds, that span differs at every segment's start. So a later segment finds which of its
    own opening spans its delay is, and takes the same span of the input's opening (`opening`, which
    every segment reads) as segment 0's delay."""

    def __init__(self, opening: tuple[int, ...], lead: int) -> None:
        self.opening = opening  # the input's first pictures' pts, ascending, in the output's ticks
        self.lead = lead  # segment 0's first picture's pts (after another stream that starts before it)
        self.own: list[int] = []  # this segment's first pictures' pts, as given to the encoder
        self.shift: int | None = None

    def picture(self, pts: int) -> None:
        if len(self.own) < len(self.opening):
            self.own.append(pts)

    def __call__(self, packets: list[av.Packet]) -> list[av.Packet]:
        for packet in packets:
            if packet.pts is None or packet.dts is None:
                continue
            if self.shift is None:
                own = packet.pts - packet.dts
                self.shift = self._segment_zeros(own) - own - self.lead
            packet.pts += self.shift
            packet.dts += self.shift
        return packets

    def _segment_zeros(self, delay: int) -> int:
        for k, pts in enumerate(self.own):
            if pts - self.own[0] == delay:
                return self.opening[k] - self.opening[0]  # the span of segment 0's first k + 1 pictures
        return delay  # a fixed wait: the same in every segment


class SegmentCues:
    """A segment's text subtitle tracks (gpu_job.media.cuetrack): each route's cues go to a CueChain
    over the segment's span, on the one job's timeline, instead of to the muxer. A later segment
    first looks back (CUE_LOOKBACK_S) for a cue still showing at its start; once the file is written,
    `place` writes the chains into it."""

    def __init__(self, segment: Segment, routes: dict[int, object], container: av.container.InputContainer) -> None:
        self.segment, self.routes = segment, routes
        # How far past a time the video is read for every cue that starts before it: a demuxer that
        # reads in the file's order may come to a cue late, one that reads in time order does not.
        self.file_order = container.format.name not in TIME_ORDERED_DEMUXERS
        self.reach = INTERLEAVE_S if self.file_order else LOOKAHEAD_S
        self.chains: dict[int, CueChain] = {}
        self.since: Fraction | None = None  # the first video time this reading pass read
        self.video_s: Fraction | None = None  # the last
        self.behind = Fraction(0)  # how far behind the picture the file stores a cue, at most, as read
        for index, route in routes.items():
            tb = Fraction(container.streams[index].time_base)

            def on_track(t: Fraction | None, tb: Fraction = tb, shift: int = route.shift) -> int | None:
                # seconds from the first picture, on the route's own clock (its ticks less its shift)
                return None if t is None else micro((segment.first_pts * segment.video_tb + t) / tb - shift, tb)

            route.cues = self.chains[index] = CueChain(on_track(segment.start) if not segment.is_first else 0,
                                                       on_track(segment.end), micro(CUE_LOOKBACK_S / tb, tb))

    def seen(self, packet: av.Packet) -> None:
        """Every packet a reading pass reads, in the demuxer's order: the video's say how far it has
        read, and a cue's how far behind the picture it comes (one that starts before the pass began
        is the demuxer's start, not the file's order): beyond the reach, the notes say so."""
        when = packet.dts if packet.dts is not None else packet.pts
        if when is None:
            return
        t = self.segment.seconds(when, packet.time_base)
        if packet.stream.type == "video":
            self.since = t if self.since is None else self.since
            self.video_s = t if self.video_s is None else max(self.video_s, t)
        elif packet.stream.index in self.routes and self.video_s is not None and t >= self.since:
            self.behind = max(self.behind, self.video_s - t)

    def read_past(self, t: Fraction) -> bool:
        return self.video_s is not None and self.video_s > t + self.reach

    def new_pass(self) -> None:
        self.since = self.video_s = None

    def look_back(self, src: Source, vin: av.VideoStream) -> None:
        """The cues that start before a later segment (up to CUE_LOOKBACK_S): one may still show."""
        if self.segment.is_first:
            return
        for chain in self.chains.values():
            chain.before = True
        try:
            with open_read(src) as scan:
                video = scan.streams[vin.index]
                tb = Fraction(video.time_base)
                target = self.segment.first_pts + math.floor((self.segment.start - CUE_LOOKBACK_S) / tb)
                if target > self.segment.first_pts:
                    scan.seek(target, stream=video, backward=True, any_frame=False)
                for packet in scan.demux(video, *(scan.streams[i] for i in self.routes)):
                    self.seen(packet)
                    if packet.stream is not video:
                        self.routes[packet.stream.index].packet(packet)
                    elif self.read_past(self.segment.start):
                        break
        except av.error.FFmpegError as exc:
            raise BadInputError(f"the input cannot be read before the segment: {exc}") from exc
        finally:
            for chain in self.chains.values():
                chain.before = False
            for route in self.routes.values():
                if hasattr(route, "skipped"):
                    route.skipped = 0  # unreadable cues before the segment are the one before's to count
            self.new_pass()

    def place(self, dst: Path, vout: av.VideoStream) -> list[str]:
        """Write each track's chain into the finished segment (track IDs: output index + 1), and say
        which cues end early: those cut at the segment's end that the next segment cannot see."""
        tracks, notes = {}, []
        for index, chain in self.chains.items():
            out = self.routes[index].stream
            if Fraction(out.time_base) != MICRO:
                raise RuntimeError(f"subtitle track {out.index} is timed in {out.time_base}, not microseconds")
            tracks[out.index + 1] = chain.samples()
            notes += [f"subtitle stream {index}: the cue shown from {start / 1e6:.3f} s until {end / 1e6:.3f} s "
                      f"ends at {chain.stop / 1e6:.3f} s, where two segments meet: a cue that starts more than "
                      f"{CUE_LOOKBACK_S} s before a join is not shown after it" for start, end in chain.cut]
        if self.file_order and self.behind > self.reach - LOOKAHEAD_S:  # in time order, no cue comes late
            notes.append(f"the input stores subtitles up to {float(self.behind):.1f} s behind the picture: a cue "
                         f"stored more than {self.reach - LOOKAHEAD_S} s behind a join may be missing")
        try:
            write_tracks(dst, tracks, vout.index + 1, int(1 / Fraction(vout.time_base)))
        except NotASegment as exc:
            raise RuntimeError(f"the segment's subtitle tracks cannot be written: {exc}") from exc
        return notes


def settle_flac(dst: Path) -> None:
    """A finished segment's FLAC tracks say no totals (vastdrop.fmp4.flac_totals_unknown): the
    encoder's count of its own share would differ from segment to segment."""
    with open(dst, "r+b") as file:
        head = bytearray(file.read(MAX_INIT_BYTES))
        try:
            init = head[:init_length(bytes(head))]
        except NotASegment as exc:
            raise RuntimeError(f"the segment's init cannot be read: {exc}") from exc
        if flac_totals_unknown(init):
            file.seek(0)
            file.write(init)


def route_shares(segment: Segment, others: streams.OtherStreams, texts: dict[int, object],
                 reencoded: dict[int, streams.AudioPath]) -> None:
    """Set each route of the other streams to take the segment's share. The first segment's muxer
    starts each track's media time at the track's first packet (its edit list hides what lies before
    the picture: AAC's priming); a later one (frag_discont) at its own first packet's timestamp. So
    a later segment's routes count from the track's first packet (first_dts), and its copied audio
    from the track's first sample, as segment 0's does (streams.track_start); its text cues keep the
    one job's times (SegmentCues). Re-encoded audio is decoded from every packet read and keeps the
    frames that are the segment's own (Segment.holds_sound)."""
    if not segment.is_first:
        for index, route in others.routes.items():
            if index not in texts:
                route.shift = segment.first_dts[index]
        for audio in others.audio:
            index = audio.ain.index
            audio.starts_track = False
            audio.track_start = streams.track_start(segment.first_dts[index], segment.first_ends[index],
                                                    Fraction(audio.ain.time_base), audio.ain.codec_context)
    for index, audio in reencoded.items():
        audio.owns = functools.partial(segment.holds_sound, index)


def _firsts(container: av.container.InputContainer, vin: av.VideoStream, copied: list[av.stream.Stream],
            decoded: frozenset[int] = frozenset()) -> tuple[int, dict[int, int], dict[int, int], tuple[int, ...]]:
    """The first picture's pts, each copied stream's first dts (the first decoded frame's pts for
    those `decoded`) and its first packet's end, and the first pictures' pts (Segment.opening)."""
    first_pts: int | None = None
    first_dts: dict[int, int] = {}
    first_ends: dict[int, int] = {}
    opening: list[int] = []  # the first video packets' pts, in decoding order
    wanted = {s.index for s in copied}

    def span() -> tuple[int, ...]:
        # Leading pictures before the first one shown are the decoder's to drop.
        return tuple(sorted(p for p in opening if p >= first_pts)[:MAX_REORDER_PICTURES + 1])

    try:
        for packet in container.demux(vin, *copied):
            if packet.stream is vin:  # Matroska leaves a reordered stream's first dts unset: every packet counts
                if packet.pts is not None and packet.size and len(opening) < OPENING_PACKETS \
                        and (opening or packet.is_keyframe):  # from the first keyframe: a file may start mid-group
                    opening.append(packet.pts)
                if first_pts is None:  # decoded only until the first picture shows
                    first_pts = next((f.pts for f in packet.decode() if f.pts is not None), None)
            elif packet.stream.index in decoded and packet.stream.index not in first_dts:
                frame = next((f for f in _decoded(packet) if f.pts is not None), None)
                if frame is not None:
                    first_dts[packet.stream.index] = first_ends[packet.stream.index] = frame.pts
            elif packet.dts is not None and packet.stream.index not in first_dts:
                first_dts[packet.stream.index] = packet.dts
                first_ends[packet.stream.index] = packet.dts + (packet.duration or 0)
            if first_pts is not None and set(first_dts) >= wanted and len(opening) >= OPENING_PACKETS:
                return first_pts, first_dts, first_ends, span()
            when = packet.dts if packet.dts is not None else packet.pts
            if first_pts is not None and packet.stream is vin and when is not None \
                    and (when - first_pts) * Fraction(vin.time_base) > FIRST_PACKETS_WITHIN_S:
                break
    except av.error.FFmpegError as exc:
        raise BadInputError(f"the video cannot be decoded: {exc}") from exc
    if first_pts is None:
        raise BadInputError("the video has no frames")
    if set(first_dts) >= wanted:  # the input ended within its first pictures
        return first_pts, first_dts, first_ends, span()
    raise ConfigError(f"a copied stream has no packet in the first {FIRST_PACKETS_WITHIN_S} s: such an input "
                      "cannot be processed in segments (run it without --segment-s)")


def _decoded(packet: av.Packet) -> list:
    """A re-encoded stream's frames from one packet: an unreadable packet gives none, as it costs the
    job its own sound only (the video's errors are the ones that make an input bad)."""
    try:
        return packet.decode()
    except av.error.FFmpegError:
        return []


def check_carried(entries) -> None:
    """A segment's other streams must join seamlessly and its init segment must be the same as every
    other segment's. Audio is copied packet by packet, or re-encoded to FLAC, whose frames stand
    alone (an AAC encoder would start afresh at a join). Text subtitles are MP4's mov_text (SegmentCues), and
    chapters: segment 0 writes them (in its header and first fragment), the others none. The
    control plane does not split other inputs; a segment asked anyway refuses rather than join badly."""
    for entry in entries:
        if entry.kind == "subtitle" and (entry.codec if entry.action == "kept" else entry.to) == "mov_text":
            continue  # cue by cue (SegmentCues)
        if entry.action == "kept" and (entry.kind != "audio" or entry.codec not in SEGMENT_AUDIO_CODECS):
            raise ConfigError(f"{entry.kind} stream {entry.index} ({entry.codec}) would be copied: such a stream "
                              "is not split into segments (run it without --segment-s)")
        if entry.action == "converted" and entry.to not in ("timecode", "chapters", "flac"):
            raise ConfigError(f"stream {entry.index} would be converted to {entry.to}: such an input "
                              "cannot be processed in segments (run it without --segment-s)")
