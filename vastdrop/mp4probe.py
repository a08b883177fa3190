"""What the control plane must know of an MP4 or MOV input before splitting it (issue 12), read from
its index (the moov box) with a few ranged GETs and no media library: the Lambda bundle has no
PyAV. The watcher uses PyAV (watcher.mediaprobe), which also reads other containers; on MP4 the two
agree (tests/test_mp4probe.py holds them side by side). Matroska and WebM (EBML) go to
vastdrop.mkvprobe; anything else is left unsplit, with the reason said.

The file is the host's or the uploader's writing: every size is checked against its parent and the
object, the index read is bounded (MAX_MOOV_BYTES), and the walk is bounded in boxes and depth.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vastdrop import mkvprobe
from vastdrop.errors import BadInputError
from vastdrop.fmp4 import StreamFacts, unsplittable

ReadRange = Callable[[int, int], bytes]

HEAD_BYTES = 64 << 10  # read first: an MP4's first boxes, or a Matroska file's header elements
MAX_TOP_BOXES = 256  # ftyp, moov, mdat, free...: a real file has a handful
MAX_MOOV_BYTES = 64 << 20  # a two-hour film's index is a few MB
MAX_BOXES = 100_000  # inside the moov
MAX_EDITS = 1000  # a real edit list has one to three entries
_PARSED = {b"mvhd", b"mehd", b"trex", b"tkhd", b"mdhd", b"hdlr", b"chap", b"elst", b"stsd"}  # the rest is skipped
FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}  # MP4, and QuickTime's older files
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"udta", b"tref", b"mvex"}
# Sample entry formats, as FFmpeg names their codecs (the reasons say the name a user knows).
_AUDIO_NAMES = {b"ac-3": "ac3", b"ec-3": "eac3", b"Opus": "opus", b"fLaC": "flac", b"alac": "alac",
                b"sowt": "pcm_s16le", b"twos": "pcm_s16be", b"in24": "pcm_s24be", b"in32": "pcm_s32be",
                b"fl32": "pcm_f32be", b"fl64": "pcm_f64be", b"samr": "amr_nb", b".mp3": "mp3",
                b"ulaw": "pcm_mulaw", b"alaw": "pcm_alaw", b"dtsc": "dts", b"dtsh": "dts", b"dtsl": "dts", b"dtse": "dts",
                # ISO's and QuickTime's generic PCM entries: their byte order and sample size are in
                # other boxes, which decide nothing here (MP4 copies every such variant it reads as one).
                b"ipcm": "pcm_s16le", b"fpcm": "pcm_f32le", b"lpcm": "pcm_s16le"}
# mp4a's object types (ISO/IEC 14496-1's registry): AAC (MPEG-4, and MPEG-2's three profiles), MP3.
_AAC_OBJECT_TYPES = {0x40, 0x66, 0x67, 0x68}
_MP3_OBJECT_TYPES = {0x69, 0x6B}
_OTHER_OBJECT_TYPES = {0xA5: "ac3", 0xA6: "eac3", 0xA9: "dts", 0xDD: "vorbis"}  # as FFmpeg's isom.c maps them
# MPEG-4 audio object types in an mp4a of type 0x40 that FFmpeg reads as another codec (isom.c):
# layers 1 to 3 (mp3on4; 29, PS, as the old mp3on4 draft did when given explicitly) and ALS.
_MPEG4_AUDIO_NOT_AAC = {29: "mp3on4", 32: "mp3on4", 33: "mp3on4", 34: "mp3on4", 36: "mp4als"}
# Subtitle sample entries, as FFmpeg names their codecs (isom.c's ff_codec_movsubtitle_tags).
_SUBTITLE_NAMES = {b"tx3g": "mov_text", b"text": "mov_text", b"mp4s": "dvd_subtitle", b"wvtt": "webvtt",
                   b"stpp": "ttml", b"c608": "eia_608", b"c708": "eia_708"}
_KINDS = {b"vide": "video", b"soun": "audio", b"sbtl": "subtitle", b"text": "subtitle", b"subt": "subtitle",
          b"tmcd": "data", b"meta": "data"}


@dataclass
class _Track:
    handler: bytes = b""
    timescale: int = 0
    duration: int = 0  # in the track's timescale
    edits: list[tuple[int, int]] = field(default_factory=list)  # (duration in the movie's timescale, media time)
    sample_format: bytes = b""
    object_type: int | str | None = None  # mp4a's codec, from its esds (a name: MPEG-4 audio that is not AAC)
    track_id: int = 0
    chapter_ids: tuple[int, ...] = ()  # tref/chap: the tracks that hold this one's chapter titles


@dataclass
class _Movie:
    timescale: int = 0
    tracks: list[_Track] = field(default_factory=list)
    fragmented: bool = False


def probe(read_range: ReadRange, size: int) -> tuple[float, str | None]:
    """(the video's duration in seconds, why the input cannot be split or None). BadInputError when
    it is an MP4 with no readable index or no video (or a Matroska file without its header)."""
    head = read_range(0, min(size, HEAD_BYTES))
    read_range = _after_head(read_range, head)
    if head.startswith(mkvprobe.EBML_MAGIC):
        return mkvprobe.probe(read_range, size)
    moov = _find_moov(read_range, size)
    if isinstance(moov, str):
        return 0.0, moov
    movie = _Movie()
    _parse(moov, 0, len(moov), movie, None, [0], 0)
    video = next((t for t in movie.tracks if t.handler == b"vide"), None)
    if video is None:
        raise BadInputError("no video track")
    if movie.fragmented:
        return 0.0, "it is a fragmented MP4 (its samples are listed in its fragments, not its index)"
    duration = _duration_s(video, movie.timescale)
    if duration <= 0:
        raise BadInputError("the video track states no duration")
    return duration, _unsplittable(movie, video)


def _after_head(read_range: ReadRange, head: bytes) -> ReadRange:
    """`read_range`, with what lies within the file's first bytes (already read) served from them."""
    def read(start: int, length: int) -> bytes:
        if start + length <= len(head):
            return head[start:start + length]
        if start < len(head):  # what follows from the network
            return head[start:] + read_range(len(head), start + length - len(head))
        return read_range(start, length)
    return read


def probe_source(source: str, *, timeout_s: float = 30.0) -> tuple[float, str | None]:
    """The probe on a presigned http(s) URL (as handlers.segments gives it) or a local path."""
    if source.lower().startswith(("https://", "http://")):
        from vastdrop.storage.https import HttpsStorage

        storage = HttpsStorage(timeout_s=timeout_s)
        info = storage.head(source)
        return probe(lambda start, length: storage.read_range(source, start, length, if_match=info.etag or None),
                     info.size)
    path = Path(source)

    def read(start: int, length: int) -> bytes:
        with path.open("rb") as fh:
            fh.seek(start)
            return fh.read(length)

    try:
        return probe(read, path.stat().st_size)
    except OSError as exc:
        raise BadInputError(f"cannot read the input: {exc.strerror or exc}") from exc


# -- the index ------------------------------------------------------------------------------------

def _find_moov(read_range: ReadRange, size: int) -> bytes | str:
    """The moov box's payload, or why there is none to read here."""
    offset, boxes = 0, 0
    while offset + 8 <= size and boxes < MAX_TOP_BOXES:
        head = read_range(offset, 16)
        if len(head) < 8:
            break
        box_size, kind = struct.unpack_from(">I4s", head)
        header = 8
        if box_size == 1:  # a 64-bit size follows
            if len(head) < 16:
                break
            box_size, header = struct.unpack_from(">Q", head, 8)[0], 16
        elif box_size == 0:  # to the end of the file
            box_size = size - offset
        if boxes == 0 and kind not in FIRST_BOXES:
            return "it is not an MP4, MOV or Matroska file (only those are probed here, without a media library)"
        if box_size < header or offset + box_size > size:
            raise BadInputError(f"box {kind!r} at {offset} overruns the file")
        if kind == b"moov":
            if box_size == header:
                raise BadInputError("the index (moov) is empty")
            if box_size - header > MAX_MOOV_BYTES:
                return f"its index is larger than {MAX_MOOV_BYTES >> 20} MB"
            moov = read_range(offset + header, box_size - header)
            if len(moov) != box_size - header:
                raise BadInputError("the index (moov) is cut short")
            return moov
        offset, boxes = offset + box_size, boxes + 1
    raise BadInputError("no index (moov box): not a complete MP4")


def _parse(data: bytes, start: int, end: int, movie: _Movie, track: _Track | None, count: list[int],
           depth: int) -> None:
    offset = start
    while offset + 8 <= end:
        count[0] += 1
        if count[0] > MAX_BOXES or depth > 8:
            raise BadInputError("the index holds too many boxes, or nests them too deep")
        box_size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if box_size == 1 and offset + 16 <= end:
            box_size, header = struct.unpack_from(">Q", data, offset + 8)[0], 16
        elif box_size == 0:
            box_size = end - offset
        if box_size < header or offset + box_size > end:
            raise BadInputError(f"box {kind!r} overruns its parent in the index")
        body, stop = offset + header, offset + box_size
        if kind == b"trak":
            track = _Track()
            movie.tracks.append(track)
            _parse(data, body, stop, movie, track, count, depth + 1)
            track = None
        elif kind in _CONTAINERS:
            _parse(data, body, stop, movie, track, count, depth + 1)
        elif kind in _PARSED:  # sample tables (stsz, stco...) are most of an index: never copied
            _leaf(kind, data[body:stop], movie, track)
        offset = stop


def _leaf(kind: bytes, box: bytes, movie: _Movie, track: _Track | None) -> None:
    try:
        if kind == b"mvhd":
            movie.timescale = _timescale_and_duration(box)[0]
        elif kind == b"mehd" or kind == b"trex":
            movie.fragmented = True
        elif track is None:
            return
        elif kind == b"mdhd":
            track.timescale, track.duration = _timescale_and_duration(box)
        elif kind == b"hdlr" and len(box) >= 12 and not track.handler:  # mdia's (QuickTime has another in minf)
            track.handler = box[8:12]
        elif kind == b"tkhd" and len(box) >= 24:
            track.track_id = struct.unpack_from(">I", box, 20 if box[0] == 1 else 12)[0]
        elif kind == b"chap":
            track.chapter_ids = struct.unpack_from(f">{min(len(box) // 4, MAX_EDITS)}I", box)
        elif kind == b"elst":
            track.edits = _edits(box)
        elif kind == b"stsd" and len(box) >= 16 and not track.sample_format:
            track.sample_format = box[12:16]
            if track.sample_format == b"mp4a":
                track.object_type = _object_type(box)
    except (struct.error, IndexError):
        raise BadInputError(f"box {kind!r} in the index is cut short") from None


def _timescale_and_duration(box: bytes) -> tuple[int, int]:
    if box[0] == 1:  # version 1: 64-bit times
        return struct.unpack_from(">IQ", box, 20)
    return struct.unpack_from(">II", box, 12)


def _edits(box: bytes) -> list[tuple[int, int]]:
    version, (entries,) = box[0], struct.unpack_from(">I", box, 4)
    form, width = (">Qq", 20) if version == 1 else (">Ii", 12)
    entries = min(entries, (len(box) - 8) // width, MAX_EDITS)
    return [struct.unpack_from(form, box, 8 + i * width) for i in range(entries)]


def _object_type(stsd: bytes) -> int | None:
    """The objectTypeIndication of the first mp4a entry's esds (in its DecoderConfigDescriptor)."""
    at = stsd.find(b"esds")
    if at < 0:
        return None
    pos = at + 8  # past "esds" and its version and flags
    tag, pos = stsd[pos], _past_length(stsd, pos + 1)
    if tag != 0x03:  # ES_Descriptor: ES_ID, then flags saying what optional fields follow
        return None
    flags = stsd[pos + 2]
    pos += 3 + (2 if flags & 0x80 else 0)  # ES_ID and flags; dependsOn_ES_ID
    if flags & 0x40:  # a URL, its length first
        pos += 1 + stsd[pos]
    pos += 2 if flags & 0x20 else 0  # OCR_ES_Id
    if stsd[pos] != 0x04:  # DecoderConfigDescriptor: its object type, 13 bytes of rates, then the config
        return None
    pos = _past_length(stsd, pos + 1)
    object_type, pos = stsd[pos], pos + 13
    if object_type == 0x40 and stsd[pos] == 0x05:  # DecoderSpecificInfo: MPEG-4 audio's AudioSpecificConfig
        config = _past_length(stsd, pos + 1)
        audio_type = stsd[config] >> 3
        if audio_type == 31:  # escape: 32 + the next six bits
            audio_type = 32 + (((stsd[config] & 7) << 3) | (stsd[config + 1] >> 5))
        return _MPEG4_AUDIO_NOT_AAC.get(audio_type, object_type)
    return object_type


def _past_length(data: bytes, pos: int) -> int:
    for _ in range(4):  # up to four bytes, seven bits each, the high bit saying another follows
        more = data[pos] & 0x80
        pos += 1
        if not more:
            break
    return pos


# -- what it says ---------------------------------------------------------------------------------

def _duration_s(track: _Track, movie_timescale: int) -> float:
    """The track's presentation length: its edit list's, where it has one, else its media's."""
    shown = [length for length, media_time in track.edits if media_time != -1]
    if shown and movie_timescale:
        return sum(shown) / movie_timescale
    return track.duration / track.timescale if track.timescale else 0.0


def _delay_s(track: _Track, movie_timescale: int) -> float:
    """How long after the movie's start the track begins: its leading empty edits."""
    delay = 0
    for length, media_time in track.edits:
        if media_time != -1:
            break
        delay += length
    return delay / movie_timescale if movie_timescale else 0.0


def _unsplittable(movie: _Movie, video: _Track) -> str | None:
    # The tracks whose titles are the chapters: as FFmpeg reads them, those of the last tref/chap.
    chapter_tracks = next((set(t.chapter_ids) for t in reversed(movie.tracks) if t.chapter_ids), set())
    facts = []
    for index, track in enumerate(movie.tracks):
        kind = "chapters" if track.track_id in chapter_tracks else _KINDS.get(track.handler, "data")
        codec = _audio_codec(track) if kind == "audio" else _SUBTITLE_NAMES.get(track.sample_format, "") if kind == "subtitle" else ""
        facts.append(StreamFacts(index, kind, codec,
                                 _delay_s(track, movie.timescale)))
    return unsplittable(facts, facts[movie.tracks.index(video)])


def _audio_codec(track: _Track) -> str:
    if track.sample_format == b"mp4a":
        if isinstance(track.object_type, str):
            return track.object_type
        if track.object_type in _AAC_OBJECT_TYPES:
            return "aac"
        if track.object_type in _MP3_OBJECT_TYPES:
            return "mp3"
        if track.object_type in _OTHER_OBJECT_TYPES:
            return _OTHER_OBJECT_TYPES[track.object_type]
        return f"mp4a (object type {track.object_type})"
    return _AUDIO_NAMES.get(track.sample_format, track.sample_format.decode("latin-1").strip() or "unknown")
