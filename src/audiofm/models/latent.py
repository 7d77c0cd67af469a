"""Latent prediction (data2vec 2.0 / EAT / M2D family): the pieces of the objective.

An EMA *teacher* (a copy of the encoder that never receives gradients) encodes the whole
spectrogram; its targets are the average of its top-K block outputs, each normalised, the
average normalised again (:func:`make_targets`). The student (:class:`~.msm.MSMModel`) encodes
the visible patches of several masks of each clip and its decoder predicts the targets at the
masked positions; the mean-pooled student output predicts the clip's mean target (EAT's
utterance loss). After every optimiser step the teacher moves towards the student
(:func:`ema_update`) with the decay of :func:`ema_decay`. See docs/pretraining.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import NonNegativeFloat, PositiveInt, Range, check_ranges

TARGET_NORMS = ("instance", "layer")
LOSSES = ("mse", "smooth_l1")
SCHEDULES = ("linear", "cosine")
KEEP = ("student", "teacher")

Decay = Annotated[float, Range(ge=0, le=1)]


@dataclass
class LatentConfig:
    """Settings of the latent-prediction objective (``ModelConfig.objective: latent``).

    target_layers: average the teacher's top K block outputs (all blocks when K ≥ depth).
    target_norm: how each block output is normalised before averaging: 'instance' (each channel
    over the clip's tokens, EAT / data2vec 2.0 audio) or 'layer' (each token over its channels,
    parameter-free); the average is then layer-normalised. loss: 'mse' or 'smooth_l1' (β = 1),
    the mean over masked positions and channels. clip_weight: weight of the clip-level loss
    (mean-pooled student output vs the mean of the clip's targets; 0 = off). num_masks: masks
    per clip (the teacher runs once per clip, the student once per mask). ema_decay /
    ema_end_decay: the teacher's decay at the first / last optimiser step, ema_schedule
    'linear' or 'cosine' between them (:func:`ema_decay`). keep: the encoder the final
    checkpoint holds, 'student' (data2vec) or 'teacher' (EAT). pixel_weight: weight of a
    reconstruction loss on the same hidden patches, from a second linear output of the same
    decoder (the ``reconstruct`` objective's patch MSE; 0 = off, latent prediction alone)."""

    target_layers: PositiveInt = 8
    target_norm: str = "instance"
    loss: str = "mse"
    clip_weight: NonNegativeFloat = 1.0
    num_masks: PositiveInt = 4
    ema_decay: Decay = 0.999
    ema_end_decay: Decay = 0.9999
    ema_schedule: str = "linear"
    keep: str = "student"
    pixel_weight: NonNegativeFloat = 0.0

    def __post_init__(self) -> None:
        check_ranges(self)
        for name, allowed in (("target_norm", TARGET_NORMS), ("loss", LOSSES), ("ema_schedule", SCHEDULES),
                              ("keep", KEEP)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


def ema_decay(cfg: LatentConfig, update: int, total: int) -> float:
    """The teacher's decay τ for optimiser step ``update`` (0-based) of ``total``.

    With u = min(1, update / (total − 1)) (u = 1 when total = 1), τ0 = ``ema_decay`` and
    τ1 = ``ema_end_decay``: linear τ = τ0 + (τ1 − τ0)·u; cosine τ = τ1 − (τ1 − τ0)·(1 + cos πu)/2.
    So the first step uses τ0 and the last τ1."""
    u = 1.0 if total <= 1 else min(1.0, max(0, update) / (total - 1))
    t0, t1 = cfg.ema_decay, cfg.ema_end_decay
    if cfg.ema_schedule == "linear":
        return t0 + (t1 - t0) * u
    return t1 - (t1 - t0) * (1.0 + math.cos(math.pi * u)) / 2.0


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """θ_teacher ← τ·θ_teacher + (1 − τ)·θ_student for every parameter; buffers are copied."""
    for pt, ps in zip(teacher.parameters(), student.parameters(), strict=True):
        pt.mul_(decay).add_(ps.detach().to(pt.dtype), alpha=1.0 - decay)
    for bt, bs in zip(teacher.buffers(), student.buffers(), strict=True):
        bt.copy_(bs)


def make_targets(layers: list[Tensor], k: int, norm: str = "instance") -> Tensor:
    """Targets ``(B, N, D)`` from block outputs ``layers`` (each ``(B, N, D)``, first block
    first): the top ``k`` normalised one by one ('instance': each channel over the N tokens;
    'layer': each token over the D channels; no parameters), averaged, then layer-normalised."""
    top = [x.float() for x in layers[-k:]]
    if norm == "instance":
        normed = [F.instance_norm(x.transpose(1, 2)).transpose(1, 2) for x in top]
    elif norm == "layer":
        normed = [F.layer_norm(x, x.shape[-1:]) for x in top]
    else:
        raise ValueError(f"target_norm must be one of {TARGET_NORMS}, got {norm!r}")
    y = torch.stack(normed).mean(dim=0)
    return F.layer_norm(y, y.shape[-1:])


def latent_loss(pred: Tensor, target: Tensor, kind: str = "mse") -> Tensor:
    """Mean over every element of the squared error ('mse') or smooth L1 with β = 1."""
    if kind == "mse":
        return F.mse_loss(pred.float(), target.float())
    return F.smooth_l1_loss(pred.float(), target.float(), beta=1.0)
