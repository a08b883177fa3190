"""What splitting an input into segments and joining them rests on (issue 12): the one rule for which
inputs can be split (unsplittable, over what a probe read of each stream), and just enough of ISO
BMFF's box structure to join fragmented-MP4 media segments: where a segment's init (ftyp + moov)
ends and its fragments (moof + mdat ...) begin, and whether a later segment's tracks fit after
segment 0's init (follows). Reading the boxes' contents is the players' business; the join copies
bytes."""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass, field
from typing import BinaryIO

HEADER = struct.Struct(">I4s")
INIT_BOXES = frozenset({b"ftyp", b"moov", b"free", b"skip", b"uuid"})  # what may come before the first moof
MAX_INIT_BYTES = 1 << 20  # an init segment is a few KB (sample descriptions, an edit list)
# Audio codecs that the job copies into MP4 packet by packet (the muxer itself accepts them:
# gpu_job.media.streams.copy_accepted), so that segments join into the one job's sound, sample for
# sample, as tests/test_segments.py checks for each. Where the source trims an encoder's priming
# with an edit list (MP3, MP2, AC-3, E-AC-3: part of their first packet), the joined file keeps that
# part at its own time, before the first picture: FFmpeg applies a fragmented file's edit list to
# AAC alone. Other audio is re-encoded, and each segment's encoder would start afresh at a join.
SEGMENT_AUDIO_CODECS = frozenset({
    "aac", "opus", "flac", "mp3", "mp2", "ac3", "eac3", "dts", "alac", "vorbis",
    "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_s32le", "pcm_s32be", "pcm_f32le", "pcm_f32be",
})
SEGMENT_AUDIO_NAMES = "AAC, MP3, AC-3, E-AC-3, DTS, Opus, FLAC, ALAC, Vorbis and PCM"  # for the reasons a user reads
# Subtitles that segments carry: text, cue by cue into MP4's mov_text (gpu_job.media.segment.
# LaterSubtitles), and the bitmap kinds that MP4 cannot hold, which the one job leaves out too. DVD
# subtitles (VobSub) MP4 keeps as they are, and a track that starts at its first cue would not join.
SEGMENT_TEXT_SUBTITLES = frozenset({"subrip", "ass", "ssa", "webvtt", "mov_text", "text"})
SEGMENT_SUBTITLE_CODECS = SEGMENT_TEXT_SUBTITLES | {"hdmv_pgs_subtitle", "dvb_subtitle"}
# How soon after the picture every copied stream must start: a segment looks this far for its first packet.
FIRST_AUDIO_WITHIN_S = 10
# How far a probe reads to find when each stream starts (those 10 s of any real file are far less).
FIRST_PACKETS_SCAN_BYTES = 64 << 20
# Planned segments stop this short of a duration only the container states (it may count a soundtrack
# that outlasts the picture): the last segment runs to the end whatever it is, so planning short
# costs nothing, and no segment is left without video.
CONTAINER_DURATION_SLACK_S = 2.0


@dataclass(frozen=True)
class StreamFacts:
    """What a probe read of one stream of an input, to judge whether the input can be split."""

    index: int
    kind: str  # video | audio | subtitle | data
    codec: str  # an audio or subtitle codec's canonical name ("mp3", not its decoder's "mp3float")
    start_s: float = 0.0  # when it starts, on the container's clock


def unsplittable(streams: list[StreamFacts], video: StreamFacts) -> str | None:
    """Why an input of these streams cannot be processed as segments, or None: the one rule (and
    reason) that every probe applies, said before launching what gpu_job.media.segment.check_carried
    would refuse. Chapters are no reason (segment 0 writes them); an MP4's chapter track is kind
    "chapters". Subtitles are none either: text is carried cue by cue (LaterSubtitles), and what an
    MP4 cannot hold (bitmap subtitles, attachments such as fonts) is left out as by the one job."""
    for stream in streams:
        if stream is video or stream.kind in ("video", "chapters", "attachment"):
            continue  # other pictures are dropped everywhere, and so are attachments in MP4
        if stream.kind == "subtitle" and stream.codec not in SEGMENT_SUBTITLE_CODECS:
            return f"its subtitle stream {stream.index} is {stream.codec or 'of an unknown kind'}: not split into segments yet"
        if stream.kind == "subtitle":
            continue
        if stream.kind != "audio":
            return f"its {stream.kind} stream {stream.index} is not split into segments yet"
        if stream.codec not in SEGMENT_AUDIO_CODECS:
            return (f"its audio stream {stream.index} is {stream.codec}, which MP4 does not store as it is: "
                    f"only audio copied as it is ({SEGMENT_AUDIO_NAMES}) is split into segments "
                    "(re-encoded audio would start afresh at each join)")
        if stream.start_s - video.start_s > FIRST_AUDIO_WITHIN_S:
            return f"its audio stream {stream.index} starts more than {FIRST_AUDIO_WITHIN_S:.0f} s after the picture"
    return None


# The tracks FFmpeg's muxer writes after the media, which only segment 0 of a split job writes: the
# chapter track (QuickTime text) and the timecode track.
SEGMENT_ZERO_ONLY_ENTRIES = (b"text", b"tmcd")


def follows(first: list[bytes], later: list[bytes]) -> bool:
    """Whether a later segment's sample descriptions (sample_descriptions) fit after segment 0's
    init segment: the same, track by track, but for the chapter and timecode tracks that only
    segment 0 has (gpu_job.media.segment.LATER_SEGMENT_MP4)."""
    extra = first[len(later):]
    return later == first[:len(later)] and all(entry[20:24] in SEGMENT_ZERO_ONLY_ENTRIES for entry in extra)


class NotASegment(ValueError):
    """The bytes are not an init segment followed by a fragment."""


def init_length(head: bytes) -> int:
    """The length of the init segment at the start of `head` (which must reach the first moof's header)."""
    offset, seen = 0, []
    while offset + HEADER.size <= len(head):
        size, kind = HEADER.unpack_from(head, offset)
        if kind == b"moof":
            if seen[:1] != [b"ftyp"] or b"moov" not in seen:
                raise NotASegment(f"a fragment before the init segment (boxes: {_names(seen)})")
            return offset
        if kind not in INIT_BOXES:
            raise NotASegment(f"unexpected box {kind!r} in the init segment")
        if size < HEADER.size:  # 0 (to the end) or 1 (64-bit size): neither belongs in an init segment
            raise NotASegment(f"box {kind!r} has size {size}")
        seen.append(kind)
        offset += size
    raise NotASegment(f"no fragment within the first {len(head)} bytes (boxes: {_names(seen)})")


def _names(kinds: list[bytes]) -> str:
    return ", ".join(k.decode("latin-1") for k in kinds) or "none"


_CONTAINERS = (b"moov", b"trak", b"mdia", b"minf", b"stbl")


def sample_descriptions(init: bytes) -> list[bytes]:
    """Each track's stsd box (its codec and its configuration: SPS/PPS, AAC's config), in track
    order. Segments whose fragments are to follow one init segment must all have the same."""
    found: list[bytes] = []
    _walk(init, 0, len(init), found, 0)
    return found


def _walk(data: bytes, start: int, end: int, found: list[bytes], depth: int) -> None:
    offset = start
    while offset + HEADER.size <= end:
        size, kind = HEADER.unpack_from(data, offset)
        if size < HEADER.size or offset + size > end:
            raise NotASegment(f"box {kind!r} overruns its parent")
        if kind in _CONTAINERS:
            if depth >= len(_CONTAINERS):  # moov/trak/mdia/minf/stbl nest no deeper in a real file
                raise NotASegment("boxes nested deeper than an init segment's")
            _walk(data, offset + HEADER.size, offset + size, found, depth + 1)
        elif kind == b"stsd":
            found.append(data[offset:offset + size])
        offset += size


MAX_MOOF_BYTES = 64 << 20  # a fragment's index: a few KB per 10 s of 4K video


def clamp_start(file: BinaryIO, track_id: int, ticks: int) -> int:
    """Moves every sample of a track that a media segment places before `ticks` to `ticks`, in place
    (`file` open for reading and writing): its fragments' decode times (tfdt) and the samples'
    durations change, so that a sample at or after `ticks` keeps its time. Returns how many
    fragments changed. The sizes stay, so nothing else in the file moves.

    Why: FFmpeg's mp4 muxer starts a subtitle (mov_text) track with an empty sample at its running
    duration whenever a fragment begins without one: in a later segment, before its first cue, that
    is time 0, the film's start. The track must start where the segment's own cues may begin."""
    changed, offset = 0, 0
    while True:
        file.seek(offset)
        header = file.read(16)
        if len(header) < HEADER.size:
            return changed
        size, kind = HEADER.unpack_from(header)
        if size == 1 and len(header) == 16:
            size = int.from_bytes(header[8:16], "big")
        if size == 0:  # to the end of the file: the last box, and not a fragment's index
            return changed
        if size < HEADER.size:
            raise NotASegment(f"box {kind!r} has size {size}")
        if kind == b"moof":
            if size > MAX_MOOF_BYTES:
                raise NotASegment(f"a fragment's index of {size} bytes")
            file.seek(offset)
            moof = file.read(size)
            patches = _clamp_patches(moof, track_id, ticks)
            for at, data in patches:
                file.seek(offset + at)
                file.write(data)
            changed += bool(patches)
        offset += size


def _clamp_patches(moof: bytes, track_id: int, ticks: int) -> list[tuple[int, bytes]]:
    for traf, end in _children(moof, HEADER.size, len(moof), b"traf"):
        fields = _traf(moof, traf, end)
        if fields.track_id == track_id:
            return _clamped(moof, fields, ticks)
    return []


@dataclass
class _Traf:
    track_id: int = -1
    default_duration: int | None = None  # offset of tfhd's default_sample_duration
    tfdt: tuple[int, int] | None = None  # (offset of the decode time, its width: 4 or 8)
    durations: list[int | None] = field(default_factory=list)  # each sample's duration field offset (None: the default)


def _children(data: bytes, start: int, end: int, wanted: bytes):
    offset = start
    while offset + HEADER.size <= end:
        size, kind = HEADER.unpack_from(data, offset)
        if size < HEADER.size or offset + size > end:
            raise NotASegment(f"box {kind!r} overruns its parent")
        if kind == wanted:
            yield offset + HEADER.size, offset + size
        offset += size


def _traf(data: bytes, start: int, end: int) -> _Traf:
    found = _Traf()
    for body, box_end in _children(data, start, end, b"tfhd"):
        flags = int.from_bytes(data[body + 1:body + 4], "big")
        found.track_id = int.from_bytes(data[body + 4:body + 8], "big")
        at = body + 8 + (8 if flags & 0x01 else 0) + (4 if flags & 0x02 else 0)
        found.default_duration = _within(at, 4, box_end) if flags & 0x08 else None
    for body, box_end in _children(data, start, end, b"tfdt"):
        width = 8 if data[body] == 1 else 4
        found.tfdt = (_within(body + 4, width, box_end), width)
    for body, box_end in _children(data, start, end, b"trun"):  # the samples go on from one trun to the next
        flags = int.from_bytes(data[body + 1:body + 4], "big")
        count = int.from_bytes(data[body + 4:body + 8], "big")
        entry = 4 * bin(flags & 0xF00).count("1")
        first = body + 8 + (4 if flags & 0x01 else 0) + (4 if flags & 0x04 else 0)
        _within(first, count * entry, box_end)  # a count the box cannot hold is not believed
        if not entry and count > box_end - start:
            raise NotASegment(f"a trun of {count} samples without a field each")
        found.durations += [first + i * entry if flags & 0x100 else None for i in range(count)]
    return found


def _within(at: int, length: int, end: int) -> int:
    if at + length > end:
        raise NotASegment("a field past the end of its box")
    return at


def _clamped(data: bytes, traf: _Traf, ticks: int) -> list[tuple[int, bytes]]:
    if traf.tfdt is None or not traf.durations:
        raise NotASegment("a fragment without its decode time or its samples")
    at, width = traf.tfdt
    start = int.from_bytes(data[at:at + width], "big")
    if start >= ticks:
        return []
    durations = [_u32(data, where if where is not None else traf.default_duration) for where in traf.durations]
    times = [start, *itertools.accumulate(durations)][:-1]
    moved = [max(t, ticks) for t in times]
    ends = moved[1:] + [max(times[-1] + durations[-1], ticks)]
    new = [e - t for t, e in zip(moved, ends, strict=True)]
    patches = [(at, moved[0].to_bytes(width, "big"))]
    if all(where is None for where in traf.durations) and traf.default_duration is not None:
        if len(set(new)) > 1:  # one duration for all: they can only change alike
            raise NotASegment("the fragment's samples share one duration: one cannot change alone")
        return patches + [(traf.default_duration, new[0].to_bytes(4, "big"))]
    for where, old, duration in zip(traf.durations, durations, new, strict=True):
        if duration == old:
            continue
        if where is None:
            raise NotASegment("a sample without a duration of its own in its fragment")
        patches.append((where, duration.to_bytes(4, "big")))
    return patches


def _u32(data: bytes, at: int | None) -> int:
    if at is None:
        raise NotASegment("a sample without a duration in its fragment")
    return int.from_bytes(data[at:at + 4], "big")
