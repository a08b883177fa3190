"""A segment's text subtitle tracks (MP4's mov_text), written into its finished file by the job rather
than by FFmpeg's fragmenting muxer (issue 12).

Why: the muxer fills a mov_text track's gaps with empty samples of its own, whenever a packet of any
stream has a larger timestamp counted in its own ticks, and when such a sample closes a fragment it
takes the previous cue's duration: the next cue was moved seconds late (measured, 12 s -> 16 s). So a
segment declares the track (its sample description, the same in every segment) and hands the muxer no
cue; the muxer writes an empty sample at time 0 in each fragment. Then `write_tracks` replaces that
track's part of every fragment with the segment's CueChain: samples that cover exactly the segment's
span, [begin, stop), each cue shown as the one job's file shows it, with empty samples between, each
sample in the fragment where its time falls. Segment k's chain ends where segment k+1's begins, so the
joined track is the one job's, but for a cue that spans a join: it is cut there and shown again from
the join, the same text.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

from vastdrop.fmp4 import HEADER, NotASegment, children

EMPTY = b"\x00\x00"  # a mov_text sample without text: nothing shown
MICRO = Fraction(1, 1_000_000)  # the tracks' ticks (streams.TEXT_TICKS)
MAX_SAMPLE_TICKS = 1 << 31  # a sample's duration is 32 bits in a fragment: a longer one is cut in pieces
MAX_MOOF_BYTES = 64 << 20  # a fragment's index: a few KB per second of 4K video
_SYNC = 0x02000000  # sample_depends_on = 2: a subtitle sample depends on no other
_COPY_CHUNK = 8 << 20


def micro(ticks: int | Fraction, time_base: Fraction) -> int:
    """`ticks` of `time_base` in microseconds, rounded as FFmpeg's muxer rescales (halves away from 0)."""
    exact = Fraction(ticks) * time_base / MICRO
    whole = int(abs(exact) + Fraction(1, 2))
    return whole if exact >= 0 else -whole


@dataclass(frozen=True)
class Sample:
    start: int  # microseconds on the track's timeline
    duration: int
    payload: bytes


class CueChain:
    """One subtitle track's share of a segment: the cues whose start it `takes`, shown from their
    start until their end or the next cue's start, whichever comes first (as the one job's muxer shows
    them), clipped to [begin, stop): stop is None for the last segment, which shows its last cue whole."""

    def __init__(self, begin: int, stop: int | None, reach: int) -> None:
        """reach: how far before its start the next segment looks for a cue still showing there."""
        self.begin, self.stop, self.reach = begin, stop, reach
        self.before = False  # taking the cues before the segment (its look back), not its own
        self.cues: list[tuple[int, int, bytes]] = []
        self.cut: list[tuple[int, int]] = []  # (start, end) of cues cut at stop that the next segment cannot see

    def add(self, start: int, duration: int, payload: bytes) -> None:
        if self.before and start < self.begin - self.reach:
            return  # older than the look back reaches, whatever the demuxer gave (cut at the join, and said)
        if (start < self.begin) == self.before and (self.stop is None or start < self.stop):
            self.cues.append((start, max(duration, 0), payload))

    def samples(self) -> list[Sample]:
        self.cut = []
        cues = sorted(self.cues, key=lambda cue: cue[0])  # stable: of two cues at one time, the later read wins
        out: list[Sample] = []
        at = self.begin
        for i, (start, duration, payload) in enumerate(cues):
            end = start + duration if i + 1 == len(cues) else min(start + duration, cues[i + 1][0])
            first, last = max(start, self.begin), end if self.stop is None else min(end, self.stop)
            if last < end and start < self.stop - self.reach and payload != EMPTY:
                self.cut.append((start, end))
            if last <= first:
                continue
            out += _pieces(at, first, EMPTY) + _pieces(first, last, payload)
            at = last
        if self.stop is not None:
            out += _pieces(at, self.stop, EMPTY)
        return out


def _pieces(start: int, end: int, payload: bytes) -> list[Sample]:
    return [Sample(t, min(end, t + MAX_SAMPLE_TICKS) - t, payload) for t in range(start, end, MAX_SAMPLE_TICKS)]


def write_tracks(path: Path, tracks: dict[int, list[Sample]], video_track: int, video_scale: int) -> None:
    """Replace the samples of each of `tracks` (by track ID; ticks are microseconds) in every
    fragment of the media segment at `path` with the given ones, each in the last fragment whose
    video starts at or before it (the first fragment for those before). The file is rewritten beside
    itself and then replaces it; the other tracks' samples stay where they are, byte for byte."""
    starts = _fragment_starts(path, video_track, video_scale)
    if not starts:
        raise NotASegment("no fragment")
    placed: list[dict[int, list[Sample]]] = [{} for _ in starts]
    for track, samples in tracks.items():
        j = 0
        for sample in samples:
            while j + 1 < len(starts) and starts[j + 1] <= sample.start:
                j += 1
            placed[j].setdefault(track, []).append(sample)
    rewritten = path.with_name(path.name + ".cues")
    with open(path, "rb") as src, open(rewritten, "wb") as dst:
        fragment = 0
        for kind, offset, _, size in _top_boxes(src):
            src.seek(offset)
            if kind == b"moof":
                moof = src.read(size)
                kind_after, after, mdat_header, mdat_size = next(_top_boxes(src, offset + size))
                if kind_after != b"mdat":
                    raise NotASegment("a fragment without its media data")
                _write_fragment(src, dst, moof, (after + mdat_header, mdat_header, mdat_size - mdat_header),
                                set(tracks), placed[fragment])
                fragment += 1
            elif kind != b"mdat":  # the mdats are written with their moofs
                _copy(src, dst, size)
    rewritten.replace(path)


def _top_boxes(file: BinaryIO, start: int = 0):
    """(kind, offset, header length, size) of each top-level box from `start`."""
    offset = start
    while True:
        file.seek(offset)
        head = file.read(HEADER.size)
        if len(head) < HEADER.size:
            return
        size, kind = HEADER.unpack(head)
        header = HEADER.size
        if size == 1:
            size, header = struct.unpack(">Q", file.read(8))[0], 16
        elif size == 0:
            size = file.seek(0, 2) - offset
        if size < header:
            raise NotASegment(f"box {kind!r} has size {size}")
        yield kind, offset, header, size
        offset += size


def _fragment_starts(path: Path, video_track: int, video_scale: int) -> list[int]:
    """Each fragment's video decoding time, in microseconds (a fragment without video: the one before's)."""
    starts: list[int] = []
    with open(path, "rb") as file:
        for kind, offset, _, size in _top_boxes(file):
            if kind == b"moof":
                file.seek(offset)
                trafs = _trafs(_read_moof(file, size))
                times = [_tfdt(traf) for traf in trafs if _track_id(traf) == video_track]
                if times and times[0] is not None:
                    starts.append(micro(times[0], Fraction(1, video_scale)))
                else:
                    starts.append(starts[-1] if starts else 0)
    return starts


def _read_moof(file: BinaryIO, size: int) -> bytes:
    if size > MAX_MOOF_BYTES:
        raise NotASegment(f"a fragment's index of {size} bytes")
    return file.read(size)


def _children(box: bytes, start: int) -> list[tuple[bytes, bytes]]:
    """(kind, the whole child box) of each box inside `box` from `start`."""
    return [(kind, box[offset:offset + size]) for kind, offset, size in children(box, start, len(box))]


def _trafs(moof: bytes) -> list[bytes]:
    return [child for kind, child in _children(moof, HEADER.size) if kind == b"traf"]


def _track_id(traf: bytes) -> int:
    for kind, child in _children(traf, HEADER.size):
        if kind == b"tfhd":
            return struct.unpack_from(">I", child, 12)[0]
    raise NotASegment("a track fragment without its header")


def _tfdt(traf: bytes) -> int | None:
    for kind, child in _children(traf, HEADER.size):
        if kind == b"tfdt":
            return struct.unpack_from(">Q" if child[8] == 1 else ">I", child, 12)[0]
    return None


def _box(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return HEADER.pack(HEADER.size + len(body), kind) + body


def _moved_traf(traf: bytes, delta: int) -> bytes:
    """A kept track fragment with its samples' data offsets (from the moof's start) moved by `delta`."""
    parts = []
    for kind, child in _children(traf, HEADER.size):
        if kind == b"tfhd" and struct.unpack_from(">I", child, 8)[0] & 0x1:
            raise NotASegment("a track fragment with an absolute data offset")
        if kind in (b"saio", b"saiz"):
            raise NotASegment("a track fragment with auxiliary information offsets")
        if kind == b"trun" and struct.unpack_from(">I", child, 8)[0] & 0x1:
            offset = struct.unpack_from(">i", child, 16)[0]
            child = child[:16] + struct.pack(">i", offset + delta) + child[20:]
        parts.append(child)
    return _box(b"traf", *parts)


def _new_traf(track: int, samples: list[Sample], data_offset: int) -> bytes:
    tfhd = _box(b"tfhd", struct.pack(">II", 0x020000, track))  # default-base-is-moof
    tfdt = _box(b"tfdt", struct.pack(">IQ", 1 << 24, samples[0].start))
    entries = b"".join(struct.pack(">III", s.duration, len(s.payload), _SYNC) for s in samples)
    trun = _box(b"trun", struct.pack(">IIi", 0x000701, len(samples), data_offset), entries)
    return _box(b"traf", tfhd, tfdt, trun)


def _write_fragment(src: BinaryIO, dst: BinaryIO, moof: bytes, mdat: tuple[int, int, int],
                    replaced: set[int], samples: dict[int, list[Sample]]) -> None:
    """One fragment: the moof without the replaced tracks' trafs and with `samples`' own, and the
    media data with their payloads before the others' (left as they were: the muxer's empty samples
    stay, unreferenced, two bytes each): the cues' offsets stay small whatever the fragment's size.
    `mdat`: where its data starts, its header's length, the data's length."""
    data_at, old_header, data_size = mdat
    children = _children(moof, HEADER.size)
    kept = [(kind, child) for kind, child in children if kind != b"traf" or _track_id(child) not in replaced]
    payload = b"".join(s.payload for track in sorted(samples) for s in samples[track])
    mdat_header = 8 if data_size + len(payload) + 8 < 1 << 32 else 16

    def build(delta: int, first_data: int) -> bytes:
        parts = [child if kind != b"traf" else _moved_traf(child, delta) for kind, child in kept]
        at = first_data
        for track in sorted(samples):
            parts.append(_new_traf(track, samples[track], at))
            at += sum(len(s.payload) for s in samples[track])
        return _box(b"moof", *parts)

    try:
        size = len(build(0, 0))  # the sizes do not depend on the offsets
        delta = size - len(moof) + mdat_header - old_header + len(payload)
        dst.write(build(delta, size + mdat_header))
    except struct.error as exc:  # an offset past 2 GiB: no muxer writes a fragment that large
        raise NotASegment(f"a fragment's data offset does not fit: {exc}") from exc
    total = mdat_header + data_size + len(payload)
    dst.write(HEADER.pack(total, b"mdat") if mdat_header == 8 else HEADER.pack(1, b"mdat") + struct.pack(">Q", total))
    dst.write(payload)
    src.seek(data_at)
    _copy(src, dst, data_size)


def _copy(src: BinaryIO, dst: BinaryIO, size: int) -> None:
    while size > 0:
        chunk = src.read(min(size, _COPY_CHUNK))
        if not chunk:
            raise NotASegment("the file ends inside a box")
        dst.write(chunk)
        size -= len(chunk)
