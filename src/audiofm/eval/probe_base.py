"""What every probe shares: settings, the data of one round, the result, standardisation and
the selection rule (see :mod:`audiofm.eval.probes` for the protocol)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Rate, check_ranges
from ..data.tasks import MULTICLASS, MULTILABEL


@dataclass
class LinearProbeConfig:
    """c_grid: inverse L2 strengths tried (scikit-learn's ``C``), in increasing order.
    max_iter: L-BFGS iterations per grid value. tol: projected-gradient tolerance (the loss is a
    mean over clips). A tight tolerance makes the solution — and the chosen C — independent of
    BLAS threading and rounding; 1e-4 (scikit-learn's default) changed some fold scores by 1-2
    points between thread counts."""

    c_grid: tuple[PositiveFloat, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    max_iter: PositiveInt = 1000
    tol: PositiveFloat = 1e-6

    def __post_init__(self) -> None:
        check_ranges(self)
        self.c_grid = tuple(float(c) for c in self.c_grid)
        if not self.c_grid:
            raise ValueError("linear.c_grid must hold at least one value")


@dataclass
class MLPProbeConfig:
    """hidden_dim / dropout: the one hidden layer (HEAR: 1024, 0.1). lr_grid: Adam learning
    rates tried (chosen on validation). weight_decay: Adam L2. batch_size: mini-batch size
    (HEAR: 1024). max_epochs / patience: early stopping on the validation metric (epochs)."""

    hidden_dim: PositiveInt = 1024
    dropout: Rate = 0.1
    lr_grid: tuple[PositiveFloat, ...] = (1e-3,)
    weight_decay: NonNegativeFloat = 0.0
    batch_size: PositiveInt = 1024
    max_epochs: PositiveInt = 500
    patience: NonNegativeInt = 20

    def __post_init__(self) -> None:
        check_ranges(self)
        self.lr_grid = tuple(float(lr) for lr in self.lr_grid)
        if not self.lr_grid:
            raise ValueError("mlp.lr_grid must hold at least one value")


@dataclass
class KNNProbeConfig:
    """k_grid: neighbour counts tried (capped at the training-set size). temperature: vote
    weight ``exp(sim / temperature)``. backend: "numpy", "faiss" or "auto" (faiss if installed)."""

    k_grid: tuple[PositiveInt, ...] = (1, 3, 5, 10, 20, 50)
    temperature: PositiveFloat = 0.07
    backend: str = "auto"

    def __post_init__(self) -> None:
        check_ranges(self)
        self.k_grid = tuple(int(k) for k in self.k_grid)
        if not self.k_grid:
            raise ValueError("knn.k_grid must hold at least one value")


@dataclass
class ProbeConfig:
    """Settings of all probes. standardize: z-score features with training statistics."""

    linear: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    mlp: MLPProbeConfig = field(default_factory=MLPProbeConfig)
    knn: KNNProbeConfig = field(default_factory=KNNProbeConfig)
    standardize: bool = True


@dataclass
class ProbeData:
    """Embeddings and labels of one round. ``y_*``: (N,) class indices for multiclass, (N, C)
    {0,1} float32 for multilabel. ``n_classes``: vocabulary size."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    prediction_type: str
    n_classes: int

    def __post_init__(self) -> None:
        if self.prediction_type not in (MULTICLASS, MULTILABEL):
            raise ValueError(f"unknown prediction_type {self.prediction_type!r}")
        for name in ("train", "valid", "test"):
            x, y = getattr(self, f"x_{name}"), getattr(self, f"y_{name}")
            if x.ndim != 2 or len(x) != len(y):
                raise ValueError(f"{name}: need x (N, D) and y with N rows; got {x.shape} and {y.shape}")
            if len(x) == 0:
                raise ValueError(f"{name} split is empty")


@dataclass
class ProbeResult:
    """Test ``metrics``, validation metrics of the chosen setting, the chosen ``hparams``
    (plus what was tried), timings and whether the probe is deterministic."""

    probe: str
    metrics: dict[str, float]
    valid_metrics: dict[str, float]
    hparams: dict[str, Any]
    fit_seconds: float
    predict_seconds: float
    deterministic: bool


def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Z-score all arrays with the mean/std of ``train`` (dims with ~0 std are only centred)."""
    mean = train.mean(axis=0, dtype=np.float64)
    std = train.std(axis=0, dtype=np.float64)
    std = np.where(std < 1e-8 * max(1.0, float(np.abs(mean).max(initial=0.0))), 1.0, std)
    return [((a - mean) / std).astype(np.float32) for a in (train, *others)]


def better(score: float, loss: float, best: tuple[float, float]) -> bool:
    """Higher score wins; equal scores → lower loss; NaN never wins over a number."""
    if math.isnan(score):
        return False
    if math.isnan(best[0]) or score > best[0]:
        return True
    return score == best[0] and loss < best[1]



def probabilities(logits: torch.Tensor, prediction_type: str) -> np.ndarray:
    """Class probabilities (softmax for multiclass, sigmoid for multilabel) as float64."""
    p = logits.softmax(1) if prediction_type == MULTICLASS else logits.sigmoid()
    return p.double().numpy()
