"""Geometry as a player shows it: the display matrix (rotation, flips) and the sample aspect ratio.

Orientation is applied to the pixels and no display matrix is written. Carrying the matrix would be
cheaper, but players honour it unevenly (some web players and editors ignore it), an upscaler or
interpolator would work on a sideways picture, and every later tool would have to carry it again.
Pixels turned once are right everywhere. A 90 or 270 degree turn swaps width and height, and with
them the sample aspect ratio's terms, so the display aspect stays the source's.

The matrix is read from the first decoded frame's DISPLAYMATRIX side data (FFmpeg attaches the
stream's matrix to every frame; MP4 and MOV have one a track). Its 2x2 part, in FFmpeg's convention
(x' y') = (x y) * [[a b] [c d]] with y pointing down, is a signed permutation for the eight
orientations phones and cameras write (rotations by 90 degrees, with or without a mirror); any other
angle is snapped to the nearest of the eight, and the manifest says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from gpu_job.lazy import lazy_import
from gpu_job.media.probe import Source, open_read

torch = lazy_import("torch")  # imported on first use: the YUV-only path never needs it

DISPLAYMATRIX = "DISPLAYMATRIX"
FIXED_ONE = 1 << 16  # the matrix's 2x2 part is 16.16 fixed point (libavutil/display.h)
PROBE_PACKETS_MAX = 64  # the first frame arrives within the decoder's delay; never read the whole file
FIELD_ORDERS = {2: "tt", 3: "bb", 4: "tb", 5: "bt"}  # AVFieldOrder (libavcodec/defs.h); 1 is progressive


@dataclass(frozen=True)
class Orientation:
    """How to turn coded pixels into displayed ones: transpose first, then mirror the result's
    columns (flip_x) and rows (flip_y)."""

    transpose: bool = False
    flip_x: bool = False
    flip_y: bool = False
    rotation: float = 0.0  # counter-clockwise degrees, as FFmpeg and PyAV report it
    snapped: bool = False  # the matrix was not one of the eight; the nearest was used

    @property
    def identity(self) -> bool:
        return not (self.transpose or self.flip_x or self.flip_y)

    def display_size(self, width: int, height: int) -> tuple[int, int]:
        return (height, width) if self.transpose else (width, height)

    def display_sar(self, sar: Fraction) -> Fraction:
        """A transposed picture's pixels are transposed too: 32:27 becomes 27:32."""
        return 1 / sar if self.transpose and sar else sar

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """[H, W, C] coded -> [H', W', C] displayed (a copy only when something changes)."""
        if self.identity:
            return image
        out = image.transpose(0, 1) if self.transpose else image
        dims = [d for d, flip in ((1, self.flip_x), (0, self.flip_y)) if flip]
        out = torch.flip(out, dims) if dims else out
        return out.contiguous()

    def describe(self) -> str:
        return _NAMES[(self.transpose, self.flip_x, self.flip_y)]


# The eight orientations in words (transpose, flip_x, flip_y), as a viewer would say them.
_NAMES = {
    (False, False, False): "upright", (False, True, False): "mirrored left-right",
    (False, False, True): "mirrored top-bottom", (False, True, True): "turned 180 degrees",
    (True, False, True): "turned 90 degrees counter-clockwise", (True, True, False): "turned 90 degrees clockwise",
    (True, False, False): "transposed (mirrored across the main diagonal)",
    (True, True, True): "mirrored across the anti-diagonal",
}


def orientation_of(matrix: np.ndarray | None, rotation: float = 0.0) -> Orientation:
    """The orientation for a 3x3 display matrix (9 int32 values in FFmpeg's layout), or upright;
    `rotation` is the angle FFmpeg reads from it (VideoFrame.rotation), kept for the manifest."""
    if matrix is None:
        return Orientation()
    a, b, c, d = (float(v) / FIXED_ONE for v in (matrix[0], matrix[1], matrix[3], matrix[4]))
    if abs(a) + abs(d) >= abs(b) + abs(c):  # x' from x, y' from y: at most mirrored
        snapped = abs(b) + abs(c) > 1e-3 or abs(abs(a) - abs(d)) > 1e-3
        return Orientation(False, a < 0, d < 0, rotation, snapped)
    # x' = c*y, y' = b*x: the picture is transposed, then mirrored where the sign is negative.
    snapped = abs(a) + abs(d) > 1e-3 or abs(abs(b) - abs(c)) > 1e-3
    return Orientation(True, c < 0, b < 0, rotation, snapped)


def frame_matrix(frame: av.VideoFrame) -> np.ndarray | None:
    for side in frame.side_data:
        if side.type.name == DISPLAYMATRIX:
            return np.frombuffer(bytes(side), dtype=np.int32).copy()
    return None


@dataclass(frozen=True)
class Geometry:
    """What the first frame and the stream say about the picture's shape and scan."""

    coded_width: int
    coded_height: int
    sar: Fraction  # of the coded pixels; 1 when unset
    orientation: Orientation
    field_order: str | None  # tt, bb, tb, bt when the stream declares interlace
    interlaced_frames: bool  # the first frame is flagged interlaced

    @property
    def interlaced(self) -> bool:
        return self.field_order is not None or self.interlaced_frames

    @property
    def display_size(self) -> tuple[int, int]:
        return self.orientation.display_size(self.coded_width, self.coded_height)

    @property
    def display_sar(self) -> Fraction:
        return self.orientation.display_sar(self.sar)

    @property
    def display_aspect(self) -> Fraction:
        w, h = self.display_size
        return Fraction(w, h) * self.display_sar

    def facts(self) -> dict:
        """For the manifest's media facts: what a viewer would notice."""
        w, h = self.display_size
        return {"rotation": self.orientation.rotation, "orientation": self.orientation.describe(),
                "display_width": w, "display_height": h, "sar": _ratio(self.display_sar),
                "dar": _ratio(self.display_aspect), "field_order": self.field_order or "progressive"}


def _ratio(value: Fraction) -> str:
    return f"{value.numerator}:{value.denominator}"


def inspect(path: Source) -> Geometry:
    """Read the stream's declarations and its first frame (a few packets, never the whole file)."""
    with open_read(path) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        first = _first_frame(container, stream)
        sar = stream.sample_aspect_ratio or ctx.sample_aspect_ratio
        return Geometry(
            coded_width=ctx.width, coded_height=ctx.height,
            sar=Fraction(sar) if sar else Fraction(1),
            orientation=orientation_of(frame_matrix(first), first.rotation) if first is not None else Orientation(),
            field_order=FIELD_ORDERS.get(ctx.field_order),
            interlaced_frames=bool(first is not None and first.interlaced_frame),
        )


def _first_frame(container: av.container.InputContainer, stream: av.VideoStream) -> av.VideoFrame | None:
    try:
        for n, packet in enumerate(container.demux(stream)):
            for frame in packet.decode():
                return frame
            if n >= PROBE_PACKETS_MAX:
                break
    except av.error.FFmpegError:
        return None  # the pipeline's own decode reports a broken stream in words
    return None


def notes(geometry: Geometry, upscale: int) -> list[str]:
    """The manifest's words for what was done to the picture's shape."""
    out = []
    o = geometry.orientation
    if not o.identity:
        w, h = geometry.display_size
        out.append(f"display matrix (rotation {o.rotation:g} degrees, {o.describe()}) applied to the pixels: "
                   f"the result is {w}x{h} as stored and carries no display matrix")
    if o.snapped:
        out.append(f"display matrix with a rotation of {o.rotation:g} degrees is not a multiple of 90: "
                   "the nearest quarter turn was applied")
    if geometry.sar != 1:
        out.append(f"sample aspect ratio {_ratio(geometry.display_sar)} kept (display aspect "
                   f"{_ratio(geometry.display_aspect)})" + (f"; upscaled x{upscale} in both directions" if upscale > 1 else ""))
    return out


def manifest_entry(geometry: Geometry) -> dict:
    """The structured record (engine.geometry) beside the notes."""
    o = geometry.orientation
    return {"orientation": "applied to pixels" if not o.identity else "none",
            "display_matrix_written": False, "rotation": o.rotation, "transpose": o.transpose,
            "flip_x": o.flip_x, "flip_y": o.flip_y, "sar": _ratio(geometry.display_sar),
            "dar": _ratio(geometry.display_aspect)}


def configure_stream(vout: av.VideoStream, geometry: Geometry, time_base: Fraction) -> None:
    """The encoder works in the frames' own time base (the source's, without retiming), so no two
    frames collide on a coarser 1/fps grid and each keeps its exact timestamp; and it writes the
    source's sample aspect ratio (the H.264/HEVC VUI and MP4's pasp box both come from it)."""
    vout.codec_context.time_base = time_base
    if geometry.display_sar != 1:
        vout.codec_context.sample_aspect_ratio = geometry.display_sar
