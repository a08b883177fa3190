"""The control plane's settings: every `python -m watcher` flag, also read from WATCHER_<FLAG>.

The zero-config default needs nothing: ./bucket/input/ -> ./bucket/output/, local compute, SQLite.
This module is the only place (with gpu_job's JobSettings) that the environment is read. Each
field's description is its documentation: the CLI's --help and the README's configuration
reference (`python -m vastdrop.configref`) are generated from it.

Secrets can come from one AWS Secrets Manager secret (`WATCHER_SECRET_ID`): a JSON object whose
keys are the secret fields' names (SECRET_FIELDS). That is how the Lambda functions of template.yaml
get their keys without any secret in their environment.
"""

from __future__ import annotations

import copy
import os
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from vastdrop.errors import ConfigError
from vastdrop.jobspec import JobSpec
from vastdrop.multipart import (
    DEFAULT_MAX_RESULT_BYTES,
    DEFAULT_PART_BYTES,
    MAX_PART_BYTES,
    MAX_PARTS,
    MAX_SINGLE_PUT_BYTES,
    MIN_PART_BYTES,
)

DEFAULT_INPUT = "file://./bucket/input/"
DEFAULT_OUTPUT = "file://./bucket/output/"
DEFAULT_STATE = ".vastdrop"  # relative to the working directory at load time, then kept absolute
# What we rent and may spend unless told otherwise (also VastConfig's defaults).
DEFAULT_VAST_IMAGE = "vastdrop/gpu-job:latest"
DEFAULT_MIN_GPU_RAM_GB = 16.0
DEFAULT_MAX_DPH = 0.60  # USD per hour, one instance
DEFAULT_MAX_TOTAL_DPH = 1.50  # USD per hour, all our live instances together
DEFAULT_MAX_INSTANCES = 3
DEFAULT_DISK_GB = 30.0  # the image, the input and the result fit; storage bills for all of it
# The image (several GB) and the input come down this pipe: a slow host spends paid minutes on them.
DEFAULT_MIN_INET_DOWN = 200.0  # the offer's inet_down, in Vast's unit (Mbit/s)
DEFAULT_MAX_BANDWIDTH_PER_GB = 0.02  # USD per GB, each direction (hosts set inet_down_cost, inet_up_cost)

# What a Secrets Manager secret may hold: credentials only, so a secret can never change behaviour.
SECRET_FIELDS = frozenset({
    "webhook_secret", "callback_secret", "vast_api_key", "vast_image_login",
    "s3_access_key_id", "s3_secret_access_key", "b2_key_id", "b2_application_key",
})


def _job_field(name: str) -> Any:
    """JobSpec's definition of a processing parameter (default, bounds, description), so the watcher's
    setting and the job's variable cannot drift apart."""
    return copy.copy(JobSpec.model_fields[name])


# The settings `python -m watcher` also takes as flags (--target-fps ...), with their argparse types.
CLI_FLAGS: dict[str, type] = {
    "input": str, "output": str, "compute": str, "state": str, "ledger": str, "target_fps": float,
    "upscale": int, "interpolation_model": str, "upscale_model": str, "device": str, "max_attempts": int,
    "job_timeout_s": float, "port": int, "host": str, "container": str, "interruptible": bool, "bid_ratio": float,
    "segment_s": float,
}


class ControlSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WATCHER_", extra="ignore")

    # Where objects live and where state is kept.
    input: str = Field(DEFAULT_INPUT, description="input location: s3://bucket/prefix/ or file://dir/")
    output: str = Field(DEFAULT_OUTPUT, description="output location (results, manifests; logs/ beside it)")
    compute: Literal["local", "vast"] = Field("local", description="where jobs run: local child processes or Vast.ai")
    state: str = Field(DEFAULT_STATE, description="state directory: the SQLite ledger and local instances (relative: to the start directory)")
    ledger: str | None = Field(None, description="a SQLite path or dynamodb://table (default <state>/ledger.sqlite)")
    # What each job does (hashed into the job id with the input's ETag): the job's own fields, handed
    # on as its JOB_* variables. The models differ: unset here means the image's own weights.
    target_fps: float | None = _job_field("target_fps")
    upscale: int = _job_field("upscale")
    interpolation_model: str | None = Field(
        None, description="RIFE flownet.pkl path for the job (default: the image's; locally: the non-learned fallback)")
    upscale_model: str | None = Field(
        None, description="Real-ESRGAN .pth path for the job (default: the image's; locally: the non-learned fallback)")
    device: Literal["auto", "cpu", "cuda"] = _job_field("device")
    video_codec: str = _job_field("video_codec")
    crf: int = _job_field("crf")
    compile: Literal["off", "compile", "cuda-graphs"] = _job_field("compile")
    container: Literal["mp4", "mkv"] = _job_field("container")
    # What one job may ask of its host, refused as bad input before any heavy work; the job's own
    # bounds, handed on as its JOB_* variables (not hashed into the job id: limits, not parameters).
    max_duration_s: float = _job_field("max_duration_s")
    max_output_pixels: int = _job_field("max_output_pixels")
    # Results larger than one PUT takes go up in parts through presigned part URLs (vastdrop.multipart).
    single_put_max_bytes: int = Field(
        MAX_SINGLE_PUT_BYTES, ge=1, le=MAX_SINGLE_PUT_BYTES,
        description="a larger result goes up as a multipart upload (S3 and B2 take at most 5 GB in one PUT)")
    result_part_bytes: int = Field(
        DEFAULT_PART_BYTES, ge=MIN_PART_BYTES, le=MAX_PART_BYTES,
        description="part size of a result's multipart upload (5 MiB to 5 GB; grown when 10,000 parts would not do)")
    max_result_bytes: int = Field(
        DEFAULT_MAX_RESULT_BYTES, ge=1, le=MAX_PARTS * MAX_PART_BYTES,
        description="the largest result a job may upload: its part URLs are presigned at launch")
    # Retries and time limits.
    max_attempts: int = Field(3, ge=1, description="attempts per job before it fails (bad input is never retried)")
    retry_backoff_s: float = Field(10.0, ge=0, description="first retry's delay, doubling after each attempt")
    max_preemptions: int = Field(
        20, ge=0, description="interruptible instances the market may stop in one job's run before it fails (they use no attempt)")
    job_timeout_s: float = Field(3600.0, gt=0, description="an attempt's deadline, in seconds from its launch")
    segment_s: float = Field(
        0.0, ge=0, description="an input longer than this many seconds is processed as segments of about this length, "
        "each on its own instance at once, and joined seamlessly (0: never split)")
    loading_timeout_s: float = Field(900.0, gt=0, description="an instance stuck loading (image pull) this long is replaced")
    verify_interval_s: float = Field(1.0, ge=0, description="seconds between checks of a finished job's result")
    poll_interval_s: float = Field(5.0, gt=0, description="seconds between listings of the input prefix")
    tick_s: float = Field(1.0, gt=0, description="how often `run --once` checks on running jobs")
    # Webhook and callbacks.
    host: str = Field("127.0.0.1", description="bind address of `serve` / `run --serve`")
    port: int = Field(8787, ge=0, le=65535, description="port of `serve` / `run --serve`")
    webhook_secret: SecretStr | None = Field(
        None, description="B2 event-notification signing secret (exactly 32 letters and digits)")
    callback_url: str | None = Field(None, description="public URL of /callback, given to jobs (optional)")
    callback_secret: SecretStr | None = Field(None, description="HMAC secret of job callbacks")
    event_max_age_s: float = Field(
        604800.0, gt=0, description="events (webhook, queue) older than this many seconds are ignored: the ledger may have forgotten their job")
    # Vast.ai
    vast_api_key: SecretStr | None = Field(None, description="Vast.ai API key (needed for --compute vast)")
    vast_server_url: str | None = Field(None, description="Vast.ai API URL (default: the SDK's, https://console.vast.ai)")
    vast_image: str = Field(DEFAULT_VAST_IMAGE, description="the GPU job image (README: The GPU image)")
    vast_image_login: SecretStr | None = Field(
        None, description="registry login for a private image: '-u USER -p TOKEN REGISTRY'")
    vast_gpu_names: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="GPU models to rent, comma-separated, e.g. 'RTX 4090,RTX 3090' (empty: any)")
    vast_min_gpu_ram_gb: float = Field(DEFAULT_MIN_GPU_RAM_GB, ge=0, description="least GPU memory, GB")
    vast_max_dph: float = Field(DEFAULT_MAX_DPH, gt=0, description="most USD per hour for one instance")
    interruptible: bool = Field(
        False, description="rent interruptible (bid) instances: cheaper, and the market may stop them; a stopped one is relaunched")
    bid_ratio: float = Field(
        0.7, gt=0, le=1, description="an interruptible instance's bid, as a share of the offer's on-demand GPU price")
    vast_max_instances: int = Field(DEFAULT_MAX_INSTANCES, ge=1, description="most instances of ours alive at once")
    vast_max_total_dph: float = Field(
        DEFAULT_MAX_TOTAL_DPH, gt=0, description="most USD per hour for all our instances together")
    vast_disk_gb: float = Field(DEFAULT_DISK_GB, ge=8, description="disk rented with each instance, GB (billed while it exists)")
    vast_min_inet_down: float = Field(
        DEFAULT_MIN_INET_DOWN, ge=0, description="slowest host download accepted, Mbit/s as Vast reports inet_down (image pull, input)")
    vast_max_bandwidth_per_gb: float = Field(
        DEFAULT_MAX_BANDWIDTH_PER_GB, ge=0, description="most USD per GB a host may charge for bandwidth, each direction")
    vast_api_share: int = Field(
        1, ge=1, description="processes sharing the Vast key at once: each paces its calls this many times slower")
    vast_max_create_wait_s: float = Field(
        6.0, ge=0, description="longest wait for a create slot in one launch; beyond it the job waits queued")
    # The bucket's S3 key, when it is not the ambient AWS identity (B2 from Lambda): used to list,
    # read manifests and presign job URLs. Absent: boto3's usual credential chain.
    s3_access_key_id: str | None = Field(None, description="the bucket's S3 key id (default: boto3's credential chain)")
    s3_secret_access_key: SecretStr | None = Field(None, description="the bucket's S3 secret key")
    s3_region: str | None = Field(
        None, description="the bucket's region for signing, e.g. us-west-004 for B2 (default: boto3's)")
    # Serverless (template.yaml).
    secret_id: str | None = Field(None, description="AWS Secrets Manager secret (JSON) holding the secret fields")
    launch_queue_url: str | None = Field(None, description="SQS queue the webhook function fills with new inputs")
    completion_queue_url: str | None = Field(None, description="SQS queue the webhook function fills with manifests")
    # B2 (setup-b2)
    b2_key_id: str | None = Field(None, description="B2 application key id (setup-b2 only)")
    b2_application_key: SecretStr | None = Field(None, description="B2 application key (setup-b2 only)")

    @field_validator("state")
    @classmethod
    def _absolute_state(cls, value: str) -> str:
        # Resolved once, here: the job wrapper runs in its own instance directory, and an exit code
        # written to a relative path there never reaches the watcher (issue 9 item 6).
        return os.path.abspath(os.path.expanduser(value))

    @field_validator("ledger")
    @classmethod
    def _absolute_ledger_path(cls, value: str | None) -> str | None:
        if value is None or "://" in value:  # sqlite:///abs or dynamodb://table: a URL, left as given
            return value
        return os.path.abspath(os.path.expanduser(value))

    @field_validator("vast_gpu_names", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value


def load_settings(**given: Any) -> ControlSettings:
    """Flags (`given`) over WATCHER_* env vars over defaults; then, if `secret_id` is set, the
    secret's values over all of them. Unknown or non-credential keys in the secret are refused."""
    settings = ControlSettings(**given)
    if not settings.secret_id:
        return settings
    return ControlSettings(**{**given, **_read_secret(settings.secret_id)})


def _read_secret(secret_id: str) -> dict[str, Any]:
    import botocore.exceptions
    from pydantic_settings import AWSSecretsManagerSettingsSource

    try:
        # env_prefix="": the secret's keys are the field names themselves (webhook_secret, ...).
        source = AWSSecretsManagerSettingsSource(ControlSettings, secret_id, env_prefix="")
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise ConfigError(f"cannot read secret {secret_id!r}: {code}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise ConfigError(f"cannot read secret {secret_id!r}: {type(exc).__name__}") from None
    except ValueError:
        raise ConfigError(f"secret {secret_id!r} is not a JSON object") from None
    unknown = sorted(set(source.env_vars) - SECRET_FIELDS)
    if unknown:
        raise ConfigError(f"secret {secret_id!r} has keys that are not secret fields: {', '.join(unknown)} "
                          f"(allowed: {', '.join(sorted(SECRET_FIELDS))})")
    return source()
