"""Checkpoint directories: ``config.json`` + ``model.safetensors`` (+ ``train_state.pt``).

Written to a temporary sibling directory and renamed into place, so a checkpoint directory
that exists is complete. Loaded with ``weights_only``; missing/unexpected keys are errors.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .config import ConfigError, from_dict, to_dict
from .models.msm import ModelConfig

FORMAT = "audiofm-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupt or incompatible; the message says which."""


def save_checkpoint(
    path: str | os.PathLike[str],
    config: ModelConfig,
    model: nn.Module,
    train_state: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a checkpoint directory atomically. ``model`` is the full MSM model (or encoder)."""
    from safetensors.torch import save_file

    dest = Path(path)
    if dest.exists() and not overwrite:
        raise CheckpointError(f"{dest}: already exists; choose another path (nothing was overwritten)")
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "audiofm_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": to_dict(config),
        **(meta or {}),
    }
    (tmp / "config.json").write_text(json.dumps(info, indent=2))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": FORMAT})
    if train_state is not None:
        torch.save(train_state, tmp / "train_state.pt")
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old)
    else:
        os.replace(tmp, dest)
    return dest


def resolve(path: str | os.PathLike[str]) -> Path:
    """A checkpoint directory from a checkpoint, or a run directory (its final model, else its
    latest periodic checkpoint)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint or run directory")
    if (p / "config.json").is_file():
        return p
    if (p / "model" / "config.json").is_file():
        return p / "model"
    latest = latest_checkpoint(p / "checkpoints")
    if latest is not None:
        return latest
    raise CheckpointError(f"{p}: not an audiofm checkpoint (no config.json) nor a run directory with one")


def latest_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    f = Path(folder)
    if not f.is_dir():
        return None
    steps = sorted(d for d in f.iterdir() if d.is_dir() and d.name.startswith("step_")
                   and (d / "config.json").is_file())
    return steps[-1] if steps else None


def read_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint, validated for format and version."""
    d = resolve(path)
    try:
        info = json.loads((d / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{d}/config.json is corrupt or truncated ({e}); re-copy the checkpoint") from None
    if info.get("format") != FORMAT:
        raise CheckpointError(f"{d}: config.json is not an audiofm checkpoint config")
    v = info.get("format_version")
    if not isinstance(v, int) or v > FORMAT_VERSION:
        raise CheckpointError(
            f"{d}: checkpoint format version {v} is newer than this audiofm supports ({FORMAT_VERSION}); "
            "upgrade audiofm"
        )
    info["path"] = str(d)
    return info


def load_config(path: str | os.PathLike[str]) -> ModelConfig:
    info = read_info(path)
    try:
        return from_dict(ModelConfig, info["model"], where=f"{info['path']}/config.json model")
    except (ConfigError, KeyError) as e:
        raise CheckpointError(f"{info['path']}: incompatible model config ({e})") from None


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = resolve(path)
    f = d / "model.safetensors"
    if not f.is_file():
        raise CheckpointError(f"{d}: model.safetensors is missing")
    try:
        return load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{f}: corrupt or truncated weights ({e}); re-copy the checkpoint") from None


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], where: str, strict: bool = True) -> None:
    """Load ``state`` into ``model``, reporting missing/unexpected keys and shape mismatches."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if wrong:
        k = wrong[0]
        raise CheckpointError(f"{where}: {len(wrong)} weight(s) have the wrong shape, e.g. {k}: "
                              f"checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
    if strict and (missing or unexpected):
        raise CheckpointError(f"{where}: weights do not match the model: missing {missing[:5]}"
                              f"{'...' if len(missing) > 5 else ''} ({len(missing)}), unexpected "
                              f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''} ({len(unexpected)})")
    model.load_state_dict(state, strict=False)


def load_train_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    f = Path(path) / "train_state.pt"
    if not f.is_file():
        raise CheckpointError(f"{path}: no train_state.pt; cannot resume from a weights-only checkpoint")
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated pickles/zip archives
        raise CheckpointError(f"{f}: corrupt or truncated training state ({e})") from None


def content_hash(path: str | os.PathLike[str]) -> str:
    """A short hash of the weights file (identifies the model in caches)."""
    import hashlib

    h = hashlib.sha256()
    with open(resolve(path) / "model.safetensors", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]
