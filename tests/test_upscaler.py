"""The spandrel-backed upscaler wrapper: published Real-ESRGAN layouts, any frame size, tiling."""

from __future__ import annotations

import pytest
import torch

from gpu_job.models.upscaler import Upscaler
from tests.support.models import save_compact, save_rrdb
from vastdrop.errors import ModelLoadError

CPU = torch.device("cpu")


@pytest.mark.parametrize(("save", "scale"), [(save_compact, 2), (save_compact, 4), (save_rrdb, 4), (save_rrdb, 2)])
def test_published_layouts_load_and_keep_any_frame_size(tmp_path, save, scale):
    model = Upscaler.from_file(save(tmp_path / "m.pth", scale=scale), CPU)
    assert model.scale == scale and model.name == "m"
    out = model(torch.rand(1, 3, 23, 17))
    assert out.shape == (1, 3, 23 * scale, 17 * scale)
    assert 0 <= float(out.min()) and float(out.max()) <= 1


@pytest.mark.parametrize(("save", "tolerance"), [(save_compact, 0.0), (save_rrdb, 1e-3)])
def test_tiles_stitch_into_the_same_picture_as_the_whole_frame(tmp_path, save, tolerance):
    """Tiles borrow context from their neighbours, so seams do not show: the Compact net's receptive
    field fits in the overlap (identical); RRDB's is wider (equal within rounding for these weights)."""
    path = save(tmp_path / "m.pth", scale=2)
    x = torch.rand(2, 3, 101, 77)
    whole = Upscaler.from_file(path, CPU, tile_px=4096)(x)
    tiled = Upscaler.from_file(path, CPU, tile_px=40)(x)
    assert tiled.shape == whole.shape
    assert float((tiled - whole).abs().max()) <= tolerance


def test_a_file_that_is_not_a_model_is_a_clear_permanent_error(tmp_path):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"definitely not a pickle")
    with pytest.raises(ModelLoadError, match="weights.pth"):
        Upscaler.from_file(bad, CPU)
