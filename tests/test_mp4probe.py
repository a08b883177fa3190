"""The Lambda's probe for segments (vastdrop.mp4probe), which reads MP4 indexes without a media
library, held against the watcher's PyAV probe (watcher.mediaprobe) as the oracle: on the same files
both must agree on whether to split, say the same reason, and give the same duration."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest

from gpu_job.media.samples import make_clip
from tests.support.clips import make_rip
from tests.support.ffmpeg import ffmpeg
from tests.support.geometry_clips import make_offset_audio
from vastdrop.errors import BadInputError
from vastdrop.mp4probe import probe, probe_source
from vastdrop.storage.s3 import S3Storage, s3_url
from watcher.mediaprobe import probe_for_segments


def _files(tmp: Path) -> dict[str, Path]:
    clip = make_clip(tmp / "aac.mp4", width=64, height=48, fps=24, seconds=3)
    silent = make_clip(tmp / "silent.mp4", width=64, height=48, fps=25, seconds=2.5, audio=False)
    rip = make_rip(tmp / "rip.mkv", seconds=2)
    files = {
        "aac": clip,
        "no audio": silent,
        "moov first": tmp / "faststart.mp4",
        "hevc in mov": make_clip(tmp / "hevc.mov", width=64, height=48, fps=24, seconds=2, codec="libx265"),
        "pcm in mov": make_clip(tmp / "pcm.mov", width=64, height=48, fps=24, seconds=2, audio_codec="pcm_s16le"),
        "mp3": make_clip(tmp / "mp3.mp4", width=64, height=48, fps=24, seconds=2, audio_codec="libmp3lame"),
        "opus": make_offset_audio(make_clip(tmp / "o.mp4", seconds=2, audio=False), tmp / "opus.mp4", 0.0, 2.0,
                                  codec="libopus"),
        "flac": make_offset_audio(make_clip(tmp / "f.mp4", seconds=2, audio=False), tmp / "flac.mp4", 0.0, 2.0,
                                  codec="flac"),
        "ac-3": make_offset_audio(make_clip(tmp / "a.mp4", seconds=2, audio=False), tmp / "ac3.mp4", 0.0, 2.0,
                                  codec="ac3"),
        "chapters": tmp / "chapters.mp4",
        "subtitles": tmp / "subtitles.mp4",
        "late audio": make_offset_audio(make_clip(tmp / "v.mp4", fps=24, seconds=14, audio=False),
                                        tmp / "late.mp4", audio_lead_s=-12.0, seconds=2.0),
    }
    ffmpeg("-i", clip, "-c", "copy", "-movflags", "+faststart", files["moov first"])
    ffmpeg("-i", rip, "-map", "0:v", "-map", "0:a:0", "-c", "copy", "-map_chapters", "0", files["chapters"])
    ffmpeg("-i", rip, "-map", "0:v", "-map", "0:a:0", "-map", "0:s", "-c", "copy", "-c:s", "mov_text",
           "-map_chapters", "-1", files["subtitles"])
    return files


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return _files(tmp_path_factory.mktemp("mp4probe"))


def test_it_agrees_with_pyav_on_what_to_split_and_why_and_how_long(files):
    said = {}
    for name, path in files.items():
        ours, oracle = probe_source(str(path)), probe_for_segments(str(path))
        said[name] = ours[1]
        assert ours[1] == oracle[1], (name, ours, oracle)
        assert ours[0] == pytest.approx(oracle[0], abs=0.05), (name, ours, oracle)
    # The files are what they say: the reasons differ, and the plain ones split.
    assert said["aac"] is said["no audio"] is said["moov first"] is said["hevc in mov"] is None
    assert said["opus"] is said["flac"] is None  # copied into segments as AAC is
    assert "pcm_s16le" in said["pcm in mov"] and "mp3" in said["mp3"] and "ac3" in said["ac-3"]
    assert "chapters" in said["chapters"] and "subtitle stream" in said["subtitles"]
    assert "starts more than 10 s after the picture" in said["late audio"]


def test_other_containers_are_left_whole_with_the_reason_and_broken_files_are_bad_input(files, tmp_path):
    duration, why = probe_source(str(make_rip(tmp_path / "rip.mkv")))
    assert "not an MP4 or MOV" in why
    whole = files["aac"].read_bytes()
    moov = whole.find(b"moov") - 4
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[:moov + 100])  # the index cut short
    text = tmp_path / "text.mp4"
    text.write_bytes(b"\x00\x00\x00\x10ftypisom" + b"x" * 100)  # a box that overruns the file
    for path in (cut, text):
        with pytest.raises(BadInputError):
            probe_source(str(path))


def test_hostile_indexes_are_bounded(tmp_path):
    """Boxes that claim sizes past their parents, 64-bit sizes, zero sizes and deep nesting: a clear
    BadInputError or a reason, never a hang, a huge read or a crash."""
    def box(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I4s", 8 + len(body), kind) + body

    ftyp = box(b"ftyp", b"isom" + bytes(4))
    cases = [
        ftyp + struct.pack(">I4sQ", 1, b"moov", 1 << 40),  # a 1 TB index
        ftyp + box(b"moov", struct.pack(">I4s", 999, b"trak")),  # a child past its parent
        ftyp + box(b"moov", box(b"trak", box(b"mdia", box(b"hdlr", bytes(3))))),  # no video: a cut hdlr
        ftyp + box(b"moov", box(b"trak", box(b"mdia", box(b"mdhd", bytes(5))))),
    ]
    deep = box(b"hdlr", bytes(8) + b"vide")
    for _ in range(20):
        deep = box(b"trak", deep)
    cases.append(ftyp + box(b"moov", deep))
    reads: list[int] = []
    for data in cases:
        def read(start: int, length: int, data: bytes = data) -> bytes:
            reads.append(length)
            return data[start:start + length]
        try:
            _, why = probe(read, len(data))
            assert why, data
        except BadInputError:
            pass
    assert max(reads) < 1 << 20


def test_through_a_presigned_url_it_reads_the_index_not_the_file(seaweed, bucket, files, tmp_path):
    s3 = S3Storage(client=seaweed.client())
    url = s3_url(bucket, f"in/{uuid.uuid4().hex}.mp4")
    big = make_clip(tmp_path / "big.mp4", width=320, height=240, fps=24, seconds=20)
    ffmpeg("-i", big, "-c", "copy", "-movflags", "+faststart", tmp_path / "big-faststart.mp4")
    s3.upload(tmp_path / "big-faststart.mp4", url)
    seen: list[int] = []
    data = (tmp_path / "big-faststart.mp4").read_bytes()

    def counted(start: int, length: int) -> bytes:
        seen.append(length)
        return data[start:start + length]

    assert probe_source(s3.presign_get(url, 300)) == probe(counted, len(data)) == probe_for_segments(str(big))
    assert sum(seen) < len(data) / 10, (sum(seen), len(data))
