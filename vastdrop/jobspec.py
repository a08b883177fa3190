"""JobSpec: what one GPU job is asked to do. The container reads it from JOB_* env vars
(ARCHITECTURE.md section 3); the control plane builds one and hands `to_env()` to compute."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

URL_SCHEMES = ("s3://", "file://", "https://", "http://")


def _check_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(URL_SCHEMES):
        raise ValueError(f"unsupported URL scheme (want s3://, file:// or https://): {redact_url(value)}")
    return value


def redact_url(url: str) -> str:
    """A URL safe to log: presigned query strings carry credentials, so they are cut off."""
    head, sep, _query = url.partition("?")
    return head + ("?<redacted>" if sep else "")


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1, max_length=200)
    input_url: str
    output_url: str
    manifest_url: str
    log_url: str | None = None
    target_fps: float | None = Field(default=None, gt=0, le=1000)
    upscale: int = Field(default=1, ge=1, le=4)  # 1 (none), 2, 3 or 4
    interpolation_model: str | None = None
    upscale_model: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    video_codec: str = "auto"
    crf: int = Field(default=18, ge=0, le=51)
    deadline: float | None = None  # unix seconds
    callback_url: str | None = None
    callback_secret: SecretStr | None = None
    attempt: int = Field(default=1, ge=1)

    _urls = field_validator("input_url", "output_url", "manifest_url", "log_url", "callback_url")(
        classmethod(lambda cls, v: _check_url(v))
    )

    @field_validator("target_fps")
    @classmethod
    def _finite_fps(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("target fps must be a finite number")
        return v

    @field_validator("interpolation_model", "upscale_model", "callback_url", "log_url", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if v == "" else v

    def params(self) -> dict[str, object]:
        """The processing parameters, as recorded in the manifest and hashed into the job id."""
        return {"target_fps": self.target_fps, "upscale": self.upscale}

    def to_env(self) -> dict[str, str]:
        """The container's environment for this spec (section 3 names)."""
        env = {
            "JOB_ID": self.id,
            "JOB_INPUT_URL": self.input_url,
            "JOB_OUTPUT_URL": self.output_url,
            "JOB_MANIFEST_URL": self.manifest_url,
            "JOB_UPSCALE": str(self.upscale),
            "JOB_DEVICE": self.device,
            "JOB_VIDEO_CODEC": self.video_codec,
            "JOB_CRF": str(self.crf),
            "JOB_ATTEMPT": str(self.attempt),
        }
        optional = {
            "JOB_LOG_URL": self.log_url,
            "JOB_TARGET_FPS": None if self.target_fps is None else repr(self.target_fps),
            "JOB_INTERPOLATION_MODEL": self.interpolation_model,
            "JOB_UPSCALE_MODEL": self.upscale_model,
            "JOB_DEADLINE": None if self.deadline is None else repr(self.deadline),
            "JOB_CALLBACK_URL": self.callback_url,
            "JOB_CALLBACK_SECRET": self.callback_secret.get_secret_value() if self.callback_secret else None,
        }
        env.update({k: v for k, v in optional.items() if v is not None})
        return env


class JobSettings(BaseSettings, JobSpec):
    """JobSpec read from the process environment: JOB_ID, JOB_INPUT_URL, ..."""

    model_config = SettingsConfigDict(env_prefix="JOB_", extra="ignore", frozen=True)
