"""A stand-in for `python -m gpu_job` that keeps the container contract without torch or video work:
reads JOB_* env, downloads the input, uploads a result, writes the manifest last, exits.

STUB_MODE: ok (default) | crash (exit 3, no manifest) | bad_input (failure manifest, exit 65)
           | transient (failure manifest, exit 75) | hang (sleeps past any deadline)
STUB_SLEEP_S: seconds to "process" (default 0).
STUB_SELF_DESTROY: 1 (default) destroys its own Vast instance at the end, as the real job does; 0 leaves
           that to the control plane.
Used by control-plane tests and bench/control_plane.py, where the job's own work is not the point.
"""

from __future__ import annotations

import time

STARTED = time.monotonic()  # before the imports below: the job's own run time, as the real job counts it

import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from vastdrop.jobspec import JobSettings, redact_url  # noqa: E402
from vastdrop.manifest import ErrorInfo, Manifest, ObjectRef, ResultRef  # noqa: E402
from vastdrop.storage import storage_for  # noqa: E402


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
        manifest = manifest.model_copy(update={"timings_s": {"total": round(time.monotonic() - STARTED, 3)}})
        storage_for(spec.manifest_url).put_bytes(manifest.to_json(), spec.manifest_url, "application/json")
        if spec.callback_url:
            from gpu_job import callback  # the job's own signed callback (no torch involved)

            callback.post(spec.callback_url, spec.callback_secret, manifest.to_json())
        if spec.log_url:
            storage_for(spec.log_url).put_bytes(b"stub job log\n", spec.log_url, "text/plain; charset=utf-8")
    return code


def run() -> int:
    """main(), then the container contract's last act: on Vast, destroy its own instance."""
    from gpu_job.selfdestroy import own_instance

    own = own_instance(os.environ)
    code = main()
    if own is not None and os.environ.get("STUB_SELF_DESTROY", "1") == "1":
        own.announce("done")
        own.destroy()
    return code


if __name__ == "__main__":
    sys.exit(run())
