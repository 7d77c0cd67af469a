"""The run directory and its checkpoints.

``run_dir/`` holds ``run_config.yaml`` (the resolved configuration), ``run_info.json`` (one per
start or resume), ``metrics.jsonl``, ``checkpoints/step_XXXXXXXX/`` (periodic, with the training
state; the newest ``keep`` kept), ``best/`` (the best-scoring weights under validation) and
``model/`` (the final weights). Every checkpoint directory is written atomically by
:func:`audiofm.checkpoint.save_checkpoint`, which :meth:`Checkpointer._write` alone calls.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .. import checkpoint as ckpt
from ..config import save_yaml
from ..runinfo import write_run_info
from .distributed import Dist, barrier
from .metric_logging import truncate_metrics

if TYPE_CHECKING:
    from .engine import Recipe


class RunDirError(ValueError):
    """The run directory holds a run when starting, or none when resuming."""


class Checkpointer:
    """Saves and restores the checkpoints of ``recipe`` in ``run_dir`` (writes on the main
    process only). ``on_checkpoint(step, path)`` is called after each periodic save."""

    def __init__(self, recipe: Recipe, run_dir: str | os.PathLike[str], d: Dist, *, keep: int = 2,
                 data_fingerprint: dict[str, Any] | None = None,
                 on_checkpoint: Callable[[int, Path], None] | None = None) -> None:
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.dist = d
        self.keep = keep
        self.data_fingerprint = data_fingerprint or {}
        self.on_checkpoint = on_checkpoint

    @property
    def folder(self) -> Path:
        return self.run_dir / "checkpoints"

    def prepare(self, resume: bool, resolved_config: dict[str, Any], **run_info: Any) -> None:
        """Check the run directory (every rank, before anything is written), then create it and
        write ``run_config.yaml`` (new runs) and a ``run_info`` record (main process)."""
        has_run = (self.run_dir / "run_config.yaml").exists() or ckpt.latest_checkpoint(self.folder) is not None
        if has_run and not resume:
            raise RunDirError(f"{self.run_dir} already holds a run; pass --resume to continue it or "
                              "choose a new --out (nothing was overwritten)")
        if resume and not has_run:
            raise RunDirError(f"{self.run_dir}: nothing to resume (no run_config.yaml or checkpoints)")
        barrier(self.dist)  # every rank has checked before rank 0 writes anything
        if self.dist.main:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not resume:
                save_yaml(resolved_config, self.run_dir / "run_config.yaml")
            name = "run_info.json" if not resume else f"run_info.resume-{time.strftime('%Y%m%d-%H%M%S')}.json"
            write_run_info(self.run_dir, self.data_fingerprint, name, **run_info)
        barrier(self.dist)

    def _write(self, path: Path, train_state: dict[str, Any] | None, meta: dict[str, Any]) -> Path:
        """The one call that writes a checkpoint directory."""
        return ckpt.save_checkpoint(path, self.recipe.spec, self.recipe.model, train_state,
                                    {**meta, "data_fingerprint": self.data_fingerprint}, overwrite=True)

    def save(self, step: int, train_state: dict[str, Any], final: bool = False) -> Path | None:
        """A periodic checkpoint at ``step`` (older ones beyond ``keep`` removed); with ``final``
        also the final weights in ``run_dir/model``. Returns the periodic checkpoint's path."""
        if not self.dist.main:
            return None
        path = self._write(self.folder / f"step_{step:08d}", train_state, {"step": step})
        steps = sorted(d for d in self.folder.iterdir() if d.name.startswith("step_"))
        for old in steps[: max(0, len(steps) - self.keep)]:
            shutil.rmtree(old)
        if final:
            self._write(self.run_dir / "model", None, {"step": step})
        if self.on_checkpoint is not None:
            self.on_checkpoint(step, path)
        return path

    def save_best(self, step: int, score: float) -> None:
        """The weights that scored best so far, in ``run_dir/best``."""
        if self.dist.main:
            self._write(self.run_dir / "best", None, {"step": step, "score": score})

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Load the newest periodic checkpoint into ``model`` and ``optimizer``, drop the metrics
        logged after it; returns its training state (``step``, ``early_stop``, ...)."""
        latest = ckpt.latest_checkpoint(self.folder)
        if latest is None:
            raise RunDirError(f"{self.run_dir}: no complete checkpoint to resume from")
        state = ckpt.load_train_state(latest)
        ckpt.load_weights(model, ckpt.load_state_dict(latest), str(latest))
        optimizer.load_state_dict(state["optimizer"])
        if self.dist.main:
            truncate_metrics(self.run_dir / "metrics.jsonl", int(state["step"]))
        return state
