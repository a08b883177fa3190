"""The job: download -> probe -> process -> upload result -> write manifest LAST -> callback -> log.

Exit codes (ARCHITECTURE.md section 3): 0 succeeded, 65 bad input (permanent, never retried),
75 transient (retry); anything else is a crash, which the control plane also retries.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import av

from gpu_job import callback, failures
from gpu_job import device as devices
from gpu_job.lazy import lazy_import
from gpu_job.media import bounds, geometry, pipeline, segment
from gpu_job.media import colour as colours
from gpu_job.media.measuring import Measured
from gpu_job.media.probe import Source, probe
from gpu_job.progress import Deadline, DeadlineExceeded, Progress
from gpu_job.ranged_input import RangedInput
from vastdrop import logs
from vastdrop.errors import BadInputError, ConfigError, PermanentError, TransientError
from vastdrop.jobspec import JobSpec, redact_url
from vastdrop.layout import content_type_for, result_ext_for
from vastdrop.manifest import (
    Engine,
    ErrorInfo,
    ErrorKind,
    Manifest,
    MediaFacts,
    MediaPair,
    ObjectRef,
    ResultRef,
)
from vastdrop.multipart import MAX_PLAN_BYTES, PartsPlan
from vastdrop.storage import ObjectInfo, storage_for

torch = lazy_import("torch")  # imported on first use: the YUV-only path never needs it

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_BAD_INPUT, EXIT_TRANSIENT, EXIT_CRASH = 0, 65, 75, 70
DEADLINE_GRACE_S = 60  # past the deadline by this much, a stuck upload is abandoned and the process exits
MODEL_URL_SCHEMES = ("s3://", "file://", "https://", "http://")
RIFE_FULL_SCALE_MAX_PX = 2560  # larger frames: RIFE estimates flow at half resolution
RIFE_UHD_SCALE = 0.5


@dataclass
class _State:
    input: ObjectRef | None = None
    media: MediaPair = field(default_factory=MediaPair)
    engine: Engine = field(default_factory=Engine)
    timings: dict[str, float] = field(default_factory=dict)


class JobRunner:
    def __init__(self, spec: JobSpec, workdir: Path, before_manifest: Callable[[], None] | None = None) -> None:
        self.spec, self.workdir = spec, workdir
        # The control plane destroys the instance as soon as it sees the manifest: whatever must
        # surely get out (the job's log so far) goes first.
        self.before_manifest = before_manifest
        self.deadline = Deadline(spec.deadline)
        self.state = _State(input=ObjectRef(url=redact_url(spec.input_url)))
        self.log = logs.ContextLogger(logger, {"job_id": spec.id, "key": redact_url(spec.input_url)})
        self.deadline_hit = False
        self._device: str | None = None  # a torch device's name
        self._compile_notes: list[str] = []  # the opt-in compiled path's (JOB_COMPILE), said at the first batch

    def run(self) -> tuple[int, Manifest | None]:
        started = time.monotonic()
        try:
            manifest = self._process()
            code = EXIT_OK
        except Exception as exc:
            code, manifest = self._failed(exc)
        self.state.timings["total"] = round(time.monotonic() - started, 3)
        manifest.timings_s = dict(self.state.timings)
        body = manifest.to_json()
        if self.before_manifest is not None:
            self.before_manifest()
        try:
            self._storage(self.spec.manifest_url).put_bytes(body, self.spec.manifest_url, "application/json")
            self.log.info("manifest written", extra={"status": manifest.status, "exit_code": code})
        except Exception as exc:  # without a manifest the reaper decides; a transient exit lets it retry
            self.log.error("could not write the manifest: %s", exc)
            return (code if code != EXIT_OK else EXIT_TRANSIENT), None
        if self.spec.callback_url:
            callback.post(self.spec.callback_url, self.spec.callback_secret, body)
        return code, manifest

    # -- the happy path ------------------------------------------------------------------------
    def _process(self) -> Manifest:
        spec, state = self.spec, self.state
        self.deadline.check("start")
        device = self._device = devices.pick_device(spec.device)
        diag = devices.log_diagnostics(device)
        state.engine = Engine(device=str(diag["device"]), torch=str(diag["torch"]), av=av.__version__)

        dst = self.workdir / f"output{result_ext_for(spec.container)}"
        limits = bounds.Limits(spec.max_duration_s, spec.max_output_pixels, spec.upscale)
        with self._input() as src, self._measured(src, limits) as measured:
            described = {**_colour_of(src), **_geometry_of(src)}
            try:
                state.media = MediaPair(input=MediaFacts(**measured.facts.model_dump(), **described))
                measured.check_claims()  # before any model is loaded: a refused input costs a probe
                plan = self._plan(device, state.media.input)
                progress = Progress(self._expected_frames(plan, measured), self.deadline, extra={"job_id": spec.id})
                with self._timed("process"):
                    processing = time.monotonic()
                    report = self._processed(src, dst, plan, measured, progress)
                progress.log()
                measured.result()
                self._overlap(src, processing)
            finally:  # the headers' claims until measured; then what was measured, refused or not
                state.media = MediaPair(input=MediaFacts(**measured.facts.model_dump(), **described))
        facts_in = state.media.input
        state.timings.update({f"process_{k}": round(v, 3) for k, v in report.stage_s.items()})
        facts_out = MediaFacts(**probe(dst).model_dump(), **_colour_of(dst), **_geometry_of(dst))
        state.media = MediaPair(input=facts_in, output=facts_out)
        state.engine = state.engine.model_copy(update={
            "interpolation": report.interpolation, "upscale": report.upscale, "encoder": report.encoder,
            "audio": report.audio, "notes": state.engine.notes + report.notes + self._compile_notes,
            "container": spec.container, "streams": [entry.as_dict() for entry in report.streams],
            "geometry": report.geometry,
            "frames": {"in": report.frames_in, "out": report.frames_out, "interpolated": report.retime.interpolated,
                       "copied": report.retime.copied, "scene_cuts": report.retime.scene_cuts},
        })
        if facts_out.frames != report.frames_out:
            raise RuntimeError(f"encoded {report.frames_out} frames but the output holds {facts_out.frames}")
        self.deadline.check("processing")

        with self._timed("upload"), _sha256_alongside(dst) as sha256:
            result = self._upload_result(dst)
        self.log.info("result uploaded", extra={"etag": result.etag, "bytes": result.size})
        return Manifest(
            job_id=spec.id, attempt=spec.attempt, status="succeeded", input=state.input,
            result=ResultRef(url=redact_url(spec.output_url), etag=result.etag, size=result.size,
                             sha256=sha256.hexdigest(), content_type=content_type_for(spec.container)),
            params=spec.params(), media=state.media, engine=state.engine,
        )

    @contextmanager
    def _measured(self, src: Source, limits: bounds.Limits) -> Iterator[Measured]:
        """A whole input measured beside its processing: only the headers' claims are checked
        before it starts (gpu_job.media.measuring). A segment measures its share first (it reads
        only that much, through ranged GETs), and all its bounds are checked before it starts."""
        if self.spec.segment_window is None:
            with Measured.alongside(src, limits) as measured:
                yield measured
            return
        facts, timeline = segment.measure_window(src, self.spec.segment_window)
        yield Measured.done(facts, timeline, limits, round(timeline.span_s, 4))  # as measure rounds the whole input's

    def _expected_frames(self, plan: pipeline.Plan, measured: Measured) -> int:
        return pipeline.expected_output_frames(plan, measured.facts.frames, measured.duration_s, self.spec.segment_window)

    def _processed(self, src: Source, dst: Path, plan: pipeline.Plan, measured: Measured,
                   progress: Progress) -> pipeline.Report:
        """The pipeline's report; the measure's failure, when there is one, is the job's."""
        counted = [measured.duration.exact is not None]

        def on_frame(done: int) -> None:
            measured.check()
            if not counted[0] and measured.duration.exact is not None:  # the progress lines' total, measured
                counted[0] = True
                progress.total = max(self._expected_frames(plan, measured), 1)
            progress(done)

        try:
            return pipeline.process(src, dst, plan, measured.duration, on_frame=on_frame)
        except BadInputError:
            measured.result()  # the measure's verdict comes first, as when it ran before the decoding
            raise

    def _overlap(self, src: Source, processing: float) -> None:
        """How long the input took to arrive (to the last byte the job read: all of it, unless
        the sweep stopped), and how much of that the processing overlapped."""
        if isinstance(src, RangedInput) and src.last_fetch_at is not None:
            self.state.timings["download"] = round(src.last_fetch_at - src.started_at, 3)
            self.state.timings["download_overlap"] = round(max(0.0, src.last_fetch_at - max(processing, src.started_at)), 3)

    @contextmanager
    def _input(self) -> Iterator[Source]:
        """The input read through ranged GETs as it is demuxed (gpu_job.ranged_input): a whole
        input swept in order, so that the processing starts before its last byte is here; a
        segment's only around its span, not the whole film N times over."""
        spec, state = self.spec, self.state
        storage, cache = self._storage(spec.input_url), self.workdir / "input"
        info = storage.head(spec.input_url)
        state.input = ObjectRef(url=redact_url(spec.input_url), etag=info.etag, size=info.size)
        etag = info.etag or None

        def read(start: int, length: int) -> bytes:
            return storage.read_range(spec.input_url, start, length, if_match=etag)

        with RangedInput(read, info.size, cache, sweep=spec.segment_window is None) as ranged:
            try:
                yield ranged
            finally:
                self.log.info("input read in ranges", extra={"bytes": ranged.fetched_bytes, "of_bytes": info.size,
                                                             "requests": ranged.requests})
                self.state.engine = self.state.engine.model_copy(update={
                    "input_read": {"bytes": ranged.fetched_bytes, "requests": ranged.requests}})

    def _plan(self, device: str, facts: MediaFacts) -> pipeline.Plan:
        spec = self.spec
        dtype = "float16" if device.startswith("cuda") else "float32"
        interpolator = upscaler = None  # the models take torch's objects: torch is imported only for them
        if spec.target_fps is not None and spec.interpolation_model:
            from gpu_job.models.rife import RifeInterpolator

            # Flow on a half-resolution pyramid above 1440p, as Practical-RIFE recommends for UHD.
            scale = RIFE_UHD_SCALE if max(facts.width, facts.height) > RIFE_FULL_SCALE_MAX_PX else 1.0
            interpolator = RifeInterpolator.from_file(self._model_file(spec.interpolation_model),
                                                      device=torch.device(device), dtype=getattr(torch, dtype),
                                                      scale=scale)
            self.state.engine.notes.extend(interpolator.notes)  # e.g. 3.x HD's rounding of timesteps
            if scale != 1.0:
                self.state.engine.notes.append(f"RIFE flow estimated at scale {scale} for {facts.width}x{facts.height}")
        if spec.upscale > 1 and spec.upscale_model:
            from gpu_job.models.upscaler import Upscaler

            upscaler = Upscaler.from_file(self._model_file(spec.upscale_model), device=torch.device(device),
                                         dtype=getattr(torch, dtype))
        if spec.compile != "off":  # what came of it (compiled, or the plain network and why) joins the notes
            if interpolator is not None:  # for the full batch of frame pairs (the first on CUDA is one, measured)
                interpolator.compile(spec.compile, self._compile_notes, pipeline.DEFAULT_BATCH_SIZE)
            if upscaler is not None:  # for its first call: as many frames as its memory plan takes
                upscaler.compile(spec.compile, self._compile_notes)
        return pipeline.Plan(target_fps=spec.target_fps, upscale=spec.upscale, interpolator=interpolator,
                             upscaler=upscaler, device=device, dtype=dtype, video_codec=spec.video_codec, crf=spec.crf,
                             container=spec.container, window=spec.segment_window)

    def _upload_result(self, dst: Path) -> ObjectInfo:
        """One PUT to the output URL; in parts when the control plane gave a multipart plan and the
        result is larger than the plan's single-PUT limit (vastdrop.multipart)."""
        spec = self.spec
        if spec.output_parts_url:
            raw = self._storage(spec.output_parts_url).get_bytes(spec.output_parts_url, MAX_PLAN_BYTES)
            try:
                plan = PartsPlan.from_json(raw)
            except ValueError as exc:  # the control plane's own document: its fault, worth another attempt
                raise TransientError(f"the result's multipart upload plan is unreadable: {type(exc).__name__}") from None
            size = dst.stat().st_size
            if size > plan.single_put_max_bytes:
                self.log.info("uploading the result in parts", extra={"bytes": size, "part_bytes": plan.part_size})
                return self._storage(plan.complete_url).upload_in_parts(dst, plan)
        return self._storage(spec.output_url).upload(dst, spec.output_url, content_type_for(spec.container))

    def _model_file(self, ref: str) -> Path:
        if ref.startswith(MODEL_URL_SCHEMES):
            dest = self.workdir / "models" / Path(redact_url(ref).rsplit("/", 1)[-1].split("?")[0]).name
            dest.parent.mkdir(exist_ok=True)
            self._storage(ref).download(ref, dest)
            return dest
        path = Path(ref)
        if not path.is_file():
            raise ConfigError(f"model file not found: {ref}")
        return path

    # -- helpers -------------------------------------------------------------------------------
    def _failed(self, exc: Exception) -> tuple[int, Manifest]:
        """The exit code and failure manifest for what stopped the job."""
        # First: a full disk or exhausted memory, however it surfaced (a decoder's ENOMEM arrives as
        # a BadInputError about the video), is this host's limit and maybe not the next one's.
        exhausted = failures.resource_exhausted(exc, self.workdir, self._device)
        if exhausted is not None:
            return EXIT_TRANSIENT, self._failure(ErrorKind.TRANSIENT, exhausted)
        if isinstance(exc, PermanentError):  # bad input, settings or model file: retrying cannot help
            return EXIT_BAD_INPUT, self._failure(ErrorKind.BAD_INPUT, exc)
        if isinstance(exc, TransientError):
            self.deadline_hit = isinstance(exc, DeadlineExceeded)
            return EXIT_TRANSIENT, self._failure(ErrorKind.TRANSIENT, exc)
        self.log.exception("internal error")  # a bug: recorded in words, retried by the control plane
        return EXIT_CRASH, self._failure(ErrorKind.INTERNAL, exc)

    def _failure(self, kind: ErrorKind, exc: BaseException) -> Manifest:
        message = str(exc) or type(exc).__name__
        self.log.error("job failed: %s", message, extra={"error_kind": kind.value})
        return Manifest(job_id=self.spec.id, attempt=self.spec.attempt, status="failed",
                        input=self.state.input or ObjectRef(url=redact_url(self.spec.input_url)),
                        result=None, params=self.spec.params(), media=self.state.media,
                        engine=self.state.engine, error=ErrorInfo(kind=kind, message=message))

    def _storage(self, url: str):
        return storage_for(url)

    @contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.state.timings[name] = round(time.monotonic() - t0, 3)


def _colour_of(path: Source) -> dict:
    """The file's colour as a player reads it (matrix, range, primaries, transfer, bit depth, HDR
    metadata): input and output side by side show what was kept."""
    return {"colour": colours.of_file(path).describe()}


def _geometry_of(path: Source) -> dict:
    """The picture as a player shows it: rotation, displayed size, sample and display aspect, scan."""
    return geometry.inspect(path).facts()


@contextmanager
def _sha256_alongside(path: Path) -> Iterator[hashlib._Hash]:
    """The file's sha256, computed in a thread while the body runs (the upload reads the same bytes,
    from the page cache by then): the digest costs no wall time of its own. hashlib releases the
    GIL on large updates. The digest is complete when the block ends."""
    digest = hashlib.sha256()
    failure: list[BaseException] = []

    def read() -> None:
        try:
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
        except BaseException as exc:  # re-raised in the job's thread
            failure.append(exc)

    worker = threading.Thread(target=read, name="vastdrop-sha256", daemon=True)
    worker.start()
    try:
        yield digest
    finally:
        worker.join()
    if failure:
        raise failure[0]


def start_deadline_watchdog(deadline: float | None, on_expiry) -> None:
    """If the main thread is stuck (an upload that never returns) well past the deadline, give up."""
    if deadline is None:
        return
    delay = max(0.0, deadline - time.time()) + DEADLINE_GRACE_S
    timer = threading.Timer(delay, on_expiry)
    timer.daemon = True
    timer.start()


def new_workdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="vastdrop-job-")
