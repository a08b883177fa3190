"""Random-weight model files in the published layouts, loaded by the tests through the real loaders.

No weights can be downloaded here, so these write state dicts with the key names and shapes of the
public Real-ESRGAN release files (xinntao's RRDBNet and SRVGGNetCompact), wrapped the way those
files are ({"params_ema": ...} / {"params": ...}).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

RIFE_LISTINGS = Path(__file__).resolve().parents[1] / "data" / "rife"


def rife_reference_shapes(version: str) -> dict[str, tuple[int, ...]]:
    """The {key: shape} listing dumped from the reference implementation (tests/data/rife/)."""
    doc = json.loads((RIFE_LISTINGS / f"{version}.json").read_text())
    assert doc["version"] == version
    return {k: tuple(v) for k, v in doc["state_dict"].items()}


def fake_flownet(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with the given layout, keyed the way Practical-RIFE saves flownet.pkl
    ("module." prefix). Small weights keep the predicted flows modest."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        value = torch.ones(shape) if key.endswith("beta") else torch.randn(shape, generator=gen) * 0.05
        state["module." + key] = value
    return state


def save_rife(path: Path, version: str = "4.25", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fake_flownet(rife_reference_shapes(version), seed), path)
    return path


def _conv(sd: dict, name: str, cin: int, cout: int, k: int = 3) -> None:
    sd[f"{name}.weight"] = torch.randn(cout, cin, k, k) * (1.0 / (cin * k * k)) ** 0.5
    sd[f"{name}.bias"] = torch.zeros(cout)


def save_compact(path: Path, scale: int = 2, num_feat: int = 16, num_conv: int = 4) -> Path:
    """SRVGGNetCompact (realesr-animevideov3 / realesr-general-x4v3 layout): conv, PReLU pairs, last conv."""
    sd: dict[str, torch.Tensor] = {}
    _conv(sd, "body.0", 3, num_feat)
    sd["body.1.weight"] = torch.full((num_feat,), 0.25)
    for i in range(num_conv):
        _conv(sd, f"body.{2 * i + 2}", num_feat, num_feat)
        sd[f"body.{2 * i + 3}.weight"] = torch.full((num_feat,), 0.25)
    _conv(sd, f"body.{2 * num_conv + 2}", num_feat, 3 * scale * scale)
    torch.save({"params": sd}, path)
    return path


def save_rrdb(path: Path, scale: int = 4, num_feat: int = 8, num_block: int = 1, num_grow_ch: int = 32) -> Path:
    """RRDBNet (RealESRGAN_x4plus / x2plus layout). x2 and x1 models pixel-unshuffle their input.
    The growth channels stay 32 as in every published file (loaders infer the rest from shapes)."""
    unshuffle = {4: 1, 2: 2, 1: 4}[scale]
    sd: dict[str, torch.Tensor] = {}
    _conv(sd, "conv_first", 3 * unshuffle * unshuffle, num_feat)
    for b in range(num_block):
        for r in (1, 2, 3):
            for c in range(1, 6):
                cin = num_feat + (c - 1) * num_grow_ch
                cout = num_feat if c == 5 else num_grow_ch
                _conv(sd, f"body.{b}.rdb{r}.conv{c}", cin, cout)
    _conv(sd, "conv_body", num_feat, num_feat)
    _conv(sd, "conv_up1", num_feat, num_feat)
    _conv(sd, "conv_up2", num_feat, num_feat)
    _conv(sd, "conv_hr", num_feat, num_feat)
    _conv(sd, "conv_last", num_feat, 3)
    torch.save({"params_ema": sd}, path)
    return path
