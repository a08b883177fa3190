"""JobSpec: what one GPU job is asked to do. The container reads it from JOB_* env vars
(ARCHITECTURE.md section 3); the control plane builds one and hands `to_env()` to compute."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from vastdrop.envparts import join_parts
from vastdrop.layout import DEFAULT_CONTAINER

URL_SCHEMES = ("s3://", "file://", "https://", "http://")
MIN_TARGET_FPS, MAX_TARGET_FPS = 1, 1000  # below 1 fps no video is meant; above 1000 no display or encoder keeps up
DEFAULT_MAX_DURATION_S = 12 * 3600  # the longest input a job takes (issue 9): a feature film twice over, and more
DEFAULT_MAX_OUTPUT_PIXELS = 8192 * 8192  # the largest output frame: HEVC's level 6.2 maximum, NVENC's ceiling


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

    id: str = Field(min_length=1, max_length=200, description="job id, recorded in the manifest and logs")
    input_url: str = Field(description="the input video: s3://, file:// or a presigned https:// GET")
    output_url: str = Field(description="where the result MP4 goes: s3://, file:// or a presigned https:// PUT")
    output_parts_url: str | None = Field(
        None, description="a presigned GET of the result's multipart upload plan (vastdrop.multipart): a result "
        "larger than the plan's single-PUT limit goes up in parts; unset: always one PUT")
    manifest_url: str = Field(description="where the manifest JSON goes, written last")
    log_url: str | None = Field(None, description="where the job uploads its own log at exit (optional)")
    target_fps: float | None = Field(None, ge=MIN_TARGET_FPS, le=MAX_TARGET_FPS,
                                     description="output frame rate, 1 to 1000; 59.94 means 60000/1001")
    upscale: int = Field(1, ge=1, le=4, description="upscale factor: 1 (none), 2, 3 or 4")
    interpolation_model: str | None = Field(
        None, description="RIFE 4.x or 3.x HD flownet.pkl; unset or empty: libavfilter minterpolate, noted in the manifest")
    upscale_model: str | None = Field(
        None, description="Real-ESRGAN-family .pth (spandrel); unset or empty: lanczos, noted in the manifest")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="torch device; auto takes CUDA when usable")
    video_codec: str = Field("auto", description="auto (NVENC if it opens, else libx264; a segment's: libx264, or libx265 above 8 bits, "
                             "on every host) or an encoder name")
    crf: int = Field(18, ge=0, le=51, description="encoder quality (lower is better)")
    compile: Literal["off", "compile", "cuda-graphs"] = Field(
        "off", description="opt-in: the models compiled by torch.compile for the video's frame size and full batch "
        "(compile), with CUDA graphs (cuda-graphs); the same frames; off: run as they are")
    container: Literal["mp4", "mkv"] = Field(
        DEFAULT_CONTAINER, description="the result's container: mp4, or mkv to keep what MP4 cannot hold "
        "(bitmap subtitles, TrueHD, attachments); the result key's extension follows")
    deadline: float | None = Field(
        None, description="unix time; past it the job writes a failure manifest and exits 75")
    callback_url: str | None = Field(None, description="POST the manifest here when done, signed (optional)")
    callback_secret: SecretStr | None = Field(None, description="HMAC key of the callback's X-Signature")
    attempt: int = Field(1, ge=1, description="attempt number, recorded in the manifest")
    max_duration_s: float = Field(
        DEFAULT_MAX_DURATION_S, gt=0,
        description="the longest input, by its timestamps and its container's metadata; longer is bad input")
    max_output_pixels: int = Field(
        DEFAULT_MAX_OUTPUT_PIXELS, ge=1, description="the largest output frame (width x height); larger is bad input")
    segment_start_s: str | None = Field(
        None, description="a segment of a longer job (issue 12): the result's video frames from this time on "
        "(exact decimal seconds from the first picture), written as a fragmented-MP4 media segment that the "
        "control plane joins with its neighbours; unset: the whole input")
    segment_end_s: str | None = Field(
        None, description="the segment's end (exclusive; exact decimal seconds from the first picture); unset: "
        "to the end of the input")

    _urls = field_validator("input_url", "output_url", "output_parts_url", "manifest_url", "log_url", "callback_url")(
        classmethod(lambda cls, v: _check_url(v))
    )

    @field_validator("segment_start_s", "segment_end_s", mode="before")
    @classmethod
    def _exact_seconds(cls, v: object) -> object:
        if v in (None, ""):
            return None
        try:
            seconds = Fraction(str(v))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"a segment boundary must be decimal seconds, not {str(v)[:40]!r}") from None
        if seconds < 0:
            raise ValueError("a segment boundary cannot be negative")
        return str(v)

    @model_validator(mode="after")
    def _segment_in_order(self) -> JobSpec:
        start, end = self.segment_window or (None, None)
        if end is not None and end <= (start or 0):
            raise ValueError("a segment must end after it starts")
        if self.segment_window is not None and self.container != "mp4":
            raise ValueError("segments are fragmented MP4: JOB_CONTAINER must be mp4")
        return self

    @property
    def segment_window(self) -> tuple[Fraction, Fraction | None] | None:
        """(start, end) in seconds from the first picture, exact; None for a whole-input job."""
        if self.segment_start_s is None and self.segment_end_s is None:
            return None
        end = Fraction(self.segment_end_s) if self.segment_end_s is not None else None
        return Fraction(self.segment_start_s or 0), end

    @field_validator("target_fps")
    @classmethod
    def _finite_fps(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):  # NaN slips past ge/le
            raise ValueError("target fps must be a finite number")
        return v

    @field_validator("interpolation_model", "upscale_model", "callback_url", "log_url", "output_parts_url",
                     mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if v == "" else v

    def params(self) -> dict[str, object]:
        """The processing parameters, as recorded in the manifest and hashed into the job id."""
        return job_params(self.target_fps, self.upscale, self.container)

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
            "JOB_COMPILE": self.compile,
            "JOB_CONTAINER": self.container,
            "JOB_ATTEMPT": str(self.attempt),
            "JOB_MAX_DURATION_S": repr(self.max_duration_s),
            "JOB_MAX_OUTPUT_PIXELS": str(self.max_output_pixels),
        }
        optional = {
            "JOB_LOG_URL": self.log_url,
            "JOB_OUTPUT_PARTS_URL": self.output_parts_url,
            "JOB_TARGET_FPS": None if self.target_fps is None else repr(self.target_fps),
            "JOB_INTERPOLATION_MODEL": self.interpolation_model,
            "JOB_UPSCALE_MODEL": self.upscale_model,
            "JOB_DEADLINE": None if self.deadline is None else repr(self.deadline),
            "JOB_CALLBACK_URL": self.callback_url,
            "JOB_CALLBACK_SECRET": self.callback_secret.get_secret_value() if self.callback_secret else None,
            "JOB_SEGMENT_START_S": self.segment_start_s,
            "JOB_SEGMENT_END_S": self.segment_end_s,
        }
        env.update({k: v for k, v in optional.items() if v is not None})
        return env


def job_params(target_fps: float | None, upscale: int, container: str = DEFAULT_CONTAINER) -> dict[str, object]:
    """The parameters that change a result, hashed into the job id. The container is named only when
    it is not the default, so every job id made before it existed stays the same."""
    params: dict[str, object] = {"target_fps": target_fps, "upscale": upscale}
    if container != DEFAULT_CONTAINER:
        params["container"] = container
    return params


class _JoinedEnvSource(EnvSettingsSource):
    """The process environment with long values joined from their parts (JOB_INPUT_URL__1, ...)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(join_parts(os.environ), self.case_sensitive, self.env_ignore_empty,
                              self.env_parse_none_str)


class JobSettings(BaseSettings, JobSpec):
    """JobSpec read from the process environment: JOB_ID, JOB_INPUT_URL, ... Each may also arrive in
    numbered parts (JOB_INPUT_URL__1, JOB_INPUT_URL__2, ...; vastdrop.envparts), joined here; a
    malformed set of parts raises ValueError naming the variable."""

    model_config = SettingsConfigDict(env_prefix="JOB_", extra="ignore", frozen=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):  # noqa: ANN001, ANN206 (pydantic-settings' hook)
        return init_settings, _JoinedEnvSource(settings_cls), dotenv_settings, file_secret_settings
