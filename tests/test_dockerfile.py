"""The GPU job image, checked statically (no Docker daemon needed): `Dockerfile` and `.dockerignore`.

Every property is one `_check_*` function that returns problems as "[tag] message" strings. The
real files must have none; each entry of MUTATIONS breaks one property in a copy of the real text
and must be caught under its tag, so a check that silently stops working fails the suite too.
The Dockerfile is read with dockerfile-parse (instructions, continuations, comments); RUN command
lines are split with shlex the way /bin/sh would see the words.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
    "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip
ENTRYPOINT = ["python", "-m", "gpu_job"]
# What `python -m gpu_job` imports: the job package and the shared package (env contract, storage).
JOB_PACKAGES = {"gpu_job", "vastdrop"}
# The image's Python packages, beside the base's torch (tests/test_locks.py checks both are current).
IMAGE_LOCKS = {"locks/gpu-job.txt", "serverless/requirements-sdk-only.lock"}
SECRET_NAME = re.compile(r"(^|_)(API_?)?KEY(_|$)|SECRET|TOKEN|PASSW(OR)?D|CREDENTIAL", re.I)
HEX64 = re.compile(r"[0-9a-f]{64}")
SEPARATORS = {";", "&&", "||", "\n"}
GLOB = {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}  # .dockerignore wildcards


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int


def parse(text: str) -> list[Instruction]:
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    return [
        Instruction(item["instruction"], item["value"].strip(), item["startline"] + 1)
        for item in parser.structure
        if item["instruction"] != "COMMENT"
    ]


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    return instructions[starts[-1] :] if starts else instructions


def assignments(value: str) -> dict[str, str]:
    """ENV/LABEL/ARG words: `K=V K2="V 2"`, or the legacy `ENV K V` form."""
    words = shlex.split(value)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) if "=" in w else (w, "") for w in words)


def final_env(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage:
        if ins.keyword == "ENV":
            env.update(assignments(ins.value))
    return env


def commands(run: str) -> list[list[str]]:
    """A RUN's shell words split into commands at ; && || (a pipeline stays one command)."""
    lex = shlex.shlex(run, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    out: list[list[str]] = [[]]
    for word in lex:
        if word in SEPARATORS:
            out.append([])
        else:
            out[-1].append(word)
    return [c for c in out if c]


def is_pip_install(cmd: list[str]) -> bool:
    words = cmd[2:] if cmd[:3] in (["python", "-m", "pip"], ["python3", "-m", "pip"]) else cmd
    return len(words) >= 2 and words[0] in {"pip", "pip3"} and words[1] == "install"


def copy_sources(ins: Instruction) -> list[str] | None:
    """Sources of a COPY/ADD from the build context (None when it copies from another stage)."""
    if ins.value.startswith("["):
        words = json.loads(ins.value)
    else:
        words = shlex.split(ins.value)
    flags = [w for w in words if w.startswith("--")]
    if any(f.startswith("--from=") for f in flags):
        return None
    return [w for w in words if not w.startswith("--")][:-1]


def _arg_ref(word: str) -> str | None:
    m = re.fullmatch(r"\$\{?(\w+)(?::\?[^}]*)?\}?", word)
    return m.group(1) if m else None


# ---- checks --------------------------------------------------------------------------------------


def _check_instructions(ins: list[Instruction], _: str) -> list[str]:
    bad = [
        f"[instruction] line {i.line}: {i.keyword} is not a Dockerfile instruction"
        for i in ins
        if i.keyword not in INSTRUCTIONS
    ]
    return bad or (
        [] if ins and ins[0].keyword in {"FROM", "ARG"} else ["[instruction] no FROM first"]
    )


def _check_base(ins: list[Instruction], _: str) -> list[str]:
    problems = []
    froms = [i for i in ins if i.keyword == "FROM"]
    if not froms:
        return ["[base] no FROM"]
    for f in froms:
        ref = [w for w in f.value.split() if not w.startswith("--")][0]
        name, _at, digest = ref.partition("@")
        tag = name.rsplit("/", 1)[-1].partition(":")[2]
        if "$" in ref:
            problems.append(f"[base] {ref}: the base must be written out, not taken from an ARG")
        if tag == "latest":
            problems.append(f"[base] {ref}: 'latest' is not a pin")
        if not tag and not digest:
            problems.append(f"[base] {ref}: neither a tag nor a digest")
        if digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            problems.append(f"[base] {ref}: malformed digest")
    return problems


def _check_entrypoint(ins: list[Instruction], _: str) -> list[str]:
    stage = final_stage(ins)
    entry = [i for i in stage if i.keyword == "ENTRYPOINT"]
    problems = [
        f"[entrypoint] line {i.line}: CMD would pass arguments to the one-shot job"
        for i in stage
        if i.keyword == "CMD"
    ]
    if not entry:
        return [*problems, "[entrypoint] no ENTRYPOINT"]
    try:
        argv = json.loads(entry[-1].value)
    except json.JSONDecodeError:
        return [
            *problems,
            f"[entrypoint] shell form ({entry[-1].value}); signals and exit codes need exec form",
        ]
    if argv != ENTRYPOINT:
        problems.append(f"[entrypoint] {argv} is not {ENTRYPOINT}")
    return problems


@dataclass(frozen=True)
class Weights:
    verified: dict[str, str]  # file -> 64-hex digest, or "ARG:<name>" for a required build ARG
    problems: list[str]


def weights(ins: list[Instruction]) -> Weights:
    """Every remote download in the final stage, and whether a later `sha256sum -c` in the same
    RUN verifies exactly that file against a pinned digest (or a required, checked build ARG)."""
    stage = final_stage(ins)
    required_args = {
        name
        for i in stage
        if i.keyword == "ARG"
        for name, default in assignments(i.value).items()
        if default == "" and "=" not in i.value
    }
    verified: dict[str, str] = {}
    problems: list[str] = []
    for i in stage:
        if i.keyword == "ADD":
            for src in copy_sources(i) or []:
                if re.match(r"https?://", src):
                    problems.append(
                        f"[weights] line {i.line}: ADD {src} unpinned; download in a verified RUN"
                    )
        if i.keyword != "RUN":
            continue
        cmds = commands(i.value)
        fails_fast = cmds[0][:1] == ["set"] and any(
            "e" in w for w in cmds[0][1:] if w.startswith("-")
        )
        chained_by_semicolon = re.search(r";\s*\S", i.value) is not None
        checks: dict[str, tuple[int, str]] = {}
        for n, cmd in enumerate(cmds):
            if (
                "sha256sum" in cmd
                and "|" in cmd
                and cmd[0] == "echo"
                and ({"-c", "--check"} & set(cmd))
            ):
                line = cmd[1].split()
                if len(line) != 2:
                    problems.append(
                        f"[weights] line {i.line}: cannot read checksum line {cmd[1]!r}"
                    )
                    continue
                digest, path = line[0], line[1].lstrip("*")
                arg = _arg_ref(digest)
                if HEX64.fullmatch(digest):
                    checks[path] = (n, digest)
                elif arg in required_args and (
                    f"${{{arg}:?" in i.value or re.search(rf"-n \"?\$\{{?{arg}\b", i.value)
                ):
                    checks[path] = (n, f"ARG:{arg}")
                else:
                    problems.append(
                        f"[weights] line {i.line}: {digest!r} is not a 64-hex sha256 or a required, checked ARG"
                    )
        for n, cmd in enumerate(cmds):
            if is_pip_install(cmd) or cmd[0] in {":", "test", "[", "echo", "printf", "true"}:
                continue
            urls = [
                w for w in cmd if re.match(r"https?://", w) or (_arg_ref(w) or "").endswith("_URL")
            ]
            if not urls:
                continue
            if any(u.startswith("http://") for u in urls):
                problems.append(f"[weights] line {i.line}: plain http download {urls}")
            after = cmd[cmd.index(urls[-1]) + 1 :]
            flagged = [
                after[k + 1]
                for k, w in enumerate(after[:-1])
                if w in {"-o", "-O", "--output", "--output-document"}
            ]
            dest = (flagged or [w for w in after if w.startswith("/")] or [None])[0]
            if dest is None or not dest.startswith("/"):
                problems.append(
                    f"[weights] line {i.line}: download of {urls[-1]} has no absolute destination"
                )
            elif dest not in checks or checks[dest][0] <= n:
                problems.append(
                    f"[weights] line {i.line}: {dest} is not verified by a later sha256sum -c"
                )
            else:
                verified[dest] = checks[dest][1]
                if chained_by_semicolon and not fails_fast:
                    problems.append(
                        f"[weights] line {i.line}: commands joined by ';' need 'set -e' first"
                    )
    if not verified:
        problems.append("[weights] the image fetches no verified weight file")
    return Weights(verified, problems)


def _check_weights(ins: list[Instruction], _: str) -> list[str]:
    return weights(ins).problems


def _check_model_env(ins: list[Instruction], _: str) -> list[str]:
    env = final_env(final_stage(ins))
    files = weights(ins).verified
    problems = []
    for name, suffix in (("JOB_INTERPOLATION_MODEL", ".pkl"), ("JOB_UPSCALE_MODEL", ".pth")):
        value = env.get(name)
        if not value:
            problems.append(f"[model-env] {name} has no default")
        elif value not in files:
            problems.append(
                f"[model-env] {name}={value} is not a file the Dockerfile fetches and verifies"
            )
        elif not value.endswith(suffix):
            problems.append(f"[model-env] {name}={value} should be a {suffix} file")
    return problems


def _check_user(ins: list[Instruction], _: str) -> list[str]:
    users = [i for i in final_stage(ins) if i.keyword == "USER"]
    if not users:
        return ["[user] no USER: the job would run as root"]
    user = users[-1].value.split(":")[0]
    return [f"[user] final USER {users[-1].value} is root"] if user in {"root", "0"} else []


def dockerignored(path: str, dockerignore: str) -> bool:
    """Docker's rule, closely enough: the last matching pattern wins, `!` re-includes, `**` spans
    directories, and a pattern that matches a directory excludes everything under it."""
    excluded = False
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    for raw in dockerignore.splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip().strip("/")
        regex = "".join(
            GLOB.get(tok, re.escape(tok)) for tok in re.split(r"(\*\*/|\*\*|\*|\?)", pattern)
        )
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def _check_copies(ins: list[Instruction], dockerignore: str) -> list[str]:
    problems, copied = [], set()
    for i in final_stage(ins):
        if i.keyword not in {"COPY", "ADD"}:
            continue
        for src in copy_sources(i) or []:
            if re.match(r"https?://", src):
                continue  # ADD of a URL: the weights check owns it
            rel = src.strip("/").removeprefix("./")
            if src.startswith("/") or ".." in Path(rel).parts or rel in {"", "."}:
                problems.append(
                    f"[copy] line {i.line}: {src} must name a path inside the repository"
                )
            elif not list(ROOT.glob(rel)):
                problems.append(f"[copy] line {i.line}: {src} does not exist in the repository")
            elif dockerignored(rel, dockerignore):
                problems.append(f"[copy] line {i.line}: {src} is excluded by .dockerignore")
            copied.add(rel)
    for package in sorted(JOB_PACKAGES - copied):
        problems.append(f"[copy] {package}/ is not copied, but python -m gpu_job imports it")
    return problems


def _check_dependencies(ins: list[Instruction], _: str) -> list[str]:
    """Python packages come only from the lock files (tests/test_locks.py checks they are current):
    one `pip install --require-hashes --no-deps -r` of exactly IMAGE_LOCKS, copied into the image;
    then the project itself with --no-deps, after its packages are copied. Any other pip install
    (a package by name, a requirements file, the project with its dependencies) would let pip
    resolve something the locks do not hold."""
    stage = final_stage(ins)
    copied = {
        s.strip("/").removeprefix("./")
        for i in stage
        if i.keyword == "COPY"
        for s in copy_sources(i) or []
    }
    problems = [] if "pyproject.toml" in copied else ["[deps] pyproject.toml is not copied"]
    problems += [f"[deps] {lock} is not copied" for lock in sorted(IMAGE_LOCKS - copied)]
    packages_copied_at = max(
        (
            n
            for n, i in enumerate(stage)
            if i.keyword == "COPY"
            and {s.strip("/").removeprefix("./") for s in copy_sources(i) or []} & JOB_PACKAGES
        ),
        default=None,
    )
    locks_installed = project_installed = False
    for n, i in enumerate(stage):
        if i.keyword != "RUN":
            continue
        for cmd in filter(is_pip_install, commands(i.value)):
            words = cmd[cmd.index("install") + 1 :]
            files = [words[k + 1] for k, w in enumerate(words[:-1]) if w in {"-r", "--requirement"}]
            flags = {w for w in words if w.startswith("-")}
            targets = [w for w in words if not w.startswith("-") and w not in files]
            if files:
                names = {Path(f).name for f in files}
                if names != {Path(lock).name for lock in IMAGE_LOCKS}:
                    problems.append(f"[deps] line {i.line}: installs {sorted(names)}, not the locks {sorted(IMAGE_LOCKS)}")
                elif not {"--require-hashes", "--no-deps"} <= flags:
                    problems.append(f"[deps] line {i.line}: the locks need --require-hashes --no-deps (has {sorted(flags)})")
                else:
                    locks_installed = True
            for target in targets:
                if target in {".", "./"} and "--no-deps" in flags:
                    project_installed |= packages_copied_at is not None and n > packages_copied_at
                else:
                    problems.append(f"[deps] line {i.line}: pip installs {target} outside the locks")
    if not locks_installed:
        problems.append(f"[deps] nothing installs the locks {sorted(IMAGE_LOCKS)} with hashes")
    if not project_installed:
        problems.append("[deps] the project is not pip-installed (--no-deps) after its packages are copied")
    return problems


def _check_secrets(ins: list[Instruction], text: str) -> list[str]:
    problems = [
        f"[secret] line {i.line}: {i.keyword} {name} carries a value"
        for i in ins
        if i.keyword in {"ENV", "ARG"}
        for name, value in assignments(i.value).items()
        if SECRET_NAME.search(name) and value
    ]
    if re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text):
        problems.append("[secret] an AWS access key id is written in the Dockerfile")
    return problems


def _check_runtime(ins: list[Instruction], _: str) -> list[str]:
    stage = final_stage(ins)
    env = final_env(stage)
    problems = []
    if env.get("PYTHONUNBUFFERED") != "1":
        problems.append("[runtime] PYTHONUNBUFFERED=1 is not set (logs would sit in a buffer)")
    if (
        "video" not in env.get("NVIDIA_DRIVER_CAPABILITIES", "").split(",")
        and env.get("NVIDIA_DRIVER_CAPABILITIES") != "all"
    ):
        problems.append(
            "[runtime] NVIDIA_DRIVER_CAPABILITIES lacks 'video': NVENC would not be mounted"
        )
    workdirs = [i.value for i in stage if i.keyword == "WORKDIR"]
    if not workdirs or not workdirs[-1].startswith("/") or workdirs[-1] == "/":
        problems.append(
            f"[runtime] final WORKDIR {workdirs[-1:] or None} is not a dedicated absolute directory"
        )
    for i in stage:
        if i.keyword == "HEALTHCHECK" and i.value.split()[0].upper() != "NONE":
            problems.append(
                f"[runtime] line {i.line}: a one-shot job takes HEALTHCHECK NONE or none"
            )
        if i.keyword == "RUN":
            for cmd in filter(is_pip_install, commands(i.value)):
                if "--no-cache-dir" not in cmd:
                    problems.append(f"[runtime] line {i.line}: pip install without --no-cache-dir")
    return problems


def _check_labels(ins: list[Instruction], _: str) -> list[str]:
    labels: dict[str, str] = {}
    for i in final_stage(ins):
        if i.keyword == "LABEL":
            labels.update(assignments(i.value))
    problems = [
        f"[labels] org.opencontainers.image.{k} is missing"
        for k in ("title", "description", "version")
        if not labels.get(f"org.opencontainers.image.{k}")
    ]
    version = labels.get("org.opencontainers.image.version")
    if version and version != PYPROJECT["project"]["version"]:
        problems.append(
            f"[labels] version label {version} != pyproject version {PYPROJECT['project']['version']}"
        )
    base_digest = labels.get("org.opencontainers.image.base.digest")
    froms = [i.value for i in ins if i.keyword == "FROM"]
    if base_digest and froms and not froms[-1].split()[0].endswith("@" + base_digest):
        problems.append(f"[labels] base.digest {base_digest} is not the FROM digest")
    return problems


def _check_dockerignore(_: list[Instruction], dockerignore: str) -> list[str]:
    must_exclude = [
        ".git",
        ".venv",
        "bucket",
        "bucket/input/a.mp4",
        "tests/data",
        "tests/data/rife/4.26.json",
        "gpu_job/__pycache__",
        "vastdrop/media/__pycache__/x.pyc",
        ".pytest_cache",
        ".ruff_cache",
        ".mypy_cache",
        ".hypothesis",
        "vastdrop.egg-info",
    ]
    must_keep = [
        "pyproject.toml",
        "gpu_job/__main__.py",
        "gpu_job/models/rife.py",
        "vastdrop/__init__.py",
    ]
    return [
        f"[dockerignore] {p} reaches the build context"
        for p in must_exclude
        if not dockerignored(p, dockerignore)
    ] + [
        f"[dockerignore] {p} is excluded but the image needs it"
        for p in must_keep
        if dockerignored(p, dockerignore)
    ]


CHECKS: list[Callable[[list[Instruction], str], list[str]]] = [
    _check_instructions, _check_base, _check_entrypoint, _check_weights, _check_model_env,
    _check_user, _check_copies, _check_dependencies, _check_runtime, _check_labels,
]  # fmt: skip


def problems_of(dockerfile: str, dockerignore: str) -> list[str]:
    ins = parse(dockerfile)
    found = [p for check in CHECKS for p in check(ins, dockerignore)]
    return found + _check_secrets(ins, dockerfile) + _check_dockerignore(ins, dockerignore)


# ---- the real files ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text()


@pytest.fixture(scope="module")
def dockerignore() -> str:
    return DOCKERIGNORE.read_text()


def test_dockerfile_and_dockerignore_have_every_property(
    dockerfile: str, dockerignore: str
) -> None:
    assert problems_of(dockerfile, dockerignore) == []


def test_model_defaults_are_pinned_weight_files(dockerfile: str) -> None:
    files = weights(parse(dockerfile)).verified
    env = final_env(final_stage(parse(dockerfile)))
    assert env["JOB_INTERPOLATION_MODEL"] in files and env["JOB_UPSCALE_MODEL"] in files
    # Shipped pins are literal digests; required build ARGs are the fallback only for a file whose
    # digest could not be found published.
    assert all(HEX64.fullmatch(d) for d in files.values()), files
    assert len(set(files.values())) == len(files), "two files pinned to one digest"


def test_entrypoint_runs_the_job_module_that_exists() -> None:
    assert (ROOT / "gpu_job" / "__main__.py").is_file()


# ---- each property, broken once, is caught -------------------------------------------------------

RIFE = "/models/rife-4.26/flownet.pkl"
UPSCALE = "/models/realesrgan/realesr-animevideov3.pth"
ANIME_SHA = "b8a8376811077954d82ca3fcf476f1ac3da3e8a68a4f4d71363008000a18b75d"


def _swap_fetch_and_check(text: str) -> str:
    lines = text.splitlines(keepends=True)
    k = next(n for n, line in enumerate(lines) if "fetch https://" in line and UPSCALE in line)
    lines[k], lines[k + 1] = lines[k + 1], lines[k]
    return "".join(lines)


def _drop_line(needle: str) -> Callable[[str], str]:
    def drop(text: str) -> str:
        return "".join(line for line in text.splitlines(keepends=True) if needle not in line)

    return drop


def _sub(old: str, new: str) -> Callable[[str], str]:
    def sub(text: str) -> str:
        return text.replace(old, new)

    return sub


def _append(extra: str) -> Callable[[str], str]:
    return lambda text: text.rstrip("\n") + "\n" + extra + "\n"


MUTATIONS: dict[str, tuple[Callable[[str], str], str]] = {
    "unknown instruction": (_append("COPPY gpu_job/ /x/"), "[instruction]"),
    "base latest": (
        _sub(
            "pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime@sha256:",
            "pytorch/pytorch:latest@sha256:",
        ),
        "[base]",
    ),
    "base unpinned": (
        lambda t: re.sub(r"^FROM \S+", "FROM pytorch/pytorch", t, flags=re.M),
        "[base]",
    ),
    "base from ARG": (
        lambda t: re.sub(r"^FROM \S+", "ARG BASE=x:1\nFROM ${BASE}", t, flags=re.M),
        "[base]",
    ),
    "entrypoint shell form": (
        _sub('ENTRYPOINT ["python", "-m", "gpu_job"]', "ENTRYPOINT python -m gpu_job"),
        "[entrypoint]",
    ),
    "entrypoint other module": (_sub('"-m", "gpu_job"]', '"-m", "gpu_job.demo"]'), "[entrypoint]"),
    "entrypoint missing": (_drop_line("ENTRYPOINT"), "[entrypoint]"),
    "cmd adds arguments": (_append('CMD ["--help"]'), "[entrypoint]"),
    "digest truncated": (_sub(ANIME_SHA, ANIME_SHA[:-1]), "[weights]"),
    "digest placeholder": (_sub(ANIME_SHA, "<sha256>"), "[weights]"),
    "verification removed": (_drop_line(f"{ANIME_SHA}  {UPSCALE}"), "[weights]"),
    "verifies another file": (
        _sub(f"{ANIME_SHA}  {UPSCALE}", f"{ANIME_SHA}  /models/elsewhere.pth"),
        "[weights]",
    ),
    "verified before download": (_swap_fetch_and_check, "[weights]"),
    "no set -e": (_sub("RUN set -eu; \\", "RUN true; \\"), "[weights]"),
    "plain http": (_sub("https://github.com/xinntao", "http://github.com/xinntao"), "[weights]"),
    "ADD remote url": (_append("ADD https://example.com/w.pth /models/w.pth"), "[weights]"),
    "interpolation default unfetched": (
        _sub(f"JOB_INTERPOLATION_MODEL={RIFE}", "JOB_INTERPOLATION_MODEL=/models/x.pkl"),
        "[model-env]",
    ),
    "upscale default removed": (
        _sub(f"JOB_UPSCALE_MODEL={UPSCALE}", "JOB_UPSCALE_MODELS=x"),
        "[model-env]",
    ),
    "user root": (_sub("USER 10001:10001", "USER root"), "[user]"),
    "user 0": (_sub("USER 10001:10001", "USER 0:0"), "[user]"),
    "user missing": (_drop_line("USER 10001"), "[user]"),
    "copies a missing dir": (
        _sub("COPY vastdrop/ ./vastdrop/", "COPY vastdrop_x/ ./vastdrop/"),
        "[copy]",
    ),
    "job package not copied": (_drop_line("COPY gpu_job/"), "[copy]"),
    "copies an ignored dir": (_append("COPY tests/data/ /data/"), "[copy]"),
    "lock not installed": (_sub(" -r locks/gpu-job.txt", ""), "[deps]"),
    "lambda lock instead": (
        lambda t: t.replace("COPY locks/gpu-job.txt", "COPY serverless/requirements.lock").replace(
            "-r locks/gpu-job.txt", "-r locks/requirements.lock"
        ),
        "[deps]",
    ),
    "lock without hashes": (_sub("--require-hashes --no-deps -r", "--no-deps -r"), "[deps]"),
    "lock resolved by pip": (_sub("--require-hashes --no-deps -r", "--require-hashes -r"), "[deps]"),
    "lock not copied": (_sub("COPY locks/gpu-job.txt serverless", "COPY serverless"), "[deps]"),
    "package by name": (_append("RUN pip install --no-cache-dir rich"), "[deps]"),
    "pyproject deps again": (_sub("--no-deps .", "."), "[deps]"),
    "pyproject not copied": (_sub("COPY pyproject.toml ./", "COPY README.md ./"), "[deps]"),
    "project not installed": (_sub("--no-deps . ", "--no-deps pip "), "[deps]"),
    "secret env": (_append("ENV AWS_SECRET_ACCESS_KEY=abc123"), "[secret]"),
    "api key env": (_append("ENV CONTAINER_API_KEY abc123"), "[secret]"),
    "token arg default": (_append("ARG B2_TOKEN=abc"), "[secret]"),
    "aws key id": (_append("LABEL x=AKIAABCDEFGHIJKLMNOP"), "[secret]"),
    "unbuffered off": (_sub("PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=0"), "[runtime]"),
    "no nvenc": (_sub("compute,utility,video", "compute,utility"), "[runtime]"),
    "workdir root": (_sub("WORKDIR /job", "WORKDIR /"), "[runtime]"),
    "pip cache": (
        _sub("pip install --no-cache-dir --no-deps", "pip install --no-deps"),
        "[runtime]",
    ),
    "healthcheck": (_sub("HEALTHCHECK NONE", "HEALTHCHECK CMD true"), "[runtime]"),
    "label missing": (_drop_line("org.opencontainers.image.title"), "[labels]"),
    "label version": (_sub('image.version="0.1.0"', 'image.version="9.9"'), "[labels]"),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_a_broken_property_is_caught(name: str, dockerfile: str, dockerignore: str) -> None:
    mutate, tag = MUTATIONS[name]
    broken = mutate(dockerfile)
    assert broken != dockerfile, f"mutation {name!r} no longer applies to the Dockerfile"
    found = problems_of(broken, dockerignore)
    assert any(p.startswith(tag) for p in found), (name, found)


@pytest.mark.parametrize(
    ("name", "mutate"),
    [
        ("venv sent", _drop_line(".venv")),
        ("bucket re-included", _append("!bucket")),
        ("caches sent", _drop_line("__pycache__")),
        ("job code ignored", _append("gpu_job")),
    ],
)
def test_a_broken_dockerignore_is_caught(
    name: str, mutate: Callable[[str], str], dockerfile: str, dockerignore: str
) -> None:
    broken = mutate(dockerignore)
    assert broken != dockerignore
    assert any(
        p.startswith(("[dockerignore]", "[copy]")) for p in problems_of(dockerfile, broken)
    ), name


REQUIRED_ARGS = """\
FROM python:3.11-slim
ARG RIFE_URL
ARG RIFE_SHA256
RUN set -eu; \\
    : "${RIFE_URL:?pass --build-arg RIFE_URL}" "${RIFE_SHA256:?pass --build-arg RIFE_SHA256}"; \\
    fetch "$RIFE_URL" /models/rife/flownet.pkl; \\
    echo "${RIFE_SHA256}  /models/rife/flownet.pkl" | sha256sum -c -
"""


def test_required_build_args_count_as_verification_only_when_enforced() -> None:
    assert weights(parse(REQUIRED_ARGS)) == Weights(
        {"/models/rife/flownet.pkl": "ARG:RIFE_SHA256"}, []
    )
    unchecked = REQUIRED_ARGS.replace(' "${RIFE_SHA256:?pass --build-arg RIFE_SHA256}"', "")
    assert weights(parse(unchecked)).problems
    defaulted = REQUIRED_ARGS.replace("ARG RIFE_SHA256", "ARG RIFE_SHA256=0")
    assert weights(parse(defaulted)).problems


def test_launcher_rents_only_hosts_whose_driver_runs_the_base_image(dockerfile: str) -> None:
    """The base is a CUDA build; Vast hosts advertise the newest CUDA their driver runs (cuda_max_good)."""
    from vastdrop.compute.vast import VastConfig

    base = next(i for i in final_stage(parse(dockerfile)) if i.keyword == "FROM").value
    cuda = float(re.search(r"cuda(\d+\.\d+)", base).group(1))
    assert VastConfig().min_cuda >= cuda, (base, VastConfig().min_cuda)


def test_every_job_variable_of_the_image_is_one_the_job_reads(dockerfile: str) -> None:
    from vastdrop.jobspec import JobSettings

    read = {f"JOB_{name.upper()}" for name in JobSettings.model_fields}
    set_here = {k for k in final_env(final_stage(parse(dockerfile))) if k.startswith("JOB_")}
    assert set_here and set_here <= read, set_here - read


def test_every_variable_the_job_reads_is_documented() -> None:
    """The image is configured only by env vars: each one the job reads is in README.md's
    (generated) reference, Vast's own two included."""
    from vastdrop.jobspec import JobSettings

    readme = (ROOT / "README.md").read_text()
    read = [f"JOB_{name.upper()}" for name in JobSettings.model_fields] + ["CONTAINER_ID", "CONTAINER_API_KEY"]
    missing = [name for name in read if f"`{name}`" not in readme]
    assert not missing, missing
