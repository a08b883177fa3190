"""The GPU job end to end on file:// URLs: the real `python -m gpu_job` process, configured by env."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest

from tests.support.clips import make_audio_only, make_clip, make_truncated
from tests.support.jobs import file_job_env, measure, run_job
from tests.support.models import save_compact, save_rife, save_rrdb
from vastdrop import signing
from vastdrop.manifest import Manifest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "plain": make_clip(d / "plain.mp4", width=64, height=48, fps=24, seconds=1.0),
        "odd": make_clip(d / "odd size.mp4", width=255, height=143, fps=24, seconds=0.5),
        "vfr": make_clip(d / "vfr.mp4", width=64, height=48, fps=24, seconds=1.0, vfr=True),
        "pcm": make_clip(d / "pcm.mkv", width=64, height=48, fps=25, seconds=1.0, audio_codec="pcm_u8"),
        "silent": make_clip(d / "silent.mp4", width=64, height=48, fps=30, seconds=1.0, audio=False),
    }


def _outputs(tmp: Path) -> tuple[Path, Path, Path]:
    out = tmp / "bucket" / "output"
    return out / "clip.mp4", out / "clip.mp4.manifest.json", tmp / "bucket" / "logs"


def _manifest(tmp: Path) -> Manifest:
    return Manifest.from_json(_outputs(tmp)[1].read_bytes())


def _quoted_md5(path: Path) -> str:
    return '"' + hashlib.md5(path.read_bytes()).hexdigest() + '"'


def test_fallback_interpolation_and_upscale_are_recorded_and_the_output_is_right(tmp_path, clips):
    """GIVEN a 24 fps clip with AAC audio and no model weights
    WHEN the job runs with JOB_TARGET_FPS=60 and JOB_UPSCALE=2
    THEN the result is 60 fps, 2x, same duration, audio copied, and the manifest says the fallback ran."""
    proc = run_job(file_job_env(tmp_path, clips["plain"], JOB_TARGET_FPS="60", JOB_UPSCALE="2"))
    assert proc.returncode == 0, proc.stderr
    result, _, logs = _outputs(tmp_path)
    m = measure(result)
    assert (m.width, m.height, m.fps, m.frames) == (128, 96, 60.0, 60)
    assert m.duration_s == pytest.approx(1.0, abs=1 / 24)
    assert m.audio_codec == "aac" and m.pix_fmt == "yuv420p"
    manifest = _manifest(tmp_path)
    assert manifest.status == "succeeded" and manifest.error is None
    assert manifest.engine.interpolation == "ffmpeg-minterpolate"
    assert manifest.engine.upscale == "lanczos"
    assert manifest.engine.audio == "copy"
    assert any("minterpolate" in n for n in manifest.engine.notes)
    assert any("lanczos" in n for n in manifest.engine.notes)
    assert manifest.result.etag == _quoted_md5(result)
    assert manifest.result.size == result.stat().st_size
    assert manifest.result.sha256 == hashlib.sha256(result.read_bytes()).hexdigest()
    assert manifest.input.etag == _quoted_md5(clips["plain"])
    out = manifest.media.output
    assert (out.width, out.height, out.frames, out.fps, out.audio) == (128, 96, 60, 60.0, True)
    assert manifest.params == {"target_fps": 60.0, "upscale": 2}
    assert set(manifest.timings_s) >= {"download", "process", "upload", "total"}
    raw = json.loads(_outputs(tmp_path)[1].read_text())
    assert raw["schema"] == 1 and raw["job_id"] == "job-1" and raw["attempt"] == 1
    log_lines = [json.loads(line) for line in (logs / "job-1.log").read_text().splitlines()]
    assert any(line["msg"] == "diagnostics" and "torch" in line for line in log_lines)
    assert any(line["msg"].startswith("progress 60/60") for line in log_lines)


@pytest.mark.parametrize("extra", [{}, {"JOB_TARGET_FPS": "60", "JOB_UPSCALE": "2"}], ids=["transcode", "fallbacks"])
def test_a_job_without_models_on_the_cpu_never_imports_torch(tmp_path, clips, extra):
    """GIVEN no model and JOB_DEVICE=cpu (the picture stays in YUV: libavfilter does the work)
    WHEN the job runs in a process where importing torch fails
    THEN it succeeds all the same, and says which torch the image holds: torch's ~2 s import is
    not paid by a job that has no use for it."""
    proc = run_job(file_job_env(tmp_path, clips["plain"], **extra), unimportable=("torch",))
    assert proc.returncode == 0, proc.stderr
    manifest = _manifest(tmp_path)
    assert manifest.status == "succeeded" and manifest.media.output.frames == (60 if extra else 24)
    assert manifest.engine.torch and manifest.engine.torch[0].isdigit()


def test_the_torch_guard_fails_a_job_that_needs_torch(tmp_path, clips):
    """The guard above can fail: an odd-sized picture is cropped on the device (RGB), which needs
    torch, and where torch cannot be imported that job does not succeed."""
    proc = run_job(file_job_env(tmp_path, clips["odd"]), unimportable=("torch",))
    assert proc.returncode == 70 and _manifest(tmp_path).status == "failed"


@pytest.mark.parametrize(("target", "frames", "fps"), [("70", 35, 70.0), ("59.94", 30, 59.94)])
def test_any_target_rate_keeps_the_duration(tmp_path, clips, target, frames, fps):
    proc = run_job(file_job_env(tmp_path, clips["odd"], JOB_TARGET_FPS=target))
    assert proc.returncode == 0, proc.stderr
    m = measure(_outputs(tmp_path)[0])
    assert m.frames == frames and m.fps == pytest.approx(fps, abs=0.01)
    assert m.duration_s == pytest.approx(0.5, abs=1 / 24)


def test_odd_frame_size_through_a_compact_model_and_the_crop_is_recorded(tmp_path, clips):
    model = save_compact(tmp_path / "realesr-animevideov3.pth", scale=2)
    proc = run_job(file_job_env(tmp_path, clips["odd"], JOB_UPSCALE="2", JOB_UPSCALE_MODEL=str(model)))
    assert proc.returncode == 0, proc.stderr
    m = measure(_outputs(tmp_path)[0])
    assert (m.width, m.height, m.frames) == (510, 286, 12)
    manifest = _manifest(tmp_path)
    assert manifest.engine.upscale == "realesr-animevideov3"
    # 510x286 is even: no crop; the odd-sized source is 4:4:4, and the result 4:2:0 says so.
    assert manifest.engine.notes == ["chroma 4:4:4 subsampled to 4:2:0 for playback everywhere"]


def test_rrdb_x4_model_asked_for_x3_is_resized_and_says_so(tmp_path, clips):
    model = save_rrdb(tmp_path / "RealESRGAN_x4plus.pth", scale=4)
    proc = run_job(file_job_env(tmp_path, clips["plain"], JOB_UPSCALE="3", JOB_UPSCALE_MODEL=model.as_uri()))
    assert proc.returncode == 0, proc.stderr
    m = measure(_outputs(tmp_path)[0])
    assert (m.width, m.height) == (192, 144)
    assert any("x4" in n and "x3" in n for n in _manifest(tmp_path).engine.notes)


def test_variable_frame_rate_input_becomes_constant_rate(tmp_path, clips):
    proc = run_job(file_job_env(tmp_path, clips["vfr"], JOB_TARGET_FPS="30"))
    assert proc.returncode == 0, proc.stderr
    manifest = _manifest(tmp_path)
    m = measure(_outputs(tmp_path)[0])
    assert m.frames == round(manifest.media.input.duration_s * 30)
    gaps = {round(b - a, 4) for a, b in zip(m.frame_times, m.frame_times[1:], strict=False)}
    assert gaps == {round(1 / 30, 4)}


def test_audio_the_container_cannot_take_is_reencoded_to_aac_and_recorded(tmp_path, clips):
    proc = run_job(file_job_env(tmp_path, clips["pcm"]))
    assert proc.returncode == 0, proc.stderr
    assert measure(_outputs(tmp_path)[0]).audio_codec == "aac"
    manifest = _manifest(tmp_path)
    assert manifest.engine.audio == "aac" and any("pcm_u8" in n for n in manifest.engine.notes)


def test_a_clip_without_audio_has_no_audio_and_keeps_its_rate(tmp_path, clips):
    proc = run_job(file_job_env(tmp_path, clips["silent"]))
    assert proc.returncode == 0, proc.stderr
    m = measure(_outputs(tmp_path)[0])
    assert m.audio_codec is None and m.fps == 30.0 and m.frames == 30
    assert _manifest(tmp_path).media.output.audio is False


@pytest.mark.parametrize("kind", ["truncated", "text", "empty", "audio_only"])
def test_bad_input_exits_65_with_a_failure_manifest_and_no_result(tmp_path, clips, kind):
    bad = tmp_path / f"bad {kind}.mp4"
    if kind == "truncated":
        make_truncated(clips["plain"], bad)
    elif kind == "text":
        bad.write_text("this is a text file, renamed .mp4\n")
    elif kind == "empty":
        bad.write_bytes(b"")
    else:
        make_audio_only(bad)
    proc = run_job(file_job_env(tmp_path, bad, JOB_TARGET_FPS="60"))
    assert proc.returncode == 65, proc.stderr
    assert "Traceback" not in proc.stderr
    result, manifest_path, _ = _outputs(tmp_path)
    assert not result.exists()
    manifest = Manifest.from_json(manifest_path.read_bytes())
    assert manifest.status == "failed" and manifest.result is None
    assert manifest.error.kind == "bad_input" and manifest.error.message
    assert manifest.input.size == bad.stat().st_size


def test_invalid_configuration_exits_65_with_a_clear_message_and_no_traceback(tmp_path, clips):
    env = file_job_env(tmp_path, clips["plain"], JOB_UPSCALE="5", JOB_CALLBACK_SECRET="hunter2-very-secret")
    del env["JOB_ID"]
    proc = run_job(env)
    assert proc.returncode == 65
    assert "JOB_ID" in proc.stderr and "JOB_UPSCALE" in proc.stderr
    assert "Traceback" not in proc.stderr and "hunter2-very-secret" not in proc.stderr


def test_missing_model_file_is_permanent(tmp_path, clips):
    proc = run_job(file_job_env(tmp_path, clips["plain"], JOB_UPSCALE="2", JOB_UPSCALE_MODEL="/nonexistent/x.pth"))
    assert proc.returncode == 65
    assert "model file not found" in _manifest(tmp_path).error.message


def test_a_deadline_in_the_past_exits_75_with_a_transient_failure_manifest(tmp_path, clips):
    proc = run_job(file_job_env(tmp_path, clips["plain"], JOB_DEADLINE="1000"))
    assert proc.returncode == 75, proc.stderr
    manifest = _manifest(tmp_path)
    assert manifest.status == "failed" and manifest.error.kind == "transient"
    assert not _outputs(tmp_path)[0].exists()


class _CallbackSink(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict, bytes]] = []
    log_path: Path | None = None  # whether the job's log is already stored when its callback arrives
    log_seen: list[bool] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), body))
        self.log_seen.append(self.log_path is not None and self.log_path.exists())
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_callback_posts_the_manifest_signed_and_secrets_stay_out_of_logs(tmp_path, clips):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CallbackSink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = "cb-secret-0123456789"
    _CallbackSink.log_path = tmp_path / "bucket" / "logs" / "job-1.log"
    try:
        proc = run_job(file_job_env(
            tmp_path, clips["silent"], JOB_CALLBACK_URL=f"http://127.0.0.1:{server.server_port}/done?token=abc123xyz",
            JOB_CALLBACK_SECRET=secret,
        ))
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr
    headers, body = _CallbackSink.received[-1]
    assert signing.verify(secret, body, headers["X-Signature"])
    assert body == _outputs(tmp_path)[1].read_bytes()
    # The control plane destroys the instance on seeing the manifest: the log went up before it.
    assert _CallbackSink.log_seen[-1] is True
    log_text = (_outputs(tmp_path)[2] / "job-1.log").read_text()
    for text in (proc.stderr, log_text, body.decode()):
        assert secret not in text and "abc123xyz" not in text


def _decode_rgb(path: Path) -> list:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24").astype(float) for f in container.decode(video=0)]


def test_rife_interpolates_24_to_60_through_the_real_loader(tmp_path, clips):
    """GIVEN random-weight RIFE 4.25 weights saved as flownet.pkl (the published layout)
    WHEN the job retimes a 24 fps clip to 60 fps with them
    THEN the model ran for the in-between frames and the manifest names it."""
    model = save_rife(tmp_path / "train_log" / "flownet.pkl", "4.25")
    proc = run_job(file_job_env(tmp_path, clips["plain"], JOB_TARGET_FPS="60", JOB_INTERPOLATION_MODEL=str(model)))
    assert proc.returncode == 0, proc.stderr
    m = measure(_outputs(tmp_path)[0])
    assert (m.frames, m.fps, m.width, m.height) == (60, 60.0, 64, 48)
    manifest = _manifest(tmp_path)
    assert manifest.engine.interpolation == "rife-4.25"
    frames = manifest.engine.model_extra["frames"] if manifest.engine.model_extra else None
    # Source frames land exactly on every 5th output frame (12 copies) and the last one holds 2 more.
    assert frames["interpolated"] == 46 and frames["copied"] == 14 and frames["scene_cuts"] == 0
    assert manifest.engine.notes == []


def test_scene_cut_repeats_a_source_frame_instead_of_morphing_two_shots(tmp_path):
    clip = make_clip(tmp_path / "cut.mp4", width=64, height=48, fps=10, seconds=1.0, cut_at_frame=5, audio=False)
    model = save_rife(tmp_path / "flownet.pkl", "4.6")
    proc = run_job(file_job_env(tmp_path, clip, JOB_TARGET_FPS="40", JOB_INTERPOLATION_MODEL=str(model)))
    assert proc.returncode == 0, proc.stderr
    assert _manifest(tmp_path).engine.model_extra["frames"]["scene_cuts"] == 1
    source, out = _decode_rgb(clip), _decode_rgb(_outputs(tmp_path)[0])
    # Output frames 17..19 sit between source frames 4 (shot A) and 5 (shot B): each must be one of them.
    for k in (17, 18, 19):
        nearest = min(abs(out[k] - source[4]).mean(), abs(out[k] - source[5]).mean())
        assert nearest < 6, f"output frame {k} is a blend of two shots"


def test_past_its_deadline_on_vast_the_job_destroys_its_own_instance(tmp_path, clips):
    """The real job under the Vast emulator: CONTAINER_ID/CONTAINER_API_KEY are injected like Vast does;
    past JOB_DEADLINE the job writes a transient failure manifest, exits 75 and destroys its instance."""
    import time

    from vastai import VastAI

    from tests.support.vast_emulator import VastEmulator

    env = {k: v for k, v in file_job_env(tmp_path, clips["silent"], JOB_DEADLINE="1000").items()}
    with VastEmulator(loading_s=0.05, kill_grace_s=0.5) as emu:
        client = VastAI(api_key=emu.api_key, server_url=emu.url, retry=1)
        offer = client.search_offers(query="rentable=true", order="dph_total")[0]
        iid = client.create_instance(id=offer["id"], image="vastdrop/gpu-job:test", disk=10, env=env,
                                     label="vastdrop:job-1")["new_contract"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and emu.live_instances():
            time.sleep(0.1)
        assert emu.live_instances() == []
        (instance,) = emu.all_instances()
        # 75 if it exited first; 143 (SIGTERM) if the destroy it requested stopped it first.
        assert instance["id"] == iid and instance["exit_code"] in (75, 143, None)
    assert _manifest(tmp_path).error.kind == "transient"
    assert "deadline" in (_outputs(tmp_path)[2] / "job-1.log").read_text()  # its log went up first


def test_rife_estimates_flow_at_half_resolution_above_1440p_and_says_so(tmp_path):
    clip = make_clip(tmp_path / "wide.mp4", width=2600, height=32, fps=12, seconds=0.25, audio=False)
    model = save_rife(tmp_path / "flownet.pkl", "4.6")
    proc = run_job(file_job_env(tmp_path, clip, JOB_TARGET_FPS="24", JOB_INTERPOLATION_MODEL=str(model)))
    assert proc.returncode == 0, proc.stderr
    manifest = _manifest(tmp_path)
    assert any("scale 0.5" in n for n in manifest.engine.notes)
    assert (manifest.media.output.width, manifest.media.output.frames) == (2600, 6)
