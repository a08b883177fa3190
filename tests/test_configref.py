"""The configuration reference in README.md is generated from the settings models and
template.yaml, and must be current; every variable the job and the watcher read is in it."""

from __future__ import annotations

import pytest

from tests.support.stack import REPO
from vastdrop import configref
from vastdrop.jobspec import JobSettings
from vastdrop.settings import ControlSettings
from watcher.cli import main as watcher_main

README = REPO / "README.md"


def test_readme_reference_is_current():
    expected = configref.splice(README.read_text(), configref.reference(REPO / "template.yaml"))
    assert README.read_text() == expected, "run: .venv/bin/python -m vastdrop.configref --write README.md"


def test_every_variable_is_documented_with_a_meaning():
    text = configref.reference(REPO / "template.yaml")
    for model, prefix in ((ControlSettings, "WATCHER_"), (JobSettings, "JOB_")):
        for name, field in model.model_fields.items():
            assert f"`{prefix}{name.upper()}`" in text
            assert field.description, f"{prefix}{name.upper()} has no description"
    for name in ("BucketName", "SecretName", "VastMaxDph"):
        assert f"`{name}`" in text


def test_splice_replaces_only_between_the_markers():
    doc = f"head\n{configref.BEGIN}\nold\n{configref.END}\ntail\n"
    assert configref.splice(doc, "new\n") == f"head\n{configref.BEGIN}\nnew\n{configref.END}\ntail\n"
    with pytest.raises(ValueError, match="markers not found"):
        configref.splice("no markers", "new\n")


def test_cli_help_is_the_settings_description(capsys):
    with pytest.raises(SystemExit):
        watcher_main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert ControlSettings.model_fields["max_attempts"].description in help_text
