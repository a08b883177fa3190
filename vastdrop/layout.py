"""Object layout (ARCHITECTURE.md section 5): which keys are inputs and where their outputs go.

A job writes only into its own attempt's staging folder, `<output>/.attempts/<job id>/<attempt>/`;
the completion handler verifies what it finds there and publishes it to the final keys.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, replace

MANIFEST_SUFFIX = ".manifest.json"
STAGING_DIR = ".attempts/"
STAGED_MANIFEST = "manifest.json"
STAGED_RESULT = "result"  # + result_ext
STAGED_PARTS_PLAN = "result-parts.json"  # the presigned part URLs of a result too large for one PUT
SEGMENTS_DIR = "segments/"  # a split job's verified segments, waiting to be joined
# The result's container (JOB_CONTAINER): its key's extension and its content type.
CONTAINERS = {"mp4": (".mp4", "video/mp4"), "mkv": (".mkv", "video/x-matroska")}
DEFAULT_CONTAINER = "mp4"


def result_ext_for(container: str) -> str:
    return CONTAINERS[container][0]


def content_type_for(container: str) -> str:
    return CONTAINERS[container][1]


@dataclass(frozen=True)
class Layout:
    input_prefix: str = "input/"
    output_prefix: str = "output/"
    log_prefix: str = "logs/"
    result_ext: str = CONTAINERS[DEFAULT_CONTAINER][0]

    def for_container(self, container: str | None) -> Layout:
        """The same layout for results in `container` (None: the default, MP4)."""
        return replace(self, result_ext=result_ext_for(container or DEFAULT_CONTAINER))

    def is_input(self, key: str, size: int | None = None) -> bool:
        """True for keys that should start a job; folder markers, empty and hidden objects are skipped."""
        if not key.startswith(self.input_prefix) or key.endswith("/"):
            return False
        if size is not None and size <= 0:
            return False
        name = posixpath.basename(key)
        if not name or name.startswith((".", "_")):
            return False
        return not self.result_key(key).startswith(self.staging_root)  # staging is scratch, never a result

    def result_key(self, input_key: str) -> str:
        if not input_key.startswith(self.input_prefix):
            raise ValueError(f"not under {self.input_prefix!r}: {input_key!r}")
        rel = input_key[len(self.input_prefix) :]
        stem, _ext = posixpath.splitext(rel)
        return self.output_prefix + (stem or rel) + self.result_ext

    def manifest_key(self, result_key: str) -> str:
        """The final, verified manifest, written by the control plane after publishing."""
        return result_key + MANIFEST_SUFFIX

    def log_key(self, job_id: str) -> str:
        return f"{self.log_prefix}{job_id}.log"

    # ---- per-attempt staging ------------------------------------------------------------------

    @property
    def staging_root(self) -> str:
        """Every job's staging lives under here: the prefix a lifecycle rule expires."""
        return self.output_prefix + STAGING_DIR

    def staging_prefix(self, job_id: str, attempt: int) -> str:
        return f"{self.staging_root}{job_id}/{attempt}/"

    def staged_result_key(self, job_id: str, attempt: int) -> str:
        return self.staging_prefix(job_id, attempt) + STAGED_RESULT + self.result_ext

    def staged_manifest_key(self, job_id: str, attempt: int) -> str:
        return self.staging_prefix(job_id, attempt) + STAGED_MANIFEST

    def segment_key(self, job_id: str, attempt: int, index: int) -> str:
        """A verified segment of a job that runs as segments, kept in the job's staging until joined
        (its own manifest beside it, at manifest_key())."""
        return f"{self.staging_prefix(job_id, attempt)}{SEGMENTS_DIR}{index:05d}{self.result_ext}"

    def staged_parts_plan_key(self, job_id: str, attempt: int) -> str:
        return self.staging_prefix(job_id, attempt) + STAGED_PARTS_PLAN

    def staged_attempt(self, key: str) -> tuple[str, int] | None:
        """(job id, attempt) of a staged manifest's key, else None. The key, not the manifest's
        content, says which job an event is about: a host cannot point at another job."""
        if not key.startswith(self.staging_root):
            return None
        parts = key[len(self.staging_root) :].split("/")
        if len(parts) != 3 or parts[2] != STAGED_MANIFEST or not parts[0] or not (parts[1].isascii() and parts[1].isdigit()):
            return None
        return parts[0], int(parts[1])

    def is_manifest(self, key: str) -> bool:
        """A job's own manifest (its commit point, in staging): the events the completion handler
        acts on. Final manifests are written by the control plane and need no handling."""
        return self.staged_attempt(key) is not None
