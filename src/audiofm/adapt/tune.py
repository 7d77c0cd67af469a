"""Adapting an encoder to labelled audio: supervised fine-tuning and contrastive-tuning.

:func:`finetune` adapts ``cfg.model`` to one round of a HEAR task; :func:`finetune_rows` does
the same for any :class:`~audiofm.data.tasks.LabelledRows` (the anomaly-detection recipe feeds it
pseudo-attribute labels). Both train with the shared engine (exact resume, DDP, bf16,
validation-based best-checkpoint selection and early stopping); the validation rows select the
checkpoint and test rows are never read. The run directory ``out`` ends with ``model/``, one
checkpoint directory that ``audiofm.load(out)`` opens:

* **supervised** (:mod:`~audiofm.adapt.supervised`) → kind ``classifier``: the tuned encoder
  and its classifier head, so ``audiofm.load(out).predict(wave, sr)`` gives class scores;
* **contrastive** (:mod:`~audiofm.adapt.contrastive`) → kind ``encoder``: the tuned encoder
  (the projection head only served the loss).

Validation runs before the first step too: its score is reported, and with ``keep_start`` the
starting weights compete for "best".
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .. import checkpoint as ckpt
from ..api import load_base
from ..config import load_yaml, merge, to_dict
from ..data import fingerprint, read_hear_task
from ..data.tasks import LabelledRows, check_task, pick_round, round_rows
from ..io import write_json
from ..train.checkpointing import check_run_dir
from ..train.engine import Engine, TrainConfig
from .config import FinetuneConfig
from .contrastive import ContrastiveRecipe
from .supervised import SupervisedRecipe

__all__ = ["finetune", "finetune_rows", "load_base"]

FINISHED = ("completed", "time budget reached", "early stopped")


RUN_FILES = ("finetune.json", "report")  # what fine-tuning writes in its run directory besides the engine
FREE_ON_RESUME = ("cache_mb", "eval_batch_size")  # never change what is computed


def _check_out(out: Path, resume: bool) -> bool:
    """Whether ``out`` can take this run (RunDirError / FileExistsError otherwise, before any
    work); True when a checkpoint will be resumed from."""
    if (out / "finetune.json").exists():
        raise FileExistsError(f"{out} already holds a finished fine-tuning run; choose a new --out (nothing was "
                              "overwritten)")
    return check_run_dir(out, resume, RUN_FILES)


def _derived(cfg: FinetuneConfig) -> list[str]:
    """The ``train.*`` settings :func:`_derive_schedule` computes from other settings."""
    pairs = (("train.max_steps", cfg.epochs), ("train.warmup_steps", cfg.warmup_fraction),
             ("train.evaluate_every", cfg.evaluate_every_epochs))
    return [k for k, src in pairs if src is not None] + ["train.patience", "train.select_start"]


def _derive_schedule(cfg: FinetuneConfig, n_train: int) -> TrainConfig:
    t = replace(cfg.train)
    per_epoch = max(1, math.ceil(n_train / t.batch_size))
    if cfg.epochs is not None:
        t.max_steps = max(1, math.ceil(cfg.epochs * n_train / t.batch_size))
    if cfg.warmup_fraction is not None:
        t.warmup_steps = max(1, round(cfg.warmup_fraction * t.max_steps))
    if cfg.evaluate_every_epochs is not None:
        t.evaluate_every = max(1, round(cfg.evaluate_every_epochs * per_epoch)) if cfg.evaluate_every_epochs else 0
    t.patience = cfg.patience if t.evaluate_every else 0
    t.select_start = cfg.keep_start
    return t


def finetune(cfg: FinetuneConfig, out: str | os.PathLike[str], *, resume: bool = False,
             progress: bool = True, allow_change: Sequence[str] = ()) -> dict[str, Any]:
    """Adapt ``cfg.model`` to round ``cfg.fold`` of the HEAR task ``cfg.task`` in run directory
    ``out`` (see :func:`finetune_rows`)."""
    _check_out(Path(out), resume)
    task = read_hear_task(cfg.task)
    check_task(task)
    split = pick_round(task, cfg.fold)
    extra = {"task_dir": str(task.root), "fold": cfg.fold, "train_splits": split.train,
             "valid_splits": split.valid, "round_splits": to_dict(split)}
    return finetune_rows(cfg, round_rows(task, split), out, resume=resume, progress=progress, summary_extra=extra,
                         allow_change=allow_change)


def finetune_rows(cfg: FinetuneConfig, data: LabelledRows, out: str | os.PathLike[str], *, resume: bool = False,
                  progress: bool = True, summary_extra: dict[str, Any] | None = None,
                  allow_change: Sequence[str] = ()) -> dict[str, Any]:
    """Adapt ``cfg.model`` to the labelled rows ``data`` (train / valid) and write the run
    directory ``out`` with the adapted checkpoint ``out/model``.

    Returns a summary (also written to ``out/finetune.json`` on completion). An interrupted run
    leaves no ``finetune.json`` and continues with ``resume=True`` and the same configuration
    (settings named in ``allow_change`` may differ; the change is recorded in ``run_config.yaml``).
    """
    out = Path(out)
    from_checkpoint = _check_out(out, resume)
    encoder, base_spec, provenance = load_base(cfg.model, cfg.train.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)  # head initialisation
        kind = SupervisedRecipe if cfg.method == "supervised" else ContrastiveRecipe
        recipe: SupervisedRecipe | ContrastiveRecipe = kind(cfg, encoder, base_spec, data)
    if from_checkpoint:  # the head's initial state comes back with the checkpoint
        prepared = dict(load_yaml(out / "run_config.yaml").get("prepared") or {})
    else:
        prepared = recipe.prepare()
    train_cfg = _derive_schedule(cfg, recipe.num_examples())
    resolved = merge(to_dict(cfg), {"train": to_dict(train_cfg), "base": provenance, "data": data.name,
                                    "round": data.round, "prepared": prepared})
    data_fp = fingerprint(data.train)
    engine = Engine(recipe, train_cfg, out, resume=resume, resolved_config=resolved,
                    data_fingerprint=data_fp, progress=progress, allow_change=allow_change, free=FREE_ON_RESUME,
                    derived=_derived(cfg), run_files=RUN_FILES)
    with engine.hold():  # the final writes below stay under the run directory's lock
        result = engine.fit()
        if not engine.dist.main or result["status"] not in FINISHED:
            return result
        return _finish(cfg, data, out, recipe, result, train_cfg, provenance, prepared, data_fp, summary_extra)


def _finish(cfg: FinetuneConfig, data: LabelledRows, out: Path, recipe: SupervisedRecipe | ContrastiveRecipe,
            result: dict[str, Any], train_cfg: TrainConfig, provenance: dict[str, Any], prepared: dict[str, Any],
            data_fp: dict[str, Any], summary_extra: dict[str, Any] | None) -> dict[str, Any]:
    """The final checkpoint ``out/model`` (best weights when validated) and ``finetune.json``."""
    chosen = "last"
    best = out / "best"
    if (best / "config.json").is_file():
        ckpt.load_weights(recipe.model, ckpt.load_state_dict(best), str(best))
        chosen = f"best (step {result['best_step']})"
    n_trainable = sum(p.numel() for p in recipe.model.encoder.parameters() if p.requires_grad)
    summary = {
        "method": cfg.method, "task": data.name, "round": data.round, **(summary_extra or {}),
        "train_clips": len(data.train), "valid_clips": len(data.valid), "base": provenance,
        "status": result["status"], "steps": result["step"], "max_steps": train_cfg.max_steps, "weights": chosen,
        "best_step": result["best_step"], "best_valid_score": result["best_score"],
        "start_valid_score": result.get("start_score"),
        "final_train_loss": result["loss"], "seconds": round(result["seconds"], 1),
        "encoder_trainable_parameters": n_trainable, "frozen_parameters": len(recipe.frozen), **prepared,
    }
    meta = {"step": result["step"], "data_fingerprint": data_fp,
            "adaptation": {k: summary[k] for k in ("method", "task", "round", "base", "weights", "best_valid_score")}}
    ckpt.save_checkpoint(out / "model", recipe.result_spec(), recipe.model, meta=meta, overwrite=True)
    if best.is_dir():  # its weights are now the final model
        shutil.rmtree(best)
    write_json(out / "finetune.json", summary)
    return {**result, **summary, "checkpoint": str(out / "model")}
