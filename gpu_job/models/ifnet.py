"""IFNet, the flow network of RIFE 4.x (Practical-RIFE), written for this project.

RIFE ("Real-Time Intermediate Flow Estimation", Huang et al., ECCV 2022) predicts the
intermediate frame at time ``t`` directly: a coarse-to-fine stack of ``IFBlock``s estimates
two flows (t->0 and t->1) plus a fusion mask, each block refining the previous estimate at
a finer scale. Both input frames are *backward*-warped to time ``t`` with those flows and
blended with ``sigmoid(mask)``. The 4.x line conditions every block on ``t`` as an extra
input channel (so one pass yields any ``t``), dropped the refinement U-Net of v3, and from
4.7 on adds a small convolutional feature encoder whose output is warped along with the
images.

The releases differ only in a few layout knobs, collected in one explicit table below
(``LAYOUTS``); ``VERSIONS`` maps each release name to its layout. The parameter names
(``block0.conv0.0.0.weight``, ``encode.cnn0.weight``, ...) deliberately mirror the
published ``flownet.pkl`` files so those load with ``strict=True``.

Supported releases (``SUPPORTED_VERSIONS``): 4.5, 4.6, 4.7-4.26 and the published
``.lite`` / ``.heavy`` variants (4.12.lite, 4.13.lite, 4.14.lite, 4.15.lite, 4.16.lite,
4.17.lite, 4.22.lite, 4.25.lite, 4.25.heavy, 4.26.heavy). Not supported: 4.0-4.4 (plain
conv stacks without the gated residual units, a bare ConvTranspose head with a different
output scale, and in 4.0/4.1 PReLU plus a data-dependent scale switch) and the 3.x line
(except its HD v3 files, which ``gpu_job.models.ifnet_hd`` implements).

Several releases share one layout exactly (same keys, same shapes, same forward pass), so
their weight files cannot be told apart. For such a group we report one *family* label:
the release Practical-RIFE itself published most prominently (its README download or a
full training-code release: v4.9.2, v4.12, v4.15, 4.22, 4.25), else the newest member.
A release named by the caller, or in the file/directory name, is reported instead when
its layout matches:

==========  ====================================================================
family      releases with an identical layout
==========  ====================================================================
4.5         4.5
4.6         4.6
4.9         4.7, 4.8, 4.9
4.12        4.10, 4.11, 4.12
4.13.lite   4.12.lite, 4.13.lite
4.15        4.13, 4.14, 4.15, 4.17, 4.18, 4.19, 4.24
4.14.lite   4.14.lite
4.17.lite   4.15.lite, 4.16.lite, 4.17.lite
4.20        4.20
4.22        4.21, 4.22, 4.23
4.22.lite   4.22.lite
4.25        4.25, 4.26
4.25.lite   4.25.lite
4.25.heavy  4.25.heavy
4.26.heavy  4.26.heavy
==========  ====================================================================
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

EncoderStyle = Literal["none", "seq2", "seq4", "head"]


@dataclass(frozen=True)
class IFNetLayout:
    """Everything that distinguishes one 4.x release's network from another's."""

    family: str
    """Label reported for weights with this layout (see the module docstring)."""
    versions: tuple[str, ...]
    """Every release whose weights have exactly this layout."""
    widths: tuple[int, ...]
    """Feature width ``c`` of each IFBlock, coarsest first; the count is the block count."""
    scales: tuple[int, ...]
    """Downscale factor each block works at (at ``scale=1``), coarsest first."""
    head_out: int
    """Channels an IFBlock emits at its input resolution: 4 flow + 1 mask + the rest.

    5 (4.5) is exactly flow+mask; 6 (4.6-4.20, 4.24) carries one unused channel; 13
    (4.21+) carries 8 feature channels that the next block receives as extra input."""
    encoder: EncoderStyle = "none"
    """How the per-frame feature encoder is laid out (it changed its module names twice):
    ``seq2`` = conv + deconv in an ``nn.Sequential`` (4.7-4.9); ``seq4`` = three convs with
    LeakyReLU and a deconv in an ``nn.Sequential`` (4.10-4.12, 4.12/4.13.lite); ``head`` =
    the same four layers as named attributes ``cnn0..cnn3`` (4.13+)."""
    encoder_width: int = 0
    encoder_out: int = 0
    """Feature channels per frame (each block sees both frames', so twice this)."""
    mask_accumulates: bool = False
    """4.5/4.6 add each block's mask to the running one (residual, like the flow);
    from 4.7 on each block's mask replaces the previous one."""
    resconv_groups: int = 1
    """Grouped 3x3 convolutions inside the residual stack (only 4.14.lite uses 2)."""

    @property
    def carried_features(self) -> int:
        """Block output channels handed to the next block (beyond flow and mask)."""
        return self.head_out - 5 if self.head_out > 6 else 0

    @property
    def pad_multiple(self) -> int:
        """Frame sizes must be a multiple of this (at ``scale=1``).

        The coarsest block downsamples by ``max(scales)`` and then by 4 with two stride-2
        convolutions; its ConvTranspose + PixelShuffle(2) head must land back on exactly
        the same grid, so H and W must divide evenly all the way down. (That also covers
        the encoder's single stride-2 conv + stride-2 deconv.)"""
        return max(self.scales) * 4


_W4 = (192, 128, 96, 64)  # the standard four-block widths of 4.5-4.19 and 4.24
_LITE4 = (128, 96, 64, 48)
_S4 = (8, 4, 2, 1)
_S5 = (16, 8, 4, 2, 1)

LAYOUTS: tuple[IFNetLayout, ...] = (
    # 4.5: first ResConv release; the block head emits exactly 4 flow + 1 mask channels.
    IFNetLayout(
        family="4.5",
        versions=("4.5",),
        widths=_W4,
        scales=_S4,
        head_out=5,
        mask_accumulates=True,
    ),
    # 4.6: same, but the head grew to 6 channels (the sixth is never read at inference).
    IFNetLayout(
        family="4.6",
        versions=("4.6",),
        widths=_W4,
        scales=_S4,
        head_out=6,
        mask_accumulates=True,
    ),
    # 4.7-4.9: first feature encoder: 4 channels per frame, no activation inside.
    IFNetLayout(
        family="4.9",
        versions=("4.7", "4.8", "4.9"),
        widths=_W4,
        scales=_S4,
        head_out=6,
        encoder="seq2",
        encoder_width=16,
        encoder_out=4,
    ),
    # 4.10-4.12: deeper encoder, 8 channels per frame, still an nn.Sequential.
    IFNetLayout(
        family="4.12",
        versions=("4.10", "4.11", "4.12"),
        widths=_W4,
        scales=_S4,
        head_out=6,
        encoder="seq4",
        encoder_width=32,
        encoder_out=8,
    ),
    # 4.12.lite/4.13.lite: narrower blocks, 4 feature channels per frame.
    IFNetLayout(
        family="4.13.lite",
        versions=("4.12.lite", "4.13.lite"),
        widths=_LITE4,
        scales=_S4,
        head_out=6,
        encoder="seq4",
        encoder_width=32,
        encoder_out=4,
    ),
    # 4.13 onwards: the encoder became a named module ("Head"); weights otherwise as 4.12.
    IFNetLayout(
        family="4.15",
        versions=("4.13", "4.14", "4.15", "4.17", "4.18", "4.19", "4.24"),
        widths=_W4,
        scales=_S4,
        head_out=6,
        encoder="head",
        encoder_width=32,
        encoder_out=8,
    ),
    # 4.14.lite: 4.14's widths, but the residual 3x3 convs are grouped (groups=2).
    IFNetLayout(
        family="4.14.lite",
        versions=("4.14.lite",),
        widths=_W4,
        scales=_S4,
        head_out=6,
        encoder="head",
        encoder_width=32,
        encoder_out=8,
        resconv_groups=2,
    ),
    # 4.15.lite-4.17.lite: narrower blocks and a narrower encoder (16 wide, 4 out).
    IFNetLayout(
        family="4.17.lite",
        versions=("4.15.lite", "4.16.lite", "4.17.lite"),
        widths=_LITE4,
        scales=_S4,
        head_out=6,
        encoder="head",
        encoder_width=16,
        encoder_out=4,
    ),
    # 4.20: wider coarse blocks, narrower finest block.
    IFNetLayout(
        family="4.20",
        versions=("4.20",),
        widths=(384, 192, 96, 48),
        scales=_S4,
        head_out=6,
        encoder="head",
        encoder_width=32,
        encoder_out=8,
    ),
    # 4.21-4.23: blocks pass 8 feature channels on to the next block.
    IFNetLayout(
        family="4.22",
        versions=("4.21", "4.22", "4.23"),
        widths=(256, 192, 96, 48),
        scales=_S4,
        head_out=13,
        encoder="head",
        encoder_width=32,
        encoder_out=8,
    ),
    # 4.22.lite: narrower blocks and encoder, still carrying features between blocks.
    IFNetLayout(
        family="4.22.lite",
        versions=("4.22.lite",),
        widths=(192, 128, 64, 32),
        scales=_S4,
        head_out=13,
        encoder="head",
        encoder_width=16,
        encoder_out=4,
    ),
    # 4.25/4.26: a fifth, coarser block (1/16), so frames must be multiples of 64.
    IFNetLayout(
        family="4.25",
        versions=("4.25", "4.26"),
        widths=(192, 128, 96, 64, 32),
        scales=_S5,
        head_out=13,
        encoder="head",
        encoder_width=16,
        encoder_out=4,
    ),
    # 4.25.lite skips the 1/2 scale and starts at 1/32: multiples of 128.
    IFNetLayout(
        family="4.25.lite",
        versions=("4.25.lite",),
        widths=(192, 128, 96, 64, 24),
        scales=(32, 16, 8, 4, 1),
        head_out=13,
        encoder="head",
        encoder_width=16,
        encoder_out=4,
    ),
    # 4.25.heavy: 4.25 with every block twice as wide.
    IFNetLayout(
        family="4.25.heavy",
        versions=("4.25.heavy",),
        widths=(384, 256, 192, 128, 64),
        scales=_S5,
        head_out=13,
        encoder="head",
        encoder_width=16,
        encoder_out=4,
    ),
    # 4.26.heavy: 4.26 with 16 feature channels per frame (32 into every block).
    IFNetLayout(
        family="4.26.heavy",
        versions=("4.26.heavy",),
        widths=(192, 128, 96, 64, 32),
        scales=_S5,
        head_out=13,
        encoder="head",
        encoder_width=16,
        encoder_out=16,
    ),
)

VERSIONS: dict[str, IFNetLayout] = {v: lay for lay in LAYOUTS for v in lay.versions}


def _version_key(v: str) -> tuple[int, int, str]:
    major, minor, *rest = v.split(".")
    return int(major), int(minor), ".".join(rest)


SUPPORTED_VERSIONS: tuple[str, ...] = tuple(sorted(VERSIONS, key=_version_key))


# --------------------------------------------------------------------------- warping


@functools.lru_cache(maxsize=16)
def _base_grid(device: torch.device, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Identity sampling grid in grid_sample's [-1, 1] coordinates, shape [1, 2, H, W],
    and the pixel -> grid-unit factors for x and y, shape [1, 2, 1, 1].

    With ``align_corners=True`` the corner pixels sit exactly on -1/+1, so one pixel is
    ``2 / (size - 1)`` grid units; that is the convention RIFE was trained with.
    Cached per (device, H, W): every warp at a frame size reuses it. Built outside
    inference mode so the cached tensors are ordinary ones, usable in either mode."""
    with torch.inference_mode(False):
        xs = torch.linspace(-1.0, 1.0, width, device=device, dtype=torch.float32)
        ys = torch.linspace(-1.0, 1.0, height, device=device, dtype=torch.float32)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack((gx, gy)).unsqueeze(0)
        # max(..., 1) only guards a degenerate 1-pixel axis (no padded frame has one).
        per_pixel = torch.tensor(
            [2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], device=device
        ).view(1, 2, 1, 1)
        return grid, per_pixel


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` at ``p + flow(p)`` for every output pixel ``p`` (bilinear).

    ``flow`` is [B, 2, H, W] in pixels (x then y). Out-of-frame samples repeat the border.
    Sampling runs in float32 even for half-precision inputs: flow offsets of a few hundred
    pixels lose sub-pixel precision in float16 grid arithmetic."""
    _, _, height, width = image.shape
    grid, per_pixel = _base_grid(image.device, height, width)
    coords = torch.addcmul(grid, flow.float(), per_pixel).permute(0, 2, 3, 1)
    out = F.grid_sample(
        image.float(), coords, mode="bilinear", padding_mode="border", align_corners=True
    )
    return out.to(image.dtype)


# --------------------------------------------------------------------------- modules


def _conv_lrelu(cin: int, cout: int, stride: int) -> nn.Sequential:
    # Sequential(conv, act) so the weight is named "<i>.0.weight" as in the published files.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2, inplace=True))


class ResConv(nn.Module):
    """3x3 conv residual unit with a learned per-channel gain ``beta`` on the branch."""

    def __init__(self, channels: int, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1, groups=groups)
        self.beta = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.relu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(torch.addcmul(x, self.conv(x), self.beta))


class IFBlock(nn.Module):
    """One coarse-to-fine stage: sees its inputs at 1/``scale`` size, predicts a residual
    flow (4 ch: t->0 then t->1), a mask logit and optionally carried features, returned
    at full size with flows already rescaled to full-size pixels."""

    def __init__(self, in_channels: int, width: int, head_out: int, groups: int = 1) -> None:
        super().__init__()
        # Two stride-2 convs: the block's trunk runs at 1/4 of its (already scaled) input.
        self.conv0 = nn.Sequential(
            _conv_lrelu(in_channels, width // 2, 2), _conv_lrelu(width // 2, width, 2)
        )
        self.convblock = nn.Sequential(*(ResConv(width, groups) for _ in range(8)))
        # Deconv (x2) into head_out * 4 channels, PixelShuffle (x2) into head_out: back to
        # the block's input resolution with sub-pixel detail.
        self.lastconv = nn.Sequential(
            nn.ConvTranspose2d(width, head_out * 4, 4, 2, 1), nn.PixelShuffle(2)
        )

    def forward(
        self, x: torch.Tensor, flow: torch.Tensor | None, scale: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if scale != 1:
            x = F.interpolate(x, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
        if flow is not None:
            # The current estimate rides along as input, shrunk to this block's pixel units.
            if scale != 1:
                flow = (
                    F.interpolate(
                        flow, scale_factor=1.0 / scale, mode="bilinear", align_corners=False
                    )
                    / scale
                )
            x = torch.cat((x, flow), 1)
        out = self.lastconv(self.convblock(self.conv0(x)))
        if scale != 1:
            out = F.interpolate(out, scale_factor=scale, mode="bilinear", align_corners=False)
        return out[:, :4] * scale, out[:, 4:5], out[:, 5:]


class _SequentialEncoder(nn.Sequential):
    """4.7-4.13.lite feature encoder (``encode.0``, ``encode.1`` / ``encode.0,2,4,6``)."""

    def __init__(self, deep: bool, width: int, out: int) -> None:
        if deep:
            super().__init__(
                nn.Conv2d(3, width, 3, 2, 1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(width, width, 3, 1, 1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(width, width, 3, 1, 1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.ConvTranspose2d(width, out, 4, 2, 1),
            )
        else:
            super().__init__(nn.Conv2d(3, width, 3, 2, 1), nn.ConvTranspose2d(width, out, 4, 2, 1))


class _HeadEncoder(nn.Module):
    """4.13+ feature encoder: same layers as the deep sequential one, named ``cnn0..cnn3``.

    Half-resolution trunk, a stride-2 deconv back to full resolution: per-pixel features
    at frame size, cheap enough to warp with the same flow as the image."""

    def __init__(self, width: int, out: int) -> None:
        super().__init__()
        self.cnn0 = nn.Conv2d(3, width, 3, 2, 1)
        self.cnn1 = nn.Conv2d(width, width, 3, 1, 1)
        self.cnn2 = nn.Conv2d(width, width, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(width, out, 4, 2, 1)
        self.relu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.cnn0(x))
        x = self.relu(self.cnn1(x))
        x = self.relu(self.cnn2(x))
        return self.cnn3(x)


class IFNet(nn.Module):
    """RIFE 4.x flow network for one ``IFNetLayout``.

    ``forward`` expects frames already padded to a multiple of ``pad_multiple(scale)``;
    ``gpu_job.models.rife.RifeInterpolator`` does that padding."""

    def __init__(self, layout: IFNetLayout, scale: float = 1.0) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.layout = layout
        # scale < 1 runs the whole pyramid on a smaller image (faster on 4K), > 1 on a larger.
        self.scale_list = tuple(s / scale for s in layout.scales)
        self.scale = scale

        feat = 2 * layout.encoder_out  # both frames' features
        carried = layout.carried_features
        # Block 0: img0, img1 (6), features, t (1).
        # Later blocks: warped img0/img1 (6), warped features, t (1), mask (1), carried
        # features, and the current flow (4, appended inside IFBlock).
        in_first = 6 + feat + 1
        in_later = 6 + feat + 1 + 1 + carried + 4
        for i, width in enumerate(layout.widths):
            block = IFBlock(
                in_first if i == 0 else in_later, width, layout.head_out, layout.resconv_groups
            )
            self.add_module(f"block{i}", block)

        if layout.encoder == "seq2":
            self.encode: nn.Module | None = _SequentialEncoder(
                False, layout.encoder_width, layout.encoder_out
            )
        elif layout.encoder == "seq4":
            self.encode = _SequentialEncoder(True, layout.encoder_width, layout.encoder_out)
        elif layout.encoder == "head":
            self.encode = _HeadEncoder(layout.encoder_width, layout.encoder_out)
        else:
            self.encode = None

    @property
    def blocks(self) -> list[IFBlock]:
        return [getattr(self, f"block{i}") for i in range(len(self.layout.widths))]

    def pad_multiple(self) -> int:
        """Required divisor of H and W at this network's ``scale``."""
        base = self.layout.pad_multiple
        return max(base, int(base / self.scale))

    def forward(
        self, img0: torch.Tensor, img1: torch.Tensor, timestep: torch.Tensor
    ) -> torch.Tensor:
        """img0, img1: [B, 3, H, W] in [0, 1], H and W multiples of ``pad_multiple()``;
        timestep: [B] (or [B, 1, H, W]). Returns the blended frame at t, [B, 3, H, W]."""
        batch, _, height, width = img0.shape
        if timestep.dim() == 1:
            timestep = timestep.view(batch, 1, 1, 1).expand(batch, 1, height, width)
        t = timestep.to(img0.dtype)

        if self.encode is not None:
            feat0, feat1 = self.encode(torch.cat((img0, img1), 0)).chunk(2, 0)
        else:
            feat0 = feat1 = img0.new_zeros(batch, 0, height, width)

        flow: torch.Tensor | None = None
        mask = carried = img0.new_zeros(batch, 0, height, width)
        warped0, warped1 = img0, img1
        for block, scale in zip(self.blocks, self.scale_list, strict=True):
            if flow is None:
                flow, mask, carried = block(
                    torch.cat((img0, img1, feat0, feat1, t), 1), None, scale
                )
            else:
                parts = [warped0, warped1]
                if self.encode is not None:
                    # Features travel with the frames: warp them by the same flows.
                    parts += [backward_warp(feat0, flow[:, :2]), backward_warp(feat1, flow[:, 2:4])]
                parts += [t, mask]
                if self.layout.carried_features:
                    parts.append(carried)
                d_flow, d_mask, carried = block(torch.cat(parts, 1), flow, scale)
                flow = flow + d_flow
                mask = mask + d_mask if self.layout.mask_accumulates else d_mask
            warped0 = backward_warp(img0, flow[:, :2])
            warped1 = backward_warp(img1, flow[:, 2:4])

        weight = torch.sigmoid(mask)
        return torch.lerp(warped1, warped0, weight)


# --------------------------------------------------------------------------- layouts


@functools.cache
def expected_shapes(layout: IFNetLayout) -> dict[str, tuple[int, ...]]:
    """``{state-dict key: shape}`` a file of this layout must contain (built on 'meta',
    so no memory is allocated)."""
    with torch.device("meta"):
        net = IFNet(layout)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


@dataclass(frozen=True)
class LayoutDiff:
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]
    """(key, shape in the file, shape the layout needs)"""

    @property
    def matches(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def size(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.mismatched)

    def describe(self, limit: int = 6) -> str:
        parts = []
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                shown = ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")
                parts.append(f"{len(items)} {label} key(s): {shown}")
        if self.mismatched:
            shown = ", ".join(
                f"{k} is {list(got)} (needs {list(want)})"
                for k, got, want in self.mismatched[:limit]
            ) + (", ..." if len(self.mismatched) > limit else "")
            parts.append(f"{len(self.mismatched)} mis-shaped key(s): {shown}")
        return "; ".join(parts) if parts else "identical"


def compare_layout(shapes: Mapping[str, tuple[int, ...]], layout: IFNetLayout) -> LayoutDiff:
    want = expected_shapes(layout)
    return LayoutDiff(
        missing=tuple(sorted(k for k in want if k not in shapes)),
        unexpected=tuple(sorted(k for k in shapes if k not in want)),
        mismatched=tuple(
            (k, tuple(shapes[k]), want[k])
            for k in sorted(want)
            if k in shapes and tuple(shapes[k]) != want[k]
        ),
    )


def matching_layouts(shapes: Mapping[str, tuple[int, ...]]) -> list[IFNetLayout]:
    """Layouts whose key set and every shape equal ``shapes`` (at most one: the table has
    no two identical layouts, which ``tests/test_rife.py`` checks)."""
    return [lay for lay in LAYOUTS if compare_layout(shapes, lay).matches]


def summarize_shapes(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """The few facts that tell releases apart, for error messages."""
    blocks = sorted({k.split(".")[0] for k in shapes if k.startswith("block")})
    enc = sorted({k for k in shapes if k.startswith("encode.")})
    facts = [f"{len(shapes)} tensors", f"{len(blocks)} blocks ({', '.join(blocks) or 'none'})"]
    first = shapes.get("block0.conv0.0.0.weight")
    if first is not None:
        facts.append(f"block0.conv0.0.0.weight {list(first)}")
    last = shapes.get("block0.lastconv.0.weight")
    if last is not None:
        facts.append(f"block0.lastconv.0.weight {list(last)}")
    if enc:
        facts.append("encoder keys " + ", ".join(k.removeprefix("encode.") for k in enc[:8]))
    else:
        facts.append("no encode.* keys")
    return "; ".join(facts)
