"""Task heads on clip embeddings, kept inside the model and its checkpoint.

Every head maps clip embeddings ``(B, D)`` to an output and can be rebuilt from its
``head_type`` and :meth:`config` (what checkpoints store): ``build_head(type, **config)``.

* :class:`Standardize` — z-scoring by batch statistics (running statistics in eval mode);
* :class:`ClassifierHead` — Standardize → Dropout → Linear (logits);
* :class:`ProjectionHead` — Standardize → Linear → BN → ReLU → Linear → BN (contrastive);
* :class:`MLPHead` — Linear → ReLU → Dropout → Linear (the MLP probe; an MLP projection).
* :class:`ArcFaceHead`, :class:`AdaCosHead` — Standardize → cosine to class centres (margin
  heads for attribute classification; ``sub_clusters`` centres per class, the best one counts).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Standardize(nn.BatchNorm1d):
    """Z-scores clip embeddings ``(B, D)`` per dimension, as the probes do: with the batch's
    statistics while training and running statistics (initialised by :meth:`set` from the frozen
    training embeddings) in eval mode; no affine part.

    Pooled embeddings share a large common component and many low-variance directions, so a head
    on raw embeddings would first have to learn to remove it; fixed statistics instead would let a
    small common drift of the tuning encoder swamp the low-variance dimensions (a shortcut to
    collapse for the contrastive loss). Batch statistics cancel any common shift.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim, affine=False, momentum=0.1)

    def set(self, z: np.ndarray) -> None:
        """Running statistics from ``z (N, D)``."""
        assert self.running_mean is not None and self.running_var is not None
        self.running_mean.copy_(torch.from_numpy(z.mean(axis=0, dtype=np.float64)))
        self.running_var.copy_(torch.from_numpy(z.var(axis=0, dtype=np.float64)))

    def forward(self, z: Tensor) -> Tensor:
        return super().forward(z.float())


class Head(nn.Module):
    """Base of the registered heads: ``head_type`` names it, :meth:`config` rebuilds it."""

    head_type: ClassVar[str] = ""
    _config: dict[str, Any]

    def config(self) -> dict[str, Any]:
        """Constructor arguments: ``build_head(self.head_type, **self.config())`` rebuilds it."""
        return dict(self._config)


class ClassifierHead(Head):
    """Standardize → Dropout → Linear: clip embedding ``(B, D)`` → logits ``(B, C)``."""

    head_type = "classifier"

    def __init__(self, dim: int, n_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self._config = {"dim": dim, "n_classes": n_classes, "dropout": dropout}
        self.norm = Standardize(dim)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, n_classes)
        nn.init.zeros_(self.fc.bias)
        nn.init.normal_(self.fc.weight, std=0.01)

    def forward(self, z: Tensor) -> Tensor:
        return self.fc(self.drop(self.norm(z)))


class ProjectionHead(Head):
    """Standardize → Linear → BatchNorm → ReLU → Linear → BatchNorm (no affine): clip embedding
    ``(B, D)`` → projection ``(B, E)`` (the loss L2-normalises it).

    The output is centred over the batch, so the head cannot reach SupCon's trivial stationary
    point (every projection identical, loss log(M − 1)), which is otherwise the quickest way down
    from a pretrained start where the two views of a clip are far more alike than two clips of
    a class (SimCLR/BYOL heads use batch norm for the same reason)."""

    head_type = "projection"

    def __init__(self, dim: int, hidden: int, out: int) -> None:
        super().__init__()
        self._config = {"dim": dim, "hidden": hidden, "out": out}
        self.norm = Standardize(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, out, bias=False)
        self.bn2 = nn.BatchNorm1d(out, affine=False)

    def forward(self, z: Tensor) -> Tensor:
        return self.bn2(self.fc2(F.relu(self.bn1(self.fc1(self.norm(z))))))


class MLPHead(Head):
    """Linear → ReLU → Dropout → Linear, xavier-initialised (hear-eval-kit style)."""

    head_type = "mlp"

    def __init__(self, dim: int, n_classes: int, hidden_dim: int = 1024, dropout: float = 0.1) -> None:
        super().__init__()
        self._config = {"dim": dim, "n_classes": n_classes, "hidden_dim": hidden_dim, "dropout": dropout}
        self.hidden = nn.Linear(dim, hidden_dim)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim, n_classes)
        nn.init.xavier_uniform_(self.hidden.weight)
        nn.init.xavier_uniform_(self.out.weight, gain=nn.init.calculate_gain("relu"))
        nn.init.zeros_(self.hidden.bias)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.drop(torch.relu(self.hidden(x))))


class MarginHead(Head):
    """Standardize → cosine similarity to ``n_classes × sub_clusters`` L2-normalised centres;
    a class's cosine is its best sub-centre's. ``forward(z)`` gives the scaled cosines (the
    logits at inference); :meth:`train_logits` adds the training-time margin / scale given the
    targets ``(B, C)`` (the argmax class is the one a margin applies to)."""

    def __init__(self, dim: int, n_classes: int, sub_clusters: int = 1) -> None:
        super().__init__()
        if sub_clusters < 1:
            raise ValueError(f"sub_clusters must be ≥ 1, got {sub_clusters}")
        self.n_classes, self.sub_clusters = n_classes, sub_clusters
        self.norm = Standardize(dim)
        self.weight = nn.Parameter(torch.randn(n_classes * sub_clusters, dim) * 0.01)

    def cosine(self, z: Tensor) -> Tensor:
        """Cosine ``(B, C)`` of the standardised embeddings to the nearest sub-centre per class."""
        cos = F.normalize(self.norm(z), dim=1) @ F.normalize(self.weight, dim=1).T  # (B, C·K)
        return cos.view(len(z), self.n_classes, self.sub_clusters).amax(dim=2)

    def set_centres(self, z: np.ndarray, y: np.ndarray) -> None:
        """Centres from the class means of standardised embeddings ``z (N, D)`` with one-hot
        ``y (N, C)``; sub-centres are the mean plus small noise."""
        with torch.no_grad():
            x = F.normalize(self.norm(torch.from_numpy(z)), dim=1)
            w = torch.from_numpy(y).float().T @ x  # (C, D)
            w = w.repeat_interleave(self.sub_clusters, dim=0)
            self.weight.copy_(w + 0.01 * torch.randn_like(w))

    def train_logits(self, z: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError


class ArcFaceHead(MarginHead):
    """ArcFace (Deng et al. 2019): logits ``s · cos(θ + m)`` for the target class, ``s · cos θ``
    otherwise, at training; ``s · cos θ`` at inference."""

    head_type = "arcface"

    def __init__(self, dim: int, n_classes: int, scale: float = 16.0, margin: float = 0.2,
                 sub_clusters: int = 1) -> None:
        super().__init__(dim, n_classes, sub_clusters)
        self._config = {"dim": dim, "n_classes": n_classes, "scale": scale, "margin": margin,
                        "sub_clusters": sub_clusters}
        self.scale, self.margin = scale, margin

    def forward(self, z: Tensor) -> Tensor:
        return self.scale * self.cosine(z)

    def train_logits(self, z: Tensor, target: Tensor) -> Tensor:
        cos = self.cosine(z)
        hard = F.one_hot(target.argmax(1), self.n_classes).bool()
        theta = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
        return self.scale * torch.where(hard, torch.cos(theta + self.margin), cos)


class AdaCosHead(MarginHead):
    """AdaCos (Zhang et al. 2019): no margin, the scale ``s`` adapted at every training batch,
    ``s = log B_avg / cos(min(π/4, θ_med))`` (``B_avg``: mean over clips of the non-target
    ``Σ exp(s·cos)``, ``θ_med``: median target angle); starts at ``√2 · log(C − 1)`` and is
    kept in the checkpoint. With ``sub_clusters`` > 1 this is the sub-cluster AdaCos of
    Wilkinghoff (2021) in its max-over-sub-centres form."""

    head_type = "adacos"
    scale: Tensor

    def __init__(self, dim: int, n_classes: int, sub_clusters: int = 1) -> None:
        super().__init__(dim, n_classes, sub_clusters)
        self._config = {"dim": dim, "n_classes": n_classes, "sub_clusters": sub_clusters}
        self.register_buffer("scale", torch.tensor(float(np.sqrt(2.0) * np.log(max(n_classes - 1, 2)))))

    def forward(self, z: Tensor) -> Tensor:
        return self.scale * self.cosine(z)

    def train_logits(self, z: Tensor, target: Tensor) -> Tensor:
        cos = self.cosine(z)
        hard = F.one_hot(target.argmax(1), self.n_classes).bool()
        with torch.no_grad():
            s = self.scale
            b_avg = torch.where(hard, torch.zeros_like(cos), torch.exp(s * cos)).sum(1).mean()
            theta = torch.acos(cos[hard].clamp(-1 + 1e-6, 1 - 1e-6))
            med = torch.clamp(theta.median(), max=float(np.pi / 4))
            self.scale.copy_(torch.log(b_avg.clamp_min(1e-12)) / torch.cos(med))
        return self.scale * cos


HEADS: dict[str, type[Head]] = {h.head_type: h for h in (ClassifierHead, ProjectionHead, MLPHead, ArcFaceHead,
                                                           AdaCosHead)}


def build_head(head_type: str, **config: Any) -> Head:
    """A head of ``head_type`` ('classifier', 'projection', 'mlp', 'arcface', 'adacos') from its config."""
    if head_type not in HEADS:
        raise KeyError(f"unknown head type {head_type!r}; available: {', '.join(sorted(HEADS))}")
    return HEADS[head_type](**config)
