"""Reading the lock files `make locks` writes (uv's pip-compile format) and their inputs."""

from __future__ import annotations

from dataclasses import dataclass, field

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


@dataclass
class Pin:
    requirement: Requirement
    hashes: list[str]
    via: set[str] = field(default_factory=set)  # canonical names, or "-r <input>"


def parse_lock(text: str) -> tuple[dict[str, Pin], list[str]]:
    """A pip-compile/uv lock: `name==version \\ --hash=sha256:...` entries, each followed by its
    `# via` annotation (one name on the line, or a list of `#   name` lines)."""
    pins: dict[str, Pin] = {}
    problems: list[str] = []
    current: Pin | None = None
    in_via = False
    pending = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        if pending or (stripped and not stripped.startswith("#")):
            pending += line.removesuffix("\\").strip() + " "
            if line.endswith("\\"):
                continue
            words, pending = pending.split(), ""
            hashes = [w.removeprefix("--hash=") for w in words if w.startswith("--hash=")]
            spec = " ".join(w for w in words if not w.startswith("--"))
            try:
                requirement = Requirement(spec)
            except ValueError as exc:
                problems.append(f"[pin] cannot read {spec!r}: {exc}")
                current = None
                continue
            name = canonicalize_name(requirement.name)
            if name in pins:
                problems.append(f"[pin] {name} is pinned twice")
            current = pins[name] = Pin(requirement, hashes)
            in_via = False
        elif current is not None and stripped.startswith("# via"):
            rest = stripped.removeprefix("# via").strip()
            if rest:
                current.via.add(rest if rest.startswith("-") else canonicalize_name(rest))
            in_via = not rest
        elif current is not None and in_via and stripped.startswith("#   "):
            rest = stripped.removeprefix("#").strip()
            current.via.add(rest if rest.startswith("-") else canonicalize_name(rest))
        else:
            in_via = False
    return pins, problems


def parse_input(text: str) -> dict[str, Requirement]:
    reqs = (Requirement(ln.split("#")[0].strip()) for ln in text.splitlines() if ln.split("#")[0].strip())
    return {canonicalize_name(r.name): r for r in reqs}
