"""A host's resource limits as transient failures: a full disk or exhausted memory is this machine's
limit, not the input's fault, and another host (or the same one, later) may well have room. Anything
that raised them is recognised here, wrapped or not, and said in words with the figures that matter.

Recognised: OSError with ENOSPC or EDQUOT (Python's own, PyAV's av.error.OSError from a muxer write,
or our storage adapters' TransientError raised from one); torch.OutOfMemoryError (CUDA's allocator);
MemoryError (Python, NumPy, PyAV's av.error.MemoryError); torch's CPU allocator failing, which torch
raises as a plain RuntimeError whose message is the only mark.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from pathlib import Path

from gpu_job.lazy import imported, lazy_import
from vastdrop.errors import TransientError

torch = lazy_import("torch")  # imported on first use: the YUV-only path never needs it

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
CPU_ALLOCATOR_MARKS = ("DefaultCPUAllocator: can't allocate memory", "DefaultCPUAllocator: not enough memory")
CHAIN_MAX = 16  # __cause__/__context__ links followed; a cycle or a long chain ends there
MESSAGE_MAX = 300  # of the original error's text kept in ours (torch's OOM text runs to a paragraph)


class ResourceExhausted(TransientError):
    """Disk full or out of memory on this host: retried, on another host if the control plane can."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < CHAIN_MAX:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _mib(n: int) -> str:
    """Bytes in the unit that shows them: 48 KiB, 310 MiB, 71.5 GiB."""
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n / 1024:.0f} KiB"


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text[:MESSAGE_MAX]


def _disk_full(exc: OSError, workdir: Path) -> ResourceExhausted:
    try:
        usage = shutil.disk_usage(workdir)
        room = f"{_mib(usage.free)} free of {_mib(usage.total)} in the work directory {workdir}"
    except OSError:
        room = f"the work directory {workdir} is unreadable"
    where = f" writing {Path(str(exc.filename)).name}" if exc.filename else ""
    return ResourceExhausted(f"disk full{where} ({exc.strerror or errno.errorcode.get(exc.errno or 0)}): {room}; "
                             "the job needs room for its input and its result")


def _out_of_memory(exc: BaseException, device: str | None) -> ResourceExhausted:
    if _torch_oom(exc) and device is not None and device.startswith("cuda"):
        try:
            free, total = torch.cuda.mem_get_info(device)
            where = f"{device} ({_mib(free)} free of {_mib(total)})"
        except RuntimeError:  # a device in a bad state after the failure: name it without figures
            where = str(device)
    else:
        import psutil  # the job's image has it (vastai depends on it)

        mem = psutil.virtual_memory()
        where = f"the host ({_mib(mem.available)} available of {_mib(mem.total)})"
    return ResourceExhausted(f"out of memory on {where}: {_first_line(exc)}")


def resource_exhausted(exc: BaseException, workdir: Path, device: str | None) -> ResourceExhausted | None:
    """The disk-full or out-of-memory error behind `exc`, in words; None when it is neither."""
    for link in _chain(exc):
        if isinstance(link, ResourceExhausted):
            return link
        if isinstance(link, OSError) and link.errno in DISK_FULL_ERRNOS:
            return _disk_full(link, workdir)
        if _torch_oom(link) or isinstance(link, MemoryError) or (
            isinstance(link, RuntimeError) and any(mark in str(link) for mark in CPU_ALLOCATOR_MARKS)
        ):
            return _out_of_memory(link, device)
    return None


def _torch_oom(exc: BaseException) -> bool:
    # Without torch imported, no error can be torch's (and asking would import it).
    return imported("torch") and isinstance(exc, torch.OutOfMemoryError)
