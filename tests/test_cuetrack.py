"""A segment's text track (gpu_job.media.cuetrack): the chain of samples for its span, and the
fragments rewritten with it. The joins themselves are tests/test_segments.py's."""

from __future__ import annotations

from fractions import Fraction

import av
import pytest

from gpu_job.media.cuetrack import EMPTY, MAX_SAMPLE_TICKS, CueChain, Sample, micro, write_tracks
from gpu_job.media.samples import make_clip
from vastdrop.fmp4 import NotASegment

S = 1_000_000  # a second, in the tracks' microseconds


def test_a_cue_shows_until_its_end_or_the_next_cue_and_the_chain_covers_the_span_exactly():
    chain = CueChain(10 * S, 20 * S, reach=30 * S)
    for start, duration, text in [(12, 2, b"a"), (13, 5, b"b"), (19, 4, b"c"), (25, 1, b"next segment's")]:
        chain.add(start * S, duration * S, text)
    assert chain.samples() == [Sample(10 * S, 2 * S, EMPTY), Sample(12 * S, S, b"a"), Sample(13 * S, 5 * S, b"b"),
                               Sample(18 * S, S, EMPTY), Sample(19 * S, S, b"c")]  # cut where the next segment begins


def test_the_look_back_takes_only_cues_before_the_span_and_a_cue_across_it_shows_from_its_start():
    chain = CueChain(10 * S, None, reach=30 * S)
    chain.before = True
    chain.add(-25 * S, 60 * S, b"older than the reach: the segment before cut it, and said so")
    chain.add(4 * S, 3 * S, b"over")
    chain.add(8 * S, 4 * S, b"showing at the start")
    chain.add(11 * S, S, b"the segment's own: not the look back's")
    chain.before = False
    chain.add(9 * S, 9 * S, b"before the span: the look back's")
    chain.add(11 * S, S, b"own")
    assert chain.samples() == [Sample(10 * S, S, b"showing at the start"), Sample(11 * S, S, b"own")]


def test_a_cue_cut_at_the_end_that_the_next_segment_cannot_see_is_named():
    chain = CueChain(0, 100 * S, reach=30 * S)
    chain.add(50 * S, 60 * S, b"a long sign")  # starts 50 s before the end: beyond the next one's look back
    chain.add(95 * S, 10 * S, EMPTY)  # an empty sample is nothing lost
    chain.samples()
    assert chain.cut == []  # the sign ends where the empty sample begins
    chain.cues.pop()
    chain.samples()
    assert chain.cut == [(50 * S, 110 * S)]
    near = CueChain(0, 100 * S, reach=30 * S)
    near.add(80 * S, 30 * S, b"seen again by the next segment")
    near.samples()
    assert near.cut == []


def test_a_gap_longer_than_a_fragment_sample_may_last_is_cut_in_pieces():
    chain = CueChain(0, None, reach=30 * S)
    chain.add(MAX_SAMPLE_TICKS + 5 * S, S, b"late")
    assert [s.duration for s in chain.samples()] == [MAX_SAMPLE_TICKS, 5 * S, S]


def test_ticks_become_microseconds_as_the_muxer_rounds_them():
    assert micro(1, Fraction(1, 90000)) == 11  # 11.1
    assert micro(9, Fraction(1, 2_000_000)) == 5 and micro(-9, Fraction(1, 2_000_000)) == -5  # halves away from 0
    assert micro(1500, Fraction(1, 1000)) == 1_500_000


def test_a_file_that_is_not_fragmented_is_refused(tmp_path):
    plain = make_clip(tmp_path / "plain.mp4", width=64, height=48, fps=12, seconds=1)
    with av.open(str(plain)) as container:
        video_scale = int(1 / Fraction(container.streams.video[0].time_base))
    with pytest.raises(NotASegment, match="no fragment"):
        write_tracks(plain, {2: [Sample(0, S, EMPTY)]}, 1, video_scale)
