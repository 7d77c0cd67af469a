"""Scores for scene-level tasks: top-1 accuracy (multiclass), mAP and d' (multilabel).

Definitions follow HEAR's ``heareval.score``: mAP and d' are macro averages over classes.
Classes without a positive example in the evaluated split are left out of mAP (their AP is
undefined); d' leaves out classes without both positives and negatives, and clips the AUC to
``[1e-6, 1 - 1e-6]`` so a perfect class gives a large finite d' (≈ 6.7) instead of infinity.
"""

from __future__ import annotations

import numpy as np

from ..data.tasks import MULTICLASS, MULTILABEL, PREDICTION_TYPES

__all__ = ["MULTICLASS", "MULTILABEL", "PREDICTION_TYPES", "d_prime", "fast_average_precision",
           "mean_average_precision", "metric_names", "primary_metric", "score_predictions", "top1_accuracy"]
AUC_CLIP = 1e-6


def primary_metric(prediction_type: str) -> str:
    """The metric that ranks models and selects hyper-parameters."""
    return "top1_acc" if prediction_type == MULTICLASS else "mAP"


def metric_names(prediction_type: str) -> list[str]:
    return ["top1_acc"] if prediction_type == MULTICLASS else ["mAP", "d_prime"]


def top1_accuracy(scores: np.ndarray, y: np.ndarray) -> float:
    """``scores``: (N, C); ``y``: (N,) class indices."""
    if len(y) == 0:
        return float("nan")
    return float(np.mean(np.argmax(scores, axis=1) == y))


def mean_average_precision(scores: np.ndarray, y: np.ndarray) -> float:
    """Macro AP over classes with ≥ 1 positive; ``y``: (N, C) binary."""
    from sklearn.metrics import average_precision_score

    aps = [average_precision_score(y[:, c], scores[:, c]) for c in range(y.shape[1]) if y[:, c].any()]
    return float(np.mean(aps)) if aps else float("nan")


def d_prime(scores: np.ndarray, y: np.ndarray) -> float:
    """Macro d' = √2 · Φ⁻¹(AUC) over classes with both positives and negatives."""
    from scipy.stats import norm
    from sklearn.metrics import roc_auc_score

    vals = []
    for c in range(y.shape[1]):
        pos = int(y[:, c].sum())
        if 0 < pos < len(y):
            auc = float(np.clip(roc_auc_score(y[:, c], scores[:, c]), AUC_CLIP, 1 - AUC_CLIP))
            vals.append(np.sqrt(2.0) * norm.ppf(auc))
    return float(np.mean(vals)) if vals else float("nan")


def score_predictions(scores: np.ndarray, y: np.ndarray, prediction_type: str) -> dict[str, float]:
    """All metrics of ``prediction_type`` for class scores (N, C) against labels."""
    if prediction_type == MULTICLASS:
        return {"top1_acc": top1_accuracy(scores, y)}
    return {"mAP": mean_average_precision(scores, y), "d_prime": d_prime(scores, y)}


def fast_average_precision(scores: np.ndarray, y: np.ndarray) -> float:
    """Vectorised macro AP (ties broken by order) — for early-stopping checks only."""
    order = np.argsort(-scores, axis=0, kind="stable")
    ys = np.take_along_axis(y, order, axis=0).astype(np.float64)  # (N, C)
    hits = np.cumsum(ys, axis=0)
    precision = hits / np.arange(1, len(y) + 1)[:, None]
    npos = ys.sum(axis=0)
    keep = npos > 0
    if not keep.any():
        return float("nan")
    ap = (precision * ys).sum(axis=0)[keep] / npos[keep]
    return float(ap.mean())
