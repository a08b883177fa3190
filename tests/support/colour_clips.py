"""Test clips for colour: bars encoded with explicit tags like real files (SD BT.601, HD BT.709,
full range, 10-bit HDR10 with its SEI), and reading a video back as a player shows it."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

# SMPTE-style bars at 75 %: white, yellow, cyan, green, magenta, red, blue; then a full-scale ramp and
# a near-black step row, so range and matrix errors both show.
_BARS = [(191, 191, 191), (191, 191, 0), (0, 191, 191), (0, 191, 0), (191, 0, 191), (191, 0, 0), (0, 0, 191)]
HDR10_MASTERING = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)"
HDR10_MAX_CLL = (1000, 400)


def bars_rgb(width: int, height: int, bits: int = 8) -> np.ndarray:
    """[H, W, 3] RGB colour bars (uint8, or uint16 at 16-bit scale for `bits` > 8)."""
    top = (1 << 16) - 1 if bits > 8 else 255
    img = np.zeros((height, width, 3), np.float64)
    bar_h, ramp_h = height * 2 // 3, height // 6
    for i, colour in enumerate(_BARS):
        img[:bar_h, i * width // 7:(i + 1) * width // 7] = np.array(colour) / 255
    img[bar_h:bar_h + ramp_h] = np.linspace(0, 1, width)[None, :, None]
    for i, level in enumerate((0.0, 0.02, 0.04, 0.08, 1.0, 0.5)):
        img[bar_h + ramp_h:, i * width // 6:(i + 1) * width // 6] = level
    return np.round(img * top).astype(np.uint8 if bits <= 8 else np.uint16)


def make_bars(path: Path, *, width: int, height: int, matrix: str | None, full_range: bool = False,
              frames: int = 3, fps: int = 25, hdr10: bool = False) -> Path:
    """Colour bars converted with an explicit matrix and range (swscale, named on both sides) and
    encoded with those tags (matrix None: untagged, as players meet many files). hdr10=True: 10-bit
    BT.2020 PQ by libx265 with mastering-display and content-light SEI, as HDR10 masters are."""
    bits = 10 if hdr10 else 8
    codec, pix_fmt = ("libx265", "yuv420p10le") if hdr10 else ("libx264", "yuv420p")
    av_matrix = {"bt601": "itu601", "bt709": "itu709", "bt2020": "bt2020", None: None}[matrix]
    tag = {"bt601": 6, "bt709": 1, "bt2020": 9}.get(matrix or "", 2)
    options = {"preset": "ultrafast", "crf": "4"}
    if hdr10:
        cll = ",".join(map(str, HDR10_MAX_CLL))
        options["x265-params"] = f"log-level=error:master-display={HDR10_MASTERING}:max-cll={cll}"
    rgb = av.VideoFrame.from_ndarray(bars_rgb(width, height, bits), format="rgb48le" if hdr10 else "rgb24")
    # An untagged file is converted the way a player reads it back (BT.601 SD, BT.709 HD).
    sws_matrix = av_matrix or ("itu709" if height >= 720 else "itu601")
    yuv = rgb.reformat(format=pix_fmt, dst_colorspace=sws_matrix, dst_color_range="JPEG" if full_range else "MPEG")
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        cc = stream.codec_context
        if matrix is not None:
            cc.colorspace = tag
            cc.color_primaries = 9 if hdr10 else tag
            cc.color_trc = 16 if hdr10 else tag
        cc.color_range = 2 if full_range else (1 if matrix is not None else 0)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(yuv.to_ndarray(), format=pix_fmt)
            frame.colorspace, frame.color_range = cc.colorspace, cc.color_range
            frame.color_primaries, frame.color_trc = cc.color_primaries, cc.color_trc
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def displayed(path: Path) -> list[np.ndarray]:
    """Every frame as a player shows it: converted to RGB (rgb48le, so 10 bits survive) by swscale
    with the file's own matrix and range named explicitly; untagged ones as players assume."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        out = []
        for frame in container.decode(stream):
            spc = {1: "itu709", 5: "itu601", 6: "itu601", 9: "bt2020"}.get(
                frame.colorspace, "itu709" if frame.height >= 720 else "itu601")
            full = frame.color_range == 2 or (frame.color_range == 0 and frame.format.name.startswith("yuvj"))
            rgb = frame.reformat(format="rgb48le", src_colorspace=spc, dst_colorspace=spc,
                                 src_color_range="JPEG" if full else "MPEG", dst_color_range="JPEG")
            out.append(rgb.to_ndarray().astype(np.float64) / 65535)
        return out


def psnr_displayed(a: Path, b: Path) -> float:
    """PSNR (dB, 8-bit peak equivalent: RGB in [0, 1]) between two videos as a player shows them."""
    fa, fb = displayed(a), displayed(b)
    assert len(fa) == len(fb), (len(fa), len(fb))
    mse = float(np.mean([np.mean((x - y) ** 2) for x, y in zip(fa, fb, strict=True)]))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)
