"""The one logistic-regression solver (:func:`fit_logistic`) and the linear probe built on it.

Loss = mean log-loss + ‖W‖² / (2·C·N) — the scaling of scikit-learn's
``LogisticRegression(C=C)``; softmax cross-entropy (multiclass) or the sum of per-class binary
log-losses (multilabel, one-vs-rest). Full-batch L-BFGS (scipy): data terms in float32, sums and
the penalty in float64. The linear probe sweeps ``C`` from strong to weak regularisation, each
fit warm-started from the previous one; fine-tuning initialises its classifier head with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..data.tasks import MULTICLASS
from .metrics import fast_average_precision, score_predictions
from .probe_base import LinearProbeConfig, ProbeData, ProbeResult, better, probabilities, standardize
from .threads import limit_threads


@dataclass
class LogisticFit:
    """A fitted logistic regression: ``logits = x @ weight.T + bias``."""

    weight: np.ndarray  # (C, D) float64
    bias: np.ndarray  # (C,) float64
    n_iter: int

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(N, C) float64 logits of ``x`` (N, D)."""
        return np.asarray(x).astype(np.float64) @ self.weight.T + self.bias


def _objective(x: np.ndarray, y: np.ndarray, lam: float, multiclass: bool
               ) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """f(params) -> (loss, grad); params = [W (D, C) ravelled, b (C,)]."""
    from scipy.special import expit

    n, d = x.shape
    c = y.shape[1]

    def f(params: np.ndarray) -> tuple[float, np.ndarray]:
        w64 = params[: d * c].reshape(d, c)
        w = w64.astype(np.float32)
        z = x @ w + params[d * c :].astype(np.float32)  # (N, C) float32
        if multiclass:
            z = z - z.max(axis=1, keepdims=True)
            logsum = np.log(np.exp(z).sum(axis=1, keepdims=True))
            logp = z - logsum
            loss = -float((y * logp).sum(dtype=np.float64)) / n
            g = (np.exp(logp) - y) / n
        else:  # one-vs-rest: sum of per-class binary log-losses
            loss = float((np.logaddexp(0.0, z) - y * z).sum(dtype=np.float64)) / n
            g = (expit(z) - y) / n
        loss += 0.5 * lam * float((w64 * w64).sum())
        gw = (x.T @ g).astype(np.float64) + lam * w64
        return loss, np.concatenate([gw.ravel(), g.sum(axis=0, dtype=np.float64)])

    return f


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float, multiclass: bool, init: LogisticFit | None = None,
                 max_iter: int = 1000, tol: float = 1e-6) -> LogisticFit:
    """L2-regularised logistic regression of ``y`` (N, C) one-hot/multi-hot on ``x`` (N, D).

    ``c``: inverse regularisation (scikit-learn's ``C``); ``multiclass``: softmax, else
    one-vs-rest sigmoids. ``init``: warm start (default zeros). ``tol``: L-BFGS projected-gradient
    tolerance on the mean loss — tight, so the solution does not depend on BLAS threading."""
    from scipy.optimize import minimize

    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"need x (N, D) and y (N, C); got {x.shape} and {y.shape}")
    if c <= 0:
        raise ValueError(f"c must be > 0, got {c}")
    n, d = x.shape
    k = y.shape[1]
    if init is None:
        params = np.zeros(d * k + k)
    else:
        if init.weight.shape != (k, d) or init.bias.shape != (k,):
            raise ValueError(f"init has weight {init.weight.shape} / bias {init.bias.shape}, need ({k}, {d}) / ({k},)")
        params = np.concatenate([np.asarray(init.weight, dtype=np.float64).T.ravel(),
                                 np.asarray(init.bias, dtype=np.float64)])
    res = minimize(_objective(x, y, 1.0 / (c * n), multiclass), params, jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": tol})
    p = res.x
    return LogisticFit(p[: d * k].reshape(d, k).T, p[d * k :], int(res.nit))


def _monitor(logits: np.ndarray, y: np.ndarray, prediction_type: str) -> tuple[float, float]:
    """(validation score, validation log-loss) from logits, in numpy."""
    if prediction_type == MULTICLASS:
        z = logits - logits.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(np.mean(logits.argmax(1) == y)), float(-logp[np.arange(len(y)), y].mean())
    loss = float((np.logaddexp(0.0, logits) - y * logits).sum() / len(y))
    return fast_average_precision(logits, y), loss


def linear_probe(data: ProbeData, cfg: LinearProbeConfig | None = None, standardize_features: bool = True,
                 threads: int | None = 1) -> ProbeResult:
    """Logistic regression with ``C`` chosen on validation (see module docstring).

    ``threads``: torch/BLAS threads during the fit (None: leave as is)."""
    with limit_threads(threads):
        return _linear_probe(data, cfg or LinearProbeConfig(), standardize_features)


def _linear_probe(data: ProbeData, cfg: LinearProbeConfig, standardize_features: bool) -> ProbeResult:
    pt = data.prediction_type
    multiclass = pt == MULTICLASS
    t0 = time.perf_counter()
    xs = [data.x_train, data.x_valid, data.x_test]
    if standardize_features:
        xs = standardize(*xs)
    xtr, xva, xte = (np.ascontiguousarray(x, dtype=np.float32) for x in xs)
    c = data.n_classes
    ytr = (np.eye(c, dtype=np.float32)[np.asarray(data.y_train)] if multiclass
           else np.asarray(data.y_train, dtype=np.float32))
    yva = np.asarray(data.y_valid)
    fit: LogisticFit | None = None
    best: tuple[float, float] = (float("nan"), float("inf"))
    best_fit = LogisticFit(np.zeros((c, xtr.shape[1])), np.zeros(c), 0)  # kept when no score is a number
    best_c = float("nan")
    tried: dict[str, float] = {}
    iters: dict[str, int] = {}
    for creg in sorted(cfg.c_grid):  # strong → weak regularisation, warm-started
        fit = fit_logistic(xtr, ytr, creg, multiclass, init=fit, max_iter=cfg.max_iter, tol=cfg.tol)
        score, vloss = _monitor(fit.logits(xva), yva, pt)
        tried[f"{creg:g}"] = score
        iters[f"{creg:g}"] = fit.n_iter
        if better(score, vloss, best):
            best, best_c, best_fit = (score, vloss), creg, fit
    fit_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    test_p = probabilities(torch.from_numpy(best_fit.logits(xte)), pt)
    valid_p = probabilities(torch.from_numpy(best_fit.logits(xva)), pt)
    metrics = score_predictions(test_p, data.y_test, pt)
    predict = time.perf_counter() - t1
    return ProbeResult("linear", metrics, score_predictions(valid_p, data.y_valid, pt),
                       {"C": best_c, "valid_by_C": tried, "iterations": iters}, fit_seconds, predict, True)

