"""`python -m gpu_job`: the composition root. Reads the environment once, runs the job, uploads its own
log, and exits with the contract's code."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from vastdrop import logs

logger = logging.getLogger("gpu_job")


def _config_error_text(exc: ValidationError) -> str:
    # Field names and reasons only: the offending values may be secrets or presigned URLs.
    parts = [f"JOB_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()]
    return "invalid job configuration: " + "; ".join(parts)


def main() -> int:
    from gpu_job import runner
    from vastdrop.jobspec import JobSettings

    workdir_handle = runner.new_workdir()
    workdir = Path(workdir_handle.name)
    log_path = workdir / "job.log"
    logs.configure(file_path=str(log_path))
    for name in ("JOB_CALLBACK_SECRET", "AWS_SECRET_ACCESS_KEY", "CONTAINER_API_KEY", "AWS_SESSION_TOKEN"):
        logs.register_secret(os.environ.get(name))
    try:
        spec = JobSettings()
    except ValidationError as exc:
        logger.error(_config_error_text(exc))
        print(_config_error_text(exc), file=sys.stderr)
        return runner.EXIT_BAD_INPUT

    def on_deadline_stuck() -> None:
        logger.error("still running %ss past the deadline: exiting", runner.DEADLINE_GRACE_S)
        _self_destroy()
        os._exit(runner.EXIT_TRANSIENT)

    runner.start_deadline_watchdog(spec.deadline, on_deadline_stuck)
    job = runner.JobRunner(spec, workdir)
    code, _manifest = job.run()
    if spec.log_url:
        _upload_log(spec.log_url, log_path)
    workdir_handle.cleanup()
    if job.deadline_hit:  # last: destroying the instance ends this process too
        _self_destroy()
    return code


def _self_destroy() -> None:
    from gpu_job.selfdestroy import destroy_own_instance

    destroy_own_instance(os.environ.get("CONTAINER_ID"), os.environ.get("CONTAINER_API_KEY"))


def _upload_log(url: str, path: Path) -> None:
    from vastdrop.storage import storage_for

    try:
        storage_for(url).put_bytes(path.read_bytes(), url, "text/plain; charset=utf-8")
    except Exception as exc:
        logger.warning("could not upload the job log: %s", exc)


if __name__ == "__main__":
    sys.exit(main())
