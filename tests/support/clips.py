"""Test clips made with PyAV at test time: the product's sample generator plus broken inputs."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.subtitles.subtitle import SubtitleSet

from gpu_job.media.samples import _write_tone, make_clip
from gpu_job.media.streams import DEFAULT_ASS_HEADER

__all__ = ["make_audio_only", "make_clip", "make_rip", "make_subtitled", "make_timecoded", "make_truncated", "shown_cues",
           "store_subtitles_last", "stored_apart_s"]


def make_truncated(src: Path, dest: Path, keep_fraction: float = 0.3) -> Path:
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * keep_fraction)])
    return dest


def make_audio_only(path: Path, seconds: float = 1.0) -> Path:
    with av.open(str(path), "w", format="mp4") as out:
        astream = out.add_stream("aac", rate=48000)
        astream.layout = "stereo"
        _write_tone(out, astream, seconds)
    return path


# --- files like rips make them: several tracks, tags, subtitles, chapters, attachments -------------

CUES = [(0.10, 0.40, "Hello there"), (0.55, 0.90, "Zweiter Satz, schöne Grüße")]  # (start s, end s, text)
CHAPTERS = [(0.0, 0.5, "Opening"), (0.5, 1.0, "Ending")]
FONT = b"\x00\x01\x00\x00" + bytes(range(256)) * 4  # a TrueType-looking blob: copied, never parsed
_MS = Fraction(1, 1000)


def make_rip(path: Path, *, seconds: float = 1.0, pgs: bool = False, font: bool = False) -> Path:
    """An MKV as rips are made: H.264; English AAC (default) and German AC-3 (forced off, titled);
    English SRT subtitles; two chapters; a title and a creation time. pgs=True adds a bitmap (HDMV PGS)
    subtitle track, font=True a font attachment: both are what MP4 cannot hold."""
    with av.open(str(path), "w", format="matroska") as out:
        out.metadata.update({"title": "A Test Rip", "creation_time": "2024-05-06T07:08:09.000000Z"})
        video = out.add_stream("libx264", rate=24, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt, video.time_base = 64, 48, "yuv420p", Fraction(1, 24)
        eng = _audio_track(out, "aac", {"language": "eng", "title": "English stereo"}, av.stream.Disposition.default)
        deu = _audio_track(out, "ac3", {"language": "deu", "title": "Deutsch"}, 0)
        subs = out.add_stream("subrip")
        subs.time_base = subs.codec_context.time_base = _MS
        subs.codec_context.subtitle_header = DEFAULT_ASS_HEADER
        subs.metadata["language"] = "eng"
        pgs_stream = out.add_mux_stream("hdmv_pgs_subtitle", time_base=_MS) if pgs else None
        if pgs_stream is not None:
            pgs_stream.metadata["language"] = "fra"
        if font:
            out.add_attachment("DejaVuSans.ttf", "font/ttf", FONT)
        out.set_chapters([{"id": i + 1, "start": round(a * 1000), "end": round(b * 1000),
                           "time_base": _MS, "metadata": {"title": t}} for i, (a, b, t) in enumerate(CHAPTERS)])
        for i in range(round(24 * seconds)):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 8 % 256, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode())
        for stream in (eng, deu):
            _write_tone(out, stream, seconds)
        for n, (a, b, text) in enumerate(CUES):
            cue = SubtitleSet.create(f"{n},0,Default,,0,0,0,,{text}".encode(), 0, round((b - a) * 1000))
            _mux_at(out, subs, subs.codec_context.encode_subtitle(cue), a, b - a)
        if pgs_stream is not None:
            _mux_at(out, pgs_stream, av.Packet(pgs_display_set(True)), 0.2, 0.5)
            _mux_at(out, pgs_stream, av.Packet(pgs_display_set(False)), 0.7, 0.0)
    return path


def make_subtitled(path: Path, seconds: float, cues: list[tuple[float, float, str]]) -> Path:
    """A film's worth of subtitles as people have them: an SRT file, a picture (a keyframe every
    second) and a tone (AAC), muxed together by ffmpeg, which interleaves them (MP4 gets mov_text)."""
    from tests.support.ffmpeg import ffmpeg

    def stamp(s: float) -> str:
        ms = round(s * 1000)
        return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

    srt = path.with_suffix(".srt")
    srt.write_text("".join(f"{i + 1}\n{stamp(a)} --> {stamp(b)}\n{text}\n\n" for i, (a, b, text) in enumerate(cues)))
    video = make_clip(path.with_name(path.stem + "-picture.mkv"), width=64, height=48, fps=24, seconds=seconds,
                      audio=False)
    subtitles = ["-c:s", "mov_text"] if path.suffix in (".mp4", ".mov") else []
    ffmpeg("-i", video, "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}:sample_rate=48000", "-i", srt,
           "-map", "0", "-map", "1", "-map", "2", "-c:v", "libx264", "-g", "24", "-c:a", "aac", *subtitles, path)
    return path


def shown_cues(path: Path, track: int = 0) -> list[tuple[int, int, bytes]]:
    """A subtitle track (the first) as a player shows it: (from, until, text), in microseconds, each cue
    from its sample's time for its sample's duration; empty samples show nothing, and one text shown
    again at once (a cue across a join) is one cue."""
    from gpu_job.media.cuetrack import micro

    shown: list[tuple[int, int, bytes]] = []
    with av.open(str(path)) as container:
        stream = container.streams.subtitles[track]
        tb = Fraction(stream.time_base)
        for packet in container.demux(stream):
            data = bytes(packet)
            text = data[2:2 + int.from_bytes(data[:2], "big")]  # mov_text: the text's length, then the text
            if packet.pts is None or not text:
                continue
            start, end = micro(packet.pts, tb), micro(packet.pts + packet.duration, tb)
            if shown and shown[-1][1] == start and shown[-1][2] == text:
                shown[-1] = (shown[-1][0], end, text)
            else:
                shown.append((start, end, text))
    return shown


def stored_apart_s(path: Path, kind: str = "audio") -> float:
    """How far behind the picture, at most, the file stores its sound (or another `kind`) (s): what a
    reader demuxing in file order has read of the picture when it reaches the sound of a time."""
    ahead, video_s = 0.0, 0.0
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.pts is None:
                continue
            t = float(packet.pts * packet.time_base)
            if packet.stream.type == "video":
                video_s = max(video_s, t)
            elif packet.stream.type == kind:
                ahead = max(ahead, video_s - t)
    return ahead


def store_subtitles_last(src: Path, dest: Path) -> Path:
    """The file remuxed by PyAV with every subtitle packet handed to the muxer after all the others,
    as a script that writes its cues last does: Matroska then stores them seconds behind the picture."""
    with av.open(str(src)) as source, av.open(str(dest), "w", format="matroska") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in source.streams}
        held = []
        for packet in source.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            if packet.stream.type == "subtitle":
                held.append(packet)
            else:
                out.mux(packet)
        for packet in held:
            out.mux(packet)
    return dest


def _audio_track(out, codec: str, tags: dict[str, str], disposition: int):
    stream = out.add_stream(codec, rate=48000)
    stream.layout = "stereo"
    stream.metadata.update(tags)
    stream.disposition = int(disposition)
    return stream


def _mux_at(out, stream, packet: av.Packet, at_s: float, duration_s: float) -> None:
    packet.stream, packet.time_base = stream, _MS
    packet.pts = packet.dts = round(at_s * 1000)
    packet.duration = round(duration_s * 1000)
    out.mux(packet)


def pgs_display_set(show: bool, width: int = 64, height: int = 48) -> bytes:
    """One HDMV PGS display set as Matroska stores it (segments without the 'PG' file header): a
    16x8 white box at (8, 8) when `show`, else the empty composition that clears the screen."""
    def segment(kind: int, body: bytes) -> bytes:
        return bytes([kind]) + len(body).to_bytes(2, "big") + body

    objects = b"\x00\x00\x00\x00" + (8).to_bytes(2, "big") * 2 if show else b""
    pcs = struct.pack(">HHBHBBBB", width, height, 0x10, 1 if show else 2, 0x80 if show else 0, 0, 0,
                      1 if show else 0) + objects
    if not show:
        return segment(0x16, pcs) + segment(0x80, b"")
    wds = b"\x01\x00" + struct.pack(">HHHH", 8, 8, 16, 8)
    pds = b"\x00\x00" + bytes([1, 235, 128, 128, 255])  # palette entry 1: white (Y, Cr, Cb), opaque
    line = b"\x00\x90\x01"  # a run (0x80) of 16 (0x10) pixels of colour 1
    rle = (line + b"\x00\x00") * 8  # eight lines, each ended by 00 00
    ods = b"\x00\x00\x00\xc0" + (len(rle) + 4).to_bytes(3, "big") + struct.pack(">HH", 16, 8) + rle
    return segment(0x16, pcs) + segment(0x17, wds) + segment(0x14, pds) + segment(0x15, ods) + segment(0x80, b"")


def make_timecoded(path: Path, timecode: str = "01:02:03:04") -> Path:
    """A MOV as cameras write them: a start timecode, which the muxer stores as its own tmcd data track."""
    with av.open(str(path), "w", format="mov") as out:
        video = out.add_stream("libx264", rate=24, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.metadata["timecode"] = timecode
        for i in range(12):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 16, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode())
    return path
