"""On Vast the job destroys its own instance as its very last act (after its manifest and its log),
whatever the outcome; env values beyond Vast's 256 characters arrive as numbered parts and are joined.

The real `python -m gpu_job` runs under the strict Vast emulator (tests/support/vast_emulator.py),
which injects CONTAINER_ID / CONTAINER_API_KEY / VAST_URL as Vast does and refuses env values over
256 characters, created through the real SDK."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from gpu_job import selfdestroy
from tests.support.clips import make_clip, make_truncated
from tests.support.jobs import file_job_env, run_job
from vastdrop import logs
from vastdrop.envparts import MAX_VALUE_CHARS, split_values
from vastdrop.manifest import Manifest

MANIFEST_TO_DESTROY_MAX_S = 1.0  # issue 8, item 5: manifest written -> instance destroyed


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("sd") / "clip.mp4", width=64, height=48, fps=24, seconds=0.5,
                     audio=False)


def _paths(env: dict[str, str]) -> tuple[Path, Path, Path]:
    from urllib.parse import unquote, urlsplit

    def path(name: str) -> Path:
        return Path(unquote(urlsplit(env[name]).path))

    return path("JOB_OUTPUT_URL"), path("JOB_MANIFEST_URL"), path("JOB_LOG_URL")


def _run_on_vast(env: dict[str, str]) -> tuple[dict, list[dict]]:
    """Create one instance running the real job with `env`; wait until it is gone (or 120 s)."""
    from vastai import VastAI

    from tests.support.vast_emulator import VastEmulator

    with VastEmulator(loading_s=0.05, kill_grace_s=0.5) as emu:
        client = VastAI(api_key=emu.api_key, server_url=emu.url, retry=1)
        offer = client.search_offers(query="rentable=true", order="dph_total")[0]
        iid = client.create_instance(offer["id"], image="vastdrop/gpu-job:test", disk=10, env=env,
                                     label="vastdrop:x")["new_contract"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and emu.live_instances():
            time.sleep(0.05)
        settle = time.monotonic() + 5  # a destroy is recorded once it has answered
        while time.monotonic() < settle and emu.live_instances() == [] and not emu.destroy_requests:
            time.sleep(0.05)
        instance = emu.instance(iid)
        container_log = emu.read_log(iid)
        destroys = emu.destroy_requests
    assert instance["destroyed"], container_log[-3000:]
    instance["container_log"] = container_log
    return instance, destroys


def _log_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize(("outcome", "reason"), [("ok", "done"), ("bad_input", "done"), ("deadline", "deadline")])
def test_the_job_destroys_its_own_instance_last_after_its_manifest_and_log(tmp_path, clip, outcome, reason):
    """GIVEN the real job on a (strict, emulated) Vast instance, succeeding, failing on bad input, or
    past its deadline
    WHEN it has written its manifest and uploaded its log
    THEN it destroys its own instance with the instance-scoped key, after both, within about 1 s of
    the manifest, and its log says STOPPING INSTANCE <id> reason=<done|deadline> (self-destroy)."""
    source = clip if outcome != "bad_input" else make_truncated(clip, tmp_path / "broken.mp4")
    env = file_job_env(tmp_path, source, **({"JOB_DEADLINE": "1000"} if outcome == "deadline" else {}))
    instance, destroys = _run_on_vast(env)
    _result, manifest_path, log_path = _paths(env)

    assert [(d["instance_id"], d["scoped"]) for d in destroys] == [(instance["id"], True)], destroys
    manifest = Manifest.from_json(manifest_path.read_bytes())
    assert manifest.status == ("succeeded" if outcome == "ok" else "failed")
    destroyed_at = instance["destroyed_at"]
    written = manifest_path.stat().st_mtime
    assert written <= destroyed_at and log_path.stat().st_mtime <= destroyed_at
    assert destroyed_at - written <= MANIFEST_TO_DESTROY_MAX_S, destroyed_at - written
    stopping = f"STOPPING INSTANCE {instance['id']} reason={reason} (self-destroy)"
    lines = _log_lines(log_path)
    assert [ln["msg"] for ln in lines].count(stopping) == 1 and lines[-1]["msg"] == stopping  # in the log it uploaded


def _deep_env(tmp_path: Path, clip: Path) -> dict[str, str]:
    """A job whose URLs are all longer than one env value may be (as presigned URLs are)."""
    deep = tmp_path / "deep dir ünïcode 'quoted'" / ("x" * 200) / ("y" * 200)
    deep.mkdir(parents=True)
    source = shutil.copy(clip, deep / "a clip = with spaces.mp4")
    env = file_job_env(deep, Path(source), JOB_TARGET_FPS="48")
    assert all(len(env[k]) > MAX_VALUE_CHARS for k in ("JOB_INPUT_URL", "JOB_OUTPUT_URL", "JOB_MANIFEST_URL",
                                                        "JOB_LOG_URL"))
    return env


@pytest.mark.slow
def test_values_sent_as_parts_are_joined_and_the_job_processes_the_same(tmp_path, clip):
    """GIVEN URLs over 256 characters, sent as JOB_INPUT_URL__1, JOB_INPUT_URL__2, ... (the only way
    the strict emulator, like Vast, accepts them)
    WHEN the job runs on the instance
    THEN it reads the whole URLs: the result and manifest land where a plain env would put them."""
    env = _deep_env(tmp_path, clip)
    parts = split_values(env)
    assert "JOB_INPUT_URL" not in parts and "JOB_INPUT_URL__2" in parts
    instance, _ = _run_on_vast(parts)
    result, manifest_path, log_path = _paths(env)
    manifest = Manifest.from_json(manifest_path.read_bytes())
    assert manifest.status == "succeeded", manifest.error
    assert manifest.input.url == env["JOB_INPUT_URL"] and manifest.result.url == env["JOB_OUTPUT_URL"]
    assert manifest.result.size == result.stat().st_size
    assert manifest.media.output.fps == 48.0
    assert any(ln["msg"].startswith("STOPPING INSTANCE") for ln in _log_lines(log_path))

    # the same job with the plain env, run locally, reads the same
    plain = _deep_env(tmp_path / "plain", clip)
    proc = run_job(plain)
    assert proc.returncode == 0, proc.stderr
    local = Manifest.from_json(_paths(plain)[1].read_bytes())
    assert (local.media.output, local.params, local.engine.interpolation) == (
        manifest.media.output, manifest.params, manifest.engine.interpolation)


@pytest.mark.slow
def test_a_gap_in_the_parts_exits_65_naming_the_variable_and_no_value(tmp_path, clip):
    whole = _deep_env(tmp_path, clip)
    env = split_values(whole)
    assert "JOB_INPUT_URL__3" in env
    secret_part = env.pop("JOB_INPUT_URL__2")
    proc = run_job(env)
    assert proc.returncode == 65, proc.stderr
    assert "invalid job configuration" in proc.stderr and "JOB_INPUT_URL__2" in proc.stderr
    assert "missing" in proc.stderr and "Traceback" not in proc.stderr
    uploaded = _paths(whole)[2].read_text()  # its own (whole) JOB_LOG_URL still took the log
    assert "JOB_INPUT_URL__2" in uploaded
    for value in (secret_part, env["JOB_INPUT_URL__1"], env["JOB_INPUT_URL__3"]):
        assert value not in proc.stderr and value not in uploaded
    assert "STOPPING INSTANCE" not in proc.stderr  # not on Vast: nothing to destroy


@pytest.mark.slow
def test_conflicting_plain_and_parts_exit_65(tmp_path, clip):
    env = file_job_env(tmp_path, clip)
    env["JOB_CALLBACK_SECRET"], env["JOB_CALLBACK_SECRET__1"] = "plain-secret-one", "part-secret-two"
    proc = run_job(env)
    assert proc.returncode == 65, proc.stderr
    assert "JOB_CALLBACK_SECRET" in proc.stderr and "different" in proc.stderr
    assert "plain-secret-one" not in proc.stderr and "part-secret-two" not in proc.stderr


# -- the process environment is joined once, for everything that reads it ------------------------

def test_the_job_rewrites_its_environment_with_joined_values(monkeypatch):
    from gpu_job import __main__ as job_main

    secret = "aws-secret-" + "s" * 300
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY__1", secret[:256])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY__2", secret[256:])
    monkeypatch.setenv("JOB_ID", "plain")
    monkeypatch.setattr(logs, "_secrets", set())
    original = dict(os.environ)
    try:
        assert job_main._join_environ() is None
        job_main._register_secrets(os.environ)
        assert os.environ["AWS_SECRET_ACCESS_KEY"] == secret and os.environ["JOB_ID"] == "plain"
        assert not any(k.startswith("AWS_SECRET_ACCESS_KEY__") for k in os.environ)
        assert logs.scrub(f"key={secret[:5]} {secret}") == f"key={secret[:5]} <redacted>"
    finally:
        os.environ.clear()
        os.environ.update(original)


def test_job_settings_read_joined_values(monkeypatch):
    from vastdrop.jobspec import JobSettings

    url = "https://example.com/in.mp4?X-Amz-Signature=" + "f" * 400
    for key, value in split_values({"JOB_INPUT_URL": url}).items():
        monkeypatch.setenv(key, value)
    for key in ("JOB_ID", "JOB_OUTPUT_URL", "JOB_MANIFEST_URL"):
        monkeypatch.setenv(key, "file:///x" if key != "JOB_ID" else "j")
    assert JobSettings().input_url == url


# -- the destroy itself: bounded, at most one retry, never raises --------------------------------

class _Api(http.server.BaseHTTPRequestHandler):
    answers: list[int] = []
    calls: list[tuple[float, str, str]] = []
    hang_s = 0.0

    def do_DELETE(self):  # noqa: N802 (http.server's naming)
        type(self).calls.append((time.monotonic(), self.path, self.headers.get("Authorization", "")))
        time.sleep(type(self).hang_s)
        status = type(self).answers.pop(0) if type(self).answers else 200
        body = b"API requests too frequent: endpoint threshold=3.0" if status == 429 else b'{"success": true}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def api():
    _Api.answers, _Api.calls, _Api.hang_s = [], [], 0.0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def _own(url: str) -> selfdestroy.OwnInstance:
    own = selfdestroy.own_instance({"CONTAINER_ID": "42", "CONTAINER_API_KEY": "inst-key", "VAST_URL": url})
    assert own is not None and own.instance_id == 42
    return own


def test_not_on_vast_there_is_nothing_to_destroy():
    assert selfdestroy.own_instance({}) is None
    assert selfdestroy.own_instance({"CONTAINER_ID": "42"}) is None
    assert selfdestroy.own_instance({"CONTAINER_ID": "not-a-number", "CONTAINER_API_KEY": "k"}) is None


def test_it_destroys_its_instance_at_vast_url_with_the_instance_key(api, caplog):
    own = _own(api)
    own.announce("done")
    assert own.destroy() is True
    assert [(path, auth) for _, path, auth in _Api.calls] == [("/api/v0/instances/42/", "Bearer inst-key")]
    assert "STOPPING INSTANCE 42 reason=done (self-destroy)" in caplog.text


def test_a_429_is_retried_once_after_the_documented_interval(api, monkeypatch):
    monkeypatch.setattr(selfdestroy, "RETRY_PAUSE_429_S", 0.2)
    _Api.answers = [429, 429, 429]
    assert _own(api).destroy() is False  # two calls, no more
    assert len(_Api.calls) == 2 and _Api.calls[1][0] - _Api.calls[0][0] >= 0.2
    _Api.answers, _Api.calls = [429], []
    assert _own(api).destroy() is True and len(_Api.calls) == 2


def test_already_gone_counts_as_destroyed(api):
    _Api.answers = [404]
    assert _own(api).destroy() is True


def test_other_errors_are_not_retried_and_never_raise(api):
    _Api.answers = [500]
    assert _own(api).destroy() is False and len(_Api.calls) == 1


def test_an_unreachable_api_fails_fast_after_one_retry():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    assert _own(f"http://127.0.0.1:{port}").destroy() is False
    assert time.monotonic() - started < 2.0


def test_a_hanging_api_is_given_up_within_the_budget(api, monkeypatch):
    monkeypatch.setattr(selfdestroy, "TOTAL_BUDGET_S", 0.5)
    _Api.hang_s = 3.0
    started = time.monotonic()
    assert _own(api).destroy() is False
    assert time.monotonic() - started < 1.0


def test_the_whole_destroy_is_bounded_by_a_few_seconds():
    timeout = selfdestroy.REQUEST_TIMEOUT_S
    assert sum(timeout) <= 3 and selfdestroy.TOTAL_BUDGET_S <= 6
