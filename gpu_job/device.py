"""Device choice and the torch/CUDA diagnostics logged at start."""

from __future__ import annotations

import importlib.metadata
import logging
import os

import av

from gpu_job.lazy import imported, lazy_import
from vastdrop.errors import TransientError

torch = lazy_import("torch")  # imported on first use: the YUV-only path never needs it

logger = logging.getLogger(__name__)


def pick_device(requested: str) -> str:
    """The torch device's name ("cpu" or "cuda:0"). A name, so that JOB_DEVICE=cpu asks nothing of
    torch and a job that needs no torch never imports it (gpu_job.lazy)."""
    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda:0"
    if requested == "cuda":  # another host may have a working GPU: worth a retry elsewhere
        raise TransientError("JOB_DEVICE=cuda but CUDA is not available on this host")
    return "cpu"


def torch_version() -> str:
    """torch's version, from its package metadata while torch itself is not imported."""
    return torch.__version__ if imported("torch") else importlib.metadata.version("torch")


def describe(device: str) -> str:
    if device.startswith("cuda"):
        return f"{device} {torch.cuda.get_device_name(device)}"
    return "cpu"


def log_diagnostics(device: str) -> dict:
    facts: dict[str, object] = {
        "device": describe(device),
        "torch": torch_version(),
        "av": av.__version__,
        "ffmpeg": av.library_versions.get("libavcodec"),
        "cpu_count": os.cpu_count(),
    }
    if device.startswith("cuda"):  # torch is imported by then: pick_device asked it
        props = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        facts.update(torch_cuda=torch.version.cuda, gpu_name=props.name, gpu_memory_total_mb=total >> 20,
                     gpu_memory_free_mb=free >> 20, capability=f"{props.major}.{props.minor}",
                     cudnn=torch.backends.cudnn.version())
    logger.info("diagnostics", extra=facts)
    return facts
