"""A stand-in for `python -m gpu_job` that keeps the container contract without torch or video work:
reads JOB_* env, downloads the input, uploads a result, writes the manifest last, exits.

STUB_MODE: ok (default) | crash (exit 3, no manifest) | bad_input (failure manifest, exit 65)
           | transient (failure manifest, exit 75) | hang (sleeps past any deadline)
           | from_input: the mode (any of these or a hostile one below) is the input's first line,
             `STUB_MODE=<mode> [name=value ...]`; any other input (a real clip) means ok. The emulator
             runs one command for every instance, so this lets honest and hostile jobs run side by side.
Hostile modes (a stranger's host, as tests/test_hostile_hosts.py plays it):
  no_result       a success manifest with "result": null (raw JSON: the model refuses to write it)
  huge_manifest   a 20 MB success manifest
  stale           attempt 1 exits 3 with no manifest; later attempts upload a real result and a success
                  manifest that claims attempt 1, then hang (silence)
  forge_callback  POSTs a success manifest naming job `victim=<job id>`, signed with its own key, then
                  behaves honestly
  put_elsewhere   PUTs to each key of `targets=<key>,<key>` through its own presigned result URL with the key
                  rewritten, then behaves honestly
Each hostile act's outcome (`forge_callback status=401`, `put_elsewhere <key> status=403`) is a line
of the job's uploaded log, for the test to read back.
STUB_SLEEP_S: seconds to "process" (default 0).
STUB_SELF_DESTROY: 1 (default) destroys its own Vast instance at the end, as the real job does; 0 leaves
           that to the control plane.
Used by control-plane tests and bench/control_plane.py, where the job's own work is not the point.
"""

from __future__ import annotations

import time

STARTED = time.monotonic()  # before the imports below: the job's own run time, as the real job counts it

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import quote, unquote, urlsplit, urlunsplit  # noqa: E402

from vastdrop.jobspec import JobSettings, redact_url  # noqa: E402
from vastdrop.manifest import ErrorInfo, Manifest, ObjectRef, ResultRef  # noqa: E402
from vastdrop.storage import storage_for  # noqa: E402

DIRECTIVE = b"STUB_MODE="  # an input starting with this names the mode (from_input)
HUGE_MANIFEST_BYTES = 20 * 10**6
HOSTILE_BODY = b"HOSTILE bytes written where this host was never allowed\n"
HOSTILE_TIMEOUT_S = 5.0


def directive(data: bytes) -> tuple[str, dict[str, str]]:
    """(mode, arguments) from an input's first line; ("ok", {}) for anything else (a real clip).
    Values are percent-encoded (keys may hold spaces)."""
    if not data.startswith(DIRECTIVE):
        return "ok", {}
    words = data.split(b"\n", 1)[0].decode().split()
    args = {name: unquote(value) for name, _, value in (word.partition("=") for word in words[1:])}
    return words[0][len(DIRECTIVE):], args


def result_bytes(job_id: str, input_head: bytes) -> bytes:
    """What an honest stub uploads for a job: the test recomputes it to check the published file."""
    return b"stub result for " + job_id.encode() + b"\n" + input_head[:64]


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
        args: dict[str, str] = {}
        if mode == "from_input":
            mode, args = directive(src.read_bytes()[:4096])
            if mode == "crash" or (mode == "stale" and spec.attempt == 1):
                return 3
            if mode == "hang":
                time.sleep(3600)
        input_ref = ObjectRef(url=redact_url(spec.input_url), etag=info.etag, size=info.size)
        notes = _hostile_act(mode, args, spec, input_ref)
        if mode in ("bad_input", "transient"):
            manifest = Manifest(job_id=spec.id, attempt=spec.attempt, status="failed", input=input_ref,
                                error=ErrorInfo(kind=mode, message=f"stub {mode}"), params=spec.params())
            code = 65 if mode == "bad_input" else 75
        else:
            result = Path(tmp) / "result.mp4"
            result.write_bytes(result_bytes(spec.id, src.read_bytes()[:64]))
            up = storage_for(spec.output_url).upload(result, spec.output_url, "video/mp4")
            manifest = Manifest(job_id=spec.id, attempt=spec.attempt, status="succeeded", input=input_ref,
                                result=ResultRef(url=redact_url(spec.output_url), etag=up.etag, size=up.size),
                                params=spec.params())
            code = 0
        manifest = manifest.model_copy(update={"timings_s": {"total": round(time.monotonic() - STARTED, 3)}})
        if notes and spec.log_url:  # what its hostile acts got, before its manifest: the instance is
            _put_log(spec, notes)  # destroyed as soon as the manifest is seen, maybe before the end
        if mode in BAD_MANIFESTS:
            storage_for(spec.manifest_url).put_bytes(BAD_MANIFESTS[mode](manifest), spec.manifest_url,
                                                     "application/json")
            if mode == "stale":
                time.sleep(3600)  # silence: only the control plane can end this instance
        else:
            storage_for(spec.manifest_url).put_bytes(manifest.to_json(), spec.manifest_url, "application/json")
            if spec.callback_url:
                from gpu_job import callback  # the job's own signed callback (no torch involved)

                callback.post(spec.callback_url, spec.callback_secret, manifest.to_json())
        if spec.log_url:
            _put_log(spec, notes)
    return code


def _put_log(spec, notes: list[str]) -> None:
    log = b"stub job log\n" + "".join(f"{note}\n" for note in notes).encode()
    storage_for(spec.log_url).put_bytes(log, spec.log_url, "text/plain; charset=utf-8")


# A hostile host's manifest, from the honest one it would have written.
BAD_MANIFESTS = {
    "no_result": lambda m: json.dumps({**json.loads(m.to_json()), "result": None}).encode(),
    "huge_manifest": lambda m: json.dumps({**json.loads(m.to_json()), "padding": "x" * HUGE_MANIFEST_BYTES}).encode(),
    "stale": lambda m: m.model_copy(update={"attempt": 1}).to_json(),
}


def _hostile_act(mode: str, args: dict[str, str], spec: JobSettings, input_ref: ObjectRef) -> list[str]:
    """What a hostile host tries before (maybe) doing its own job honestly; each outcome in words."""
    import requests  # the attacker's own HTTP, no retries: every answer is recorded as it came

    if mode == "forge_callback":
        victim = args["victim"]
        forged = Manifest(job_id=victim, status="succeeded", input=input_ref, params=spec.params(),
                          result=ResultRef(url="s3://forged/result.mp4", etag='"forged"', size=1)).to_json()
        from vastdrop import signing

        key = spec.callback_secret.get_secret_value() if spec.callback_secret else ""
        try:
            status = requests.post(spec.callback_url or "", data=forged, timeout=HOSTILE_TIMEOUT_S,
                                   headers={"Content-Type": "application/json",
                                            signing.CALLBACK_SIGNATURE_HEADER: signing.sign(key, forged)}).status_code
        except requests.RequestException as exc:
            status = type(exc).__name__
        return [f"forge_callback victim={victim} status={status}"]
    if mode == "put_elsewhere":
        notes = []
        for target in args["targets"].split(","):
            url = _with_key(spec.output_url, target)
            try:
                status = requests.put(url, data=HOSTILE_BODY, timeout=HOSTILE_TIMEOUT_S,
                                      headers={"Content-Type": "video/mp4"}).status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
            notes.append(f"put_elsewhere {target} status={status}")
        return notes
    return []


def _with_key(presigned: str, key: str) -> str:
    """The presigned URL (path style: /<bucket>/<key>) with another key, its signature kept."""
    parts = urlsplit(presigned)
    bucket = parts.path.lstrip("/").split("/", 1)[0]
    return urlunsplit(parts._replace(path=f"/{bucket}/{quote(key)}"))


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
