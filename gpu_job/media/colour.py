"""Colour, explicitly: what a stream's YUV means (matrix, range, primaries, transfer, bit depth, HDR
metadata), and the YUV <-> RGB conversions of the job, done in torch on the plan's device.

No conversion here is left to a library default. The decoded planes are read as they are and
converted with the source's own matrix and range; the result is written back as YUV planes with the
same matrix and range and tagged with the source's values, so a player shows what it showed before.
An untagged input is read as players read it: BT.601 below 720 lines, BT.709 from 720 up, limited
range unless the pixel format is a full-range one (yuvj*).

Chroma: 4:2:0 / 4:2:2 chroma is upsampled for RGB with a bilinear filter (chroma samples taken as
centred between luma samples, align_corners=False) and downsampled back with the exact inverse of
that filter on the 2:1 grid (4 taps, [-1, 3, 3, -1] / 4, bicubic-like), so a frame no model changed
gets its chroma back as it was (SD 601 bars: 52 dB as displayed, where a box average gave 43 dB);
the siting is the same both ways, so colours never drift.

RGB images between stages are integers: uint8 for 8-bit sources, uint16 (full 16-bit scale) for
deeper ones, so 10-bit precision survives the float path and no banding is added.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, replace
from fractions import Fraction

import av
import numpy as np

from gpu_job.lazy import lazy_import
from gpu_job.media.probe import open_read

torch = lazy_import("torch")  # imported on first use: the YUV-only path never needs it

# AVColorSpace (libavutil/pixfmt.h) -> (name, Kr, Kb). RGB (0) and YCgCo (8) have no Kr/Kb.
MATRICES = {
    1: ("bt709", 0.2126, 0.0722),
    4: ("fcc", 0.30, 0.11),
    5: ("bt470bg", 0.299, 0.114),
    6: ("smpte170m", 0.299, 0.114),
    7: ("smpte240m", 0.212, 0.087),
    9: ("bt2020nc", 0.2627, 0.0593),
    10: ("bt2020c", 0.2627, 0.0593),  # constant luminance, approximated by its non-constant form
}
SPC_RGB, SPC_UNSPECIFIED, SPC_BT709, SPC_SMPTE170M = 0, 2, 1, 6
# AVColorPrimaries and AVColorTransferCharacteristic names (libavutil/pixfmt.h), for the manifest.
PRIMARIES = {1: "bt709", 2: "unspecified", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
             8: "film", 9: "bt2020", 10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213"}
TRANSFERS = {1: "bt709", 2: "unspecified", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m",
             8: "linear", 13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084",
             17: "smpte428", 18: "arib-std-b67"}
TRC_PQ, TRC_HLG = 16, 18
RANGE_LIMITED, RANGE_FULL = 1, 2  # AVCOL_RANGE_MPEG, AVCOL_RANGE_JPEG
HD_MIN_LINES = 720  # players assume BT.709 from here up, BT.601 below
PAL_LINES = 576

_PLANAR_YUV = re.compile(r"^yuvj?4(20|22|44)p(\d+)?(le)?$")
_CHROMA_SHIFT = {"20": (1, 1), "22": (0, 1), "44": (0, 0)}  # (vertical, horizontal) log2 subsampling


@dataclass(frozen=True)
class Mastering:
    """SMPTE ST 2086 mastering display: CIE 1931 xy chromaticities and luminance in cd/m2."""

    red: tuple[float, float]
    green: tuple[float, float]
    blue: tuple[float, float]
    white: tuple[float, float]
    min_luminance: float
    max_luminance: float

    def x265(self) -> str:
        """x265/x264 syntax: chromaticities in 1/50000, luminance in 1/10000 cd/m2."""
        def xy(p: tuple[float, float]) -> str:
            return f"({round(p[0] * 50000)},{round(p[1] * 50000)})"
        return (f"G{xy(self.green)}B{xy(self.blue)}R{xy(self.red)}WP{xy(self.white)}"
                f"L({round(self.max_luminance * 10000)},{round(self.min_luminance * 10000)})")


@dataclass(frozen=True)
class ContentLight:
    max_cll: int  # brightest pixel, cd/m2
    max_fall: int  # brightest frame average, cd/m2


@dataclass(frozen=True)
class Colour:
    """One video stream's colour, as a player reads it (AVCOL_* codes)."""

    matrix: int = SPC_BT709
    range: int = RANGE_LIMITED
    primaries: int = 1
    transfer: int = 1
    bit_depth: int = 8
    chroma: str = "420"
    mastering: Mastering | None = None
    light: ContentLight | None = None
    assumed: tuple[str, ...] = ()  # what the file did not say and was taken as players take it
    dynamic: tuple[str, ...] = ()  # per-frame HDR metadata the source carries (HDR10+, Dolby Vision)

    @property
    def hdr(self) -> str | None:
        if self.transfer == TRC_PQ:
            return "hdr10" if self.mastering or self.light else "pq"
        return "hlg" if self.transfer == TRC_HLG else None

    @property
    def deep(self) -> bool:
        return self.bit_depth > 8

    def describe(self) -> dict:
        """The manifest's colour facts."""
        return {
            "matrix": "rgb" if self.matrix == SPC_RGB else MATRICES.get(self.matrix, ("unknown",))[0],
            "range": "full" if self.range == RANGE_FULL else "limited",
            "primaries": PRIMARIES.get(self.primaries, str(self.primaries)),
            "transfer": TRANSFERS.get(self.transfer, str(self.transfer)),
            "bit_depth": self.bit_depth, "chroma": self.chroma, "hdr": self.hdr,
            "mastering_display": _mastering_dict(self.mastering),
            "content_light": {"max_cll": self.light.max_cll, "max_fall": self.light.max_fall} if self.light else None,
        }


# Per-frame side data that no encoder here can be handed (PyAV cannot attach side data to the frames
# it encodes): named in the manifest as lost, so a player's fallback to the static metadata is no surprise.
DYNAMIC_METADATA = {"DYNAMIC_HDR_PLUS": "HDR10+ dynamic metadata", "DOVI_METADATA": "Dolby Vision metadata",
                    "DOVI_RPU_BUFFER": "Dolby Vision RPU", "DYNAMIC_HDR_VIVID": "HDR Vivid dynamic metadata"}


def for_output(source: Colour, bit_depth: int) -> tuple[Colour, list[str]]:
    """The output's colour: the source's, at the encoder's depth in 4:2:0, and the notes saying
    what was assumed about the source or could not be kept."""
    notes = [f"input colour {'; '.join(source.assumed)}: read as players read it and tagged so on the output"] \
        if source.assumed else []
    out = replace(source, bit_depth=bit_depth, chroma="420", assumed=(), dynamic=())
    if source.matrix == SPC_RGB:
        out = replace(out, matrix=SPC_BT709, range=RANGE_LIMITED)
        notes.append("RGB-coded source written as BT.709 limited-range YUV")
    if source.chroma != "420":
        notes.append(f"chroma {source.chroma[0]}:{source.chroma[1]}:{source.chroma[2]} subsampled to 4:2:0 for playback everywhere")
    if bit_depth < source.bit_depth and bit_depth > 8:
        notes.append(f"{source.bit_depth}-bit source written in {bit_depth} bits")
    for lost in source.dynamic:
        notes.append(f"{lost} dropped: it cannot be carried through re-encoding here; players use the static "
                     "HDR metadata (mastering display, content light) instead")
    return out, notes


def _mastering_dict(m: Mastering | None) -> dict | None:
    if m is None:
        return None
    return {"red": list(m.red), "green": list(m.green), "blue": list(m.blue), "white": list(m.white),
            "min_luminance": m.min_luminance, "max_luminance": m.max_luminance}


def of_frame(frame: av.VideoFrame, height: int | None = None) -> Colour:
    """The colour of a decoded frame (the decoder copies the bitstream's or container's tags onto it);
    what is unspecified is taken as players take it, and listed in `assumed`."""
    height = height or frame.height
    fmt = frame.format
    name = fmt.name
    assumed: list[str] = []
    matrix = frame.colorspace
    if name.startswith("gbr"):
        matrix = SPC_RGB
    elif matrix not in MATRICES:
        if matrix != SPC_UNSPECIFIED:
            assumed.append(f"matrix code {matrix} is not supported: read as BT.709 / BT.601 by height")
        matrix = SPC_BT709 if height >= HD_MIN_LINES else SPC_SMPTE170M
        assumed.append(f"matrix untagged: {MATRICES[matrix][0]} ({height} lines)")
    rng = frame.color_range
    if rng not in (RANGE_LIMITED, RANGE_FULL):
        rng = RANGE_FULL if name.startswith("yuvj") or matrix == SPC_RGB else RANGE_LIMITED
        assumed.append(f"range untagged: {'full' if rng == RANGE_FULL else 'limited'} (pixel format {name})")
    sd_primaries = 5 if height == PAL_LINES else 6
    primaries, transfer = frame.color_primaries, frame.color_trc
    if primaries not in PRIMARIES or primaries == 2:
        primaries = 1 if height >= HD_MIN_LINES else sd_primaries
        assumed.append(f"primaries untagged: {PRIMARIES[primaries]}")
    if transfer not in TRANSFERS or transfer == 2:
        transfer = 1 if height >= HD_MIN_LINES else 6
        assumed.append(f"transfer untagged: {TRANSFERS[transfer]}")
    comps = fmt.components
    chroma = "444" if len(comps) >= 3 else "400"
    if len(comps) >= 3 and comps[1].is_chroma:
        sub_w = frame.width // max(comps[1].width, 1) if comps[1].width else 1
        sub_h = frame.height // max(comps[1].height, 1) if comps[1].height else 1
        chroma = {(2, 2): "420", (2, 1): "422"}.get((sub_w, sub_h), "444")
    mastering, light = _side_data(frame)
    dynamic = tuple(DYNAMIC_METADATA[sd.type.name] for sd in frame.side_data if sd.type.name in DYNAMIC_METADATA)
    return Colour(matrix, rng, primaries, transfer, comps[0].bits, chroma, mastering, light, tuple(assumed),
                  tuple(dict.fromkeys(dynamic)))


def _side_data(frame: av.VideoFrame) -> tuple[Mastering | None, ContentLight | None]:
    mastering = light = None
    for sd in frame.side_data:
        raw = bytes(sd)
        if sd.type.name == "MASTERING_DISPLAY_METADATA" and len(raw) >= 88:
            # AVMasteringDisplayMetadata: primaries[3][2], white[2], min, max as AVRational, then two flags.
            v = struct.unpack("<20i2i", raw[:88])
            q = [Fraction(v[i], v[i + 1]) if v[i + 1] else Fraction(0) for i in range(0, 20, 2)]
            if v[20]:  # has_primaries
                r, g, b, w = ((float(q[i]), float(q[i + 1])) for i in range(0, 8, 2))
                mastering = Mastering(r, g, b, w, float(q[8]), float(q[9]))
        elif sd.type.name == "CONTENT_LIGHT_LEVEL" and len(raw) >= 8:
            cll, fall = struct.unpack("<2I", raw[:8])  # AVContentLightMetadata: MaxCLL, MaxFALL
            light = ContentLight(cll, fall)
    return mastering, light


def of_file(path) -> Colour:
    """The colour of a file's first video stream, from its first decoded frame."""
    with open_read(path) as container:
        stream = container.streams.video[0]
        frame = next(container.decode(stream), None)
        if frame is None:
            return Colour()
        return of_frame(frame, stream.codec_context.height)


# -- conversion ------------------------------------------------------------------------------------


@dataclass
class Converter:
    """YUV planes <-> RGB for one stream, on one device: the source's matrix and range both ways."""

    colour: Colour
    device: torch.device | str = "cpu"

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        if self.colour.matrix == SPC_RGB:
            self._from_rgb_rows = self._to_rgb_rows = []
        else:
            _, kr, kb = MATRICES[self.colour.matrix]
            kg = 1.0 - kr - kb
            # RGB -> Y'CbCr (Cb, Cr in [-0.5, 0.5]) and its inverse, in float32: fp16 cannot hold 10 bits.
            m = torch.tensor([[kr, kg, kb],
                              [-kr / (2 * (1 - kb)), -kg / (2 * (1 - kb)), 0.5],
                              [0.5, -kg / (2 * (1 - kr)), -kb / (2 * (1 - kr))]], dtype=torch.float64)
            # Rows of float32 values, for weighted sums of planes (a matrix product with K=3 is slow on a CPU).
            self._from_rgb_rows = m.to(torch.float32).tolist()
            self._to_rgb_rows = torch.linalg.inv(m).to(torch.float32).tolist()

    @property
    def image_dtype(self) -> torch.dtype:
        return torch.uint16 if self.colour.deep else torch.uint8

    # decode side
    def to_rgb(self, frame: av.VideoFrame) -> torch.Tensor:
        """A decoded frame -> [H, W, 3] RGB integers on the device (uint8, or uint16 for deep sources)."""
        rgb = self.planes_to_rgb_float(*_read_planes(frame, self.colour))
        return _quantise(rgb, self.image_dtype)

    def planes_to_rgb_float(self, planes: list[torch.Tensor], bits: int, height: int, width: int) -> torch.Tensor:
        """[H, W, 3] float RGB in [0, 1] from integer planes (Y, Cb, Cr or G, B, R)."""
        planes = [_widen(to_device(p, self.device)).to(torch.float32) for p in planes]
        if self.colour.matrix == SPC_RGB:
            g, b, r = planes
            return torch.stack([r, g, b], dim=-1).div_(float((1 << bits) - 1))
        y = planes[0]
        cb, cr = (_upsample(c, height, width) for c in planes[1:])
        y, cb, cr = _normalise(y, cb, cr, bits, self.colour.range)
        rgb = torch.stack([y * a + cb * b + cr * c for a, b, c in self._to_rgb_rows], dim=-1)
        return rgb.clamp_(0.0, 1.0)

    # encode side
    def to_frame(self, image: torch.Tensor, pix_fmt: str, pts: int | None, time_base: Fraction | None,
                 tags: Colour | None = None) -> av.VideoFrame:
        """[H, W, 3] RGB integers -> a YUV frame of `pix_fmt` with this stream's matrix and range,
        tagged with `tags` (default: this stream's colour)."""
        frame = self.to_planes(image, pix_fmt).frame()
        tag(frame, tags or self.colour)
        frame.pts = pts
        if time_base is not None:
            frame.time_base = time_base
        return frame

    def to_planes(self, image: torch.Tensor, pix_fmt: str) -> HostPlanes:
        """[H, W, 3] RGB integers (on any device) -> the YUV planes of `pix_fmt`, converted on this
        converter's device and on their way to host memory (see HostPlanes)."""
        scale = float(torch.iinfo(image.dtype).max) if not image.is_floating_point() else 1.0
        rgb = image.to(self.device, non_blocking=True).to(torch.float32).div_(scale)
        planes, ready = to_host(self.rgb_float_to_planes(rgb, pix_fmt))
        return HostPlanes(planes, ready, pix_fmt, rgb.shape[1], rgb.shape[0])

    def rgb_float_to_planes(self, rgb: torch.Tensor, pix_fmt: str) -> list[torch.Tensor]:
        """Planes as integers on the device: uint8, or int16 holding the 9..16-bit codes (the same
        bits as uint16, in which CUDA has no arithmetic)."""
        bits, (sy, sx) = _layout(pix_fmt)
        if not self._from_rgb_rows:
            raise ValueError("an RGB-coded source is written as YUV with BT.709: choose it before converting")
        r, g, b = rgb.unbind(-1)
        y, cb, cr = (r * kr + g * kg + b * kb for kr, kg, kb in self._from_rgb_rows)
        cb, cr = _downsample(cb, sy, sx), _downsample(cr, sy, sx)
        y, cb, cr = _denormalise(y, cb, cr, bits, self.colour.range)
        top = float((1 << bits) - 1)
        dtype = torch.uint8 if bits <= 8 else torch.int16
        return [p.round_().clamp_(0, top).to(dtype) for p in (y, cb, cr)]


@dataclass
class HostPlanes:
    """An output frame's Y, Cb, Cr planes in host memory. From a CUDA device they arrive by
    non-blocking copies into pinned buffers: `frame()` waits for that copy only, so the encoding
    thread never blocks the device's queue of work."""

    planes: list[torch.Tensor]
    ready: torch.cuda.Event | None  # recorded after the copies (None: already in host memory)
    pix_fmt: str
    width: int
    height: int

    def arrays(self) -> list[np.ndarray]:
        if self.ready is not None:
            self.ready.synchronize()
        arrays = [p.numpy() for p in self.planes]
        return [a.view(np.uint16) if a.dtype == np.int16 else a for a in arrays]

    def frame(self) -> av.VideoFrame:
        return _write_planes(self.arrays(), self.pix_fmt, self.width, self.height)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device. To CUDA through a pinned buffer, so the copy is asynchronous (from pageable
    memory it would not be); torch's caching host allocator keeps the buffer until the copy is done."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    pinned = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    pinned.copy_(tensor)
    return pinned.to(device, non_blocking=True)


def to_host(tensors: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.cuda.Event | None]:
    """Device -> host: from CUDA into pinned buffers, without waiting; the event says when they are done."""
    if not tensors or tensors[0].device.type != "cuda":
        return [t.cpu() for t in tensors], None
    host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True) for t in tensors]
    ready = torch.cuda.Event()
    ready.record()
    return host, ready


def tag(target, colour: Colour) -> None:
    """Write the colour tags onto a frame or an encoder's codec context."""
    target.colorspace = colour.matrix if colour.matrix != SPC_RGB else SPC_BT709
    target.color_range = colour.range
    target.color_primaries = colour.primaries
    target.color_trc = colour.transfer


def _layout(pix_fmt: str) -> tuple[int, tuple[int, int]]:
    """(bits, (vertical, horizontal) chroma shift) of an output pixel format."""
    if pix_fmt in ("nv12", "p010le"):
        return (8 if pix_fmt == "nv12" else 10), (1, 1)
    m = _PLANAR_YUV.match(pix_fmt)
    if not m:
        raise ValueError(f"unsupported output pixel format {pix_fmt}")
    return int(m.group(2) or 8), _CHROMA_SHIFT[m.group(1)]


def _read_planes(frame: av.VideoFrame, colour: Colour) -> tuple[list[torch.Tensor], int, int, int]:
    """Integer planes of a frame, read as they are. Formats outside the planar families are first
    repacked by swscale into yuv444p16le (or read as rgb48le when they are RGB) with the stream's own
    matrix and range named on both sides, so no matrix is applied there."""
    name = frame.format.name
    if not (_PLANAR_YUV.match(name) or name.startswith(("gbrp", "gray")) or name in ("nv12", "p010le")):
        if colour.matrix == SPC_RGB or name.startswith(("rgb", "bgr", "argb", "abgr", "pal8")):
            rgb = frame.to_ndarray(format="rgb48le")  # RGB -> RGB: no matrix involved
            g, b, r = (torch.from_numpy(rgb[..., i].copy().view(np.int16)) for i in (1, 2, 0))
            return [g, b, r], 16, frame.height, frame.width
        frame = frame.reformat(format="yuv444p16le", src_colorspace=colour.matrix, dst_colorspace=colour.matrix,
                               src_color_range=colour.range, dst_color_range=colour.range)
        name = frame.format.name
    bits = frame.format.components[0].bits
    dtype = np.uint8 if bits <= 8 else np.uint16
    h, w = frame.height, frame.width
    if name in ("nv12", "p010le"):
        y = _plane(frame.planes[0], dtype, h, w)
        uv = _plane(frame.planes[1], dtype, (h + 1) // 2, 2 * ((w + 1) // 2))
        planes = [y, uv[:, 0::2], uv[:, 1::2]]
        if name == "p010le":  # MSB-aligned 10 bits
            planes = [p >> 6 for p in planes]
    elif name.startswith("gray"):
        y = _plane(frame.planes[0], dtype, h, w)
        mid = np.full((1, 1), 1 << (bits - 1), dtype)
        planes = [y, mid, mid]
    else:
        planes = [_plane(p, dtype, p.height, p.width) for p in frame.planes[:3]]
    # 16-bit codes travel as int16 (same bits, half the bytes of int32); _widen restores them on the device.
    tensors = [torch.from_numpy(np.ascontiguousarray(p).view(np.int16) if dtype == np.uint16 else np.ascontiguousarray(p))
               for p in planes]
    return tensors, bits, h, w


def _widen(plane: torch.Tensor) -> torch.Tensor:
    """A plane of int16-carried 16-bit codes as int32 with its true (unsigned) values."""
    return plane.to(torch.int32).bitwise_and_(0xFFFF) if plane.dtype == torch.int16 else plane


def _plane(plane, dtype, height: int, width: int) -> np.ndarray:
    row = plane.line_size // np.dtype(dtype).itemsize
    return np.frombuffer(plane, dtype, count=row * height).reshape(height, row)[:, :width]


def _write_planes(planes: list[np.ndarray], pix_fmt: str, width: int, height: int) -> av.VideoFrame:
    frame = av.VideoFrame(width, height, pix_fmt)
    if pix_fmt in ("nv12", "p010le"):
        y, cb, cr = planes
        uv = np.stack([cb, cr], axis=-1).reshape(cb.shape[0], -1)
        if pix_fmt == "p010le":
            y, uv = y << 6, uv << 6
        planes = [y, uv]
    for plane, data in zip(frame.planes, planes, strict=False):
        target = _plane(plane, data.dtype, data.shape[0], data.shape[1])
        np.copyto(target, data)
    return frame


def _upsample(c: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if c.shape == (height, width):
        return c
    if c.numel() == 1:  # gray: neutral chroma
        return c.expand(height, width)
    sy, sx = -(-height // c.shape[0]), -(-width // c.shape[1])
    up = torch.nn.functional.interpolate(c[None, None], size=(c.shape[0] * sy, c.shape[1] * sx), mode="bilinear",
                       align_corners=False)
    return up[0, 0, :height, :width]


def _downsample(c: torch.Tensor, sy: int, sx: int) -> torch.Tensor:
    """2:1 per subsampled axis with the 4-tap [-1, 3, 3, -1] / 4 kernel: the exact inverse of the
    bilinear upsampling above (replicated edges both ways), so an unprocessed frame's chroma comes back
    as it was; a bicubic-like low-pass that removes the fine grid's Nyquist entirely. Written as four
    strided slices, not a convolution: a one-channel strided conv costs several times more on a CPU."""
    x = c[None, None]
    if sx:
        x = _halve(torch.nn.functional.pad(_even_pad(x, -1), (1, 1, 0, 0), mode="replicate"), -1)
    if sy:
        x = _halve(torch.nn.functional.pad(_even_pad(x, -2), (0, 0, 1, 1), mode="replicate"), -2)
    return x[0, 0]


def _halve(padded: torch.Tensor, dim: int) -> torch.Tensor:
    """out[i] = (-p[2i] + 3 p[2i+1] + 3 p[2i+2] - p[2i+3]) / 4 along `dim` of the edge-padded `padded`."""
    n = (padded.shape[dim] - 2) // 2

    def taps(start: int) -> torch.Tensor:  # p[start], p[start + 2], ... (n of them)
        index = [slice(None)] * padded.dim()
        index[dim] = slice(start, start + 2 * n, 2)
        return padded[tuple(index)]

    return (taps(1) + taps(2)).mul_(0.75).sub_((taps(0) + taps(3)).mul_(0.25))


def _even_pad(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Odd sizes: the last chroma sample covers the edge pixel repeated."""
    if x.shape[dim] % 2 == 0:
        return x
    pad = (0, 1, 0, 0) if dim == -1 else (0, 0, 0, 1)
    return torch.nn.functional.pad(x, pad, mode="replicate")


def _normalise(y, cb, cr, bits: int, rng: int):
    """Integer codes -> Y' in [0, 1], Cb/Cr in [-0.5, 0.5] (ITU-R BT.601/709/2020 quantisation)."""
    if rng == RANGE_FULL:
        top = float((1 << bits) - 1)
        mid = float(1 << (bits - 1))
        return y / top, (cb - mid) / top, (cr - mid) / top
    k = float(1 << (bits - 8))
    return (y - 16 * k) / (219 * k), (cb - 128 * k) / (224 * k), (cr - 128 * k) / (224 * k)


def _denormalise(y, cb, cr, bits: int, rng: int):
    if rng == RANGE_FULL:
        top = float((1 << bits) - 1)
        mid = float(1 << (bits - 1))
        return y * top, cb * top + mid, cr * top + mid
    k = float(1 << (bits - 8))
    return y * (219 * k) + 16 * k, cb * (224 * k) + 128 * k, cr * (224 * k) + 128 * k


def _quantise(rgb: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    top = float(torch.iinfo(dtype).max)
    # uint16 has no arithmetic on every device: round in int32, then narrow.
    return rgb.mul(top).round_().to(torch.int32).to(dtype)
