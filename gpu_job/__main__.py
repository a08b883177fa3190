"""`python -m gpu_job`: the composition root. Reads the environment once (long values joined from
their numbered parts, vastdrop.envparts), runs the job, uploads its own log, destroys its own Vast
instance as its last act, and exits with the contract's code."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from vastdrop import logs

if TYPE_CHECKING:
    from gpu_job.selfdestroy import OwnInstance

logger = logging.getLogger("gpu_job")
LOG_NAME = "job.log"

_SECRET_NAMES = frozenset({"JOB_CALLBACK_SECRET", "AWS_SECRET_ACCESS_KEY", "CONTAINER_API_KEY", "AWS_SESSION_TOKEN"})


def _config_error_text(exc: ValidationError) -> str:
    # Field names and reasons only: the offending values may be secrets or presigned URLs.
    parts = [f"JOB_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()]
    return "invalid job configuration: " + "; ".join(parts)


def _register_secrets(environ: Mapping[str, str]) -> None:
    """The secrets' values, whole or (before the join, or when it fails) each of their parts."""
    for key, value in environ.items():
        if key in _SECRET_NAMES or key.rpartition("__")[0] in _SECRET_NAMES:
            logs.register_secret(value)


def _join_environ() -> str | None:
    """Rewrite os.environ once, before anything reads it, with each value sent as NAME__1, NAME__2, ...
    joined into NAME: JobSettings, boto3's AWS_* and the self-destroy all see whole values. Returns
    the error text when a set of parts is malformed (it names variables, never values)."""
    from vastdrop.envparts import join_parts

    try:
        joined = join_parts(os.environ)
    except ValueError as exc:
        return f"invalid job configuration: {exc}"
    for key in [k for k in os.environ if k not in joined]:
        del os.environ[key]
    os.environ.update(joined)
    return None


def _log_url(environ: Mapping[str, str]) -> str | None:
    """JOB_LOG_URL, whole or joined from its own parts, even when another variable's parts are
    malformed: the log that says so should still go up."""
    from vastdrop.envparts import join_parts

    try:
        own = join_parts({k: v for k, v in environ.items() if k.partition("__")[0] == "JOB_LOG_URL"})
    except ValueError:
        return None
    return own.get("JOB_LOG_URL") or None


def main() -> int:
    from gpu_job import runner
    from gpu_job.selfdestroy import own_instance
    from vastdrop.jobspec import JobSettings

    workdir_handle = runner.new_workdir()
    workdir = Path(workdir_handle.name)
    log_path = workdir / LOG_NAME
    logs.configure(file_path=str(log_path))
    _register_secrets(os.environ)
    error = _join_environ()
    _register_secrets(os.environ)
    own = own_instance(os.environ)  # None unless on Vast; readies the SDK while the job runs
    spec = None
    if error is None:
        try:
            spec = JobSettings()
        except ValidationError as exc:
            error = _config_error_text(exc)
    if spec is None:  # a configuration error: permanent, there is nothing to retry
        logger.error(error)
        print(error, file=sys.stderr)
        _finish(own, "done", _log_url(os.environ), workdir_handle)
        return runner.EXIT_BAD_INPUT

    def on_deadline_stuck() -> None:
        logger.error("still running %ss past the deadline: exiting", runner.DEADLINE_GRACE_S)
        if own is not None:
            own.announce("deadline")
            own.destroy()
        os._exit(runner.EXIT_TRANSIENT)

    runner.start_deadline_watchdog(spec.deadline, on_deadline_stuck)
    log_path = Path(workdir_handle.name) / LOG_NAME
    job = runner.JobRunner(spec, workdir, before_manifest=(lambda: _upload_log(spec.log_url, log_path))
                           if spec.log_url else None)
    code, _manifest = job.run()
    _finish(own, "deadline" if job.deadline_hit else "done", spec.log_url, workdir_handle)
    return code


def _finish(own: OwnInstance | None, reason: str, log_url: str | None,
            workdir: tempfile.TemporaryDirectory) -> None:
    """After the manifest: the log goes up (it holds the STOPPING line), the workdir goes, then (on
    Vast) the instance is destroyed, last of all, whatever the outcome. Destroying it ends this
    process too; when it fails the exit code stands and the control plane's destroy follows."""
    if own is not None:
        own.announce(reason)
    if log_url:
        _upload_log(log_url, Path(workdir.name) / LOG_NAME)
    workdir.cleanup()
    if own is not None:
        own.destroy()


def _upload_log(url: str, path: Path) -> None:
    from vastdrop.storage import storage_for

    try:
        storage_for(url).put_bytes(path.read_bytes(), url, "text/plain; charset=utf-8")
    except Exception as exc:
        logger.warning("could not upload the job log: %s", exc)


if __name__ == "__main__":
    sys.exit(main())
