"""ControlSettings: how values arrive from the environment and how they map onto the job's."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from vastdrop.compose import build_compute, build_deps, control_config, refuse_loops
from vastdrop.compute.base import InstanceState
from vastdrop.errors import ConfigError
from vastdrop.jobspec import JobSpec
from vastdrop.layout import Layout
from vastdrop.location import Location
from vastdrop.settings import ControlSettings, load_settings


def test_gpu_names_are_comma_separated_in_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("WATCHER_VAST_GPU_NAMES", "RTX 4090, RTX_3090,,")
    monkeypatch.setenv("WATCHER_VAST_API_KEY", "k")
    monkeypatch.setenv("WATCHER_COMPUTE", "vast")
    settings = load_settings()
    assert settings.vast_gpu_names == ["RTX 4090", "RTX_3090"]
    assert build_compute(settings, tmp_path).config.gpu_names == ["RTX 4090", "RTX_3090"]


def test_processing_parameters_are_the_jobs_own_definitions(monkeypatch):
    for name in ("target_fps", "upscale", "device", "video_codec", "crf", "max_duration_s", "max_output_pixels"):
        ours, jobs = ControlSettings.model_fields[name], JobSpec.model_fields[name]
        assert (ours.default, ours.description, ours.metadata) == (jobs.default, jobs.description, jobs.metadata)
    monkeypatch.setenv("WATCHER_UPSCALE", "5")  # JobSpec's bound: 1..4
    with pytest.raises(ValidationError, match="upscale"):
        load_settings()


def test_flags_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("WATCHER_CRF", "30")
    assert load_settings().crf == 30
    assert load_settings(crf=20).crf == 20


# ---- issue 9: bounds and configuration that cannot loop ----------------------------------------

@pytest.mark.parametrize("fps", [0.0001, 0.5, 1000.5, 1e9])
def test_target_fps_outside_one_to_a_thousand_is_refused_like_the_jobs(monkeypatch, fps):
    """`--target-fps 0.0001` used to pass here and crash the job: the watcher refuses what the job would."""
    with pytest.raises(ValidationError, match="target_fps"):
        load_settings(target_fps=fps)
    monkeypatch.setenv("WATCHER_TARGET_FPS", str(fps))
    with pytest.raises(ValidationError, match="target_fps"):
        load_settings()


def test_target_fps_bounds_are_inclusive():
    assert [load_settings(target_fps=f).target_fps for f in (1, 59.94, 1000)] == [1, 59.94, 1000]


def test_job_bounds_come_from_the_environment_into_the_handlers_config(monkeypatch):
    defaults = control_config(load_settings())
    assert (defaults.max_duration_s, defaults.max_output_pixels) == (12 * 3600, 8192 * 8192)
    monkeypatch.setenv("WATCHER_MAX_DURATION_S", "90")
    monkeypatch.setenv("WATCHER_MAX_OUTPUT_PIXELS", str(1920 * 1080))
    config = control_config(load_settings())
    assert (config.max_duration_s, config.max_output_pixels) == (90, 1920 * 1080)
    for name in ("max_duration_s", "max_output_pixels"):
        with pytest.raises(ValidationError, match=name):
            load_settings(**{name: 0})


def test_relative_state_and_ledger_are_kept_absolute_when_the_working_directory_changes(monkeypatch, tmp_path):
    """GIVEN the default relative state directory (and a relative ledger path)
    WHEN the process changes its working directory after loading its settings
    THEN the ledger and the local instances stay where they were configured."""
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    start.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(start)
    monkeypatch.setenv("WATCHER_LEDGER", "db/jobs.sqlite")
    settings = load_settings()
    assert settings.state == str(start / ".vastdrop") and settings.ledger == str(start / "db" / "jobs.sqlite")
    monkeypatch.chdir(elsewhere)
    deps = build_deps(settings)
    assert deps.ledger.path == start / "db" / "jobs.sqlite" and deps.compute.state_dir == start / ".vastdrop" / "instances"
    assert list(elsewhere.iterdir()) == []
    assert load_settings(ledger="dynamodb://jobs").ledger == "dynamodb://jobs"  # URLs are left as given


def test_local_exit_codes_are_recorded_with_the_default_state_directory(monkeypatch, tmp_path):
    """The job wrapper runs inside its instance directory: with a relative state directory it wrote
    its exit code relative to that directory, where the watcher never looked ("exit code not recorded")."""
    monkeypatch.chdir(tmp_path)
    compute = build_compute(load_settings(), Path(load_settings().state))
    compute.command = [sys.executable, "-c", "raise SystemExit(3)"]
    spec = JobSpec(id="vd-exit", input_url="file:///in.mp4", output_url="file:///out.mp4",
                   manifest_url="file:///out.json")
    instance = compute.launch(spec, {})
    deadline = time.monotonic() + 30
    while (seen := compute.get(instance.id)).state is not InstanceState.EXITED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (seen.state, seen.exit_code) == (InstanceState.EXITED, 3)


def _loc(url: str) -> Location:
    return Location(*Location.root_and_prefix(url), storage=None)


@pytest.mark.parametrize(("inputs", "outputs"), [
    ("s3://b/media/", "s3://b/media/out/"),  # output inside input: every result a new input
    ("s3://b/out/in/", "s3://b/out/"),  # input inside output
    ("s3://b/input/", "s3://b/input/"),  # the same prefix
    ("s3://b/", "s3://b/output/"),  # the whole bucket as input
    ("s3://b/logs/", "s3://b/output/"),  # the job logs (logs/<job>.log) land in the input
    ("file:///srv/bucket/input/", "file:///srv/bucket/input/results/"),  # other root folder, same files
    ("file:///srv/bucket/input/", "file:///srv/bucket/input/"),
    ("file:///srv/bucket/logs/", "file:///srv/bucket/output/"),
    ("file:///srv/bucket/output/in/", "file:///srv/bucket/output/"),
])
def test_overlapping_input_and_output_are_refused_naming_both(inputs, outputs):
    with pytest.raises(ConfigError) as refused:
        refuse_loops(_loc(inputs), _loc(outputs), Layout(_loc(inputs).prefix, _loc(outputs).prefix))
    named = _loc(inputs).root + _loc(inputs).prefix, _loc(outputs).root + _loc(outputs).prefix
    if "logs" in inputs:
        named = (named[0], _loc(outputs).root + "logs/")
    assert all(url in str(refused.value) for url in named)


@pytest.mark.parametrize(("inputs", "outputs"), [
    ("s3://a/input/", "s3://b/input/"),  # different buckets never overlap
    ("s3://b/input/", "s3://b/input2/"),  # a prefix is a folder, not a string prefix
    ("s3://b/input/", "s3://b/output/"),
    ("s3://b/logs/in/", "s3://b/output/"),  # logs/<job>.log is not under logs/in/
    ("file:///srv/bucket/input/", "file:///srv/bucket/output/"),
    ("file:///srv/a/input/", "file:///srv/b/input/"),
])
def test_separate_input_and_output_are_accepted(inputs, outputs):
    refuse_loops(_loc(inputs), _loc(outputs), Layout(_loc(inputs).prefix, _loc(outputs).prefix))


def test_run_interruptible_is_a_switch_and_also_reads_watcher_interruptible(monkeypatch: pytest.MonkeyPatch) -> None:
    from watcher.cli import _parser, _settings

    monkeypatch.delenv("WATCHER_INTERRUPTIBLE", raising=False)
    assert _settings(_parser().parse_args(["run", "--interruptible", "--bid-ratio", "0.5"])).interruptible is True
    assert _settings(_parser().parse_args(["run"])).interruptible is False
    monkeypatch.setenv("WATCHER_INTERRUPTIBLE", "true")
    settings = _settings(_parser().parse_args(["run"]))
    assert settings.interruptible is True and settings.bid_ratio == 0.7
    monkeypatch.setenv("WATCHER_VAST_API_KEY", "k")
    vast = build_compute(_settings(_parser().parse_args(["run", "--compute", "vast", "--bid-ratio", "0.5"])), Path("."))
    assert vast.config.interruptible is True and vast.config.bid_ratio == 0.5
