"""Task heads on clip embeddings, kept inside the model and its checkpoint.

Every head maps clip embeddings ``(B, D)`` to an output and can be rebuilt from its
``head_type`` and :meth:`config` (what checkpoints store): ``build_head(type, **config)``.

* :class:`Standardize` — z-scoring by batch statistics (running statistics in eval mode);
* :class:`ClassifierHead` — Standardize → Dropout → Linear (logits);
* :class:`ProjectionHead` — Standardize → Linear → BN → ReLU → Linear → BN (contrastive);
* :class:`MLPHead` — Linear → ReLU → Dropout → Linear (the MLP probe; an MLP projection).
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


HEADS: dict[str, type[Head]] = {h.head_type: h for h in (ClassifierHead, ProjectionHead, MLPHead)}


def build_head(head_type: str, **config: Any) -> Head:
    """A head of ``head_type`` ('classifier', 'projection', 'mlp') from its config."""
    if head_type not in HEADS:
        raise KeyError(f"unknown head type {head_type!r}; available: {', '.join(sorted(HEADS))}")
    return HEADS[head_type](**config)
