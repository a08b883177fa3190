"""What a job refuses before any heavy work (issue 9 item 5): inputs too long, timelines with absurd
gaps, output frames over the pixel budget. Each is bad input (exit 65, never retried), said in words
that name the limit and the setting that moves it.

The rules, from the probe's measurements (gpu_job.media.probe.Timeline):
- duration: the video's span by its timestamps, and the longest duration its headers declare
  (container or stream; an audio track that runs on counts too), must be at most max_duration_s.
- gaps: no two consecutive frames may be further apart than
  max(MAX_GAP_FLOOR_S, MAX_GAP_INTERVALS x the typical interval), the typical interval being the
  lower median of all intervals, which one gap cannot move. Real footage, screen recordings and
  slideshows stay far inside it; what breaks it is a clock jump (a camera's wall-clock timestamps
  across a reboot, a concatenation of recordings made days apart), where the output would hold one
  frame for the whole gap: at 60 fps a 30-day gap is 155 million copies of one picture. A single
  interval (a two-frame file) has no typical interval to compare with; the duration rule bounds it.
- pixels: output width x height (input size x upscale) must be at most max_output_pixels. Below it,
  the upscaler tiles within its device's memory (gpu_job.models.upscaler), so no other size is refused.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from gpu_job.media.probe import Timeline
from vastdrop.errors import BadInputError
from vastdrop.manifest import MediaFacts

MAX_GAP_FLOOR_S = 600.0  # ten minutes without a frame, inside footage: not a pause, a clock jump
MAX_GAP_INTERVALS = 1000  # ... or a thousand typical frame intervals, for sparse time-lapses and slideshows
UPSCALES = (1, 2, 3, 4)


@dataclass(frozen=True)
class Limits:
    max_duration_s: float
    max_output_pixels: int
    upscale: int = 1


def check(facts: MediaFacts, timeline: Timeline, limits: Limits) -> None:
    """Raise BadInputError for the first bound the input breaks."""
    _check_pixels(facts, limits)
    _check_duration(timeline, limits)
    _check_gaps(timeline)


def check_claims(facts: MediaFacts, declared_s: float, limits: Limits) -> None:
    """The bounds that the headers alone can break (the output's pixels, the declared duration): a
    whole job checks them before it starts, and the rest as its measure reads on
    (gpu_job.media.measuring)."""
    _check_pixels(facts, limits)
    _check_declared(declared_s, limits)


def _span(seconds: float) -> str:
    """2592000.08 -> '30 days, 0:00:00 (2592000 s)': readable at a glance, exact for a script."""
    whole = dt.timedelta(seconds=round(seconds))
    return f"{whole} ({seconds:.0f} s)" if seconds >= 60 else f"{seconds:.3f} s"


def _check_pixels(facts: MediaFacts, limits: Limits) -> None:
    w, h, k = facts.width, facts.height, limits.upscale
    if w * k * h * k <= limits.max_output_pixels:
        return
    fitting = [f for f in UPSCALES if w * f * h * f <= limits.max_output_pixels]
    hint = f"; x{max(fitting)} fits" if fitting else ""
    raise BadInputError(
        f"output frame {w * k}x{h * k} ({w * k * h * k / 1e6:.1f} MP, {w}x{h} upscaled x{k}) is over the "
        f"pixel budget of {limits.max_output_pixels / 1e6:.1f} MP (JOB_MAX_OUTPUT_PIXELS={limits.max_output_pixels}){hint}"
    )


def _check_duration(timeline: Timeline, limits: Limits) -> None:
    limit = _limit(limits)
    if timeline.span_s > limits.max_duration_s:
        read = "" if timeline.complete else "at least "  # the measure stopped once it was sure
        message = (f"the video's timestamps span {read}{_span(timeline.span_s)} over "
                   f"{'its first ' if read else ''}{timeline.frames} frames, more than {limit}")
        if timeline.largest_gap_s > timeline.span_s / 2:
            message += f": {_gap(timeline)} makes up most of it"
        raise BadInputError(message)
    _check_declared(timeline.declared_s, limits)


def _check_declared(declared_s: float, limits: Limits) -> None:
    if declared_s > limits.max_duration_s:
        raise BadInputError(f"the file's headers declare a duration of {_span(declared_s)}, more than {_limit(limits)}")


def _limit(limits: Limits) -> str:
    return f"the limit of {_span(limits.max_duration_s)} (JOB_MAX_DURATION_S={limits.max_duration_s:g})"


def _gap(timeline: Timeline) -> str:
    return (f"a gap of {_span(timeline.largest_gap_s)} after frame {timeline.gap_after_frame} "
            f"(at {timeline.gap_at_s:.3f} s)")


def gap_limit_s(timeline: Timeline) -> float:
    return max(MAX_GAP_FLOOR_S, MAX_GAP_INTERVALS * timeline.typical_interval_s)


def _check_gaps(timeline: Timeline) -> None:
    if timeline.frames < 3:  # one interval or none: nothing to call typical
        return
    limit = gap_limit_s(timeline)
    if timeline.largest_gap_s > limit:
        raise BadInputError(
            f"the video's timestamps jump: {_gap(timeline)}, where its frames are {timeline.typical_interval_s:.3f} s "
            f"apart; gaps over {_span(limit)} are refused (the output would hold one frame for all of it)"
        )
