"""A job's completion callback (POST /callback), the same for `watcher serve` and the Lambda.

Each job signs with its own key, `signing.job_key(callback secret, job id)`, so a host can sign for
its own job only: the job id is read from the body first, then the signature must be that job's
key's (constant time), then the body must be a valid manifest of that job. Only then does anything
happen. The answers say nothing about jobs: any
validly signed body gets 202 whatever its job's state (the manifest object, not the callback, is the
commit point; the callback only asks us to look now), and refusals say only what was wrong with the
request.
"""

from __future__ import annotations

import json
import logging

from handlers.deps import Deps
from handlers.finished import manifest_job_id, on_job_finished
from vastdrop import signing
from vastdrop.manifest import MAX_MANIFEST_BYTES

logger = logging.getLogger(__name__)

ACCEPTED = {"accepted": True}


class CallbackRefused(Exception):
    """The request is refused: `status` and a `reason` that names nothing about any job."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def verified_job_id(secret: str | None, body: bytes, signature: str | None) -> str:
    """The job this callback is for, once the body is a manifest signed with that job's own key.

    Until the signature checks out, the body is read only as far as its `job_id`: the whole
    manifest is validated after, and must name the same job."""
    if len(body) > MAX_MANIFEST_BYTES:
        raise CallbackRefused(400, "body too large")
    job_id = _claimed_job_id(body)
    if job_id is None:
        raise CallbackRefused(400, "not a manifest")
    if not secret or not signing.verify(signing.job_key(secret, job_id), body, signature):
        raise CallbackRefused(401, "bad or missing signature")
    if manifest_job_id(body) != job_id:
        raise CallbackRefused(400, "not a manifest")
    return job_id


def _claimed_job_id(body: bytes) -> str | None:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested beyond reason
        return None
    job_id = parsed.get("job_id") if isinstance(parsed, dict) else None
    return job_id if isinstance(job_id, str) and job_id else None


def act(job_id: str, deps: Deps) -> None:
    """Look at the job now. Its outcome stays in our log: the caller answers 202 whatever it is, and
    a failure here is the reaper's to finish (it finds the manifest on its next pass)."""
    try:
        outcome = on_job_finished(job_id, deps)
    except Exception:
        logger.exception("callback handling failed", extra={"job_id": job_id})
        return
    logger.info("callback: %s", outcome, extra={"job_id": job_id})
