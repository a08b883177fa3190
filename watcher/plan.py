"""`plan`: a dry run. For each pending input, what `run` would launch and what it would cost.

Launches nothing and writes nothing to the ledger: it lists the input prefix, reads the ledger, probes
each pending input with PyAV (a presigned GET for s3://, the file itself for file://), asks the compute
adapter for its offers (one search, shared by every input), and prices each job with vastdrop.pricing
from the stage throughputs of vastdrop.throughput.

The estimate of one job on Vast (every constant below is a planning figure, not a setting):
- loading: the image pull and the container start, billed for storage only (no GPU while loading);
- running (GPU billed): job setup, the input's download, the stages (frames / fps each), the upload;
- storage: for the whole life of the instance, loading included;
- bandwidth: the image and the input down, the result (estimated from its pixels) and logs up.

With `--segment-s`, an input that `run` would split (handlers.segments decides, from the same probe)
is priced as that many instances at once, each loading the image, reading its own span and doing its
share of the stages, encoding with libx264 (a segment's encoder on every host): the time is one
segment's (more in waves when the segments outnumber the instances), the cost all of theirs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from handlers.deps import Deps
from vastdrop import logs
from vastdrop.jobid import job_id_for
from vastdrop.pricing import FREE, Cost, Rates, cost
from vastdrop.states import JobState
from vastdrop.throughput import CPU, Task, fps_for

# Created -> container running on a host that has none of our layers: the image pull and the start. The
# README's "a few minutes"; a slow host's pull (IMAGE_BYTES at its inet_down) takes longer, and counts so.
START_ALLOWANCE_S = 180.0
# What a host pulls for our image: the pytorch/pytorch 2.7.1 CUDA 12.8 runtime base (about 3.5 GB
# compressed on Docker Hub) plus our layers (weights 94 MB, Python packages). A host that has the base
# layers cached pulls far less; we plan on the full pull.
IMAGE_BYTES = 4.5e9
JOB_SETUP_S = 20.0  # in the container before the first frame: imports, CUDA init, model loading
LOCAL_SETUP_S = 5.0  # the local child process: interpreter and torch import
TEARDOWN_S = 3.0  # manifest written -> instance destroyed (the job destroys itself; bench target <= 3 s)
# H.264 at CRF/CQ 18 spends roughly 0.1-0.2 bits per pixel of typical footage; planned at 0.15.
RESULT_BITS_PER_PIXEL = 0.15
HDR10_SIDE_DATA = ("MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL")
AUDIO_BYTES_PER_S = 24_000.0  # audio copied or re-encoded to AAC: up to about 192 kbit/s
LOG_AND_MANIFEST_BYTES = 1e6  # the manifest and the job's log, uploaded after the result
# Vast's inet_down/inet_up: the offer search reference (search_offers.yaml) says MB/s, its instance
# and volume schemas and the CLI's field list say Mbit/s. We read Mbit/s, the slower reading (8x).
INET_BITS_PER_UNIT = 1e6
DEFAULT_INET = 100.0  # an offer that does not say its speed: assumed 100 Mbit/s
PROBE_URL_EXPIRY_S = 900
JOIN_S = 5.0  # the join of a split job: server-side copies, under 0.3 s for 8 segments in bench/segments.py


@dataclass
class Media:
    width: int
    height: int
    fps: Fraction
    frames: int
    duration_s: float
    audio: bool
    frames_estimated: bool = False  # the container did not say: duration x frame rate
    deep: bool = False  # deeper than 8 bits: the job encodes 10 bits (libx265 in software)
    hdr10: bool = False  # HDR10 metadata, which NVENC cannot be handed: libx265 encodes it even there


@dataclass
class Stage:
    task: Task
    frames: float  # frames of work, in the figure's unit (interpolation: x2-equivalent output frames)
    fps: float
    source: str
    guess: bool

    @property
    def seconds(self) -> float:
        return self.frames / self.fps if self.frames else 0.0


@dataclass
class Offer:
    id: Any
    gpu: str
    rates: Rates
    inet_down: float  # Mbit/s
    inet_up: float
    local: bool = False
    other: tuple[str, Rates] | None = None  # the same offer rented the other way (on-demand / interruptible)


@dataclass
class Row:
    key: str
    state: str  # "new", or the ledger state of an unfinished job
    size: int
    media: Media | None = None
    error: str | None = None
    offer: Offer | None = None
    frames_out: int = 0
    stages: list[Stage] = field(default_factory=list)
    loading_s: float = 0.0
    setup_s: float = 0.0
    download_s: float = 0.0
    upload_s: float = 0.0
    teardown_s: float = 0.0
    bytes_down: float = 0.0
    bytes_up: float = 0.0
    cost: Cost = field(default_factory=Cost)
    other_cost: Cost | None = None  # on the offer's `other` rates, the same times and bytes
    # Segments (`--segment-s`): how many instances the job runs on. The times and stages above are then
    # one segment's, and the bytes and costs all of theirs. At most `at_once` run at the same time
    # (the instance cap): more run in waves, one after another.
    segments: int = 1
    at_once: int = 1
    ramp_s: float = 0.0  # Vast paces creates: the last of a wave starts this long after the first
    not_split: str | None = None  # why an input longer than segment_s runs as one job

    @property
    def process_s(self) -> float:
        return sum(stage.seconds for stage in self.stages)

    @property
    def running_s(self) -> float:
        # A whole job processes its input as it arrives (gpu_job.ranged_input): the slower of the two
        # sets the pace. A segment reads its span before it starts (gpu_job.media.segment.measure_window).
        transfer = max(self.download_s, self.process_s) if self.segments == 1 else self.download_s + self.process_s
        return self.setup_s + transfer + self.upload_s + self.teardown_s

    @property
    def total_s(self) -> float:
        return self.loading_s + self.running_s

    @property
    def waves(self) -> int:
        return math.ceil(self.segments / max(1, self.at_once))

    @property
    def wall_s(self) -> float:
        """From launch to the result: one segment's time per wave of segments (the join is seconds)."""
        return self.total_s * self.waves + self.ramp_s + (JOIN_S if self.segments > 1 else 0.0)


@dataclass
class Plan:
    compute: str
    input_url: str
    params: dict[str, Any]
    disk_gb: float | None
    rows: list[Row]
    offer_error: str | None = None

    @property
    def priced(self) -> list[Row]:
        return [r for r in self.rows if r.media is not None and r.offer is not None]

    @property
    def total_cost(self) -> Cost:
        total = Cost()
        for row in self.priced:
            total = total + row.cost
        return total

    @property
    def total_s(self) -> float:
        return sum(r.wall_s for r in self.priced)

    @property
    def other_way(self) -> tuple[str, Cost] | None:
        """What the priced jobs would cost rented the other way, when every offer can be."""
        priced = self.priced
        if not priced or any(r.other_cost is None or r.offer.other is None for r in priced):
            return None
        total = Cost()
        for row in priced:
            total = total + row.other_cost
        return priced[0].offer.other[0], total


# -- probing --------------------------------------------------------------------------------------------


def probe(source: str, key: str, *, count_packets: bool) -> Media:
    """Size, rate, frames and duration from the container; ValueError with the reason in words."""
    import av

    try:
        container = av.open(source, "r", timeout=30.0, metadata_errors="replace")  # any tag encoding
    except av.error.FFmpegError as exc:
        raise ValueError(f"not a readable media file ({_reason(exc, source, key)})") from None
    with container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate or rate <= 0:
            raise ValueError("the video stream has no frame rate")
        duration_s = 0.0
        if stream.duration and stream.time_base:
            duration_s = float(stream.duration * stream.time_base)
        elif container.duration:
            duration_s = container.duration / 1_000_000
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as exc:
            raise ValueError(f"the video stream cannot be decoded ({_reason(exc, source, key)})") from None
        if first is None:
            raise ValueError("the video stream has no decodable frame")
        frames, estimated = int(stream.frames or 0), False
        if frames <= 0 and count_packets:
            container.seek(0)
            frames = sum(1 for p in container.demux(stream) if p.size)
        if frames <= 0:
            frames, estimated = max(1, round(duration_s * float(rate))), True
        if duration_s <= 0:
            duration_s = frames / float(rate)
        deep = bool(first.format.components) and first.format.components[0].bits > 8
        hdr10 = any(sd.type.name in HDR10_SIDE_DATA for sd in first.side_data)  # as encode.choose_encoder reads it
        return Media(width=first.width, height=first.height, fps=Fraction(rate), frames=frames, deep=deep, hdr10=hdr10,
                     duration_s=duration_s, audio=bool(container.streams.audio), frames_estimated=estimated)


def _reason(exc: Exception, source: str, key: str) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return logs.scrub(str(text).replace(source, key))


# -- the estimate ---------------------------------------------------------------------------------------


def _output_frames(media: Media, target_fps: float | None) -> int:
    if target_fps is None:
        return media.frames
    return max(1, round(media.duration_s * target_fps))


def _synthesized_share(source_fps: Fraction, target_fps: float) -> float:
    """Of the output frames, the share the model makes: output frame k sits on a source frame when
    k x source/target is a whole number, i.e. for one in q when source/target = p/q (those are copied)."""
    ratio = (source_fps / Fraction(target_fps)).limit_denominator(1001)
    return 1.0 - 1.0 / ratio.denominator


def stages(media: Media, gpu: str, frames_out: int, *, target_fps: float | None, upscale: int,
           interpolation_learned: bool, upscale_learned: bool, upscale_model_factor: int | None,
           nvenc: bool = True, hevc: bool = False) -> list[Stage]:
    """hevc: the job encodes 10 bits with libx265 where it encodes in software (auto, deep source)."""
    out: list[Stage] = []
    if target_fps is not None:
        task = Task("interpolate", media.width, media.height, 2, interpolation_learned)
        # The figures are for x2 (half the output synthesized): count the work in x2 frames.
        work = frames_out * _synthesized_share(media.fps, target_fps) * 2
        estimate = fps_for(gpu, task)
        out.append(Stage(task, work, estimate.fps, estimate.source, estimate.guess))
    if upscale > 1:
        factor = upscale_model_factor if upscale_learned and upscale_model_factor else upscale
        task = Task("upscale", media.width, media.height, factor, upscale_learned)
        estimate = fps_for(gpu, task)
        out.append(Stage(task, frames_out, estimate.fps, estimate.source, estimate.guess))
    task = Task("transcode", media.width * upscale, media.height * upscale, 1,
                nvenc=nvenc and not (hevc and media.hdr10), hevc=hevc)
    estimate = fps_for(gpu, task)
    out.append(Stage(task, frames_out, estimate.fps, estimate.source, estimate.guess))
    return out


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _offers(deps: Deps) -> tuple[list[Offer], float | None]:
    compute = deps.compute
    if compute.name != "vast":
        return [Offer(id=None, gpu=CPU, rates=FREE, inet_down=0.0, inet_up=0.0, local=True)], None
    from vastdrop.compute.vast import bid_for

    config = compute.config
    disk_gb = float(config.disk_gb)
    offers = []
    for raw in compute.offers():
        rates = Rates.from_offer(raw, disk_gb)
        if config.interruptible:  # offers come re-priced at our bid; their on-demand price kept beside it
            on_demand = _float(raw.get("on_demand_dph_base"))
            other = None if on_demand is None else ("on-demand", replace(rates, gpu_dph=on_demand))
        else:
            bid = bid_for(raw, config.bid_ratio)
            other = None if bid is None else ("interruptible", replace(rates, gpu_dph=bid))
        offers.append(Offer(id=raw.get("id"), gpu=str(raw.get("gpu_name") or "?"), rates=rates,
                            inet_down=_float(raw.get("inet_down")) or DEFAULT_INET,
                            inet_up=_float(raw.get("inet_up")) or DEFAULT_INET, other=other))
    return offers, disk_gb


def _transfer_s(nbytes: float, speed: float) -> float:
    return nbytes * 8 / (max(speed, 1e-3) * INET_BITS_PER_UNIT)


def price(row: Row, offer: Offer, deps: Deps) -> None:
    """Fill in the row's time, bytes and cost for this offer (a split job's: one segment's times, all
    of its segments' bytes and costs, every segment on this offer's rates)."""
    cfg, media = deps.config, row.media
    assert media is not None
    row.offer = offer
    row.frames_out = _output_frames(media, cfg.target_fps)
    n = row.segments
    share = math.ceil(row.frames_out / n)  # a segment's output frames
    local = offer.local
    learned_interp = not local or cfg.interpolation_model is not None
    learned_up = not local or cfg.upscale_model is not None
    # The image's default upscaler, realesr-animevideov3, is x4: the job runs it and resizes (x2, x3).
    model_factor = 4 if not local and cfg.upscale_model is None else None
    row.stages = stages(media, offer.gpu, share, target_fps=cfg.target_fps, upscale=cfg.upscale,
                        interpolation_learned=learned_interp, upscale_learned=learned_up,
                        upscale_model_factor=model_factor, nvenc=n == 1 or "nvenc" in cfg.video_codec,
                        hevc=media.deep and cfg.video_codec in ("auto", "libx265"))
    out_pixels = media.width * media.height * cfg.upscale ** 2
    result_bytes = share * out_pixels * RESULT_BITS_PER_PIXEL / 8 \
        + (AUDIO_BYTES_PER_S * media.duration_s / n if media.audio else 0.0)
    if local:  # the local machine: nothing pulled, nothing billed; the job reads and writes the store
        row.setup_s = LOCAL_SETUP_S
        return
    row.loading_s = max(START_ALLOWANCE_S, _transfer_s(IMAGE_BYTES, offer.inet_down))
    from vastdrop.compute.vast import VAST_LIMITS

    row.ramp_s = VAST_LIMITS["create"].interval_s * (row.at_once - 1)  # one create per interval (Vast's limit)
    row.setup_s = JOB_SETUP_S
    span_bytes = row.size / n  # a segment reads its own span of the input (ranged GETs)
    row.download_s = _transfer_s(span_bytes, offer.inet_down)
    bytes_up = result_bytes + LOG_AND_MANIFEST_BYTES
    row.upload_s = _transfer_s(bytes_up, offer.inet_up)
    row.teardown_s = TEARDOWN_S
    row.bytes_down, row.bytes_up = n * (IMAGE_BYTES + span_bytes), n * bytes_up
    def bill(rates: Rates) -> Cost:  # every segment's instance, the same times and bytes
        return cost(rates, running_s=row.running_s, exists_s=row.total_s, bytes_down=IMAGE_BYTES + span_bytes,
                    bytes_up=bytes_up) * n

    row.cost = bill(offer.rates)
    if offer.other is not None:
        row.other_cost = bill(offer.other[1])


def pending(deps: Deps) -> list[Row]:
    """Inputs under the prefix without a succeeded job for their current ETag and parameters."""
    layout, params, rows = deps.layout, deps.config.params(), []
    for key, info in deps.inputs.list():
        if not layout.is_input(key, info.size):
            continue
        record = deps.ledger.get(job_id_for(deps.inputs.bucket, key, info.etag, params))
        if record is not None and record.state is JobState.SUCCEEDED:
            continue
        rows.append(Row(key=key, state="new" if record is None else record.state.value, size=info.size))
    return rows


def estimate(deps: Deps) -> Plan:
    rows = pending(deps)
    plan = Plan(compute=deps.compute.name, input_url=deps.inputs.url(deps.inputs.prefix),
                params=deps.config.params(), disk_gb=None, rows=rows)
    for row in rows:
        try:
            if deps.inputs.is_local:
                from vastdrop.storage.local import file_url_to_path

                source, count = str(file_url_to_path(deps.inputs.url(row.key))), True
            else:
                source, count = deps.inputs.job_get_url(row.key, PROBE_URL_EXPIRY_S), False
            row.media = probe(source, row.key, count_packets=count)
        except Exception as exc:  # noqa: BLE001 -- any failure is this input's, listed with its reason
            row.error = str(exc) if isinstance(exc, ValueError) else \
                f"cannot read it: {logs.scrub(str(exc)) or type(exc).__name__}"
            continue
        if deps.config.segment_s > 0:
            _split(row, source, deps)
    probed = [r for r in rows if r.media is not None]
    if not probed:
        return plan
    from vastdrop.errors import VastdropError

    try:
        offers, plan.disk_gb = _offers(deps)
    except VastdropError as exc:
        plan.offer_error = logs.scrub(str(exc))
        return plan
    # The launcher rents the cheapest free offer for each job, at most max_instances at once: jobs
    # beyond that run after an earlier one, on the offers freed (approximated by cycling).
    limit = getattr(getattr(deps.compute, "config", None), "max_instances", None) or len(offers)
    cycle = offers[: max(1, min(len(offers), limit))]
    for i, row in enumerate(probed):
        row.at_once = min(row.segments, max(1, limit))
        price(row, cycle[i % len(cycle)], deps)
    return plan


def _split(row: Row, source: str, deps: Deps) -> None:
    """How many segments `run --segment-s` would make of this input: handlers.segments' rules, on
    what the control plane's own probe (deps.probe) reads."""
    from handlers import segments
    from vastdrop.errors import VastdropError

    cfg = deps.config
    why = segments.why_not(cfg.params())
    if why is None and deps.probe is None:
        why = "no media probe to split by"
    elif why is None:
        try:
            duration_s, unsplittable = deps.probe(source)
        except VastdropError as exc:
            why = f"the input cannot be probed ({logs.bounded(exc, 200)})"
        else:
            pieces, why = segments.spans_for(duration_s, unsplittable, cfg)
            row.segments = max(1, len(pieces))
    if row.segments == 1 and row.media is not None and row.media.duration_s > cfg.segment_s:
        row.not_split = why


# -- output ---------------------------------------------------------------------------------------------

COLUMNS = ("KEY", "STATE", "DURATION", "FRAMES", "GPU", "$/H", "$/GB DOWN/UP", "TIME", "COST")
MAX_KEY_CHARS = 48


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _key(key: str) -> str:
    return key if len(key) <= MAX_KEY_CHARS else "…" + key[-(MAX_KEY_CHARS - 1):]


def _params(plan: Plan) -> str:
    fps = plan.params.get("target_fps")
    return (f"target {fps:g} fps" if fps is not None else "frame rate kept") + f", upscale x{plan.params.get('upscale', 1)}"


def _unprobed(row: tuple[str, ...]) -> bool:
    return row[4].startswith("cannot probe")


def render(plan: Plan) -> str:
    head = (f"plan ({plan.compute}): {len(plan.rows)} pending input{'s' if len(plan.rows) != 1 else ''} in "
            f"{plan.input_url}; {_params(plan)}; nothing launched")
    if not plan.rows:
        return head + "\n(nothing pending)"
    rows = [COLUMNS]
    for r in plan.rows:
        if r.media is None:
            rows.append((_key(r.key), r.state, "-", "-", f"cannot probe: {r.error}", "", "", "", ""))
            continue
        m = r.media
        frames = f"{'~' if m.frames_estimated else ''}{m.frames}" + (f"->{r.frames_out}" if r.offer else "")
        if r.offer is None:
            rows.append((_key(r.key), r.state, _clock(m.duration_s), frames, "-", "-", "-", "-", "-"))
            continue
        o = r.offer
        bandwidth = "-" if o.local else f"{o.rates.down_per_gb:.4f}/{o.rates.up_per_gb:.4f}"
        gpu = "CPU (local)" if o.local else o.gpu
        gpu += f" x{r.segments}" if r.segments > 1 else ""
        rows.append((_key(r.key), r.state, _clock(m.duration_s), frames, gpu, f"{o.rates.dph:.3f}", bandwidth,
                     _clock(r.wall_s), f"${r.cost.total:.4f}"))
    priced = plan.priced
    total = plan.total_cost
    rows.append(("TOTAL", "", _clock(sum(r.media.duration_s for r in plan.rows if r.media)),
                 str(sum(r.frames_out for r in priced)), "", "", "", _clock(plan.total_s), f"${total.total:.4f}"))
    widths = [max(len(row[i]) for row in rows if i < 4 or not _unprobed(row)) for i in range(len(COLUMNS))]
    lines = [head]
    for row in rows:
        if _unprobed(row):  # the reason runs to the end of the line
            lines.append("  ".join(c.ljust(w) for c, w in zip(row[:4], widths[:4], strict=True)) + "  " + row[4])
        else:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    lines.append("")
    lines.append(f"cost: GPU ${total.gpu:.4f} + storage ${total.storage:.4f} + bandwidth ${total.bandwidth:.4f} "
                 f"= ${total.total:.4f} for {len(priced)} job{'s' if len(priced) != 1 else ''}")
    other_way = plan.other_way
    if other_way is not None:
        kind, other = other_way
        note = ("before the work a preemption loses: a stopped instance's job runs again elsewhere"
                if kind == "interruptible" else "never preempted")
        lines.append(f"the same jobs {kind}: ${other.total:.4f} (GPU ${other.gpu:.4f}), {note}")
    if plan.offer_error:
        lines.append(f"no offer to price with: {plan.offer_error}")
    offers = {id(r.offer): r.offer for r in priced if not r.offer.local}
    for o in offers.values():
        lines.append(f"offer {o.id}: {o.gpu}, ${o.rates.dph:.4f}/h with {plan.disk_gb:g} GB disk "
                     f"(GPU ${o.rates.gpu_dph:.4f}/h while running + storage ${o.rates.storage_dph:.4f}/h while it "
                     f"exists), bandwidth ${o.rates.down_per_gb:.4f}/GB down ${o.rates.up_per_gb:.4f}/GB up, "
                     f"{o.inet_down:g}/{o.inet_up:g} Mbit/s")
    if priced:
        lines.append("TIME is per job, launch to result (TOTAL adds them up; run starts up to max_instances at once; "
                     "a split job: one segment's time per wave of segments, and the join): "
                     + ("" if priced[0].offer.local else "loading = image pull and start, storage billed; running = ")
                     + "setup, then the download and the stages (frames / fps) side by side, then the upload:")
        by_source: dict[str, list[str]] = {}
        for r in priced:
            parts = [f"{s.task.describe()} {s.fps:.3g} fps{' (guess)' if s.guess else ''}" for s in r.stages]
            each = ""
            if r.segments > 1:
                waves = "at once" if r.waves == 1 else f"{r.at_once} at a time ({r.waves} waves)"
                each = f"{r.segments} segments, {waves}, then the join; each "
            lines.append(f"  {_key(r.key)}: {each}{_clock(r.loading_s)} loading + {_clock(r.running_s)} running; "
                         + "; ".join(parts))
            if r.not_split:
                lines.append(f"  {_key(r.key)}: not split into segments: {r.not_split}")
            for s in r.stages:
                tasks = by_source.setdefault(s.source, [])
                if s.task.describe() not in tasks:
                    tasks.append(s.task.describe())
        lines.append("figures (vastdrop/throughput.py; guesses say so):")
        lines += [f"  {', '.join(tasks)}: {source}" for source, tasks in by_source.items()]
    return "\n".join(lines)


def to_json(plan: Plan) -> dict[str, Any]:
    def row(r: Row) -> dict[str, Any]:
        out: dict[str, Any] = {"key": r.key, "state": r.state, "size": r.size, "error": r.error}
        if r.media is not None:
            m = r.media
            out["media"] = {"width": m.width, "height": m.height, "fps": float(m.fps), "frames": m.frames,
                            "frames_estimated": m.frames_estimated, "duration_s": m.duration_s, "audio": m.audio}
        if r.offer is not None:
            o = r.offer
            out["offer"] = {"id": o.id, "gpu": "CPU (local)" if o.local else o.gpu, "local": o.local,
                            "dph": o.rates.dph, "rates": o.rates.to_dict(), "inet_down_mbps": o.inet_down,
                            "inet_up_mbps": o.inet_up}
            out["frames_out"] = r.frames_out
            out["stages"] = [{"task": s.task.describe(), "kind": s.task.kind, "factor": s.task.factor,
                              "frames": s.frames, "fps": s.fps, "seconds": s.seconds, "source": s.source,
                              "guess": s.guess} for s in r.stages]
            out["time_s"] = {"loading": r.loading_s, "setup": r.setup_s, "download": r.download_s,
                             "process": r.process_s, "upload": r.upload_s, "teardown": r.teardown_s,
                             "running": r.running_s, "total": r.total_s, "ramp": r.ramp_s, "wall": r.wall_s}
            out["segments"] = {"count": r.segments, "at_once": r.at_once, "waves": r.waves, "not_split": r.not_split}
            out["bytes"] = {"down": r.bytes_down, "up": r.bytes_up}
            out["cost"] = r.cost.to_dict()
            if r.other_cost is not None and o.other is not None:
                out["cost_other_way"] = {"kind": o.other[0], **r.other_cost.to_dict()}
        return out

    return {"compute": plan.compute, "input": plan.input_url, "params": plan.params, "disk_gb": plan.disk_gb,
            "launched": 0, "offer_error": plan.offer_error, "inputs": [row(r) for r in plan.rows],
            "total": {"pending": len(plan.rows), "priced": len(plan.priced),
                      "unprobeable": sum(1 for r in plan.rows if r.media is None),
                      "time_s": plan.total_s, "cost": plan.total_cost.to_dict(),
                      "cost_other_way": None if plan.other_way is None else
                      {"kind": plan.other_way[0], **plan.other_way[1].to_dict()}}}
