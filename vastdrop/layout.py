"""Object layout (ARCHITECTURE.md section 5): which keys are inputs and where their outputs go."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

MANIFEST_SUFFIX = ".manifest.json"


@dataclass(frozen=True)
class Layout:
    input_prefix: str = "input/"
    output_prefix: str = "output/"
    log_prefix: str = "logs/"
    result_ext: str = ".mp4"

    def is_input(self, key: str, size: int | None = None) -> bool:
        """True for keys that should start a job; folder markers, empty and hidden objects are skipped."""
        if not key.startswith(self.input_prefix) or key.endswith("/"):
            return False
        if size is not None and size <= 0:
            return False
        name = posixpath.basename(key)
        return bool(name) and not name.startswith((".", "_"))

    def result_key(self, input_key: str) -> str:
        if not input_key.startswith(self.input_prefix):
            raise ValueError(f"not under {self.input_prefix!r}: {input_key!r}")
        rel = input_key[len(self.input_prefix) :]
        stem, _ext = posixpath.splitext(rel)
        return self.output_prefix + (stem or rel) + self.result_ext

    def manifest_key(self, result_key: str) -> str:
        return result_key + MANIFEST_SUFFIX

    def log_key(self, job_id: str) -> str:
        return f"{self.log_prefix}{job_id}.log"

    @staticmethod
    def is_manifest(key: str) -> bool:
        return key.endswith(MANIFEST_SUFFIX)
