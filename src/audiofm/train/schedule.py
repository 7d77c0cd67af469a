"""The optimiser and its schedule: AdamW over parameter groups, linear warm-up + cosine decay."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from .engine import Recipe, TrainConfig


def lr_at(cfg: TrainConfig, step: int, knot: tuple[int, float] | None = None) -> float:
    """Learning rate at ``step``: linear warm-up then cosine decay to ``min_lr_ratio``·lr.

    ``knot = (s, t)``: a schedule re-fitted at step ``s``, where the cosine had reached phase
    ``t`` (0 = peak, 1 = final lr), to end at ``cfg.max_steps``: from ``s`` the phase runs on
    linearly to 1 at the last step ``max_steps - 1`` (:mod:`.deadline`). Without a knot: the
    fixed schedule, a pure function of the config and the step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if knot is None:
        t = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    else:
        t = cosine_phase(cfg, step, knot)
    t = min(1.0, t)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def cosine_phase(cfg: TrainConfig, step: int, knot: tuple[int, float]) -> float:
    """Phase of the cosine at ``step`` of a schedule re-fitted at ``knot`` (see :func:`lr_at`)."""
    s, t = knot
    span = cfg.max_steps - 1 - s
    return 1.0 if span <= 0 else min(1.0, t + (1.0 - t) * max(0, step - s) / span)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, norms, and learned tokens (ndim < 2); frozen parameters left out."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(recipe: Recipe, model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the recipe's ``param_groups(weight_decay)`` (default :func:`param_groups`)."""
    make_groups = getattr(recipe, "param_groups", None)
    groups = make_groups(cfg.weight_decay) if make_groups is not None else param_groups(model, cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate to ``lr`` times its ``lr_scale`` (default 1)."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
