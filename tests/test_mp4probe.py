"""The Lambda's probe for segments (vastdrop.mp4probe, and vastdrop.mkvprobe for Matroska), which
reads MP4 indexes and Matroska headers without a media library, held against the watcher's PyAV
probe (watcher.mediaprobe) as the oracle: on the same files both must agree on whether to split,
say the same reason, and give the same duration."""

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
from vastdrop.mp4probe import HEAD_BYTES, MAX_MOOV_BYTES, probe, probe_source
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
        "mu-law in mov": make_clip(tmp / "ulaw.mov", width=64, height=48, fps=24, seconds=2, audio_codec="pcm_mulaw"),
        "24-bit pcm in mov": make_clip(tmp / "in24.mov", width=64, height=48, fps=24, seconds=2, audio_codec="pcm_s24be"),
        "float pcm in mov": make_clip(tmp / "fl32.mov", width=64, height=48, fps=24, seconds=2, audio_codec="pcm_f32be"),
        "pcm in mp4": make_clip(tmp / "ipcm.mp4", width=64, height=48, fps=24, seconds=2, audio_codec="pcm_s24le"),
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
    files.update(_matroska_files(tmp, rip))
    ffmpeg("-i", clip, "-c", "copy", "-movflags", "+faststart", files["moov first"])
    ffmpeg("-i", rip, "-map", "0:v", "-map", "0:a:0", "-c", "copy", "-map_chapters", "0", files["chapters"])
    ffmpeg("-i", rip, "-map", "0:v", "-map", "0:a:0", "-map", "0:s", "-c", "copy", "-c:s", "mov_text",
           "-map_chapters", "-1", files["subtitles"])
    return files


def _matroska_files(tmp: Path, rip: Path) -> dict[str, Path]:
    """Matroska and WebM as people have them: rips with chapters, subtitles, a font and a second
    soundtrack, FLAC and PCM, WebM's VP9 and Opus, a live recording (clusters of unknown size)."""
    mkv = make_clip(tmp / "aac.mkv", width=64, height=48, fps=24, seconds=3)
    font = make_rip(tmp / "font.mkv", seconds=2, font=True)
    files = {
        "mkv aac": mkv,
        "mkv no audio": make_clip(tmp / "silent.mkv", width=64, height=48, fps=25, seconds=2.5, audio=False),
        "mkv flac": make_clip(tmp / "flac.mkv", width=64, height=48, fps=24, seconds=2, audio_codec="flac"),
        "mkv mp3": make_clip(tmp / "mp3.mkv", width=64, height=48, fps=24, seconds=2, audio_codec="libmp3lame"),
        "mkv pcm 24-bit": make_clip(tmp / "pcm24.mkv", width=64, height=48, fps=24, seconds=2, audio_codec="pcm_s24le"),
        "mkv pcm 8-bit": make_clip(tmp / "pcm8.mkv", width=64, height=48, fps=24, seconds=2, audio_codec="pcm_u8"),
        "webm vp9 opus": make_clip(tmp / "vp9.webm", width=64, height=48, fps=24, seconds=2, codec="libvpx-vp9",
                                   audio_codec="libopus"),
        "mkv chapters": tmp / "chaptered.mkv",
        "mkv rip": rip,
        "mkv subtitles": tmp / "subs.mkv",
        "mkv ass": tmp / "ass.mkv",
        "mkv webvtt": tmp / "webvtt.mkv",
        "mkv font": tmp / "fontonly.mkv",
        "mkv two soundtracks": tmp / "dub.mkv",
        "mkv late audio": make_offset_audio(make_clip(tmp / "v.mkv", fps=24, seconds=14, audio=False),
                                            tmp / "late.mkv", audio_lead_s=-12.0, seconds=2.0),
        "mkv live": tmp / "live.mkv",
        "mkv dvd subtitles": tmp / "vobsub.mkv",
    }
    no_chapters = ["-c", "copy", "-map_chapters", "-1"]
    ffmpeg("-i", rip, "-map", "0:v", "-map", "0:a:0", "-c", "copy", "-map_chapters", "0", files["mkv chapters"])
    ffmpeg("-i", rip, "-map", "0:v", "-map", "0:a:0", "-map", "0:s", *no_chapters, files["mkv subtitles"])
    for text in ("ass", "webvtt"):
        ffmpeg("-i", rip, "-map", "0:v", "-map", "0:a:0", "-map", "0:s", *no_chapters, "-c:s", text, files[f"mkv {text}"])
    ffmpeg("-i", font, "-map", "0:v", "-map", "0:a:0", "-map", "0:t", *no_chapters, files["mkv font"])
    ffmpeg("-i", rip, "-map", "0:v", "-map", "0:a", *no_chapters, files["mkv two soundtracks"])
    ffmpeg("-i", mkv, "-c", "copy", "-live", "1", files["mkv live"])
    bitmaps = make_rip(tmp / "pgs.mkv", seconds=2, pgs=True)  # its PGS cues become a DVD's
    ffmpeg("-i", bitmaps, "-map", "0:v", "-map", "0:a:0", "-map", "0:s:1", "-c:v", "copy", "-c:a", "copy",
           "-c:s", "dvdsub", "-map_chapters", "-1", files["mkv dvd subtitles"])
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
    # Copied into segments as AAC is: every codec MP4 stores as it is.
    assert said["opus"] is said["flac"] is said["pcm in mov"] is said["mp3"] is said["ac-3"] is None
    assert said["24-bit pcm in mov"] is said["float pcm in mov"] is said["pcm in mp4"] is None  # in24, fl32, ipcm
    assert said["mu-law in mov"] is None  # re-encoded to FLAC, whose frames stand alone
    assert said["chapters"] is said["subtitles"] is None  # segment 0 writes the chapters, each segment its cues
    assert "starts more than 10 s after the picture" in said["late audio"]
    # Matroska's alike: read from its header elements and first clusters.
    assert said["mkv aac"] is said["mkv no audio"] is said["mkv flac"] is said["webm vp9 opus"] is None
    assert said["mkv live"] is None
    assert said["mkv mp3"] is said["mkv pcm 24-bit"] is said["mkv two soundtracks"] is None  # AAC and AC-3
    assert said["mkv pcm 8-bit"] is None
    # Chapters, two soundtracks (AAC and AC-3), a font (which MP4 leaves out, whole or not), text subtitles split.
    assert said["mkv chapters"] is said["mkv font"] is said["mkv rip"] is None
    assert said["mkv subtitles"] is said["mkv ass"] is said["mkv webvtt"] is None
    # DVD subtitles MP4 keeps as they are, starting at their first cue: not split.
    assert "subtitle stream 2 (dvd_subtitle)" in said["mkv dvd subtitles"]
    assert "starts more than 10 s after the picture" in said["mkv late audio"]


def test_other_containers_are_left_whole_with_the_reason_and_broken_files_are_bad_input(files, tmp_path):
    duration, why = probe_source(str(make_clip(tmp_path / "clip.ts", width=64, height=48, fps=24, seconds=1)))
    assert "not an MP4, MOV or Matroska" in why
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
    cases.append(ftyp + box(b"moov", b""))  # an empty index
    cases.append(ftyp + box(b"moov", box(b"trak", box(b"edts", box(b"elst", bytes(4) + struct.pack(">I", 1 << 30))))))
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
    # An index larger than MAX_MOOV_BYTES is not read at all: only the file's first bytes are.
    claimed = ftyp + struct.pack(">I4s", 8 + (MAX_MOOV_BYTES + 1), b"moov")
    reads.clear()
    assert "index is larger" in probe(lambda start, length: (reads.append(length), claimed[start:start + length])[1],
                                      len(claimed) + MAX_MOOV_BYTES + 1)[1]
    assert sum(reads) <= HEAD_BYTES + 16


def _esds_stsd(object_type: int, audio_config: bytes) -> bytes:
    """An stsd holding one mp4a entry whose esds says `object_type` and an AudioSpecificConfig."""
    specific = b"\x05" + bytes([len(audio_config)]) + audio_config
    decoder = b"\x04" + bytes([13 + len(specific)]) + bytes([object_type, 0x15]) + bytes(11) + specific
    es = b"\x03" + bytes([3 + len(decoder)]) + b"\x00\x01\x00" + decoder
    esds = struct.pack(">I4s", 12 + len(es), b"esds") + bytes(4) + es
    entry = struct.pack(">I4s", 8 + 28 + len(esds), b"mp4a") + bytes(28) + esds
    return bytes(4) + struct.pack(">I", 1) + entry


@pytest.mark.parametrize("config, codec", [(bytes([0x12, 0x10]), "aac"),  # AAC LC, 44.1 kHz stereo
                                           (bytes([0x2B, 0x92, 0x08, 0x00]), "aac"),  # HE-AAC, explicit SBR
                                           (bytes([0xF8, 0x40, 0x00]), "mp3on4"),  # escape to 34: layer 3
                                           (bytes([0xF8, 0x80, 0x00]), "mp4als")])  # escape to 36: ALS
def test_mpeg4_audio_is_aac_only_when_its_audio_object_type_says_so(config, codec):
    from vastdrop.mp4probe import _audio_codec, _leaf, _Movie, _Track

    track = _Track()
    _leaf(b"stsd", _esds_stsd(0x40, config), _Movie(), track)
    assert _audio_codec(track) == codec


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_through_a_presigned_url_it_reads_the_index_not_the_file(seaweed, bucket, tmp_path, monkeypatch, suffix):
    """The index last, as PyAV writes it (moov after a long mdat): a few ranged GETs walk past the
    media to it. Matroska: its header elements and its first cluster. What went over the wire is
    counted by a proxy the requests pass through."""
    from tests.support.counting_proxy import CountingProxy

    s3 = S3Storage(client=seaweed.client())
    url = s3_url(bucket, f"in/{uuid.uuid4().hex}{suffix}")
    big = make_clip(tmp_path / f"big{suffix}", width=320, height=240, fps=24, seconds=20)
    if suffix == ".mkv":  # interleaved as muxers write them (make_clip muxes its sound after the picture)
        ffmpeg("-i", big, "-c", "copy", tmp_path / "interleaved.mkv")
        big = tmp_path / "interleaved.mkv"
    s3.upload(big, url)
    get_url = s3.presign_get(url, 300)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with CountingProxy() as proxy:
        for name in ("HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(name, proxy.url)
        assert probe_source(get_url) == probe_for_segments(str(big))
        received = proxy.bytes_in
    if suffix == ".mp4":
        assert 0 < received < big.stat().st_size / 10, (received, big.stat().st_size)
    else:  # the header elements and the first cluster (where each track's first block is), no more
        data = big.read_bytes()
        cluster = (0x1F43B675).to_bytes(4, "big")
        second_cluster = data.find(cluster, data.find(cluster) + 4)
        assert 0 < received < second_cluster + 16_384 < big.stat().st_size / 2, (received, second_cluster)


def _ebml(element: int, body: bytes, *, size: bytes | None = None) -> bytes:
    """One EBML element: its ID as written, an 8-byte size (or `size` as given), its body."""
    width = (element.bit_length() + 7) // 8
    return element.to_bytes(width, "big") + (size if size is not None else (0x01 << 56 | len(body)).to_bytes(8, "big")) + body


def test_hostile_matroska_headers_are_bounded():
    """Elements that overrun their parents, unknown or huge sizes, a zero timestamp scale, a
    SeekHead that points past the file, deep nesting, endless clusters with no audio: a clear
    BadInputError or a reason, never a hang, a huge read or a crash."""
    from vastdrop import mkvprobe as m

    head = _ebml(m.EBML_HEADER, _ebml(m.DOC_TYPE, b"matroska"))
    video = _ebml(m.TRACK_ENTRY, _ebml(m.TRACK_NUMBER, b"\x01") + _ebml(m.TRACK_TYPE, b"\x01") + _ebml(m.CODEC_ID, b"V_VP9"))
    audio = _ebml(m.TRACK_ENTRY, _ebml(m.TRACK_NUMBER, b"\x02") + _ebml(m.TRACK_TYPE, b"\x02") + _ebml(m.CODEC_ID, b"A_OPUS"))
    tracks = _ebml(m.TRACKS, video + audio)
    info = _ebml(m.INFO, _ebml(m.DURATION, struct.pack(">d", 60_000.0)))

    def cluster(ms: int, track: int) -> bytes:
        return _ebml(m.CLUSTER, _ebml(m.CLUSTER_TIMESTAMP, ms.to_bytes(4, "big"))
                     + _ebml(m.SIMPLE_BLOCK, bytes([0x80 | track]) + b"\x00\x00\x80" + bytes(100)))

    def segment(body: bytes, size: bytes | None = None) -> bytes:
        return head + _ebml(m.SEGMENT, body, size=size)

    good = segment(info + tracks + cluster(0, 1) + cluster(40, 2))
    unknown = b"\x01\xff\xff\xff\xff\xff\xff\xff"
    cases = {
        "fine": good,
        "a live file": segment(info + tracks + _ebml(m.CLUSTER, _ebml(m.CLUSTER_TIMESTAMP, b"\x00")
                                                       + _ebml(m.SIMPLE_BLOCK, b"\x81\x00\x00\x80"), size=unknown)
                               + cluster(40, 2), size=unknown),
        "no audio block in 12 s": segment(info + tracks + b"".join(cluster(ms, 1) for ms in range(0, 12_000, 500))),
        "an element past its parent": segment(info + _ebml(m.TRACKS, video, size=(0x01 << 56 | 10_000).to_bytes(8, "big"))),
        "a 1 TB Tracks element": segment(info + _ebml(m.TRACKS, b"", size=(0x01 << 56 | 1 << 40).to_bytes(8, "big"))),
        "Tracks of unknown size": segment(info + _ebml(m.TRACKS, video, size=unknown)),
        "a zero timestamp scale": segment(_ebml(m.INFO, _ebml(m.TIMESTAMP_SCALE, b"\x00")) + tracks + cluster(0, 1)),
        "no tracks": segment(info + cluster(0, 1)),
        "a SeekHead past the file": segment(_ebml(m.SEEK_HEAD, _ebml(m.SEEK, _ebml(m.SEEK_ID, b"\x16\x54\xae\x6b")
                                                                      + _ebml(m.SEEK_POSITION, b"\x7f\xff\xff\xff")))
                                            + cluster(0, 1)),
        # What costs reads but no scanned bytes: every element read counts, and their number is bounded.
        "a million Voids after a cluster": segment(info + tracks + cluster(0, 1) + b"\xec\x80" * 1_000_000),
        "a million empty clusters": segment(info + tracks + cluster(0, 1) + b"\x1f\x43\xb6\x75\x80" * 1_000_000),
        "a hundred 1 MB Tracks": segment(info + tracks + _ebml(m.TRACKS, video + bytes(1 << 20)) * 100 + cluster(0, 1)),
        "a hundred 1 MB SeekHeads": segment(_ebml(m.SEEK_HEAD, b"") + _ebml(m.SEEK_HEAD, _ebml(0xEC, bytes(1 << 20))) * 100
                                            + info + tracks
                                            + cluster(0, 1) + cluster(40, 2)),
        "an unknown size between clusters": segment(info + tracks + cluster(0, 1) + _ebml(0x1254C367, b"", size=unknown)
                                                    + cluster(20_000, 2)),
        "an invalid size byte": segment(info + b"\x16\x54\xae\x6b\x00" + bytes(20)),
        "webm's cousin": head.replace(b"matroska", b"notamkv!") + _ebml(m.SEGMENT, info),
        "cut after the header": head + b"\x18\x53",
    }
    said, reads = {}, {}
    for name, data in cases.items():
        reads[name] = []

        def read(start: int, length: int, data: bytes = data, log: list = reads[name]) -> bytes:
            log.append(length)
            return data[start:start + length]
        try:
            said[name] = probe(read, len(data))
        except BadInputError as exc:
            said[name] = ("bad input", str(exc))
    assert said["fine"] == (58.0, None) and said["a live file"] == (58.0, None)
    assert "starts more than 10 s after the picture" in said["no audio block in 12 s"][1]
    assert "not Matroska" in said["webm's cousin"][1]
    for name in ("an element past its parent", "a 1 TB Tracks element", "Tracks of unknown size", "a zero timestamp scale",
                 "no tracks", "a SeekHead past the file", "an invalid size byte", "cut after the header"):
        assert said[name][0] == "bad input", (name, said[name])
    for name in ("a million Voids after a cluster", "a million empty clusters", "an unknown size between clusters"):
        assert "its audio stream 1 has no block in the first 64 MB" == said[name][1], (name, said[name])
        assert len(reads[name]) <= m.MAX_SCAN_ELEMENTS + 20, (name, len(reads[name]))
    for name in ("a hundred 1 MB Tracks", "a hundred 1 MB SeekHeads"):  # the first of each is the one read
        assert said[name] == (58.0, None) and sum(reads[name]) < 3 << 20, (name, sum(reads[name]))
    assert max(n for log in reads.values() for n in log) <= HEAD_BYTES


def test_the_watchers_search_for_first_packets_is_bounded_whatever_the_packets_are(monkeypatch):
    """Packets of a stream it does not look for (a second picture), or without timestamps, still
    count: a file whose soundtrack never comes is not read to its end."""
    from fractions import Fraction
    from types import SimpleNamespace

    from watcher import mediaprobe

    video, audio, other = (SimpleNamespace(index=i, time_base=Fraction(1, 1000)) for i in range(3))
    demuxed = []

    def packets():
        yield SimpleNamespace(stream=video, pts=0, dts=0, size=1000)
        for n in range(10_000_000):
            demuxed.append(n)
            yield SimpleNamespace(stream=other, pts=None if n % 2 else n, dts=None, size=1000)

    container = SimpleNamespace(streams=SimpleNamespace(audio=[audio]), demux=packets)
    monkeypatch.setattr(mediaprobe, "MAX_PROBE_PACKETS", 1000)
    with pytest.raises(BadInputError, match="when each stream starts"):
        mediaprobe._first_packets(container, video)
    assert len(demuxed) <= 1001
    monkeypatch.setattr(mediaprobe, "MAX_PROBE_PACKETS", 10**9)
    demuxed.clear()
    with pytest.raises(BadInputError, match="64 MB"):
        mediaprobe._first_packets(container, video)
    assert len(demuxed) <= (64 << 20) // 1000 + 1


def test_a_stream_ffmpeg_cannot_decode_is_a_reason_not_a_crash(tmp_path):
    """PyAV gives a stream it has no decoder for (here TTML subtitles in an MP4) no codec context:
    the watcher's probe says why such an input is not split instead of raising."""
    from fractions import Fraction

    import av
    import numpy as np

    path = tmp_path / "ttml.mp4"
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=24, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        subtitles = out.add_mux_stream("ttml", time_base=Fraction(1, 1000))
        for i in range(24):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode())
        cue = av.Packet(b"<tt/>")
        cue.stream, cue.time_base, cue.pts, cue.dts = subtitles, Fraction(1, 1000), 100, 100
        out.mux(cue)
    assert "subtitle stream 1 (unknown) is not split" in probe_for_segments(str(path))[1]
    assert "subtitle stream 1 (ttml) is not split" in probe_source(str(path))[1]
