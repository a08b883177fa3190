"""Jobs run as segments (issue 12): a long input is processed as several segments at once, each its
own job on its own instance, and joined into one result without the result passing through here.

- split: when a job would launch and `segment_s` is set, the input is probed (its duration and
  streams, read through the same URL a job gets). Longer than segment_s, and made only of what
  joins seamlessly (one video, audio that is copied), it becomes `split`: one segment job per span
  of about segment_s seconds, each claimed in the ledger, then launched. Otherwise it runs as one job.
- a segment is an ordinary job (launch, retries, preemptions, verification, the reaper): only its
  result goes elsewhere. Its host writes a fragmented-MP4 media segment into its own staging; once
  verified (its codec configuration too: unjoinable), it is published into the whole job's staging
  (Layout.segment_key), with its manifest. A published segment is not redone: its record is
  `succeeded`, in a ledger that outlives restarts, replays and cold starts. Only one whose
  published result left the staging before the join (a lifecycle rule) runs again (_redo).
- join: once every segment succeeded, the result is one multipart upload of server-side copies
  (vastdrop.join): the first segment whole, then each later one without its init segment (the
  same in every segment: checked, codec configuration by codec configuration). The final manifest
  is written last and lists the segments with their instances, timings and costs. Segment 0 alone
  carries the chapters (a chapter track the others lack: vastdrop.fmp4.follows).
- a segment that fails for good fails the whole job; the other segments are stopped.
"""

from __future__ import annotations

import logging
from fractions import Fraction

from handlers import finished, jobs
from handlers.deps import ControlConfig, Deps
from vastdrop import logs
from vastdrop.errors import PermanentError, TransientError
from vastdrop.fmp4 import MAX_INIT_BYTES, NotASegment, follows, init_length, sample_descriptions
from vastdrop.layout import content_type_for
from vastdrop.ledger.base import JobRecord
from vastdrop.manifest import Manifest, MediaFacts, MediaPair, ResultRef, reported_number
from vastdrop.states import JobState
from vastdrop.storage.local import file_url_to_path

logger = logging.getLogger(__name__)
S = JobState
MAX_SEGMENTS = 1000  # a join is one multipart upload (10,000 parts); more instances than anyone's caps
PROBE_URL_EXPIRY_S = 900
MIN_SEGMENT_S = 1.0  # shorter would be mostly each instance's start-up
# A verified segment whose result left the job's staging before the join (a lifecycle rule shorter
# than the job) is redone, at most this many times: a store that keeps deleting it fails the job.
MAX_SEGMENT_REDOS = 2
MAX_SIBLINGS_ASKED = 8  # a segment's codec configuration is checked against a published one of these


def segment_job_id(parent_id: str, attempt: int, index: int) -> str:
    """A segment's job id: its whole job's, the run's attempt (a `replay --force` makes new ones) and its index."""
    return f"{parent_id}-{attempt}s{index:04d}"


def may_split(record: JobRecord, deps: Deps) -> bool:
    """Whether a job about to launch for the first time should first be considered for segments."""
    return deps.config.segment_s > 0 and record.parent_id is None and record.segments is None


def spans(duration_s: float, segment_s: float) -> list[tuple[str, str | None]]:
    """About `segment_s` each (never more than MAX_SEGMENTS), as exact decimal seconds from the
    first picture; the last runs to the end. The job puts each frame in exactly one of them."""
    count = min(MAX_SEGMENTS, max(1, round(duration_s / max(segment_s, MIN_SEGMENT_S))))
    step = Fraction(duration_s) / count
    cuts = [f"{float(step * i):.3f}" for i in range(count)]
    return [(cuts[i], cuts[i + 1] if i + 1 < count else None) for i in range(count)]


def split(record: JobRecord, deps: Deps) -> tuple[bool, JobRecord | None]:
    """(split?, the record): the job split into segments (now `split`, its segments launched), or
    left to run as one job (recorded, so this is decided once)."""
    log = jobs.log_for(record)
    why = why_not(record.params)
    if why is not None:
        log.info("not split into segments: %s", why)
        return False, deps.ledger.update(record.job_id, record.version, segments=0) or record
    try:
        duration_s, unsplittable = _probe(record, deps)
    except PermanentError as exc:  # run as one job: its manifest will say what is wrong with the input
        log.info("not split into segments: the input cannot be probed (%s)", logs.bounded(exc, 200))
        return False, deps.ledger.update(record.job_id, record.version, segments=0) or record
    except TransientError as exc:  # the store, for now: asked again by the reaper
        log.warning("cannot probe the input for segments yet: %s", logs.bounded(exc, 200))
        return True, deps.ledger.update(record.job_id, record.version, error_kind="waiting",
                                        error=logs.bounded(f"probing for segments: {exc}", 500),
                                        next_attempt_at=deps.clock() + deps.config.capacity_wait_s)
    pieces, reason = spans_for(duration_s, unsplittable, deps.config)
    if not pieces:
        log.info("not split into segments: %s", reason)
        return False, deps.ledger.update(record.job_id, record.version, segments=0) or record
    # The plan is recorded with the split, and the segments are claimed from it (now, or by the
    # reaper after a crash in between): a segment's span is always the one its job was split with.
    parent = deps.ledger.transition(record.job_id, S.QUEUED, S.SPLIT, segments=len(pieces), launched_at=deps.clock(),
                                    segment={"spans": [list(p) for p in pieces]}, next_attempt_at=None,
                                    error=None, error_kind=None)
    if parent is None:
        return True, None
    log.info("split into %d segments of about %.0f s (%.1f s in all)", len(pieces),
             duration_s / len(pieces), duration_s)
    _claim_missing(parent, deps)
    return True, parent


def _claim_missing(parent: JobRecord, deps: Deps) -> list[JobRecord]:
    """Every segment of the split job's plan, claimed (and launched) if it is not yet."""
    spans_ = (parent.segment or {}).get("spans") or []
    children = []
    for index, (start_s, end_s) in enumerate(spans_):
        child_id = segment_job_id(parent.job_id, parent.attempt, index)
        child = JobRecord(
            job_id=child_id, bucket=parent.bucket, key=parent.key, input_url=parent.input_url,
            input_etag=parent.input_etag, input_size=parent.input_size, params=parent.params,
            parent_id=parent.job_id, segment={"index": index, "count": len(spans_), "start_s": start_s,
                                              "end_s": end_s, "parent_attempt": parent.attempt})
        found = deps.ledger.get(child_id)  # every reaper tick: read first, claim (a write) only what is missing
        if found is None and deps.ledger.claim(child):
            found = jobs.launch(deps.ledger.get(child_id) or child, deps, S.QUEUED) or deps.ledger.get(child_id)
        children.append(found if found is not None else deps.ledger.get(child_id))
    return children


def belongs(child: JobRecord, deps: Deps) -> bool:
    """Whether a segment's job is still wanted: its whole job is split, in the run it was made for."""
    parent = deps.ledger.get(child.parent_id) if child.parent_id else None
    return parent is not None and parent.state == S.SPLIT and parent.attempt == int(child.segment["parent_attempt"])


def why_not(params: dict) -> str | None:
    """Why a job with these parameters is never split, whatever its input, or None."""
    if jobs.container_in(params) != "mp4":
        return "segments are joined as fragmented MP4: the result's container must be mp4"
    return None


def spans_for(duration_s: float, unsplittable: str | None, cfg: ControlConfig) -> tuple[list[tuple[str, str | None]], str]:
    """(the spans an input of this duration is split into, or none; why not) for an input the probe
    found `unsplittable` (a reason) or not. `run` splits by it, and `plan` prices by it."""
    if unsplittable is None and duration_s > cfg.max_duration_s:
        # A header's claim, not yet checked: the one job refuses such an input once, cheaply, where
        # segments would rent up to MAX_SEGMENTS instances to refuse it each.
        unsplittable = f"it claims {duration_s:.0f} s, more than the {cfg.max_duration_s:.0f} s a job may last"
    pieces = spans(duration_s, cfg.segment_s) if unsplittable is None else []
    if len(pieces) < 2:
        return [], unsplittable or f"{duration_s:.1f} s is not longer than the segment length"
    return pieces, ""


def _probe(record: JobRecord, deps: Deps) -> tuple[float, str | None]:
    """(duration_s, why it cannot be split or None), read through the URL a job gets (a presigned GET
    reads only the header) by the probe the composition root gives: the watcher's PyAV
    (watcher.mediaprobe), the Lambda's reader of MP4 indexes (vastdrop.mp4probe)."""
    if deps.probe is None:
        raise PermanentError("no media probe was given")
    url = deps.inputs.job_get_url(record.key, PROBE_URL_EXPIRY_S)
    source = str(file_url_to_path(url)) if url.startswith("file://") else url
    return deps.probe(source)


# ---- the whole job, while its segments run ------------------------------------------------------

def advance(parent: JobRecord, deps: Deps) -> str:
    """One look at a split job: joined once every segment succeeded, failed once one failed."""
    children = _claim_missing(parent, deps)  # normally all there: claimed with the split
    if any(child is None for child in children) or len(children) != parent.segments:
        return _fail(parent, [c for c in children if c], "internal", "a segment's record is missing from the ledger", deps)
    failed = next((c for c in children if c.state in (S.FAILED, S.CANCELLED)), None)
    if failed is not None:
        index = failed.segment["index"]
        return _fail(parent, children, failed.error_kind or "internal",
                     f"segment {index} ({failed.segment['start_s']} s on) failed: {failed.error or failed.state.value}", deps)
    if all(c.state == S.SUCCEEDED for c in children):
        return _join(parent, children, deps)
    return "running"


def _redo(parent: JobRecord, children: list[JobRecord], gone: list[JobRecord], deps: Deps) -> str:
    """Segments whose verified result left the staging before the join run again, in a new attempt
    each (new staging keys); the others stay done. Bounded: see MAX_SEGMENT_REDOS."""
    redos = [(child, int(child.segment.get("redone", 0)) + 1) for child in gone]
    for child, redone in redos:  # all checked before any is launched again: a failed job leaves nothing running
        if redone > MAX_SEGMENT_REDOS:
            return _fail(parent, children, "internal",
                         f"segment {child.segment['index']}'s verified result left the job's staging {redone} times "
                         "before the join: something deletes staging sooner than the job runs (a lifecycle rule too "
                         "short for it; README, 'Staging and lifecycle rules')", deps)
    for child, redone in redos:
        index, fresh = child.segment["index"], child.attempt + 1
        requeued = deps.ledger.transition(
            child.job_id, S.SUCCEEDED, S.QUEUED, attempt=fresh, first_attempt=fresh, preemptions=0,
            segment={**child.segment, "redone": redone, "attempts_before": _attempts(child)},
            result_etag=None, finished_at=None, instance_id=None,
            next_attempt_at=None, error_kind=None,
            error="its verified result left the job's staging before the join (expired?): redone")
        if requeued is not None:
            jobs.log_for(child).warning("segment %d redone: its verified result left the job's staging before the join",
                                        index)
            jobs.launch(requeued, deps, S.QUEUED)
    return "running"


def on_segment_done(child: JobRecord, deps: Deps) -> None:
    """A segment succeeded (join now if it was the last) or failed (the job fails now): the reaper would, a tick later."""
    parent = deps.ledger.get(child.parent_id) if child.parent_id else None
    if parent is not None and parent.state == S.SPLIT:
        advance(parent, deps)


def _fail(parent: JobRecord, children: list[JobRecord], kind: str, message: str, deps: Deps) -> str:
    now = deps.clock()
    for child in children:
        child = deps.ledger.get(child.job_id) if child is not None else None  # as it is now, not as first seen
        for _ in range(5):  # its state may move meanwhile (a relaunch): read again until it is stopped
            if child is None or child.state.is_terminal():
                break
            jobs.stop_instance(child, child.instance_id, deps, "another segment of its job failed")
            if deps.ledger.transition(child.job_id, child.state, S.CANCELLED, finished_at=now,
                                      error="another segment of its job failed") is not None:
                break
            child = deps.ledger.get(child.job_id)
        if child is not None:
            jobs.remove_staging(child, deps)  # nothing of a failed job stays (the failed segment's included)
    failed = deps.ledger.transition(parent.job_id, S.SPLIT, S.FAILED, error_kind=kind, error=logs.bounded(message, 500),
                                    finished_at=now, cost=_cost(deps, parent))
    if failed is None:
        return "lost race"
    jobs.log_for(parent).error("failed: %s", logs.bounded(message, 500))
    jobs.remove_staging(failed, deps)
    return "failed"


def _cost(deps: Deps, parent: JobRecord) -> float:
    children = (deps.ledger.get(segment_job_id(parent.job_id, parent.attempt, i)) for i in range(parent.segments or 0))
    return round(sum(c.cost for c in children if c), 9)


def _join(parent: JobRecord, children: list[JobRecord], deps: Deps) -> str:
    t0 = deps.clock()
    layout = jobs.layout_for(parent, deps)
    pieces: list[tuple[str, int, int, str | None]] = []
    manifests: list[Manifest] = []
    first_config: list[bytes] | None = None
    gone: list[JobRecord] = []  # verified, then left the staging (a lifecycle rule): redone, not joined
    for child in children:
        index = child.segment["index"]
        key = layout.segment_key(parent.job_id, parent.attempt, index)
        info = deps.outputs.head(key)
        manifest = finished.load_manifest(layout.manifest_key(key), deps)
        if info is None or info.etag != child.result_etag or manifest is None:
            gone.append(child)
            continue
        if not isinstance(manifest, Manifest):
            return _fail(parent, children, "transient", f"segment {index}'s verified result is missing or changed", deps)
        if gone:
            continue  # the redone are joined later: their siblings' configurations are read then
        try:
            init, config = _init_of(key, info.size, info.etag, deps)
        except NotASegment as exc:
            return _fail(parent, children, "internal", f"segment {index} is not a media segment: {exc}", deps)
        if first_config is None:
            first_config = config
        elif not follows(first_config, config):
            return _fail(parent, children, "internal",
                         f"segment {index} was encoded with another codec configuration than segment 0 "
                         "(different encoders or hosts): the joined file would not play", deps)
        pieces.append((key, 0 if index == 0 else init, info.size, info.etag))
        manifests.append(manifest)
    if gone:
        return _redo(parent, children, gone, deps)
    final_key = jobs.result_key(parent, deps)
    joined = deps.outputs.compose(final_key, pieces, content_type_for(jobs.container_of(parent)))
    join_s = deps.clock() - t0
    final = _final_manifest(parent, children, manifests, joined, final_key, join_s, deps)
    deps.outputs.put_bytes(jobs.manifest_key(parent, deps), final.to_json(), "application/json")
    done = deps.ledger.transition(parent.job_id, S.SPLIT, S.SUCCEEDED, result_etag=joined.etag, finished_at=deps.clock(),
                                  cost=_cost(deps, parent), error=None, error_kind=None)
    if done is None:
        return "lost race"
    jobs.remove_staging(done, deps)
    jobs.log_for(parent).info("succeeded: %d segments joined as %s (%d bytes) in %.1f s", len(children), joined.etag,
                              joined.size, join_s)
    return "succeeded"


def _init_of(key: str, size: int, etag: str | None, deps: Deps) -> tuple[int, list[bytes]]:
    """(the length of the init segment at the start of `key`, its tracks' codec configurations)."""
    if size == 0:
        raise NotASegment("it is empty")
    head = deps.outputs.read_range(key, 0, min(size, MAX_INIT_BYTES), etag)
    init = init_length(head)
    return init, sample_descriptions(head[:init])


def unjoinable(child: JobRecord, manifest: Manifest, deps: Deps) -> str | None:
    """Why a segment's staged result, verified but not yet published, could not be joined with its
    published siblings (not a media segment, or another codec configuration), or None.

    Checked before it is published, so that a segment made otherwise (an encoder that differs on
    that host, a hostile host) is redone alone, at once, rather than found at the join after every
    segment has been paid for. The join checks again: two segments verified at the same moment see
    no published sibling."""
    key = jobs.staged_result_key(child, deps)
    try:
        _, config = _init_of(key, manifest.result.size, manifest.result.etag, deps)
    except NotASegment as exc:
        return f"the segment's result is not a media segment: {exc}"
    for sibling in _published_siblings(child, deps):
        sibling_key = jobs.result_key(sibling, deps)
        info = deps.outputs.head(sibling_key)
        if info is None:
            continue  # the join will say so
        try:
            _, published = _init_of(sibling_key, info.size, info.etag, deps)
        except NotASegment:
            continue  # the join will say so
        own, other = child.segment["index"], sibling.segment["index"]
        joins = follows(config, published) if own == 0 else follows(published, config) if other == 0 \
            else config == published
        if not joins:
            encoder = logs.bounded(str(manifest.engine.encoder), 40)
            return (f"the segment was encoded (by {encoder}) with another codec configuration than the published "
                    f"segment {other}: the joined file would not play")
        return None  # the published segments were all checked alike: one is enough
    return None


def _published_siblings(child: JobRecord, deps: Deps):
    """Published segments of the same job, nearest first, among at most MAX_SIBLINGS_ASKED (a ledger
    read each: a job of 1,000 segments is not read whole for each one verified; the join checks all)."""
    span = child.segment or {}
    own, count = int(span.get("index") or 0), int(span.get("count") or 0)
    nearest = sorted((i for i in range(count) if i != own), key=lambda i: (abs(i - own), i))
    for index in nearest[:MAX_SIBLINGS_ASKED]:
        sibling = deps.ledger.get(segment_job_id(child.parent_id, int(span["parent_attempt"]), index))
        if sibling is not None and sibling.state == S.SUCCEEDED:
            yield sibling


def _final_manifest(parent: JobRecord, children: list[JobRecord], manifests: list[Manifest], joined,
                    final_key: str, join_s: float, deps: Deps) -> Manifest:
    first = manifests[0]
    # Each segment measured its own share of the input and wrote its own share of the result.
    source, output = _summed([m.media.input for m in manifests]), _summed([m.media.output for m in manifests])
    notes = list(dict.fromkeys(note for m in manifests for note in m.engine.notes))
    totals = [reported_number(m.timings_s.get("total")) or 0.0 for m in manifests]
    return Manifest(
        job_id=parent.job_id, attempt=parent.attempt, status="succeeded",
        input=first.input.model_copy(update={"url": parent.input_url}),
        # The sha256 of the whole would mean reading it all back: each segment's is listed instead.
        result=ResultRef(url=deps.outputs.url(final_key), etag=joined.etag, size=joined.size, sha256=None,
                         content_type=content_type_for(jobs.container_of(parent))),
        params=parent.params, media=MediaPair(input=source, output=output),
        engine=first.engine.model_copy(update={"notes": notes, "input_read": {
            "bytes": sum(_input_read(m) for m in manifests), "of_bytes": first.input.size}}),
        timings_s={"segments_longest": max(totals, default=0.0), "segments_sum": round(sum(totals), 3),
                   "join": round(join_s, 3), "total": round(deps.clock() - (parent.launched_at or parent.created_at), 3)},
        segments=[_entry(child, manifest) for child, manifest in zip(children, manifests, strict=True)],
        join={"segments": len(children),
              "method": "concatenated files" if deps.outputs.is_local else "multipart upload of server-side copies"},
    )


def _entry(child: JobRecord, manifest: Manifest) -> dict:
    span = child.segment or {}
    result = manifest.result
    return {"index": span.get("index"), "start_s": span.get("start_s"), "end_s": span.get("end_s"),
            "job_id": child.job_id, "attempts": _attempts(child), "preemptions": child.preemptions,
            "redone": span.get("redone", 0),
            "instance_id": child.instance_id, "gpu": child.gpu_name, "cost": round(child.cost, 6),
            "frames": manifest.media.output.frames if manifest.media.output else None,
            "timings_s": manifest.timings_s, "input_read_bytes": _input_read(manifest), "size": result.size if result else None,
            "sha256": result.sha256 if result else None}


def _attempts(child: JobRecord) -> int:
    """The attempts a segment took, those before a redo (_redo starts a new run of attempts) included."""
    return child.attempt - child.first_attempt + 1 + int((child.segment or {}).get("attempts_before") or 0)


def _summed(shares: list[MediaFacts | None]) -> MediaFacts | None:
    if not shares or shares[0] is None:
        return None
    present = [f for f in shares if f is not None]
    frames, duration = sum(f.frames for f in present), sum(f.duration_s for f in present)
    return shares[0].model_copy(update={"frames": frames, "duration_s": round(duration, 6),
                                        "fps": round(frames / duration, 4) if duration > 0 else shares[0].fps})


def _input_read(manifest: Manifest) -> int:
    """The bytes of the input a segment's host says it read (its word: a bounded count, or 0)."""
    read = getattr(manifest.engine, "input_read", None)
    return int(min(max(reported_number(read.get("bytes")) or 0.0, 0.0), 1e15)) if isinstance(read, dict) else 0


