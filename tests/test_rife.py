"""RIFE 4.x: our IFNet against the published state-dict layouts, and the wrapper's contract.

tests/data/rife/<version>.json holds, per release, the {key: shape} listing dumped from the
reference implementation (see each file's "source"). We build flownet.pkl files with
exactly those keys and shapes (random values, ``module.``-prefixed like the published
files) and load them through ``RifeInterpolator.from_file`` strictly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gpu_job.models.ifnet import (
    LAYOUTS,
    SUPPORTED_VERSIONS,
    VERSIONS,
    backward_warp,
    expected_shapes,
)
from gpu_job.models.rife import ModelLoadError, RifeInterpolator, UnsupportedModelError
from tests.support.models import fake_flownet, rife_reference_shapes
from vastdrop.errors import PermanentError

DATA = Path(__file__).parent / "data" / "rife"
CPU = torch.device("cpu")


reference_shapes = rife_reference_shapes


def save(state: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory):
    """One saved flownet.pkl per version, built lazily and shared across tests."""
    root = tmp_path_factory.mktemp("rife")
    cache: dict[str, Path] = {}

    def get(version: str) -> Path:
        if version not in cache:
            cache[version] = save(
                # Directory named without dots, so no release can be read off the path.
                fake_flownet(reference_shapes(version)),
                root / version.replace(".", "_") / "flownet.pkl",
            )
        return cache[version]

    return get


def frames(batch: int, height: int, width: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.rand(batch, 3, height, width, generator=gen),
        torch.rand(batch, 3, height, width, generator=gen),
    )


# ----------------------------------------------------------------- layouts vs reference


def test_every_supported_version_has_a_reference_listing() -> None:
    listed = {p.stem for p in DATA.glob("*.json")}
    assert listed == set(SUPPORTED_VERSIONS)


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_our_layout_equals_the_reference_listing(version: str) -> None:
    assert expected_shapes(VERSIONS[version]) == reference_shapes(version)


def test_no_two_layouts_are_identical() -> None:
    # Otherwise detection would be ambiguous: identical releases belong in one row.
    seen: dict[tuple, str] = {}
    for layout in LAYOUTS:
        key = tuple(sorted(expected_shapes(layout).items()))
        assert key not in seen, f"{layout.family} duplicates {seen[key]}"
        seen[key] = layout.family


@pytest.mark.parametrize(
    ("version", "multiple"),
    [
        ("4.6", 32),
        ("4.9", 32),
        ("4.15", 32),
        ("4.18", 32),
        ("4.22", 32),
        ("4.25", 64),
        ("4.26", 64),
        ("4.26.heavy", 64),
        ("4.25.lite", 128),
    ],
)
def test_pad_multiple_follows_the_coarsest_scale(version: str, multiple: int) -> None:
    assert VERSIONS[version].pad_multiple == multiple


# ----------------------------------------------------------------- loading


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_strict_load_detects_version_and_runs(version: str, model_files) -> None:
    path = model_files(version)
    rife = RifeInterpolator.from_file(path, device=CPU)

    layout = VERSIONS[version]
    assert rife.layout is layout
    assert version in rife.versions_with_layout
    assert rife.name == f"rife-{layout.family}"  # plain "flownet.pkl": no release in the name
    # The file's tensors really are the network's now (strict load, no prefix left over).
    state = torch.load(path, weights_only=True)
    ours = rife.net.state_dict()
    assert set(ours) == {k.removeprefix("module.") for k in state}
    assert torch.equal(ours["block0.conv0.0.0.weight"], state["module.block0.conv0.0.0.weight"])

    img0, img1 = frames(1, 48, 64)
    out = rife(img0, img1, torch.tensor([0.5]))
    assert out.shape == img0.shape
    assert torch.isfinite(out).all()
    assert 0.0 <= out.min().item() and out.max().item() <= 1.0


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_explicit_version_names_the_release(version: str, model_files) -> None:
    rife = RifeInterpolator.from_file(model_files(version), device=CPU, version=version)
    assert rife.name == f"rife-{version}"
    assert rife.version == version


def test_explicit_version_accepts_common_spellings(model_files) -> None:
    path = model_files("4.25")
    for spelling in ("v4.26", "rife-4.26", " 4.26 "):
        assert RifeInterpolator.from_file(path, CPU, version=spelling).name == "rife-4.26"


def test_file_name_labels_a_shared_layout(tmp_path: Path, model_files) -> None:
    state = torch.load(model_files("4.25"), weights_only=True)
    named = save(state, tmp_path / "flownet_v4.26.pkl")
    assert RifeInterpolator.from_file(named, CPU).name == "rife-4.26"
    in_dir = save(state, tmp_path / "rife-4.25" / "flownet.pkl")
    assert RifeInterpolator.from_file(in_dir, CPU).name == "rife-4.25"
    # A name that contradicts the weights is ignored: the layout decides.
    wrong = save(state, tmp_path / "flownet_v4.22.pkl")
    assert RifeInterpolator.from_file(wrong, CPU).name == "rife-4.25"


def test_explicit_version_must_match_the_layout(model_files) -> None:
    with pytest.raises(UnsupportedModelError) as info:
        RifeInterpolator.from_file(model_files("4.6"), CPU, version="4.25")
    msg = str(info.value)
    assert "4.25" in msg and "it matches RIFE 4.6" in msg
    assert isinstance(info.value, ValueError) and isinstance(info.value, PermanentError)


def test_unknown_version_lists_supported_ones(model_files) -> None:
    with pytest.raises(
        UnsupportedModelError, match=r"'4\.3' is not supported; supported: 4\.5, 4\.6"
    ):
        RifeInterpolator.from_file(model_files("4.6"), CPU, version="4.3")


def test_training_only_and_unprefixed_keys_are_dropped(tmp_path: Path) -> None:
    # Published 4.18/4.26 files carry the distillation teacher and the caltime head.
    state = fake_flownet(reference_shapes("4.18"))
    state["module.teacher.lastconv.0.weight"] = torch.zeros(64, 24, 4, 4)
    state["module.caltime.0.weight"] = torch.zeros(8, 25, 3, 3)
    state["optimizer_step"] = torch.tensor(3)  # no "module." prefix: not the flownet's
    rife = RifeInterpolator.from_file(save(state, tmp_path / "flownet.pkl"), CPU)
    assert rife.name == "rife-4.15"
    assert set(rife.dropped_keys) == {
        "teacher.lastconv.0.weight",
        "caltime.0.weight",
        "optimizer_step",
    }


def test_unprefixed_state_dict_loads_too(tmp_path: Path) -> None:
    state = {
        k.removeprefix("module."): v for k, v in fake_flownet(reference_shapes("4.22")).items()
    }
    rife = RifeInterpolator.from_file(save(state, tmp_path / "flownet.pkl"), CPU)
    assert rife.name == "rife-4.22"


def _broken(tmp_path: Path, edit) -> Path:
    state = fake_flownet(reference_shapes("4.25"))
    edit(state)
    return save(state, tmp_path / "flownet.pkl")


def test_missing_key_fails_clearly(tmp_path: Path) -> None:
    path = _broken(tmp_path, lambda s: s.pop("module.block4.lastconv.0.bias"))
    with pytest.raises(UnsupportedModelError) as info:
        RifeInterpolator.from_file(path, CPU)
    msg = str(info.value)
    assert "unrecognised RIFE flownet layout" in msg
    assert "1 missing key(s): block4.lastconv.0.bias" in msg
    assert "Closest supported layout is RIFE 4.25/4.26" in msg


def test_extra_key_fails_clearly(tmp_path: Path) -> None:
    path = _broken(tmp_path, lambda s: s.update({"module.block5.conv0.0.0.weight": torch.zeros(1)}))
    with pytest.raises(
        UnsupportedModelError, match=r"1 unexpected key\(s\): block5\.conv0\.0\.0\.weight"
    ):
        RifeInterpolator.from_file(path, CPU)


def test_misshaped_key_fails_clearly(tmp_path: Path) -> None:
    path = _broken(
        tmp_path, lambda s: s.update({"module.encode.cnn3.weight": torch.zeros(16, 8, 4, 4)})
    )
    with pytest.raises(UnsupportedModelError) as info:
        RifeInterpolator.from_file(path, CPU)
    assert "encode.cnn3.weight is [16, 8, 4, 4] (needs [16, 4, 4, 4])" in str(info.value)
    # The same file with the version named explicitly fails the same way, naming the release.
    with pytest.raises(UnsupportedModelError, match=r"do not have the RIFE 4\.26 layout"):
        RifeInterpolator.from_file(path, CPU, version="4.26")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_corrupt_file_is_a_model_load_error(tmp_path: Path) -> None:
    path = tmp_path / "flownet.pkl"
    path.write_bytes(b"\x80\x04not really a pickle" * 10)
    with pytest.raises(ModelLoadError, match="not a readable PyTorch weights file") as info:
        RifeInterpolator.from_file(path, CPU)
    assert isinstance(info.value, PermanentError)


@pytest.mark.parametrize("payload", [[torch.zeros(2)], {}, {"a": 1}])
def test_non_state_dict_is_a_model_load_error(tmp_path: Path, payload) -> None:
    path = tmp_path / "flownet.pkl"
    torch.save(payload, path)
    with pytest.raises(ModelLoadError, match="state dict"):
        RifeInterpolator.from_file(path, CPU)


def test_missing_file_is_a_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        RifeInterpolator.from_file(tmp_path / "nope.pkl", CPU)


# ----------------------------------------------------------------- inference contract


@pytest.fixture(scope="module")
def rife_425(model_files) -> RifeInterpolator:
    return RifeInterpolator.from_file(model_files("4.25"), CPU)


@pytest.fixture(scope="module")
def rife_46(model_files) -> RifeInterpolator:
    return RifeInterpolator.from_file(model_files("4.6"), CPU)


@pytest.mark.parametrize(("height", "width"), [(41, 67), (48, 64), (1, 5), (65, 33)])
def test_output_keeps_any_frame_size(rife_425: RifeInterpolator, height: int, width: int) -> None:
    img0, img1 = frames(1, height, width)
    out = rife_425(img0, img1, torch.tensor([0.25]))
    assert out.shape == (1, 3, height, width)
    assert out.dtype == img0.dtype
    assert 0.0 <= out.min().item() and out.max().item() <= 1.0


def test_padding_is_decided_once_per_size(rife_425: RifeInterpolator) -> None:
    img0, img1 = frames(1, 41, 67)
    rife_425(img0, img1, torch.tensor([0.5]))
    assert rife_425._pad_cache[(41, 67)] == (64 - 41, 128 - 67)


@pytest.mark.parametrize("version", ["4.25", "4.6"])
def test_batch_equals_single_calls(version: str, model_files) -> None:
    # float64: in float32, CPU convolutions round differently for batch 1 and 2, and five
    # stages of random-weight flow refinement on noise images amplify that to ~1e-3.
    # In float64 any real mixing between batch items would still show; rounding does not.
    rife = RifeInterpolator.from_file(model_files(version), CPU, dtype=torch.float64)
    img0, img1 = (f.double() for f in frames(2, 37, 45, seed=7))
    times = torch.tensor([0.2, 0.7], dtype=torch.float64)
    both = rife(img0, img1, times)
    first = rife(img0[:1], img1[:1], times[:1])
    second = rife(img0[1:], img1[1:], times[1:])
    torch.testing.assert_close(both, torch.cat((first, second)), atol=1e-9, rtol=0)
    # The timestep really is an input: the two items differ from the swapped-time run.
    swapped = rife(img0, img1, times.flip(0))
    assert not torch.allclose(swapped, both)


def test_identical_constant_frames_interpolate_to_themselves(rife_425: RifeInterpolator) -> None:
    # Whatever the flows, warping a flat image (border padding) leaves it flat, and any
    # blend of two equal images is that image: a weight-independent check of the pipeline.
    flat = torch.full((2, 3, 41, 67), 0.4)
    out = rife_425(flat, flat.clone(), torch.tensor([0.3, 0.8]))
    torch.testing.assert_close(out, flat, atol=1e-5, rtol=0)


def test_timestep_validation(rife_46: RifeInterpolator) -> None:
    img0, img1 = frames(2, 32, 32)
    with pytest.raises(ValueError, match="one timestep per frame pair"):
        rife_46(img0, img1, torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        rife_46(img0, img1, torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        rife_46(img0[:, :1], img1[:, :1], torch.tensor([0.5, 0.5]))
    # A single timestep broadcasts over the batch.
    assert rife_46(img0, img1, torch.tensor(0.5)).shape == img0.shape


# ----------------------------------------------------------------- warping


def test_warp_with_zero_flow_is_identity() -> None:
    img = torch.rand(2, 3, 13, 21)
    out = backward_warp(img, torch.zeros(2, 2, 13, 21))
    torch.testing.assert_close(out, img, atol=1e-6, rtol=0)


def test_warp_with_integer_flow_shifts_the_image() -> None:
    img = torch.rand(1, 3, 16, 24)
    flow = torch.zeros(1, 2, 16, 24)
    flow[:, 0] = 3.0  # sample 3 px to the right ...
    flow[:, 1] = -2.0  # ... and 2 px up
    out = backward_warp(img, flow)
    # Backward warping: out(y, x) = img(y - 2, x + 3) wherever that source pixel exists.
    torch.testing.assert_close(out[..., 2:, :-3], img[..., :-2, 3:], atol=1e-5, rtol=0)
    # Outside the frame the border pixel repeats.
    torch.testing.assert_close(out[..., 2:, -1], img[..., :-2, -1], atol=1e-5, rtol=0)


def test_warp_keeps_half_precision_dtype() -> None:
    img = torch.rand(1, 3, 8, 8).half()
    out = backward_warp(img, torch.zeros(1, 2, 8, 8, dtype=torch.half))
    assert out.dtype == torch.half
    torch.testing.assert_close(out, img)


def test_a_batch_the_device_cannot_hold_is_halved_and_the_frames_are_the_same(tmp_path: Path) -> None:
    """Out of memory on a batch of pairs: the batch is split in halves and run again, and later
    batches are split alike; the frames are the ones the full batches make. One pair that still
    does not fit is the host's limit, raised (the job's failure, retried elsewhere)."""
    import av
    import numpy as np

    from gpu_job.media import pipeline
    from gpu_job.media.samples import make_clip
    from tests.support.models import save_rife

    rife = RifeInterpolator.from_file(save_rife(tmp_path / "rife.pkl"), device=CPU)

    class HoldsOnly:
        """The model on a device that holds `most` pairs at once."""

        def __init__(self, most: int) -> None:
            self.most, self.sizes, self.name = most, [], rife.name

        def __call__(self, img0, img1, t):
            self.sizes.append(img0.shape[0])
            if img0.shape[0] > self.most:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return rife(img0, img1, t)

    src = make_clip(tmp_path / "src.mp4", width=64, height=48, fps=12, seconds=2, audio=False)

    def frames(model, name: str) -> list:
        out = tmp_path / f"{name}.mp4"
        pipeline.process(src, out, pipeline.Plan(target_fps=30, interpolator=model, batch_size=8, crf=0), 2.0)
        with av.open(str(out)) as container:
            return [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(video=0)]

    small = HoldsOnly(2)
    whole, halved = frames(rife, "whole"), frames(small, "halved")
    assert len(whole) == len(halved) == 60
    assert max(int(np.abs(a - b).max()) for a, b in zip(whole, halved, strict=True)) <= 2
    assert small.sizes[:3] == [8, 4, 2] and set(small.sizes[3:]) <= {1, 2}, small.sizes
    with pytest.raises(torch.OutOfMemoryError):
        frames(HoldsOnly(0), "never")
