"""The lock files the GPU image and the Lambda bundle install from are current, checked offline.

Re-resolving needs the network, so "current" is checked as the properties a fresh `make locks`
would give, each one a `_check_*` returning "[tag] message" problems:
- every pin is exact and hashed (pip's --require-hashes needs both);
- every pin satisfies pyproject.toml's floor for that package (the advisories it names);
- each lock's input lists exactly the distributions its program imports (the imports of gpu_job/ or
  handlers/ and of every vastdrop/ module they reach, read with ast), with pyproject's specifiers;
- every distribution the program imports is pinned, and every pin is the input's or something a
  pin needs (the resolver's `# via` lines): the image installs only what the job imports;
- the GPU lock holds neither torch nor torchvision (the base image's CUDA builds).
The real files must have none; each entry of MUTATIONS breaks one property and must be caught.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.imports import closure, distributions
from tests.support.lockfile import Pin, parse_input, parse_lock

ROOT = Path(__file__).resolve().parents[1]
# The base image's CUDA builds; the GPU lock must leave them to it (locks/base-image.txt).
BASE_IMAGE = {"torch", "torchvision"}
# Installed --no-deps from its own lock: the vastai package also carries its CLI's dependencies.
SDK_ONLY = {"vastai"}
# What the vastai SDK imports that no project module does; each program importing vastai lists it.
SDK_IMPORTS = {"python-dateutil"}
SDK_LOCK = ("serverless/requirements-sdk-only.txt", "serverless/requirements-sdk-only.lock")


@dataclass(frozen=True)
class Program:
    entry: str  # the package whose imports the lock serves
    input: str  # the lock's input (requirements with pyproject's specifiers)
    lock: str  # `make locks`'s output
    base: frozenset[str] = frozenset()  # provided by the environment, never pinned


PROGRAMS = {
    "gpu-job": Program("gpu_job", "locks/gpu-job.in", "locks/gpu-job.txt", frozenset(BASE_IMAGE)),
    "lambda": Program("handlers", "serverless/requirements.txt", "serverless/requirements.lock"),
}


def floors(pyproject: str) -> dict[str, Requirement]:
    deps = tomllib.loads(pyproject)["project"]["dependencies"]
    return {canonicalize_name(Requirement(d).name): Requirement(d) for d in deps}


@dataclass(frozen=True)
class Case:
    """One lock with everything its checks read; the mutation tests change one field."""

    name: str
    input_path: str
    input_text: str
    lock_text: str
    floors: dict[str, Requirement]
    imported: frozenset[str]  # distributions the program imports (canonical names)
    base: frozenset[str]
    expected_inputs: frozenset[str]
    sdk_pins: frozenset[str]  # what the SDK lock adds to the same environment


# ---- checks --------------------------------------------------------------------------------------


def _check_pins(case: Case, pins: dict[str, Pin]) -> list[str]:
    problems = []
    for name, pin in pins.items():
        specs = list(pin.requirement.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
            problems.append(f"[pin] {case.name}: {pin.requirement} is not one exact version")
        if not pin.hashes or not all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in pin.hashes):
            problems.append(f"[hash] {case.name}: {name} has no sha256 hash (pip --require-hashes refuses it)")
    return problems


def _version(pin: Pin) -> str:
    return next(iter(pin.requirement.specifier)).version


def _check_floors(case: Case, pins: dict[str, Pin]) -> list[str]:
    return [
        f"[floor] {case.name}: {name}=={_version(pin)} is below pyproject's {case.floors[name]}"
        for name, pin in pins.items()
        if name in case.floors and not case.floors[name].specifier.contains(_version(pin), prereleases=True)
    ]


def _check_inputs(case: Case, pins: dict[str, Pin]) -> list[str]:
    inputs = parse_input(case.input_text)
    problems = []
    for name in sorted(set(inputs) ^ case.expected_inputs):
        why = "is not imported" if name in inputs else "is imported but not listed"
        problems.append(f"[input] {case.input_path}: {name} {why}")
    for name, req in inputs.items():
        wanted = case.floors.get(name)
        exact = [s.version for s in req.specifier if s.operator == "=="]
        if wanted is not None and req.specifier != wanted.specifier and not (
            len(exact) == 1 and wanted.specifier.contains(exact[0])  # a deliberate pin within range
        ):
            problems.append(f"[input] {case.input_path}: {req} differs from pyproject's {wanted}")
        if name not in pins:
            problems.append(f"[input] {case.name}: {name} is in {case.input_path} but not pinned: run `make locks`")
        elif not req.specifier.contains(_version(pins[name]), prereleases=True):
            problems.append(f"[input] {case.name}: {name}=={_version(pins[name])} does not satisfy {req}")
    root = f"-r {case.input_path}"
    problems += [f"[input] {case.name}: {name} says it comes from {case.input_path}, which does not list it"
                 for name, pin in pins.items() if root in pin.via and name not in inputs]
    return problems


def _check_graph(case: Case, pins: dict[str, Pin]) -> list[str]:
    """Every pin is wanted: by the input, or by a wanted pin (fixpoint over the `# via` lines)."""
    root = f"-r {case.input_path}"
    problems = [
        f"[graph] {case.name}: {name} is wanted by {sorted(pin.via - set(pins) - {root})}, which are not pinned"
        for name, pin in pins.items()
        if pin.via - set(pins) - {root}
    ]
    wanted = {name for name, pin in pins.items() if root in pin.via}
    grew = True
    while grew:
        more = {name for name, pin in pins.items() if name not in wanted and pin.via & wanted}
        wanted |= more
        grew = bool(more)
    problems += [f"[graph] {case.name}: {name} is pinned but nothing the program imports needs it"
                 for name in sorted(set(pins) - wanted)]
    return problems


def _check_imports(case: Case, pins: dict[str, Pin]) -> list[str]:
    missing = case.imported - case.base - set(pins) - case.sdk_pins
    problems = [f"[imports] {case.name} imports {name}, which its locks do not pin" for name in sorted(missing)]
    problems += [f"[base] {case.name}: {name} is pinned but comes from the base image" for name in sorted(case.base & set(pins))]
    return problems


CHECKS: list[Callable[[Case, dict[str, Pin]], list[str]]] = [
    _check_pins, _check_floors, _check_inputs, _check_graph, _check_imports,
]  # fmt: skip


def problems_of(case: Case) -> list[str]:
    pins, problems = parse_lock(case.lock_text)
    if not pins:
        return [*problems, f"[pin] {case.name}: the lock pins nothing"]
    return problems + [p for check in CHECKS for p in check(case, pins)]


# ---- the real files ------------------------------------------------------------------------------


@cache
def imported(entry: str) -> frozenset[str]:
    return frozenset(distributions(closure(entry)))


def _read(path: str) -> str:
    return (ROOT / path).read_text()


def real_case(name: str) -> Case:
    deps = floors(_read("pyproject.toml"))
    if name == "sdk":
        used = frozenset().union(*(imported(p.entry) for p in PROGRAMS.values()))
        return Case("sdk", SDK_LOCK[0], _read(SDK_LOCK[0]), _read(SDK_LOCK[1]), deps,
                    frozenset(SDK_ONLY & used), frozenset(), frozenset(SDK_ONLY & used), frozenset())
    program = PROGRAMS[name]
    uses = imported(program.entry)
    expected = (set(deps) & uses) - program.base - SDK_ONLY
    if uses & SDK_ONLY:
        expected |= SDK_IMPORTS
    sdk_pins = frozenset(parse_lock(_read(SDK_LOCK[1]))[0]) if uses & SDK_ONLY else frozenset()
    return Case(name, program.input, _read(program.input), _read(program.lock), deps, uses,
                program.base, frozenset(expected), sdk_pins)


CASES = [*PROGRAMS, "sdk"]


@pytest.mark.parametrize("name", CASES)
def test_lock_is_current(name: str) -> None:
    assert problems_of(real_case(name)) == []


def test_the_walk_sees_what_each_program_really_imports() -> None:
    """A sanity floor for the import walk: without it an empty walk would pass every check."""
    assert {"av", "spandrel", "torch", "boto3", "vastai"} <= imported("gpu_job")
    assert {"boto3", "pydantic-settings", "vastai"} <= imported("handlers")
    assert not {"torch", "av", "spandrel", "b2sdk"} & imported("handlers")
    assert "b2sdk" not in imported("gpu_job")  # only the watcher's B2 setup uses it


def test_the_gpu_lock_leaves_torch_and_what_only_torch_needs_to_the_base_image() -> None:
    pins, _ = parse_lock(_read(PROGRAMS["gpu-job"].lock))
    assert not {"torch", "torchvision", "triton", "sympy", "networkx"} & set(pins)
    assert not [name for name in pins if name.startswith("nvidia-")]
    assert {"av", "spandrel", "numpy", "safetensors"} <= set(pins)  # spandrel's own needs stay


def test_every_pyproject_floor_is_met_by_every_pin_that_names_it() -> None:
    """The floors are exercised: each lock pins several packages that pyproject bounds."""
    deps = floors(_read("pyproject.toml"))
    for name in CASES:
        case = real_case(name)
        pins, _ = parse_lock(case.lock_text)
        assert set(pins) & set(deps), name


# ---- each property, broken once, is caught -------------------------------------------------------


def _lock_sub(old: str, new: str, count: int = 1) -> Callable[[Case], Case]:
    def mutate(case: Case) -> Case:
        assert old in case.lock_text, old
        return _replace(case, lock_text=case.lock_text.replace(old, new, count))

    return mutate


def _replace(case: Case, **changes) -> Case:
    return Case(**{**case.__dict__, **changes})


def _drop_pin(name: str) -> Callable[[Case], Case]:
    def mutate(case: Case) -> Case:
        blocks = re.split(r"(?m)^(?=\S)", case.lock_text)
        kept = [b for b in blocks if not b.startswith(f"{name}==")]
        assert len(kept) < len(blocks), name
        return _replace(case, lock_text="".join(kept))

    return mutate


def _pin_version(name: str, version: str) -> Callable[[Case], Case]:
    def mutate(case: Case) -> Case:
        text, n = re.subn(rf"(?m)^{re.escape(name)}==\S+", f"{name}=={version}", case.lock_text)
        assert n == 1, name
        return _replace(case, lock_text=text)

    return mutate


def _strip_hashes(name: str) -> Callable[[Case], Case]:
    def mutate(case: Case) -> Case:
        text, n = re.subn(rf"(?ms)^({re.escape(name)}==\S+) \\\n(\s+--hash=\S+( \\)?\n)+", r"\1\n", case.lock_text)
        assert n == 1, name
        return _replace(case, lock_text=text)

    return mutate


HASH = "sha256:" + "0" * 64
EXTRA = f"rich==13.9.4 \\\n    --hash={HASH}\n    # via -r {{input}}\n"


def _append_pin(entry: str) -> Callable[[Case], Case]:
    return lambda case: _replace(case, lock_text=case.lock_text + entry.format(input=case.input_path))


def _input_sub(old: str, new: str) -> Callable[[Case], Case]:
    def mutate(case: Case) -> Case:
        assert old in case.input_text, old
        return _replace(case, input_text=case.input_text.replace(old, new))

    return mutate


MUTATIONS: dict[str, tuple[str, Callable[[Case], Case], str]] = {
    "requests below its advisory floor": ("gpu-job", _pin_version("requests", "2.32.3"), "[floor]"),
    "urllib3 below its advisory floor": ("lambda", _pin_version("urllib3", "2.6.3"), "[floor]"),
    "transitive dep below its floor": ("lambda", _pin_version("idna", "3.6"), "[floor]"),
    "pin without hashes": ("lambda", _strip_hashes("boto3"), "[hash]"),
    "range instead of a pin": ("gpu-job", _lock_sub("tenacity==", "tenacity>="), "[pin]"),
    "pinned twice": ("lambda", lambda c: _replace(c, lock_text=c.lock_text + "six==1.16.0 \\\n    --hash=" + HASH + "\n"), "[pin]"),
    "imported package unpinned": ("gpu-job", _drop_pin("av"), "[input]"),
    "transitive dep dropped": ("lambda", _drop_pin("botocore"), "[graph]"),
    "pin nothing needs": ("gpu-job", _append_pin("rich==13.9.4 \\\n    --hash=" + HASH + "\n"), "[graph]"),
    "pin wanted by an unpinned package": ("gpu-job", _append_pin("sympy==1.14.0 \\\n    --hash=" + HASH + "\n    # via torch\n"), "[graph]"),
    "torch in the image lock": ("gpu-job", _append_pin("torch==2.14.1 \\\n    --hash=" + HASH + "\n    # via -r {input}\n"), "[base]"),
    "input lists what is not imported": ("lambda", _input_sub("tenacity>=8.2", "tenacity>=8.2\nb2sdk>=2.5"), "[input]"),
    "input lacks an import": ("gpu-job", _input_sub("\nspandrel>=0.4", "\n"), "[input]"),
    "input floor drifts from pyproject": ("lambda", _input_sub("requests>=2.33", "requests>=2.31"), "[input]"),
    "extra root smuggled into the lock": ("lambda", _append_pin(EXTRA), "[input]"),
    "code imports something new": ("gpu-job", lambda c: _replace(c, imported=c.imported | {"rich"}), "[imports]"),
    "sdk lock without hashes": ("sdk", _strip_hashes("vastai"), "[hash]"),
    "sdk below its floor": ("sdk", _pin_version("vastai", "1.9.0"), "[floor]"),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_a_stale_or_loose_lock_is_caught(mutation: str) -> None:
    name, mutate, tag = MUTATIONS[mutation]
    case = real_case(name)
    broken = mutate(case)
    assert broken != case
    found = problems_of(broken)
    assert any(p.startswith(tag) for p in found), (mutation, found)
