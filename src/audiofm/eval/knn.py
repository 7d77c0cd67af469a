"""The kNN probe: cosine similarity on z-scored features, exact search
(:func:`audiofm.search.knn_search`: numpy, or faiss when installed — same neighbours), votes
weighted by ``exp(sim / temperature)``, ``k`` chosen on validation. Multilabel: the weighted
average of the neighbours' label vectors. Deterministic."""

from __future__ import annotations

import math
import time

import numpy as np

from ..data.tasks import MULTICLASS
from ..search import faiss_available, knn_search
from .metrics import primary_metric, score_predictions
from .probe_base import KNNProbeConfig, ProbeData, ProbeResult, standardize
from .threads import limit_threads

__all__ = ["faiss_available", "knn_probe", "knn_scores", "knn_search"]


def knn_scores(sims: np.ndarray, idx: np.ndarray, k: int, y_onehot: np.ndarray, temperature: float
               ) -> np.ndarray:
    """Class scores (M, C) from the first ``k`` neighbours: weighted average of label vectors."""
    s = sims[:, :k]
    w = np.exp((s - s[:, :1]) / temperature)  # (M, k), stabilised by the best similarity
    w = w / w.sum(axis=1, keepdims=True)
    scores = np.zeros((len(s), y_onehot.shape[1]), dtype=np.float64)
    for j in range(k):
        scores += w[:, j : j + 1] * y_onehot[idx[:, j]]
    return scores


def knn_probe(data: ProbeData, cfg: KNNProbeConfig | None = None, standardize_features: bool = True,
              threads: int | None = 1) -> ProbeResult:
    """Cosine kNN with ``k`` chosen on validation (see module docstring).

    ``threads``: BLAS/faiss threads during the search (None: leave as is)."""
    with limit_threads(threads):
        return _knn_probe(data, cfg, standardize_features)


def _knn_probe(data: ProbeData, cfg: KNNProbeConfig | None, standardize_features: bool) -> ProbeResult:
    cfg = cfg or KNNProbeConfig()
    pt = data.prediction_type
    t0 = time.perf_counter()
    xs = [data.x_train, data.x_valid, data.x_test]
    if standardize_features:
        xs = standardize(*xs)
    xtr, xva, xte = xs  # cosine: knn_search L2-normalises
    if pt == MULTICLASS:
        y_tr = np.eye(data.n_classes, dtype=np.float64)[np.asarray(data.y_train)]
    else:
        y_tr = np.asarray(data.y_train, dtype=np.float64)
    ks = sorted({min(k, len(xtr)) for k in cfg.k_grid})
    kmax = ks[-1]
    backend = "faiss" if cfg.backend == "auto" and faiss_available() else \
        ("numpy" if cfg.backend == "auto" else cfg.backend)
    vs, vi = knn_search(xva, xtr, kmax, metric="cosine", backend=backend)
    metric = primary_metric(pt)
    best_score, best_k = float("nan"), ks[0]
    tried: dict[str, float] = {}
    for k in ks:
        score = score_predictions(knn_scores(vs, vi, k, y_tr, cfg.temperature), data.y_valid, pt)[metric]
        tried[str(k)] = score
        if not math.isnan(score) and (math.isnan(best_score) or score > best_score):
            best_score, best_k = score, k
    valid_metrics = score_predictions(knn_scores(vs, vi, best_k, y_tr, cfg.temperature), data.y_valid, pt)
    fit = time.perf_counter() - t0
    t1 = time.perf_counter()
    ts, ti = knn_search(xte, xtr, best_k, metric="cosine", backend=backend)
    metrics = score_predictions(knn_scores(ts, ti, best_k, y_tr, cfg.temperature), data.y_test, pt)
    predict = time.perf_counter() - t1
    return ProbeResult("knn", metrics, valid_metrics, {"k": best_k, "backend": backend, "valid_by_k": tried},
                       fit, predict, True)
