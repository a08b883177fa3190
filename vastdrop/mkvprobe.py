"""What the control plane must know of a Matroska or WebM input before splitting it (issue 12), read
from its header elements (Info, Tracks, Attachments) and its first clusters with a few
ranged GETs and no media library, as vastdrop.mp4probe does for MP4 (which hands EBML files here).
The watcher's PyAV probe (watcher.mediaprobe) is the oracle: tests/test_mp4probe.py holds the two
side by side on the same files.

Matroska is EBML: every element is an ID and a size, each a variable-length integer (RFC 8794).
The file is the uploader's writing: every size is checked against its parent and the object, each
element read is bounded (MAX_ELEMENT_BYTES, each kind read once, one SeekHead), and so are the
elements walked and the clusters scanned for each track's first block (MAX_SCAN_BYTES, counting
every element header read, and MAX_SCAN_ELEMENTS).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from vastdrop.errors import BadInputError
from vastdrop.fmp4 import (
    CONTAINER_DURATION_SLACK_S,
    FIRST_AUDIO_WITHIN_S,
    FIRST_PACKETS_SCAN_BYTES,
    StreamFacts,
    unsplittable,
)

ReadRange = Callable[[int, int], bytes]

EBML_MAGIC = b"\x1a\x45\xdf\xa3"
MAX_ELEMENT_BYTES = 4 << 20  # Info, Tracks, Chapters: a few KB in a real file (codec private data)
MAX_TOP_ELEMENTS = 4096  # the Segment's children before its first Cluster
MAX_CHILDREN = 100_000  # inside one element read
MAX_SCAN_BYTES = FIRST_PACKETS_SCAN_BYTES  # the clusters read to find each track's first block
MAX_SCAN_ELEMENTS = 4096  # elements met on the way (clusters, and Cues, Tags or Voids between them)
HEADER_READ = 16  # an ID (at most 4 bytes) and a size (at most 8)

# Element IDs (with their length markers, as written), from the Matroska specification.
SEGMENT, SEEK_HEAD, SEEK, SEEK_ID, SEEK_POSITION = 0x18538067, 0x114D9B74, 0x4DBB, 0x53AB, 0x53AC
INFO, TIMESTAMP_SCALE, DURATION = 0x1549A966, 0x2AD7B1, 0x4489
TRACKS, TRACK_ENTRY, TRACK_NUMBER, TRACK_TYPE, CODEC_ID = 0x1654AE6B, 0xAE, 0xD7, 0x83, 0x86
AUDIO, BIT_DEPTH = 0xE1, 0x6264
CHAPTERS = 0x1043A770  # nothing to read in it: chapters are no reason not to split
ATTACHMENTS, ATTACHED_FILE = 0x1941A469, 0x61A7
CLUSTER, CLUSTER_TIMESTAMP, SIMPLE_BLOCK, BLOCK_GROUP, BLOCK = 0x1F43B675, 0xE7, 0xA3, 0xA0, 0xA1
EBML_HEADER, DOC_TYPE, CRC_32, VOID = 0x1A45DFA3, 0x4282, 0xBF, 0xEC
TOP_LEVEL = {SEEK_HEAD, INFO, TRACKS, CHAPTERS, ATTACHMENTS, CLUSTER, 0x1C53BB6B, 0x1254C367}  # + Cues, Tags
_KINDS = {1: "video", 2: "audio", 17: "subtitle"}
# CodecID -> the codec's name as FFmpeg says it (what the PyAV probe reports); prefixes match variants.
_AUDIO_CODECS = (("A_AAC", "aac"), ("A_OPUS", "opus"), ("A_FLAC", "flac"), ("A_VORBIS", "vorbis"),
                 ("A_MPEG/L3", "mp3"), ("A_MPEG/L2", "mp2"), ("A_MPEG/L1", "mp1"), ("A_EAC3", "eac3"),
                 ("A_AC3", "ac3"), ("A_DTS", "dts"), ("A_TRUEHD", "truehd"), ("A_ALAC", "alac"),
                 ("A_TTA1", "tta"), ("A_WAVPACK4", "wavpack"))
_SUBTITLE_CODECS = {"S_TEXT/UTF8": "subrip", "S_TEXT/ASCII": "text", "S_TEXT/ASS": "ass", "S_TEXT/SSA": "ass",
                    "S_ASS": "ass", "S_SSA": "ass", "S_TEXT/WEBVTT": "webvtt",
                    **{f"D_WEBVTT/{kind}": "webvtt" for kind in ("SUBTITLES", "CAPTIONS", "DESCRIPTIONS", "METADATA")},
                    "S_HDMV/PGS": "hdmv_pgs_subtitle",
                    "S_VOBSUB": "dvd_subtitle", "S_DVBSUB": "dvb_subtitle"}
UNKNOWN_SIZE = -1


@dataclass
class _Track:
    number: int = 0
    kind: str = "data"
    codec_id: str = ""
    bit_depth: int = 0
    first_s: float | None = None  # its first block's time


@dataclass
class _Header:
    scale_ns: int = 1_000_000
    duration: float | None = None  # in scale_ns units
    tracks: list[_Track] | None = None
    attachments: bool | None = None
    read: set[int] = field(default_factory=set)  # the kinds read: each at most once


def probe(read_range: ReadRange, size: int) -> tuple[float, str | None]:
    """(the duration in seconds, why the input cannot be split or None). BadInputError when it is a
    Matroska file with no readable header or no video."""
    pos, doc_id, doc_size = _element_at(read_range, 0, size)
    if doc_id != EBML_HEADER:
        raise BadInputError("not an EBML file")
    doc_type = _children(_body(read_range, pos, doc_size, size)).get(DOC_TYPE, [b""])[0]
    if doc_type.rstrip(b"\0") not in (b"matroska", b"webm"):
        return 0.0, f"it is an EBML file of type {doc_type[:20]!r}, not Matroska"
    seg_pos, seg_id, seg_size = _element_at(read_range, pos + doc_size, size)
    if seg_id != SEGMENT:
        raise BadInputError("no Segment after the EBML header")
    end = size if seg_size == UNKNOWN_SIZE else seg_pos + seg_size
    if end > size:
        raise BadInputError("the Segment overruns the file")
    header, first_cluster = _header(read_range, seg_pos, end)
    if header.tracks is None:
        raise BadInputError("no Tracks element before the first cluster or in the SeekHead")
    video = next((t for t in header.tracks if t.kind == "video"), None)
    if video is None:
        raise BadInputError("no video track")
    scan = _first_blocks(read_range, first_cluster, end, header) if first_cluster is not None else "end"
    if video.first_s is None:
        raise BadInputError("the video track has no block")
    facts = []
    for index, track in enumerate(header.tracks):
        start = track.first_s
        if start is None and track.kind not in ("video", "audio"):
            start = 0.0  # when a subtitle track starts does not matter (unsplittable)
        if start is None and scan == "bound":
            return 0.0, f"its {track.kind} stream {index} has no block in the first {MAX_SCAN_BYTES >> 20} MB"
        if start is None:  # past the window: it starts too late; at the end: it has no block (PyAV: at 0)
            start = math.inf if scan == "late" else 0.0
        codec = _codec(track) if track.kind == "audio" else \
            _SUBTITLE_CODECS.get(track.codec_id, track.codec_id.lower()) if track.kind == "subtitle" else ""
        facts.append(StreamFacts(index, track.kind, codec, start))
    if header.attachments:
        facts.append(StreamFacts(len(facts), "attachment", ""))
    video_facts = facts[header.tracks.index(video)]
    duration = (header.duration or 0.0) * header.scale_ns / 1e9
    return max(0.0, duration - CONTAINER_DURATION_SLACK_S), unsplittable(facts, video_facts)


# -- the Segment's header elements ----------------------------------------------------------------

def _header(read_range: ReadRange, pos: int, end: int) -> tuple[_Header, int | None]:
    """The header elements, walked from the Segment's start to its first Cluster; those that come
    later (a muxer that wrote them last) are found through the SeekHead."""
    header, seeks, first_cluster = _Header(), {}, None
    segment_start = pos
    for _ in range(MAX_TOP_ELEMENTS):
        if pos >= end:
            break
        body, element, length = _element_at(read_range, pos, end)
        if element == CLUSTER:
            first_cluster = pos
            break
        if length == UNKNOWN_SIZE:
            raise BadInputError(f"element {element:#x} at {pos} has an unknown size")
        if element == SEEK_HEAD and SEEK_HEAD not in header.read:  # the first only, whatever it holds
            header.read.add(SEEK_HEAD)
            for seek in _children(_body(read_range, body, length, end)).get(SEEK, []):
                entry = _children(seek)
                if SEEK_ID in entry and SEEK_POSITION in entry:
                    seeks.setdefault(int.from_bytes(entry[SEEK_ID][0], "big"),
                                     segment_start + _uint(entry[SEEK_POSITION][0]))
        elif element in (INFO, TRACKS, ATTACHMENTS) and element not in header.read:
            _read_into(header, element, read_range, body, length, end)
        pos = body + length
    else:
        raise BadInputError(f"more than {MAX_TOP_ELEMENTS} elements before the first cluster")
    for element, where in seeks.items():  # what the walk did not reach
        if element in (INFO, TRACKS, ATTACHMENTS) and element not in header.read and where < end:
            body, found, length = _element_at(read_range, where, end)
            if found == element and length != UNKNOWN_SIZE:
                _read_into(header, element, read_range, body, length, end)
    return header, first_cluster


def _read_into(header: _Header, element: int, read_range: ReadRange, body: int, length: int, end: int) -> None:
    header.read.add(element)
    if element == INFO:
        info = _children(_body(read_range, body, length, end))
        header.scale_ns = _uint(info[TIMESTAMP_SCALE][0]) if TIMESTAMP_SCALE in info else 1_000_000
        if header.scale_ns <= 0:
            raise BadInputError("the TimestampScale is zero")
        header.duration = _float(info[DURATION][0]) if DURATION in info else header.duration
    elif element == TRACKS:
        header.tracks = [_track(entry) for entry in _children(_body(read_range, body, length, end)).get(TRACK_ENTRY, [])]
    elif element == ATTACHMENTS:  # only whether there is one: its first children's headers (files are large)
        header.attachments, pos = False, body
        for _ in range(4):  # past a CRC-32 or a Void
            if pos >= body + length:
                break
            child_body, child, child_length = _element_at(read_range, pos, body + length)
            if child == ATTACHED_FILE:
                header.attachments = True
                break
            if child not in (CRC_32, VOID) or child_length == UNKNOWN_SIZE:
                break
            pos = child_body + child_length


def _track(entry: bytes) -> _Track:
    fields = _children(entry)
    track = _Track(number=_uint(fields.get(TRACK_NUMBER, [b""])[0]),
                   kind=_KINDS.get(_uint(fields.get(TRACK_TYPE, [b""])[0]), "data"),
                   codec_id=fields.get(CODEC_ID, [b""])[0].rstrip(b"\0").decode("ascii", "replace"))
    if AUDIO in fields:
        audio = _children(fields[AUDIO][0])
        track.bit_depth = _uint(audio.get(BIT_DEPTH, [b""])[0])
    return track


def _codec(track: _Track) -> str:
    codec = track.codec_id
    for prefix, name in _AUDIO_CODECS:
        if codec.startswith(prefix):
            return name
    bits = track.bit_depth or 16
    if codec == "A_PCM/INT/LIT":
        return "pcm_u8" if bits == 8 else f"pcm_s{bits}le"
    if codec == "A_PCM/INT/BIG":
        return "pcm_s8" if bits == 8 else f"pcm_s{bits}be"
    if codec == "A_PCM/FLOAT/IEEE":
        return f"pcm_f{bits}le"
    return codec.lower() or "unknown"


# -- the first clusters -------------------------------------------------------------------------------

def _first_blocks(read_range: ReadRange, pos: int, end: int, header: _Header) -> str:
    """Sets each track's first block time, reading the clusters from `pos` on until: every video
    and audio track has one ("done": when a sparse subtitle track starts does not matter), the
    clusters are FIRST_AUDIO_WITHIN_S past the picture's start ("late": a track still without one
    starts too late), the file ends ("end"), or MAX_SCAN_BYTES are read ("bound")."""
    by_number = {t.number: t for t in header.tracks}
    video = next(t for t in header.tracks if t.kind == "video")
    spent = 0
    for _ in range(MAX_SCAN_ELEMENTS):
        if pos >= end:
            return "end"
        if spent >= MAX_SCAN_BYTES:
            return "bound"
        body, element, length = _element_at(read_range, pos, end)
        spent += HEADER_READ  # every element costs a read, empty ones included
        known = length != UNKNOWN_SIZE
        if element != CLUSTER:
            if not known:
                return "bound"  # cannot be stepped over: when the tracks start is not known
            pos = body + length
            continue
        data = read_range(body, min(length if known else end - body, MAX_SCAN_BYTES - spent))
        spent += len(data)
        cluster_s, cluster_end = _blocks(data, by_number, header.scale_ns)
        if all(t.first_s is not None for t in header.tracks if t.kind in ("video", "audio")):
            return "done"
        if video.first_s is not None and cluster_s - video.first_s > FIRST_AUDIO_WITHIN_S:
            return "late"
        if not known and cluster_end is None:  # a cluster of unknown size: to the file's end, or past the bound
            return "end" if body + len(data) >= end else "bound"
        pos = body + (length if known else cluster_end)
    return "bound"


def _blocks(data: bytes, by_number: dict[int, _Track], scale_ns: int) -> tuple[float, int | None]:
    """Sets the first time of each track with a block in this cluster's `data`. Returns (the
    cluster's time in s, where it ends within `data` when its size is unknown: at the next
    top-level element; None if not within it)."""
    offset, base = 0, 0
    for _ in range(MAX_CHILDREN):
        if offset >= len(data):
            break
        try:
            body, element, length = _vint_header(data, offset)
        except BadInputError:
            break  # cut by the scan's bound
        if element in TOP_LEVEL:
            return base * scale_ns / 1e9, offset
        if length == UNKNOWN_SIZE or body + length > len(data):
            break
        if element == CLUSTER_TIMESTAMP:
            base = _uint(data[body:body + length])
        elif element in (SIMPLE_BLOCK, BLOCK_GROUP):
            block = data[body:body + length]
            if element == BLOCK_GROUP:
                block = _children(block).get(BLOCK, [b""])[0]
            _first_time(block, base, by_number, scale_ns)
        offset = body + length
    return base * scale_ns / 1e9, None


def _first_time(block: bytes, base: int, by_number: dict[int, _Track], scale_ns: int) -> None:
    try:
        at, number = _vint(block, 0, keep_marker=False)
    except BadInputError:
        return
    if at + 2 > len(block) or number not in by_number:
        return
    relative = struct.unpack_from(">h", block, at)[0]
    track = by_number[number]
    seconds = (base + relative) * scale_ns / 1e9
    if track.first_s is None or seconds < track.first_s:
        track.first_s = seconds


# -- EBML ---------------------------------------------------------------------------------------------

def _element_at(read_range: ReadRange, pos: int, end: int) -> tuple[int, int, int]:
    """(where its body starts, its ID, its size or UNKNOWN_SIZE), checked against `end`."""
    head = read_range(pos, min(HEADER_READ, max(0, end - pos)))
    at, element, length = _vint_header(head, 0)
    body = pos + at
    if length != UNKNOWN_SIZE and body + length > end:
        raise BadInputError(f"element {element:#x} at {pos} overruns its parent")
    return body, element, length


def _vint_header(data: bytes, offset: int) -> tuple[int, int, int]:
    at, element = _vint(data, offset, keep_marker=True)
    at, length = _vint(data, at, keep_marker=False)
    return at, element, length


def _vint(data: bytes, offset: int, *, keep_marker: bool) -> tuple[int, int]:
    """An EBML variable-length integer at `offset`: (the offset after it, its value). A size whose
    bits are all ones is UNKNOWN_SIZE."""
    if offset >= len(data):
        raise BadInputError("an element is cut short")
    first = data[offset]
    width = 8 - first.bit_length() + 1 if first else 9
    if width > 8 or offset + width > len(data):
        raise BadInputError("an invalid or cut element header")
    value = int.from_bytes(data[offset:offset + width], "big")
    if keep_marker:
        return offset + width, value
    value &= (1 << (7 * width)) - 1
    return offset + width, UNKNOWN_SIZE if value == (1 << (7 * width)) - 1 else value


def _body(read_range: ReadRange, body: int, length: int, end: int) -> bytes:
    if length == UNKNOWN_SIZE or length > MAX_ELEMENT_BYTES:
        raise BadInputError(f"a header element of {'unknown size' if length == UNKNOWN_SIZE else length} bytes")
    data = read_range(body, length)
    if len(data) != length:
        raise BadInputError("a header element is cut short")
    return data


def _children(data: bytes) -> dict[int, list[bytes]]:
    """The elements directly inside `data`, by ID, in order; bounded in count. (The probe looks at
    most three levels down, each a call of its own: nothing here recurses.)"""
    found: dict[int, list[bytes]] = {}
    offset = 0
    for _ in range(MAX_CHILDREN):
        if offset >= len(data):
            return found
        body, element, length = _vint_header(data, offset)
        if length == UNKNOWN_SIZE or body + length > len(data):
            raise BadInputError(f"element {element:#x} overruns its parent")
        found.setdefault(element, []).append(data[body:body + length])
        offset = body + length
    raise BadInputError(f"more than {MAX_CHILDREN} elements in one")


def _uint(data: bytes) -> int:
    return int.from_bytes(data[:8], "big") if data else 0


def _float(data: bytes) -> float | None:
    if len(data) == 4:
        value = struct.unpack(">f", data)[0]
    elif len(data) == 8:
        value = struct.unpack(">d", data)[0]
    else:
        return None
    return value if math.isfinite(value) and value >= 0 else None
