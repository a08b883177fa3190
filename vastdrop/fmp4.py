"""What splitting an input into segments and joining them rests on (issue 12): the one rule for which
inputs can be split (unsplittable, over what a probe read of each stream), and just enough of ISO
BMFF's box structure to join fragmented-MP4 media segments: where a segment's init (ftyp + moov)
ends and its fragments (moof + mdat ...) begin, and whether a later segment's tracks fit after
segment 0's init (follows). Reading the boxes' contents is the players' business; the join copies
bytes."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

HEADER = struct.Struct(">I4s")
INIT_BOXES = frozenset({b"ftyp", b"moov", b"free", b"skip", b"uuid"})  # what may come before the first moof
MAX_INIT_BYTES = 1 << 20  # an init segment is a few KB (sample descriptions, an edit list)
# Audio codecs that the job copies into MP4 packet by packet (the muxer itself accepts them:
# gpu_job.media.streams.copy_accepted), so that segments join into the one job's sound, sample for
# sample, as tests/test_segments.py checks for each. Where the source trims an encoder's priming
# with an edit list (MP3, MP2, AC-3, E-AC-3: part of their first packet), the joined file keeps that
# part at its own time, before the first picture: FFmpeg applies a fragmented file's edit list to
# AAC alone. A split job re-encodes other audio to FLAC, whose frames stand alone: an AAC encoder
# started afresh in each segment leaves a seam at every join (measured: a click where the window
# shapes differ, and 3 to 5 times the one job's error for seconds after it, even warmed up on 2.7 s).
SEGMENT_AUDIO_CODECS = frozenset({
    "aac", "opus", "flac", "mp3", "mp2", "ac3", "eac3", "dts", "alac", "vorbis",
    "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_s32le", "pcm_s32be", "pcm_f32le", "pcm_f32be",
})
# Text subtitles: the result's MP4 carries them as mov_text, converted where the source has another
# text codec (gpu_job.media.streams), and a segment writes its share of that track itself
# (gpu_job.media.cuetrack), so they are split too.
TEXT_SUBTITLES = frozenset({"subrip", "ass", "ssa", "webvtt", "mov_text", "text"})
# Subtitles that MP4 cannot hold, which the one job leaves out too: bitmap kinds. DVD subtitles (VobSub)
# MP4 keeps as they are, each cue a picture of its own, and they keep an input whole.
SUBTITLES_MP4_LEAVES_OUT = frozenset({"hdmv_pgs_subtitle", "dvb_subtitle"})
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
    "chapters". Nor is audio (copied, or re-encoded to FLAC), nor are text subtitles (each segment
    writes its cues), nor what an MP4 cannot hold (bitmap subtitles, attachments such as fonts):
    each segment leaves it out, as the one job does."""
    for stream in streams:
        if stream is video or stream.kind in ("video", "chapters", "attachment"):
            continue  # other pictures are dropped everywhere, and so are attachments in MP4
        if stream.kind == "subtitle" and stream.codec not in TEXT_SUBTITLES | SUBTITLES_MP4_LEAVES_OUT:
            return f"its subtitle stream {stream.index} ({stream.codec or 'of an unknown kind'}) is not split into segments yet"
        if stream.kind == "subtitle":
            continue
        if stream.kind != "audio":
            return f"its {stream.kind} stream {stream.index} is not split into segments yet"
        if stream.codec in ("", "unknown"):  # copied or re-encoded to FLAC, but not unread
            return f"its audio stream {stream.index} is of a kind that cannot be read"
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


def children(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(kind, offset, size) of each box in data[start:end], each within those bounds."""
    offset = start
    while offset + HEADER.size <= end:
        size, kind = HEADER.unpack_from(data, offset)
        if size < HEADER.size or offset + size > end:
            raise NotASegment(f"box {kind!r} overruns its parent")
        yield kind, offset, size
        offset += size


def _walk(data: bytes, start: int, end: int, found: list[bytes], depth: int) -> None:
    for kind, offset, size in children(data, start, end):
        if kind in _CONTAINERS:
            if depth >= len(_CONTAINERS):  # moov/trak/mdia/minf/stbl nest no deeper in a real file
                raise NotASegment("boxes nested deeper than an init segment's")
            _walk(data, offset + HEADER.size, offset + size, found, depth + 1)
        elif kind == b"stsd":
            found.append(data[offset:offset + size])


# FLAC's STREAMINFO (ISO BMFF's dfLa box, in the stsd): its block sizes and format, which are the
# codec's configuration, then what the encoder counted of the whole stream, which is not: the least
# and greatest frame sizes, the total samples and the MD5 of the decoded sound.
_DFLA_STREAMINFO = struct.Struct(">4sI4B")  # "dfLa", version and flags, the block header (type 0, length 34)


def flac_totals_unknown(init: bytearray) -> int:
    """Mark each FLAC track's STREAMINFO totals unknown (zero, as the FLAC format allows), in place in
    an init segment, and return how many were marked. A segment's encoder counts only its own share,
    so segments would differ (the join compares sample descriptions) and the joined file would carry
    segment 0's count and checksum as if they were the whole track's."""
    marked, at = 0, init.find(b"dfLa")
    while at >= 4:
        kind, version, block, *length = _DFLA_STREAMINFO.unpack_from(init, at)
        if version == 0 and block & 0x7F == 0 and length == [0, 0, 34]:
            info = at + _DFLA_STREAMINFO.size
            init[info + 4:info + 10] = bytes(6)  # least and greatest frame sizes
            init[info + 13] &= 0xF0  # the total samples' 36 bits start in this byte's low half
            init[info + 14:info + 34] = bytes(20)  # the rest of them, and the MD5
            marked += 1
        at = init.find(b"dfLa", at + 4)
    return marked
