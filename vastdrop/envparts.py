"""Env values longer than Vast.ai accepts travel as numbered parts: NAME__1, NAME__2, ...

Vast's create_instance reference (x-input-validation of ``env``) allows at most 256 characters per
value and 32768 for the whole env as it receives it (docker flag form, ``-e K=V -e K2=V2``).
Presigned URLs are longer, so the control plane splits them (`split_values`) and the job joins them
back (`join_parts`); the plain form keeps working for a container started by hand
(ARCHITECTURE.md section 3).

Error messages name variables, never values: these hold presigned URLs and secrets.
Imports nothing from handlers/, watcher/ or gpu_job/: both sides use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["MAX_TOTAL_CHARS", "MAX_VALUE_CHARS", "docker_env_length", "join_parts", "split_values"]

MAX_VALUE_CHARS = 256  # create_instance.yaml: one env value
MAX_TOTAL_CHARS = 32768  # create_instance.yaml: the env in all, measured by docker_env_length

_NUMBERED = re.compile(r"__[0-9]+$")  # refused in split_values' input: it would read as a part
_PART = re.compile(r"^(?P<name>.+)__(?P<n>[1-9][0-9]*)$")  # NAME__1, NAME__2, ... (no leading zeros)


def split_values(env: Mapping[str, str], limit: int = MAX_VALUE_CHARS) -> dict[str, str]:
    """`env` with every value longer than `limit` replaced by NAME__1..NAME__n (each at most `limit`
    characters, joined in order they are the value; the plain NAME is then absent). Values within
    the limit are unchanged, and the order of the variables is kept."""
    if limit < 1:
        raise ValueError(f"the part size must be at least 1 character, not {limit}")
    numbered = [name for name in env if _NUMBERED.search(name)]
    if numbered:
        raise ValueError(
            "variable names ending in __<digits> are reserved for the parts of long values: "
            + ", ".join(sorted(numbered)))
    out: dict[str, str] = {}
    for name, value in env.items():
        if len(value) <= limit:
            out[name] = value
            continue
        for i, start in enumerate(range(0, len(value), limit), start=1):
            out[f"{name}__{i}"] = value[start:start + limit]
    return out


def docker_env_length(env: Mapping[str, str]) -> int:
    """The env's length as Vast receives it (docker flag form), the figure MAX_TOTAL_CHARS bounds."""
    return len(" ".join(f"-e {k}={v}" for k, v in env.items()))


def join_parts(environ: Mapping[str, str]) -> dict[str, str]:
    """The inverse of `split_values`: NAME__1..NAME__n (consecutive from 1) joined in order into NAME;
    the parts themselves are not in the result. A plain NAME alone is kept as it is, and a plain NAME
    next to its parts must equal them joined. Order: a joined NAME takes the place of its plain form,
    else of its first part.

    Raises ValueError naming every malformed set (a missing part, a plain value that differs from
    its parts); never the values."""
    parts: dict[str, dict[int, str]] = {}
    for key, value in environ.items():
        match = _PART.match(key)
        if match:
            parts.setdefault(match["name"], {})[int(match["n"])] = value
    if not parts:
        return dict(environ)
    problems, joined = [], {}
    for name, numbered in parts.items():
        missing = [n for n in range(1, max(numbered) + 1) if n not in numbered]
        if missing:
            have = ", ".join(f"{name}__{n}" for n in sorted(numbered))
            problems.append(f"{name}: part {', '.join(f'{name}__{n}' for n in missing)} missing (have {have})")
            continue
        value = "".join(numbered[n] for n in range(1, len(numbered) + 1))
        if name in environ and environ[name] != value:
            problems.append(f"{name}: set both plainly and as parts {name}__1..{name}__{len(numbered)}, "
                            "with different values")
            continue
        joined[name] = value
    if problems:
        raise ValueError("malformed env parts: " + "; ".join(problems))
    out: dict[str, str] = {}
    for key, value in environ.items():
        match = _PART.match(key)
        if match and match["name"] in joined:
            out.setdefault(match["name"], joined[match["name"]])
        elif key in joined:
            out[key] = joined[key]
        else:
            out[key] = value
    return out
