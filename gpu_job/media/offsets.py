"""Where each stream starts in the result: the rule that keeps audio (and subtitles, chapters) where
they were relative to the picture (issue 10 item 5).

The result's clock starts at the earliest start of any stream it carries (video, audio, subtitles),
and every stream, the video included, moves back by that same amount. So a soundtrack that starts
0.5 s before the first picture still does, and so does one that starts 0.5 s after; nothing gets a
negative timestamp (which MP4 would hide behind an edit list, cutting the audio that came first).
"""

from __future__ import annotations

from fractions import Fraction

import av

TIMED_KINDS = ("video", "audio", "subtitle")  # streams with packets on the timeline


def origin(container: av.container.InputContainer) -> Fraction:
    """Seconds: the earliest declared start among the container's timed streams (0 when none says)."""
    starts = [Fraction(s.start_time) * Fraction(s.time_base) for s in container.streams
              if s.type in TIMED_KINDS and s.start_time is not None and s.time_base]
    return min(starts, default=Fraction(0))


def shift(container: av.container.InputContainer, time_base: Fraction | None) -> int:
    """Ticks of `time_base` to subtract from a copied stream's timestamps."""
    return round(origin(container) / Fraction(time_base)) if time_base else 0


def video_lead(vin: av.VideoStream) -> Fraction:
    """Seconds between the result's start and its first picture (0 unless another stream starts first)."""
    start = Fraction(vin.start_time or 0) * Fraction(vin.time_base or 0)
    return start - origin(vin.container)
