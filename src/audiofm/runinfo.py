"""What every run records about itself (``run_info.json``): the command, package versions, git
commit, machine, and the data fingerprint. The one writer for pretraining, fine-tuning,
evaluation and the applications."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from .io import write_json

PACKAGES = ("audiofm", "torch", "numpy", "scipy", "scikit-learn", "faiss-cpu", "soundfile", "soxr",
            "safetensors", "matplotlib", "tqdm")
RUN_INFO = "run_info.json"


def package_versions() -> dict[str, str | None]:
    """Installed versions of audiofm and its main dependencies (None: not installed)."""
    out: dict[str, str | None] = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def git_commit() -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the audiofm source tree when it is a git checkout, else None."""
    src = Path(__file__).resolve().parent
    try:
        r = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                           timeout=10)
        if r.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": r.stdout.strip(), "dirty": bool(dirty)}


def run_info(data_fingerprint: dict[str, Any] | None = None, argv: list[str] | None = None,
             **extra: Any) -> dict[str, Any]:
    """The record of this run; ``extra`` adds keys (world size, device, ...)."""
    import torch

    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": list(argv if argv is not None else sys.argv),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": package_versions(),
        "git": git_commit(),
        "data_fingerprint": data_fingerprint,
        **extra,
    }


def write_run_info(folder: str | os.PathLike[str], data_fingerprint: dict[str, Any] | None = None,
                   name: str = RUN_INFO, **extra: Any) -> Path:
    """Write :func:`run_info` to ``folder/name`` atomically."""
    return write_json(Path(folder) / name, run_info(data_fingerprint, **extra))
