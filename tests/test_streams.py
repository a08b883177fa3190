"""Every stream and tag of a file like a rip (issue 10 item 4): the real job on file:// URLs, the result
read back as a player reads it (PyAV's demuxers and decoders, independent of the job's own bookkeeping)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import av
import pytest

from handlers.deps import ControlConfig
from tests.support.clips import CHAPTERS, CUES, FONT, make_rip, make_timecoded, pgs_display_set
from tests.support.jobs import REPO, file_job_env, run_job
from vastdrop.jobid import job_id_for
from vastdrop.jobspec import JobSpec
from vastdrop.layout import Layout
from vastdrop.manifest import Manifest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("rips")
    return {"plain": make_rip(d / "rip.mkv"), "full": make_rip(d / "full rip.mkv", pgs=True, font=True)}


def _job(tmp: Path, source: Path, ext: str = "mp4", **env: str) -> tuple[Path, Manifest]:
    out = tmp / "bucket" / "output"
    result = out / f"clip.{ext}"
    proc = run_job(file_job_env(tmp, source, JOB_OUTPUT_URL=result.as_uri(),
                                JOB_MANIFEST_URL=(out / f"clip.{ext}.manifest.json").as_uri(), **env))
    assert proc.returncode == 0, proc.stderr
    return result, Manifest.from_json((out / f"clip.{ext}.manifest.json").read_bytes())


def _tracks(path: Path, kind: str) -> list[tuple]:
    """(codec, language, title, default, forced) of each track of a kind, as a player lists them.
    MP4 stores a track's title as its 'name'."""
    with av.open(str(path)) as c:
        return [(s.codec_context.codec.canonical_name, s.metadata.get("language"),
                 s.metadata.get("title") or s.metadata.get("name"),
                 bool(s.disposition & av.stream.Disposition.default), bool(s.disposition & av.stream.Disposition.forced))
                for s in c.streams if s.type == kind]


def _cues(path: Path, codec: str) -> list[tuple[float, float, str]]:
    """Each cue's start, end (seconds) and text, decoded as a player shows it; empty gap samples skipped."""
    with av.open(str(path)) as c:
        stream = next(s for s in c.streams.subtitles if s.codec_context.codec.canonical_name == codec)
        cues = []
        for packet in c.demux(stream):
            if packet.dts is None:
                continue
            texts = [r.dialogue.decode() for r in packet.decode()]
            start = float(packet.pts * packet.time_base)
            cues += [(round(start, 3), round(start + float(packet.duration * packet.time_base), 3), t) for t in texts if t]
        return cues


def _chapters(path: Path) -> list[tuple[float, float, str]]:
    with av.open(str(path)) as c:
        return [(round(float(ch["start"] * ch["time_base"]), 3), round(float(ch["end"] * ch["time_base"]), 3),
                 ch["metadata"].get("title")) for ch in c.chapters()]


def _tags(path: Path) -> dict[str, str]:
    with av.open(str(path)) as c:
        return dict(c.metadata)


def test_a_rip_keeps_both_audio_tracks_its_subtitles_chapters_and_title_in_mp4(tmp_path, rips):
    """GIVEN an MKV with English AAC (default) and German AC-3 audio, English SRT cues, two chapters and a title
    WHEN the job retimes it to 48 fps into the default MP4
    THEN a player finds both audio tracks with their languages, titles and flags, the same cues at the same
    times as mov_text, the same chapters and the title; the manifest lists what each stream became."""
    result, manifest = _job(tmp_path, rips["plain"], JOB_TARGET_FPS="48")
    assert _tracks(result, "audio") == [("aac", "eng", "English stereo", True, False),
                                        ("ac3", "deu", "Deutsch", False, False)]
    (subtitle,) = _tracks(result, "subtitle")
    assert subtitle[:2] == ("mov_text", "eng")
    assert _cues(result, "mov_text") == [(a, b, text) for a, b, text in CUES]
    assert _chapters(result) == CHAPTERS
    tags = _tags(result)
    assert tags["title"] == "A Test Rip" and tags["creation_time"].startswith("2024-05-06T07:08:09")

    by_index = {e["index"]: e for e in manifest.engine.streams}
    assert [by_index[i]["action"] for i in (1, 2, 3)] == ["kept", "kept", "converted"]
    assert by_index[1]["language"] == "eng" and by_index[1]["disposition"] == ["default"]
    assert by_index[3]["codec"] == "subrip" and by_index[3]["to"] == "mov_text"
    assert manifest.engine.container == "mp4" and manifest.result.content_type == "video/mp4"
    assert manifest.engine.audio == "copy" and "container" not in manifest.params
    # MP4 enables the first subtitle track when none is default: the manifest says so, as a player sees it.
    assert any("subtitle stream 3" in n and "default" in n for n in manifest.engine.notes)


def test_what_mp4_cannot_hold_is_listed_as_dropped_with_its_reason(tmp_path, rips):
    """GIVEN a rip that also has PGS (bitmap) subtitles and a font attachment
    WHEN the job writes the default MP4
    THEN both are absent from the result and the manifest lists each as dropped, with the reason and the way
    to keep it; everything else is still there."""
    result, manifest = _job(tmp_path, rips["full"])
    with av.open(str(result)) as c:
        assert [s.codec_context.codec.canonical_name for s in c.streams.subtitles] == ["mov_text"]
        assert not [s for s in c.streams if s.type == "attachment"]
    dropped = {e["kind"]: e for e in manifest.engine.streams if e["action"] == "dropped"}
    assert set(dropped) == {"subtitle", "attachment"}
    assert dropped["subtitle"]["codec"] == "hdmv_pgs_subtitle" and dropped["subtitle"]["language"] == "fra"
    assert dropped["attachment"]["filename"] == "DejaVuSans.ttf"
    for entry in dropped.values():
        assert "cannot be stored in MP4" in entry["reason"] and "JOB_CONTAINER=mkv" in entry["reason"]
    assert sum(n.startswith("dropped ") for n in manifest.engine.notes) == 2
    assert len(_tracks(result, "audio")) == 2


def test_job_container_mkv_keeps_bitmap_subtitles_and_attachments(tmp_path, rips):
    """GIVEN the same rip WHEN JOB_CONTAINER=mkv THEN the result is Matroska and keeps the PGS track (the
    same display sets at the same times, decoding to the same bitmap), the font (same name, type and
    bytes), the SRT cues, both audio tracks and the chapters; nothing is dropped."""
    result, manifest = _job(tmp_path, rips["full"], ext="mkv", JOB_CONTAINER="mkv")
    with av.open(str(result)) as c:
        assert "matroska" in c.format.name
        pgs = next(s for s in c.streams.subtitles if s.codec_context.codec.canonical_name == "hdmv_pgs_subtitle")
        assert pgs.metadata.get("language") == "fra"
        packets = [(round(float(p.pts * p.time_base), 3), bytes(p), p.decode()) for p in c.demux(pgs) if p.dts is not None]
        (font,) = [s for s in c.streams if s.type == "attachment"]
        assert (font.metadata.get("filename"), font.mimetype, font.data) == ("DejaVuSans.ttf", "font/ttf", FONT)
    assert [(t, data) for t, data, _ in packets] == [(0.2, pgs_display_set(True)), (0.7, pgs_display_set(False))]
    (bitmap,) = packets[0][2]
    assert (bitmap.x, bitmap.y, bitmap.width, bitmap.height) == (8, 8, 16, 8)
    assert _cues(result, "subrip") == [(a, b, text) for a, b, text in CUES]
    assert [t[:3] for t in _tracks(result, "audio")] == [("aac", "eng", "English stereo"), ("ac3", "deu", "Deutsch")]
    assert _chapters(result) == CHAPTERS and _tags(result)["title"] == "A Test Rip"
    assert not [e for e in manifest.engine.streams if e["action"] != "kept"]
    assert manifest.result.content_type == "video/x-matroska" and manifest.engine.container == "mkv"
    assert manifest.params == {"target_fps": None, "upscale": 1, "container": "mkv"}


def test_a_camera_timecode_track_survives_as_the_result_s_timecode(tmp_path):
    """GIVEN a camera MOV starting at timecode 01:02:03:04 (stored as a tmcd data track)
    WHEN the job writes MP4 THEN the result carries the same start timecode, and the manifest says the
    track became the timecode tag rather than claiming it was copied or silently losing it."""
    result, manifest = _job(tmp_path, make_timecoded(tmp_path / "camera.mov"))
    with av.open(str(result)) as c:
        assert c.streams.video[0].metadata.get("timecode") == "01:02:03:04"
    (entry,) = manifest.engine.streams
    assert (entry["kind"], entry["action"], entry["to"]) == ("data", "converted", "timecode")


def test_the_container_is_a_parameter_but_the_default_keeps_every_job_id():
    """A job id hashes what changes the result: MKV makes another job, and MP4 (the default) leaves
    the ids made before the choice existed unchanged. Both sides of the control plane agree."""
    urls = {"id": "j", "input_url": "file:///i", "output_url": "file:///o", "manifest_url": "file:///m"}
    assert JobSpec(**urls).params() == {"target_fps": None, "upscale": 1} == ControlConfig().params()
    mkv = JobSpec(**urls, container="mkv")
    assert mkv.params() == ControlConfig(container="mkv").params() and mkv.to_env()["JOB_CONTAINER"] == "mkv"
    before = job_id_for("b", "input/a.mp4", '"e"', {"target_fps": None, "upscale": 1})
    assert job_id_for("b", "input/a.mp4", '"e"', ControlConfig().params()) == before
    assert job_id_for("b", "input/a.mp4", '"e"', ControlConfig(container="mkv").params()) != before
    layout = Layout().for_container("mkv")
    assert layout.result_key("input/films/a.mp4") == "output/films/a.mkv"
    assert layout.staged_result_key("j", 2) == "output/.attempts/j/2/result.mkv"
    with pytest.raises(ValueError, match="container"):
        JobSpec(**urls, container="avi")


def test_watcher_container_mkv_publishes_output_name_mkv_with_a_verified_manifest(tmp_path, rips):
    """GIVEN the zero-config watcher (./bucket, local compute, the real job) and WATCHER_CONTAINER=mkv
    WHEN a rip lands at input/films/rip.mkv and `run --once` drives it
    THEN the verified result is output/films/rip.mkv (Matroska, its PGS track and font kept) beside its
    final manifest, whose ETag and size are the published file's; staging is gone."""
    src = tmp_path / "bucket" / "input" / "films" / "rip.mkv"
    src.parent.mkdir(parents=True)
    src.write_bytes(rips["full"].read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHER_", "JOB_"))}
    env.update(PYTHONPATH=str(REPO), WATCHER_CONTAINER="mkv")
    proc = subprocess.run([sys.executable, "-m", "watcher", "run", "--once"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    output = tmp_path / "bucket" / "output"
    result = output / "films" / "rip.mkv"
    manifest = Manifest.from_json((output / "films" / "rip.mkv.manifest.json").read_bytes())
    assert manifest.status == "succeeded" and manifest.result.url.endswith("/output/films/rip.mkv")
    assert manifest.result.etag == '"' + hashlib.md5(result.read_bytes()).hexdigest() + '"'
    assert manifest.result.size == result.stat().st_size and manifest.result.content_type == "video/x-matroska"
    assert manifest.params["container"] == "mkv"
    with av.open(str(result)) as c:
        assert "matroska" in c.format.name
        assert {s.type for s in c.streams} == {"video", "audio", "subtitle", "attachment"}
    assert not list(output.rglob("*.mp4")) and not list((output / ".attempts").rglob("result.*"))


def test_tags_and_chapter_titles_that_are_not_utf8_are_kept_with_the_bad_bytes_replaced(tmp_path):
    """Older tools wrote Latin-1 titles. PyAV decodes tags as strict UTF-8 and refused to open such a
    file at all (a UnicodeDecodeError, so a crash, retried as one); the job and the watcher's probe
    now read it, the undecodable byte replaced."""
    from watcher.mediaprobe import probe_for_segments

    data = make_rip(tmp_path / "rip.mkv", seconds=1).read_bytes()
    for text, latin1 in ((b"A Test Rip", b"A T\xe9st Rip"), (CHAPTERS[0][2].encode(), b"\xc9" + CHAPTERS[0][2].encode()[1:])):
        assert len(text) == len(latin1) and data.count(text) == 1  # the same length: no size to mend
        data = data.replace(text, latin1)
    src = tmp_path / "latin1.mkv"
    src.write_bytes(data)
    with pytest.raises(UnicodeDecodeError):  # what PyAV does by default
        av.open(str(src)).close()
    proc = run_job(file_job_env(tmp_path, src, JOB_CONTAINER="mkv"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    with av.open(str(tmp_path / "bucket" / "output" / "clip.mp4"), format="matroska") as out:  # an MKV at that name
        assert out.metadata["title"] == "A T\ufffdst Rip"
        assert out.chapters()[0]["metadata"]["title"] == "\ufffd" + CHAPTERS[0][2][1:]
    assert probe_for_segments(str(src))[1] is None  # read, not a crash: its SRT, AAC and chapters split


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_a_cue_that_a_later_one_overlaps_ends_where_it_begins(tmp_path, suffix):
    """MP4 shows one cue at a time. FFmpeg's muxer, handed a cue that starts before the last one
    ends, moved it to that end: the second cue came 2 s late. Each cue now ends where the next
    begins (SRT from Matroska, converted; ffmpeg's mov_text in MP4, copied)."""
    from gpu_job.media import pipeline
    from tests.support.clips import make_subtitled, shown_cues

    cues = [(1.0, 5.0, "a long one, overlapped by"), (3.0, 4.0, "a short one"), (6.0, 7.0, "the last")]
    src = make_subtitled(tmp_path / f"film{suffix}", seconds=8, cues=cues)
    pipeline.process(src, tmp_path / "one.mp4", pipeline.Plan(), 8.0)
    assert [(start / 1e6, end / 1e6, text.decode()) for start, end, text in shown_cues(tmp_path / "one.mp4")] == \
        [(1.0, 3.0, cues[0][2]), (3.0, 4.0, cues[1][2]), (6.0, 7.0, cues[2][2])]
