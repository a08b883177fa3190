"""The manifest (ARCHITECTURE.md section 4): the job's commit point, written last."""

from __future__ import annotations

import datetime as dt
import math
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1


class ErrorKind(StrEnum):
    BAD_INPUT = "bad_input"  # permanent: never retried
    TRANSIENT = "transient"  # retry with backoff
    INTERNAL = "internal"  # a bug or crash: retried up to the limit


class _Model(BaseModel):
    # Unknown keys are kept so that a newer job's manifest still validates here.
    model_config = ConfigDict(extra="allow")


class ObjectRef(_Model):
    url: str
    etag: str | None = None  # opaque string, compared as-is, never assumed to be an MD5
    size: int | None = None


class ResultRef(ObjectRef):
    sha256: str | None = None
    content_type: str = "video/mp4"


class MediaFacts(_Model):
    width: int = 0
    height: int = 0
    fps: float = 0.0
    frames: int = 0
    duration_s: float = 0.0
    audio: bool = False
    codec: str | None = None


class MediaPair(_Model):
    input: MediaFacts | None = None
    output: MediaFacts | None = None


class Engine(_Model):
    interpolation: str | None = None  # "rife-4.x" | "ffmpeg-minterpolate" | None (no retiming)
    upscale: str | None = None  # model name | "lanczos" | None (no upscaling)
    device: str | None = None
    torch: str | None = None
    av: str | None = None
    encoder: str | None = None
    audio: str | None = None  # "copy" | "aac" | "flac" | None (no audio)
    notes: list[str] = Field(default_factory=list)  # every fallback or adjustment, in words


class ErrorInfo(_Model):
    kind: ErrorKind
    message: str


class Manifest(_Model):
    schema_: int = Field(default=SCHEMA_VERSION, alias="schema")
    job_id: str
    attempt: int = 1
    status: Literal["succeeded", "failed"]
    input: ObjectRef
    result: ResultRef | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    media: MediaPair = Field(default_factory=MediaPair)
    engine: Engine = Field(default_factory=Engine)
    timings_s: dict[str, float] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    created_at: str = Field(default_factory=lambda: utc_now_iso())

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @model_validator(mode="after")
    def _success_has_a_result(self) -> Manifest:
        if self.status == "succeeded" and self.result is None:
            raise ValueError("a succeeded manifest must carry its result")
        return self

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded" and self.result is not None

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        return cls.model_validate_json(data)


# A manifest is a host's writing: read at most this much of it (a real one is a few KB).
MAX_MANIFEST_BYTES = 1 << 20


def utc_now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reported_number(value: object) -> float | None:
    """A number a host wrote into its manifest, if it is one: finite, and not a bool (JSON's true
    is an int to Python). Anything else is None: a host's word is never trusted to be well formed."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
