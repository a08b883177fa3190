"""The input's measure, beside the processing (issue 11 item 4).

A whole job no longer waits for its input to download, nor for every packet to be counted, before it
decodes. The measure that counts every packet (probe.measure) runs in a thread of its own, on the
same bytes as they arrive (gpu_job.ranged_input sweeps the whole input in order), while the pipeline
decodes behind it. The measure only demuxes, so it runs ahead of the decoder.

What the pipeline needs of the measure is the input's duration, and only at its end: the retimed
output holds the frames k < count, and the count follows from the duration. So the measure
publishes the span it has read so far, a lower bound (Duration.grow), and the retime waits only
when it would pass it (Duration.covers). The frames are the very frames a measure-first job makes.

What the bounds refuse is still refused, and no output frame is made past what they allow:
- the headers' claims (the output's pixels, the declared duration) are checked before anything
  starts (bounds.check_claims), as is the first frame's decoding (probe.header). An input whose
  headers claim more than JOB_MAX_DURATION_S is measured first, as before, so that the refusal
  names the cause: a gap in its timestamps, or a length really over the limit;
- the published span stops short of the limit, and before any gap of more than
  bounds.MAX_GAP_FLOOR_S between frames (which may be refused, but only once the typical interval
  is known, at the end), until the measure has ended and bounds.check has judged the whole.
The decoder waits on the same bound (Duration.reach): a decoded frame goes on only once the measure
has read past it, so a plain transcode of a recording that runs past the limit stops there too.
A failure of the measure (a bound, a corrupt stream, the input's bytes) reaches the pipeline as the
job's error: through those waits, or the check after each output frame (Measured.check).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from gpu_job.media import bounds, probe
from gpu_job.media.probe import Source, Timeline
from vastdrop.manifest import MediaFacts

# How long closing waits for the measure's thread (blocked on bytes that may never come; its results
# are unused by then, and a read after the input is closed fails it).
CLOSE_WAIT_S = 2.0


class Duration:
    """The input's duration in seconds, rounded as MediaFacts.duration_s has it: known at once (a
    measured input), or learned as a measure reads on: a lower bound (`floor`) until it ends."""

    def __init__(self, seconds: float | None = None) -> None:
        self._cond = threading.Condition()
        self._floor = 0.0 if seconds is None else seconds
        self._exact = seconds
        self._error: BaseException | None = None

    @property
    def exact(self) -> float | None:
        return self._exact

    def grow(self, seconds: float) -> None:
        with self._cond:
            if seconds > self._floor:
                self._floor = seconds
                self._cond.notify_all()

    def finish(self, seconds: float) -> None:
        with self._cond:
            self._floor = self._exact = seconds
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        with self._cond:
            self._error = error
            self._cond.notify_all()

    def check(self) -> None:
        """Raise the measure's failure, if it failed."""
        if self._error is not None:
            raise self._error

    def wait(self) -> float:
        """The exact duration, once the measure has ended (or its failure)."""
        with self._cond:
            while self._exact is None and self._error is None:
                self._cond.wait()
        self.check()
        return self._exact  # type: ignore[return-value]

    def reach(self, seconds: float) -> None:
        """Wait until the measure has read this far into the input, or has ended: nothing is
        processed past what it has judged (its floor stops short of the limit and of a suspect gap)."""
        if self._exact is not None or seconds <= self._floor:  # the common case, without the lock
            self.check()
            return
        with self._cond:
            while self._exact is None and self._error is None and seconds > self._floor:
                self._cond.wait()
        self.check()

    def covers(self, k: int, count_for: Callable[[float], int]) -> bool:
        """Whether item k is before the count that this duration gives (`count_for` never falls as
        the duration grows): decided on the floor while it can be, else once the measure is further."""
        with self._cond:
            while True:
                if self._error is not None:
                    raise self._error
                if k < count_for(self._floor):
                    return True
                if self._exact is not None:
                    return k < count_for(self._exact)
                self._cond.wait()


class Measured:
    """The input's facts and timeline: measured already (`done`), or being measured beside the
    processing (`alongside`). `facts` are the best known now: the headers' until the measure has
    read the whole (refused or not)."""

    def __init__(self, facts: MediaFacts, duration: Duration, limits: bounds.Limits, declared_s: float) -> None:
        self.facts, self.duration, self.limits, self.declared_s = facts, duration, limits, declared_s
        self._timeline: Timeline | None = None
        self._measured_first = False
        self._stop = threading.Event()

    @classmethod
    def done(cls, facts: MediaFacts, timeline: Timeline, limits: bounds.Limits,
             duration_s: float | None = None) -> Measured:
        """`duration_s`: the timeline's, when it is not the facts' (a segment's facts are its share)."""
        measured = cls(facts, Duration(facts.duration_s if duration_s is None else duration_s), limits,
                       timeline.declared_s)
        measured._timeline = timeline
        measured._measured_first = True
        return measured

    @classmethod
    @contextmanager
    def alongside(cls, source: Source, limits: bounds.Limits) -> Iterator[Measured]:
        """The headers read now (and the first frame decoded); the measure in a thread until the
        block ends. check_claims() says whether processing may start."""
        facts, declared = probe.header(source)
        measured = cls(facts, Duration(), limits, declared)
        thread = threading.Thread(target=measured._measure, args=(source,), name="vastdrop-measure", daemon=True)
        thread.start()
        try:
            yield measured
        finally:
            measured._stop.set()
            thread.join(CLOSE_WAIT_S)

    @property
    def duration_s(self) -> float:
        """The duration as best known now: measured, else the headers' claim."""
        exact = self.duration.exact
        return self.facts.duration_s if exact is None else exact

    def check_claims(self) -> None:
        """BadInputError unless the input may be processed now: measured, its bounds (done); else
        the headers' claims. An input whose headers claim too long a duration waits for its measure,
        so that the refusal names the cause (a gap in its timestamps, or a length really too long)."""
        if self._measured_first:
            assert self._timeline is not None
            bounds.check(self.facts, self._timeline, self.limits)
            return
        if self.declared_s > self.limits.max_duration_s:
            self.result()  # refused by its own bounds.check at the latest
        bounds.check_claims(self.facts, self.declared_s, self.limits)

    def check(self) -> None:
        """Raise the measure's failure, if it failed (after each output frame: cheap)."""
        self.duration.check()

    def result(self) -> tuple[MediaFacts, Timeline]:
        """The measured facts and timeline, bounds checked: waits for the measure to end."""
        self.duration.wait()
        assert self._timeline is not None
        return self.facts, self._timeline

    def _measure(self, source: Source) -> None:
        limits, read_s = self.limits, 0.0  # the span published so far

        def on_span(span_s: float) -> bool:
            nonlocal read_s
            if self._stop.is_set() or span_s > limits.max_duration_s:
                return False  # stopped; or refused for sure (the span only grows): say so now
            if span_s - read_s > bounds.MAX_GAP_FLOOR_S:
                return True  # past a gap that may be refused: the span stays before it until the end says
            self.duration.grow(span_s)
            read_s = span_s
            return True

        try:
            facts, timeline = probe.measure(source, on_span)
            if self._stop.is_set():
                return
            self.facts, self._timeline = facts, timeline  # what it read, refused or not (the manifest's)
            bounds.check(facts, timeline, limits)
        except BaseException as exc:  # the job's error, raised where the pipeline looks
            self.duration.fail(exc)
            return
        self.duration.finish(facts.duration_s)
