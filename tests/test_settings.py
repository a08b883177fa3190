"""ControlSettings: how values arrive from the environment and how they map onto the job's."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from vastdrop.compose import build_compute
from vastdrop.jobspec import JobSpec
from vastdrop.settings import ControlSettings, load_settings


def test_gpu_names_are_comma_separated_in_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("WATCHER_VAST_GPU_NAMES", "RTX 4090, RTX_3090,,")
    monkeypatch.setenv("WATCHER_VAST_API_KEY", "k")
    monkeypatch.setenv("WATCHER_COMPUTE", "vast")
    settings = load_settings()
    assert settings.vast_gpu_names == ["RTX 4090", "RTX_3090"]
    assert build_compute(settings, tmp_path).config.gpu_names == ["RTX 4090", "RTX_3090"]


def test_processing_parameters_are_the_jobs_own_definitions(monkeypatch):
    for name in ("target_fps", "upscale", "device", "video_codec", "crf"):
        ours, jobs = ControlSettings.model_fields[name], JobSpec.model_fields[name]
        assert (ours.default, ours.description, ours.metadata) == (jobs.default, jobs.description, jobs.metadata)
    monkeypatch.setenv("WATCHER_UPSCALE", "5")  # JobSpec's bound: 1..4
    with pytest.raises(ValidationError, match="upscale"):
        load_settings()


def test_flags_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("WATCHER_CRF", "30")
    assert load_settings().crf == 30
    assert load_settings(crf=20).crf == 20
