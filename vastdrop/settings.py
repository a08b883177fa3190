"""The control plane's settings: every `python -m watcher` flag, also read from WATCHER_<FLAG>.

The zero-config default needs nothing: ./bucket/input/ -> ./bucket/output/, local compute, SQLite.
This module is the only place (with gpu_job's JobSettings) that the environment is read.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_INPUT = "file://./bucket/input/"
DEFAULT_OUTPUT = "file://./bucket/output/"
DEFAULT_STATE = ".vastdrop"


class ControlSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WATCHER_", extra="ignore")

    input: str = DEFAULT_INPUT
    output: str = DEFAULT_OUTPUT
    compute: Literal["local", "vast"] = "local"
    state: str = DEFAULT_STATE  # a directory: ledger.sqlite and local instances live here
    ledger: str | None = None  # sqlite path or dynamodb://table; default <state>/ledger.sqlite
    target_fps: float | None = Field(default=None, gt=0, le=1000)
    upscale: int = Field(default=1, ge=1, le=4)
    interpolation_model: str | None = None
    upscale_model: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    video_codec: str = "auto"
    crf: int = Field(default=18, ge=0, le=51)
    max_attempts: int = Field(default=3, ge=1)
    retry_backoff_s: float = Field(default=10.0, ge=0)
    job_timeout_s: float = Field(default=3600.0, gt=0)
    loading_timeout_s: float = Field(default=900.0, gt=0)
    verify_interval_s: float = Field(default=1.0, ge=0)
    poll_interval_s: float = Field(default=5.0, gt=0)
    tick_s: float = Field(default=1.0, gt=0)  # how often --once checks on running jobs
    # Webhook and callbacks.
    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)
    webhook_secret: SecretStr | None = None
    callback_url: str | None = None  # public URL of this watcher's /callback, if reachable
    callback_secret: SecretStr | None = None
    # Vast.ai
    vast_api_key: SecretStr | None = None
    vast_server_url: str | None = None
    vast_image: str | None = None
    vast_gpu_names: list[str] = Field(default_factory=list)
    vast_max_dph: float | None = None
    vast_max_instances: int | None = None
    vast_max_total_dph: float | None = None
    # The bucket's S3 key, when it is not the ambient AWS identity (B2 from Lambda): used to list,
    # read manifests and presign job URLs. Absent: boto3's usual credential chain.
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    # Serverless (template.yaml): where the webhook function enqueues verified events.
    queue_url: str | None = None
    # B2 (setup-b2)
    b2_key_id: str | None = None
    b2_application_key: SecretStr | None = None
