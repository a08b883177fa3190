"""Frame interpolation with RIFE: load a ``flownet.pkl`` (Practical-RIFE 4.x, or a 3.x HD
``train_log``), interpolate.

The wrapper owns the model's quirks so the pipeline does not have to: it works out which
4.x release a weights file is from its tensor names and shapes (see
``gpu_job.models.ifnet`` for the table and ``SUPPORTED_VERSIONS``), loads it strictly,
pads frames to the size the network needs, runs under inference_mode, clamps and crops.
A 3.x HD file (``gpu_job.models.ifnet_hd``) is recognised by its exact layout too; it has no
timestep input, so the wrapper reaches other timesteps by bisection and says so in ``notes``.

Weight files as published carry a ``module.`` prefix (they were saved from a
DistributedDataParallel wrapper) and often the training-only ``teacher.*`` (distillation
block) and ``caltime.*`` heads; the reference loaders keep only ``module.``-prefixed keys
and ignore what the network does not use. We do the same for exactly those cases and
otherwise insist on an exact key/shape match, so a truncated or foreign file fails loudly
instead of running with half-random weights.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F

from gpu_job.models import ifnet_hd
from gpu_job.models.ifnet import (
    LAYOUTS,
    SUPPORTED_VERSIONS,
    VERSIONS,
    IFNet,
    IFNetLayout,
    compare_layout,
    matching_layouts,
    summarize_shapes,
)
from vastdrop.errors import ModelLoadError

logger = logging.getLogger(__name__)

# Submodules that exist only while training (distillation teacher, learned-timestep head);
# real flownet.pkl files of e.g. 4.18 and 4.26 contain them, and 3.x HD files carry their
# teacher as ``block_tea``. Never used at inference.
TRAINING_ONLY_PREFIXES = ("teacher.", "caltime.", "block_tea.")

_DDP_PREFIX = "module."
# "flownet_v4.25.pkl", "rife-4.22.lite/flownet.pkl", "v4.26.heavy": a release named in the path.
# Names a caller may use for the 3.x HD weights.
HD_ALIASES = frozenset({"3", "3.x", "3.x-hd", "3.x.hd", "3-hd", "hd", "hdv3"})
_VERSION_IN_NAME = re.compile(r"(?<![\d.])v?(4\.\d{1,2}(?:\.(?:lite|heavy))?)(?![\d])")


class UnsupportedModelError(ModelLoadError, ValueError):
    """The file is a state dict, but not one with a supported (or the requested) layout."""


def _normalize_version(version: str) -> str:
    v = version.strip().lower()
    for prefix in ("rife-", "rife", "v"):
        v = v.removeprefix(prefix)
    return v


def version_hint_from_path(path: Path) -> str | None:
    """A release named in the file or directory name, if any (used only to label a
    detected layout shared by several releases, never to override detection)."""
    for part in (path.name, path.parent.name):
        m = _VERSION_IN_NAME.search(part.lower().removesuffix(".pkl").removesuffix(".pth"))
        if m:
            return m.group(1)
    return None


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """Load ``path`` and return (flownet state dict without prefixes, dropped keys)."""
    if not path.is_file():
        raise ModelLoadError(f"RIFE model file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip, truncation errors come in many types
        raise ModelLoadError(
            f"{path.name} is not a readable PyTorch weights file ({type(exc).__name__}: {exc})"
        ) from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise ModelLoadError(
            f"{path.name} does not hold a state dict (found {type(obj).__name__}); "
            "expected a Practical-RIFE flownet.pkl"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelLoadError(
            f"{path.name} is not a tensor state dict (e.g. entry {bad[0]!r} is not a named tensor)"
        )
    return clean_state_dict(obj)


def clean_state_dict(
    raw: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """Strip the ``module.`` prefix and drop what the reference loaders drop.

    If any key carries the prefix, keys without it are not part of the flownet (the
    reference ``convert`` keeps only prefixed keys); training-only heads are dropped too."""
    dropped: list[str] = []
    if any(k.startswith(_DDP_PREFIX) for k in raw):
        state = {}
        for k, v in raw.items():
            if k.startswith(_DDP_PREFIX):
                state[k.removeprefix(_DDP_PREFIX)] = v
            else:
                dropped.append(k)
    else:
        state = dict(raw)
    for k in [k for k in state if k.startswith(TRAINING_ONLY_PREFIXES)]:
        del state[k]
        dropped.append(k)
    return state, tuple(dropped)


def resolve_layout(
    shapes: Mapping[str, tuple[int, ...]], version: str | None = None, hint: str | None = None
) -> tuple[IFNetLayout, str]:
    """Pick the layout for a state dict's shapes; return (layout, release label).

    ``version`` (explicit) must name a supported release whose layout the shapes match;
    otherwise the layout is detected and labelled with ``hint`` when the hint names a
    release of that layout, else with the layout's family name."""
    found = matching_layouts(shapes)
    if version is not None:
        wanted = _normalize_version(version)
        if wanted not in VERSIONS:
            raise UnsupportedModelError(
                f"RIFE version {version!r} is not supported; supported: {_supported_list()}"
            )
        layout = VERSIONS[wanted]
        diff = compare_layout(shapes, layout)
        if not diff.matches:
            seen = (
                f"it matches RIFE {', '.join(found[0].versions)}"
                if found
                else f"it matches RIFE {ifnet_hd.VERSION}"
                if ifnet_hd.matches(shapes)
                else f"found {summarize_shapes(shapes)}"
            )
            raise UnsupportedModelError(
                f"weights do not have the RIFE {wanted} layout ({diff.describe()}); {seen}"
            )
        return layout, wanted
    if found:
        layout = found[0]
        label = hint if hint in layout.versions else layout.family
        return layout, label
    closest = min(LAYOUTS, key=lambda lay: compare_layout(shapes, lay).size)
    raise UnsupportedModelError(
        f"unrecognised RIFE flownet layout: {summarize_shapes(shapes)}. Closest supported "
        f"layout is RIFE {'/'.join(closest.versions)}, which differs by "
        f"{compare_layout(shapes, closest).describe()}. Supported versions: "
        f"{_supported_list()}"
    )


def _supported_list() -> str:
    return ", ".join((*SUPPORTED_VERSIONS, ifnet_hd.VERSION))


def _wants_hd(shapes: Mapping[str, tuple[int, ...]], version: str | None) -> bool:
    """Whether to build the 3.x HD network: asked for by name (then the file must match),
    or, with no version given, detected from the file's exact layout."""
    if version is None:
        return ifnet_hd.matches(shapes)
    if _normalize_version(version) not in HD_ALIASES:
        return False
    if not ifnet_hd.matches(shapes):
        found = matching_layouts(shapes)
        seen = (
            f"it matches RIFE {', '.join(found[0].versions)}"
            if found
            else f"found {summarize_shapes(shapes)}"
        )
        raise UnsupportedModelError(
            f"weights do not have the RIFE {ifnet_hd.VERSION} layout; {seen}"
        )
    return True


class RifeInterpolator:
    """A loaded RIFE flownet (4.x, or 3.x HD), ready to synthesize frames between two others.

    ``name`` is what the manifest reports as the engine; ``notes`` lists, in words, where the
    engine departs from exact arbitrary-timestep interpolation (empty for 4.x)."""

    def __init__(
        self,
        net: IFNet | ifnet_hd.IFNetHD,
        version: str,
        device: torch.device,
        dtype: torch.dtype,
        dropped_keys: tuple[str, ...] = (),
    ) -> None:
        self.net = net
        self.version = version
        self.name = f"rife-{version}"
        hd = isinstance(net, ifnet_hd.IFNetHD)
        self.layout: IFNetLayout | None = None if hd else net.layout
        # Every release sharing this exact weight layout (the label cannot be more precise
        # than this unless the caller or the file name said which release it is).
        self.versions_with_layout: tuple[str, ...] = net.versions if hd else net.layout.versions
        self.notes: list[str] = [ifnet_hd.APPROXIMATION_NOTE] if hd else []
        self.device, self.dtype = device, dtype
        self.pad_multiple = net.pad_multiple()
        self.dropped_keys = dropped_keys
        self._pad_cache: dict[tuple[int, int], tuple[int, int]] = {}

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        version: str | None = None,
        *,
        scale: float = 1.0,
    ) -> RifeInterpolator:
        """Load a ``flownet.pkl``: any supported Practical-RIFE 4.x release, or 3.x HD.

        ``version`` names the release explicitly (checked against the file's layout);
        ``scale`` < 1 estimates flow on a downscaled pyramid (0.5 is the usual choice for
        4K), at the cost of a larger padding multiple."""
        path = Path(path)
        device = torch.device(device)
        if scale not in (0.25, 0.5, 1.0, 2.0, 4.0):
            raise ValueError(f"scale must be one of 0.25, 0.5, 1, 2, 4; got {scale}")
        state, dropped = read_state_dict(path)
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        net: IFNet | ifnet_hd.IFNetHD
        if _wants_hd(shapes, version):
            label, versions = ifnet_hd.VERSION, ifnet_hd.IFNetHD.versions
            with torch.device("meta"):
                net = ifnet_hd.IFNetHD(scale=scale)
        else:
            layout, label = resolve_layout(shapes, version, version_hint_from_path(path))
            versions = layout.versions
            # Build on 'meta' and adopt the file's tensors: no throw-away random init.
            with torch.device("meta"):
                net = IFNet(layout, scale=scale)
        try:
            net.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as exc:  # unreachable after resolve_layout, kept as a guard
            raise ModelLoadError(f"{path.name}: {exc}") from exc
        net = net.to(device=device, dtype=dtype).eval().requires_grad_(False)
        if dropped:
            logger.info("%s: ignored %d training-only/non-flownet tensors", path.name, len(dropped))
        logger.info(
            "loaded RIFE %s from %s (layout shared by %s; frames padded to x%d)",
            label,
            path.name,
            ", ".join(versions),
            net.pad_multiple(),
        )
        return cls(net, label, device, dtype, dropped)

    def compile(self, mode: str, notes: list[str], batch: int | None = None) -> None:
        """The opt-in compiled path (JOB_COMPILE): the flownet compiled for the video's frame size
        (gpu_job.models.compiled); what came of it is appended to `notes`."""
        from gpu_job.models.compiled import FixedShape

        self.net = FixedShape(self.net, mode, notes, batch)

    def _padding(self, height: int, width: int) -> tuple[int, int]:
        """(bottom, right) padding for a frame size, decided once per size."""
        pad = self._pad_cache.get((height, width))
        if pad is None:
            m = self.pad_multiple
            pad = (-height % m, -width % m)
            self._pad_cache[(height, width)] = pad
        return pad

    def __call__(
        self, img0: torch.Tensor, img1: torch.Tensor, timestep: torch.Tensor
    ) -> torch.Tensor:
        """img0, img1: float tensors [B,3,H,W] in [0,1] on self.device (any H, W, odd included);
        timestep: [B] float tensor in (0,1). Returns [B,3,H,W] in [0,1], same H, W."""
        with torch.inference_mode():
            if img0.dim() != 4 or img0.shape[1] != 3 or img0.shape != img1.shape:
                raise ValueError(
                    f"expected two [B,3,H,W] frames of equal shape, got {tuple(img0.shape)} "
                    f"and {tuple(img1.shape)}"
                )
            batch, _, height, width = img0.shape
            t = torch.as_tensor(timestep, device=self.device, dtype=self.dtype).reshape(-1)
            if t.numel() == 1 and batch > 1:
                t = t.expand(batch)
            if t.numel() != batch:
                raise ValueError(
                    f"need one timestep per frame pair: {batch} pairs, {t.numel()} timesteps"
                )
            if bool(((t < 0) | (t > 1)).any()):
                raise ValueError(f"timesteps must lie in [0, 1], got {t.tolist()}")

            x0 = img0.to(self.device, self.dtype).clamp(0.0, 1.0)
            x1 = img1.to(self.device, self.dtype).clamp(0.0, 1.0)
            pad_bottom, pad_right = self._padding(height, width)
            if pad_bottom or pad_right:
                # Replicate rather than zero-pad: a black margin would be an edge the flow
                # estimator tries to track, skewing flow near the real border.
                x0 = F.pad(x0, (0, pad_right, 0, pad_bottom), mode="replicate")
                x1 = F.pad(x1, (0, pad_right, 0, pad_bottom), mode="replicate")
            out = self.net(x0, x1, t)
            out = out[:, :, :height, :width].clamp(0.0, 1.0)
            return out.to(img0.dtype)
