"""IFNet HD v3, the flow network of RIFE 3.x "HD" (ECCV2022-RIFE ``train_log``), written for
this project.

The 3.x HD network predicts only the *midpoint* of two frames: it has no timestep input.
Three ``IFBlock``s of width 90 refine, coarse to fine (1/4, 1/2, 1/1 of the frame), two
flows (t->0, t->1) and a fusion-mask logit. Each block runs twice, once on (frame 0,
frame 1) and once with the frames, flows and mask swapped, and the two answers are
averaged: the midpoint is symmetric by construction. Both frames are backward-warped to
the midpoint and blended with ``sigmoid(mask)``.

Compared with 4.x: PReLU activations instead of LeakyReLU, four residual pairs of 3x3
convs instead of eight gated units, separate deconvolution heads for flow (``conv1``) and
mask (``conv2``), the mask accumulates across blocks, no feature encoder. Published files
also carry ``block_tea``, the distillation teacher used only in training; the loader in
``gpu_job.models.rife`` drops it as it drops 4.x's ``teacher.*``.

Other timesteps come from recursive bisection, as the authors' own ``inference_img.py
--ratio`` and ``inference_video.py --exp`` do: the midpoint of the two frames, then the
midpoint of the half that holds ``t``, and so on. ``BISECTION_DEPTH`` levels give every
multiple of 1/8; a timestep in between is rounded to the nearest one.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from gpu_job.models.ifnet import backward_warp

VERSION = "3.x-hd"
"""Label reported for these weights (the HD v3 files do not say which 3.x release they are)."""
WIDTH = 90
BLOCK_SCALES = (4, 2, 1)
BISECTION_DEPTH = 3
STEPS = 2**BISECTION_DEPTH  # timesteps are rounded to multiples of 1/STEPS
# The authors pad frames to a multiple of 32 (of 32/scale below scale 1): the coarsest block
# works at 1/4 and its trunk at 1/16 of that, so 16 would do; 32 keeps their exact grid.
PAD_BASE = 32
APPROXIMATION_NOTE = (
    f"RIFE {VERSION} has no timestep input: midpoints are made directly, other timesteps "
    f"rounded to the nearest 1/{STEPS} by recursive bisection"
)


def _conv_prelu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    # Sequential(conv, act): weights named "<i>.0.weight" / "<i>.1.weight" as in flownet.pkl.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.PReLU(cout))


def _deconv_head(width: int, out: int) -> nn.Sequential:
    """Two stride-2 deconvolutions: from the trunk's 1/4 back to the block's input size."""
    return nn.Sequential(
        nn.ConvTranspose2d(width, width // 2, 4, 2, 1),
        nn.PReLU(width // 2),
        nn.ConvTranspose2d(width // 2, out, 4, 2, 1),
    )


def _resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    return F.interpolate(
        x, scale_factor=factor, mode="bilinear", align_corners=False, recompute_scale_factor=False
    )


class IFBlockHD(nn.Module):
    """One stage: sees (frame a, frame b, mask) and the current flows at 1/``scale`` size,
    returns a residual flow (4 ch, full-size pixels) and a residual mask logit."""

    def __init__(self, in_channels: int, width: int = WIDTH) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(
            _conv_prelu(in_channels, width // 2, 2), _conv_prelu(width // 2, width, 2)
        )
        for i in range(4):
            self.add_module(
                f"convblock{i}", nn.Sequential(_conv_prelu(width, width), _conv_prelu(width, width))
            )
        self.conv1 = _deconv_head(width, 4)
        self.conv2 = _deconv_head(width, 1)

    def forward(
        self, x: torch.Tensor, flow: torch.Tensor, scale: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if scale != 1:
            x = _resize(x, 1.0 / scale)
            flow = _resize(flow, 1.0 / scale) / scale
        feat = self.conv0(torch.cat((x, flow), 1))
        for i in range(4):
            feat = getattr(self, f"convblock{i}")(feat) + feat
        d_flow, d_mask = self.conv1(feat), self.conv2(feat)
        if scale != 1:
            d_flow = _resize(d_flow, scale) * scale
            d_mask = _resize(d_mask, scale)
        return d_flow, d_mask


def _swap(flow: torch.Tensor) -> torch.Tensor:
    """(t->0, t->1) becomes (t->1, t->0): the flows as seen with the frames exchanged."""
    return torch.cat((flow[:, 2:4], flow[:, :2]), 1)


class IFNetHD(nn.Module):
    """RIFE 3.x HD flow network. ``forward`` has the 4.x signature (``img0, img1, t``) and
    reaches ``t`` by bisection; ``midpoint`` is the network itself."""

    version = VERSION
    versions: tuple[str, ...] = (VERSION,)

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.scale = scale
        self.scale_list = tuple(s / scale for s in BLOCK_SCALES)
        for i in range(len(BLOCK_SCALES)):
            # warped a (3), warped b (3), mask (1), then the current flows (4) inside the block.
            self.add_module(f"block{i}", IFBlockHD(7 + 4))

    @property
    def blocks(self) -> list[IFBlockHD]:
        return [getattr(self, f"block{i}") for i in range(len(BLOCK_SCALES))]

    def pad_multiple(self) -> int:
        return max(PAD_BASE, int(PAD_BASE / self.scale))

    def midpoint(self, img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        """The frame halfway between img0 and img1 ([B,3,H,W], H and W multiples of
        ``pad_multiple()``)."""
        batch, _, height, width = img0.shape
        flow = img0.new_zeros(batch, 4, height, width)
        mask = img0.new_zeros(batch, 1, height, width)
        warped0, warped1 = img0, img1
        for block, scale in zip(self.blocks, self.scale_list, strict=True):
            f0, m0 = block(torch.cat((warped0, warped1, mask), 1), flow, scale)
            f1, m1 = block(torch.cat((warped1, warped0, -mask), 1), _swap(flow), scale)
            # Average the forward answer with the mirrored one (mask logit changes sign).
            flow = flow + (f0 + _swap(f1)) / 2
            mask = mask + (m0 - m1) / 2
            warped0 = backward_warp(img0, flow[:, :2])
            warped1 = backward_warp(img1, flow[:, 2:4])
        return torch.lerp(warped1, warped0, torch.sigmoid(mask))

    def forward(
        self, img0: torch.Tensor, img1: torch.Tensor, timestep: torch.Tensor
    ) -> torch.Tensor:
        """Frames at ``timestep`` ([B], each rounded to the nearest 1/``STEPS``)."""
        return bisect(self.midpoint, img0, img1, timestep)


def rounded_steps(timestep: torch.Tensor) -> list[int]:
    """Each timestep as the nearest multiple of 1/STEPS, in units of 1/STEPS."""
    return [int(k) for k in torch.round(timestep.float().reshape(-1) * STEPS).tolist()]


def bisect(
    midpoint, img0: torch.Tensor, img1: torch.Tensor, timestep: torch.Tensor
) -> torch.Tensor:
    """Frames at each sample's ``timestep`` by recursive bisection with ``midpoint``.

    Every level makes one batched ``midpoint`` call for the samples still short of their
    target, and a bracket shared by several samples (24 -> 60 fps asks for 0.4 and 0.8 of
    the same pair, which both start from its midpoint) is computed once. Returns [B,3,H,W]."""
    targets = rounded_steps(timestep)
    # Nodes: distinct frames, named by index; each sample starts with bracket (0, STEPS).
    nodes: list[torch.Tensor] = []
    node_of: dict[int, int] = {}

    def intern(image: torch.Tensor) -> int:
        for j, known in enumerate(nodes):
            if known.shape == image.shape and torch.equal(known, image):
                return j
        nodes.append(image)
        return len(nodes) - 1

    brackets = []
    for i, k in enumerate(targets):
        lo, hi = intern(img0[i]), intern(img1[i])
        brackets.append([lo, 0, hi, STEPS])
        node_of[i] = lo if k <= 0 else hi if k >= STEPS else -1
    made: dict[tuple[int, int], int] = {}
    for _ in range(BISECTION_DEPTH):
        active = [i for i in range(len(targets)) if node_of[i] < 0]
        if not active:
            break
        pending = list(
            dict.fromkeys(
                (brackets[i][0], brackets[i][2])
                for i in active
                if (brackets[i][0], brackets[i][2]) not in made
            )
        )
        if pending:
            mids = midpoint(
                torch.stack([nodes[a] for a, _ in pending]),
                torch.stack([nodes[b] for _, b in pending]),
            )
            for pair, mid in zip(pending, mids, strict=True):
                nodes.append(mid)
                made[pair] = len(nodes) - 1
        for i in active:
            lo, lo_k, hi, hi_k = brackets[i]
            mid, mid_k = made[(lo, hi)], (lo_k + hi_k) // 2
            if targets[i] == mid_k:
                node_of[i] = mid
            elif targets[i] < mid_k:
                brackets[i] = [lo, lo_k, mid, mid_k]
            else:
                brackets[i] = [mid, mid_k, hi, hi_k]
    return torch.stack([nodes[node_of[i]] for i in range(len(targets))])


@functools.cache
def expected_shapes() -> dict[str, tuple[int, ...]]:
    """``{state-dict key: shape}`` of an HD v3 flownet without its teacher block."""
    with torch.device("meta"):
        net = IFNetHD()
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def matches(shapes: Mapping[str, tuple[int, ...]]) -> bool:
    """True when ``shapes`` is exactly the HD v3 layout (same keys, same shapes)."""
    want = expected_shapes()
    return set(shapes) == set(want) and all(tuple(shapes[k]) == want[k] for k in want)
