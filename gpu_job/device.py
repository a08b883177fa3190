"""Device choice and the torch/CUDA diagnostics logged at start."""

from __future__ import annotations

import logging
import os

import av
import torch

from vastdrop.errors import TransientError

logger = logging.getLogger(__name__)


def pick_device(requested: str) -> torch.device:
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda:0")
    if requested == "cuda":  # another host may have a working GPU: worth a retry elsewhere
        raise TransientError("JOB_DEVICE=cuda but CUDA is not available on this host")
    return torch.device("cpu")


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} {torch.cuda.get_device_name(device)}"
    return "cpu"


def log_diagnostics(device: torch.device) -> dict:
    facts: dict[str, object] = {
        "device": describe(device),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "av": av.__version__,
        "ffmpeg": av.library_versions.get("libavcodec"),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        facts.update(gpu_name=props.name, gpu_memory_total_mb=total >> 20, gpu_memory_free_mb=free >> 20,
                     capability=f"{props.major}.{props.minor}", cudnn=torch.backends.cudnn.version())
    logger.info("diagnostics", extra=facts)
    return facts
