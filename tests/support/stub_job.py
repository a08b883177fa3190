"""A stand-in for `python -m gpu_job` that keeps the container contract without torch or video work:
reads JOB_* env, downloads the input, uploads a result, writes the manifest last, exits.

STUB_MODE: ok (default) | crash (exit 3, no manifest) | bad_input (failure manifest, exit 65)
           | transient (failure manifest, exit 75) | hang (sleeps past any deadline)
STUB_SLEEP_S: seconds to "process" (default 0).
Used by control-plane tests and bench/control_plane.py, where the job's own work is not the point.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from vastdrop.jobspec import JobSettings, redact_url
from vastdrop.manifest import ErrorInfo, Manifest, ObjectRef, ResultRef
from vastdrop.storage import storage_for


def main() -> int:
    spec = JobSettings()
    mode = os.environ.get("STUB_MODE", "ok")
    time.sleep(float(os.environ.get("STUB_SLEEP_S", "0")))
    if mode == "crash":
        return 3
    if mode == "hang":
        time.sleep(3600)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "input"
        info = storage_for(spec.input_url).download(spec.input_url, src)
        input_ref = ObjectRef(url=redact_url(spec.input_url), etag=info.etag, size=info.size)
        if mode in ("bad_input", "transient"):
            manifest = Manifest(job_id=spec.id, attempt=spec.attempt, status="failed", input=input_ref,
                                error=ErrorInfo(kind=mode, message=f"stub {mode}"), params=spec.params())
            code = 65 if mode == "bad_input" else 75
        else:
            result = Path(tmp) / "result.mp4"
            result.write_bytes(b"stub result for " + spec.id.encode() + b"\n" + src.read_bytes()[:64])
            up = storage_for(spec.output_url).upload(result, spec.output_url, "video/mp4")
            manifest = Manifest(job_id=spec.id, attempt=spec.attempt, status="succeeded", input=input_ref,
                                result=ResultRef(url=redact_url(spec.output_url), etag=up.etag, size=up.size),
                                params=spec.params())
            code = 0
        storage_for(spec.manifest_url).put_bytes(manifest.to_json(), spec.manifest_url, "application/json")
        if spec.callback_url:
            from gpu_job import callback  # the job's own signed callback (no torch involved)

            callback.post(spec.callback_url, spec.callback_secret, manifest.to_json())
        if spec.log_url:
            storage_for(spec.log_url).put_bytes(b"stub job log\n", spec.log_url, "text/plain; charset=utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main())
