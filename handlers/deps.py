"""What the handlers are given: where objects live, the ledger, compute, limits and a clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vastdrop.compute.base import Compute
from vastdrop.jobspec import DEFAULT_MAX_DURATION_S, DEFAULT_MAX_OUTPUT_PIXELS, job_params
from vastdrop.layout import DEFAULT_CONTAINER, Layout
from vastdrop.ledger.base import Ledger
from vastdrop.location import Location
from vastdrop.multipart import DEFAULT_MAX_RESULT_BYTES, DEFAULT_PART_BYTES, MAX_SINGLE_PUT_BYTES


@dataclass(frozen=True)
class ControlConfig:
    # Processing parameters for new jobs (hashed into the job id).
    target_fps: float | None = None
    upscale: int = 1
    interpolation_model: str | None = None
    upscale_model: str | None = None
    device: str = "auto"
    video_codec: str = "auto"
    crf: int = 18
    compile: str = "off"  # opt-in torch.compile of the models (JOB_COMPILE): the same frames, not hashed
    container: str = DEFAULT_CONTAINER  # mp4 or mkv: the result's container and its key's extension
    # Bounds on one job (not hashed into the job id), refused by the job as bad input.
    max_duration_s: float = DEFAULT_MAX_DURATION_S
    max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS
    # Results too large for one PUT go up in parts (vastdrop.multipart).
    single_put_max_bytes: int = MAX_SINGLE_PUT_BYTES
    result_part_bytes: int = DEFAULT_PART_BYTES
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    # Retries.
    max_attempts: int = 3
    max_preemptions: int = 20  # interruptible instances the market stopped, per run: relaunched, no attempt used
    segment_s: float = 0.0  # inputs longer than this run as segments on several instances (0: never split)
    retry_backoff_s: float = 10.0  # first retry waits this long, doubling, capped below
    retry_backoff_max_s: float = 600.0
    capacity_wait_s: float = 5.0  # refused for capacity (caps full): ask again after this, attempt kept
    # Time limits.
    job_timeout_s: float = 3600.0  # an attempt's deadline, from its launch
    deadline_grace_s: float = 60.0  # the job writes its own failure manifest first
    loading_timeout_s: float = 900.0  # a stuck image pull
    unhealthy_timeout_s: float = 120.0  # a host seen unknown/offline/frozen this long is replaced
    launch_timeout_s: float = 300.0  # launching without a known instance
    # Verification of a success manifest against the stored result.
    verify_attempts: int = 3
    verify_interval_s: float = 1.0
    # Presigned URLs outlive the deadline by this much (uploads in flight at the deadline finish).
    url_expiry_margin_s: float = 900.0
    callback_url: str | None = None
    callback_secret: str | None = None
    # Events older than this are never acted on: the ledger may have forgotten their job (TTL).
    event_max_age_s: float = 604800.0

    def params(self) -> dict[str, object]:
        return job_params(self.target_fps, self.upscale, self.container)


@dataclass
class Deps:
    inputs: Location
    outputs: Location
    ledger: Ledger
    compute: Compute
    config: ControlConfig = field(default_factory=ControlConfig)
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    # Reads an input's (duration_s, why it cannot be split or None) for segments (handlers.segments);
    # None where no media library is at hand (the Lambda bundle): jobs then run whole.
    probe: Callable[[str], tuple[float, str | None]] | None = None

    @property
    def layout(self) -> Layout:
        """Where new jobs' results go (their extension follows the configured container). A job's own
        keys follow the container it was launched with: handlers.jobs.layout_for."""
        return Layout(input_prefix=self.inputs.prefix, output_prefix=self.outputs.prefix).for_container(
            self.config.container)
