"""Modules imported on first use (importlib.util.LazyLoader, the standard library's recipe).

torch takes about 2 s of CPU to import. A job that only transcodes (no model, the picture kept in
YUV from decoder to encoder, JOB_DEVICE=cpu) never touches it, so it should not pay for it: the
modules on that path bind `torch` lazily and use none of its attributes at import time.
"""

from __future__ import annotations

import importlib.util
import sys
import types


def lazy_import(name: str) -> types.ModuleType:
    """`name` as a module whose code runs when one of its attributes is first read."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"no module named {name!r}", name=name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def imported(name: str) -> bool:
    """Whether `name` has really been imported (not merely bound lazily)."""
    module = sys.modules.get(name)
    return module is not None and not isinstance(module, importlib.util._LazyModule)
