"""Probes on frozen clip embeddings: linear, MLP and k-nearest-neighbour.

Every probe follows the HEAR recipe: features are z-scored with statistics of the *training*
split only; hyper-parameters are chosen by the primary metric on the *validation* split (ties:
lower validation loss, then the earlier grid value); the model kept is the one trained on the
training split with the chosen values — no refit on train+valid — and it is scored once on
the test split.

* **linear**: L2-regularised logistic regression (softmax for multiclass, one-vs-rest sigmoid
  for multilabel), full-batch L-BFGS (scipy, float64), warm-started along the ``C`` grid from
  strong to weak regularisation. Loss = mean log-loss + ‖W‖² / (2·C·N_train) — the scaling of
  scikit-learn's ``LogisticRegression(C=C)``. Deterministic.
* **mlp**: one hidden layer (1024, ReLU, dropout 0.1; xavier init as in hear-eval-kit), Adam,
  mini-batches, early stopping on the validation metric (patience in epochs), best epoch kept.
  The seed fixes initialisation, shuffling and dropout.
* **knn**: cosine similarity on z-scored, L2-normalised features; exact search (numpy
  matmul, or faiss ``IndexFlatIP`` when installed — same neighbours, see
  :func:`knn_search`); votes weighted by ``exp(sim / temperature)``; ``k`` chosen on
  validation. Multilabel: weighted average of the neighbours' label vectors. Deterministic.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.heads import MLPHead
from .metrics import MULTICLASS, MULTILABEL, fast_average_precision, primary_metric, score_predictions
from .registry import PROBES
from .threads import limit_threads


@dataclass
class LinearProbeConfig:
    """c_grid: inverse L2 strengths tried (scikit-learn's ``C``), in increasing order.
    max_iter: L-BFGS iterations per grid value. tol: projected-gradient tolerance (the loss is a
    mean over clips). A tight tolerance makes the solution — and the chosen C — independent of
    BLAS threading and rounding; 1e-4 (scikit-learn's default) changed some fold scores by 1-2
    points between thread counts."""

    c_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    max_iter: int = 1000
    tol: float = 1e-6


@dataclass
class MLPProbeConfig:
    """hidden_dim / dropout: the one hidden layer (HEAR: 1024, 0.1). lr_grid: Adam learning
    rates tried (chosen on validation). weight_decay: Adam L2. batch_size: mini-batch size
    (HEAR: 1024). max_epochs / patience: early stopping on the validation metric (epochs)."""

    hidden_dim: int = 1024
    dropout: float = 0.1
    lr_grid: tuple[float, ...] = (1e-3,)
    weight_decay: float = 0.0
    batch_size: int = 1024
    max_epochs: int = 500
    patience: int = 20


@dataclass
class KNNProbeConfig:
    """k_grid: neighbour counts tried (capped at the training-set size). temperature: vote
    weight ``exp(sim / temperature)``. backend: "numpy", "faiss" or "auto" (faiss if installed)."""

    k_grid: tuple[int, ...] = (1, 3, 5, 10, 20, 50)
    temperature: float = 0.07
    backend: str = "auto"


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


def _better(score: float, loss: float, best: tuple[float, float]) -> bool:
    """Higher score wins; equal scores → lower loss; NaN never wins over a number."""
    if math.isnan(score):
        return False
    if math.isnan(best[0]) or score > best[0]:
        return True
    return score == best[0] and loss < best[1]


def _monitor_score(logits: torch.Tensor, y: torch.Tensor, prediction_type: str) -> float:
    if prediction_type == MULTICLASS:
        return float((logits.argmax(1) == y).float().mean())
    return fast_average_precision(logits.numpy(), y.numpy())


def _loss(logits: torch.Tensor, y: torch.Tensor, prediction_type: str) -> torch.Tensor:
    if prediction_type == MULTICLASS:
        return nn.functional.cross_entropy(logits, y)
    # one-vs-rest: sum over classes, mean over clips
    return nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum") / len(y)


def _probabilities(logits: torch.Tensor, prediction_type: str) -> np.ndarray:
    p = logits.softmax(1) if prediction_type == MULTICLASS else logits.sigmoid()
    return p.double().numpy()


def _tensors(data: ProbeData, standardize_features: bool) -> tuple[torch.Tensor, ...]:
    xs = [data.x_train, data.x_valid, data.x_test]
    if standardize_features:
        xs = standardize(*xs)
    ydt = torch.long if data.prediction_type == MULTICLASS else torch.float32
    ys = [torch.as_tensor(np.asarray(y), dtype=ydt) for y in (data.y_train, data.y_valid, data.y_test)]
    return (*(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for x in xs), *ys)


# --------------------------------------------------------------------------------------- linear


def _logreg_objective(x: np.ndarray, y: np.ndarray, lam: float, multiclass: bool
                      ) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """f(params) -> (loss, grad) of L2-regularised logistic regression; params = [W.ravel(), b].

    Data terms in float32 (3× faster than float64 here), sums and the penalty in float64.
    """
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


def _np_monitor(logits: np.ndarray, y: np.ndarray, prediction_type: str) -> tuple[float, float]:
    """(validation score, validation log-loss) from logits, in numpy."""
    if prediction_type == MULTICLASS:
        z = logits - logits.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(np.mean(logits.argmax(1) == y)), float(-logp[np.arange(len(y)), y].mean())
    loss = float((np.logaddexp(0.0, logits) - y * logits).sum() / len(y))
    return fast_average_precision(logits, y), loss


def _logreg_logits(x: np.ndarray, params: np.ndarray, d: int, c: int) -> np.ndarray:
    return x.astype(np.float64) @ params[: d * c].reshape(d, c) + params[d * c :]


def linear_probe(data: ProbeData, cfg: LinearProbeConfig | None = None, standardize_features: bool = True,
                 threads: int | None = 1) -> ProbeResult:
    """Logistic regression with ``C`` chosen on validation (see module docstring).

    ``threads``: torch/BLAS threads during the fit (None: leave as is)."""
    with limit_threads(threads):
        return _linear_probe(data, cfg, standardize_features)


def _linear_probe(data: ProbeData, cfg: LinearProbeConfig | None, standardize_features: bool) -> ProbeResult:
    from scipy.optimize import minimize

    cfg = cfg or LinearProbeConfig()
    pt = data.prediction_type
    multiclass = pt == MULTICLASS
    t0 = time.perf_counter()
    xs = [data.x_train, data.x_valid, data.x_test]
    if standardize_features:
        xs = standardize(*xs)
    xtr, xva, xte = (np.ascontiguousarray(x, dtype=np.float32) for x in xs)
    n, d = xtr.shape
    c = data.n_classes
    ytr = (np.eye(c, dtype=np.float32)[np.asarray(data.y_train)] if multiclass
           else np.asarray(data.y_train, dtype=np.float32))
    yva = np.asarray(data.y_valid)
    params = np.zeros(d * c + c)
    best: tuple[float, float] = (float("nan"), float("inf"))
    best_params, best_c = params, float("nan")
    tried: dict[str, float] = {}
    iters: dict[str, int] = {}
    for creg in sorted(cfg.c_grid):  # strong → weak regularisation, warm-started
        res = minimize(_logreg_objective(xtr, ytr, 1.0 / (creg * n), multiclass), params, jac=True,
                       method="L-BFGS-B", options={"maxiter": cfg.max_iter, "gtol": cfg.tol})
        params = res.x
        score, vloss = _np_monitor(_logreg_logits(xva, params, d, c), yva, pt)
        tried[f"{creg:g}"] = score
        iters[f"{creg:g}"] = int(res.nit)
        if _better(score, vloss, best):
            best, best_c, best_params = (score, vloss), creg, params.copy()
    fit = time.perf_counter() - t0
    t1 = time.perf_counter()
    test_p = _probabilities(torch.from_numpy(_logreg_logits(xte, best_params, d, c)), pt)
    valid_p = _probabilities(torch.from_numpy(_logreg_logits(xva, best_params, d, c)), pt)
    metrics = score_predictions(test_p, data.y_test, pt)
    predict = time.perf_counter() - t1
    return ProbeResult("linear", metrics, score_predictions(valid_p, data.y_valid, pt),
                       {"C": best_c, "valid_by_C": tried, "iterations": iters}, fit, predict, True)


# ------------------------------------------------------------------------------------------ mlp


def _train_mlp(xtr: torch.Tensor, ytr: torch.Tensor, xva: torch.Tensor, yva: torch.Tensor, n_classes: int,
               pt: str, cfg: MLPProbeConfig, lr: float, seed: int) -> tuple[MLPHead, float, float, int]:
    """Train with early stopping; returns (best model, valid score, valid loss, best epoch)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLPHead(xtr.shape[1], n_classes, cfg.hidden_dim, cfg.dropout)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(seed)
        n = len(xtr)
        best: tuple[float, float] = (float("nan"), float("inf"))
        best_state = copy.deepcopy(model.state_dict())
        best_epoch, stale = 0, 0
        for epoch in range(cfg.max_epochs):
            model.train()
            perm = torch.randperm(n, generator=gen)
            for s in range(0, n, cfg.batch_size):
                idx = perm[s : s + cfg.batch_size]
                opt.zero_grad(set_to_none=True)
                _loss(model(xtr[idx]), ytr[idx], pt).backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                logits = model(xva)
                score, vloss = _monitor_score(logits, yva, pt), float(_loss(logits, yva, pt))
            if _better(score, vloss, best):
                best, best_epoch, stale = (score, vloss), epoch + 1, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        model.load_state_dict(best_state)
        model.eval()
    return model, best[0], best[1], best_epoch


def mlp_probe(data: ProbeData, cfg: MLPProbeConfig | None = None, seed: int = 0,
              standardize_features: bool = True, threads: int | None = 1) -> ProbeResult:
    """One-hidden-layer MLP; learning rate chosen on validation; ``seed`` fixes all randomness.

    ``threads``: torch/BLAS threads during the fit (None: leave as is)."""
    with limit_threads(threads):
        return _mlp_probe(data, cfg, seed, standardize_features)


def _mlp_probe(data: ProbeData, cfg: MLPProbeConfig | None, seed: int, standardize_features: bool
               ) -> ProbeResult:
    cfg = cfg or MLPProbeConfig()
    pt = data.prediction_type
    t0 = time.perf_counter()
    xtr, xva, xte, ytr, yva, _ = _tensors(data, standardize_features)
    best: tuple[float, float] = (float("nan"), float("inf"))
    chosen: tuple[MLPHead, float, int] | None = None
    tried: dict[str, float] = {}
    for lr in cfg.lr_grid:
        model, score, vloss, epoch = _train_mlp(xtr, ytr, xva, yva, data.n_classes, pt, cfg, lr, seed)
        tried[f"{lr:g}"] = score
        if chosen is None or _better(score, vloss, best):
            best, chosen = (score, vloss), (model, lr, epoch)
    assert chosen is not None
    model, lr, epoch = chosen
    fit = time.perf_counter() - t0
    t1 = time.perf_counter()
    with torch.no_grad():
        test_p = _probabilities(model(xte), pt)
        valid_p = _probabilities(model(xva), pt)
    metrics = score_predictions(test_p, data.y_test, pt)
    predict = time.perf_counter() - t1
    hp = {"lr": lr, "epochs": epoch, "hidden_dim": cfg.hidden_dim, "dropout": cfg.dropout,
          "valid_by_lr": tried}
    return ProbeResult("mlp", metrics, score_predictions(valid_p, data.y_valid, pt), hp, fit, predict, False)


# ------------------------------------------------------------------------------------------ knn


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


_MARGIN = 16  # extra candidates fetched in float32 before the exact float64 re-ranking
_TIE_TOL = 1e-4  # float32 dot-product error bound used to detect boundary near-ties


def _exact_row(q: np.ndarray, base64: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = base64 @ q.astype(np.float64)
    order = np.lexsort((np.arange(len(sims)), -sims))[:k]
    return sims[order], order


def knn_search(base: np.ndarray, queries: np.ndarray, k: int, backend: str = "auto",
               block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner-product neighbours of ``queries`` in ``base``.

    Returns (sims (M, k) float64, indices (M, k) int64), sorted by descending similarity with
    ties broken by lower index. Candidates come from a float32 search (numpy matmul or faiss
    ``IndexFlatIP``), are re-scored in float64 and re-ranked; rows where the candidate window
    could hide a (near-)tie fall back to a full float64 ranking — so both backends return the
    same neighbours.
    """
    base = np.ascontiguousarray(base, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n = len(base)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    if backend == "auto":
        backend = "faiss" if faiss_available() else "numpy"
    kc = min(n, k + _MARGIN)
    base64 = base.astype(np.float64)
    if backend == "faiss":
        import faiss

        index = faiss.IndexFlatIP(base.shape[1])
        index.add(base)

        def candidates(q: np.ndarray) -> np.ndarray:
            return np.asarray(index.search(q, kc)[1], dtype=np.int64)
    elif backend == "numpy":
        def candidates(q: np.ndarray) -> np.ndarray:
            s = q @ base.T
            if kc >= n:
                return np.broadcast_to(np.arange(n), (len(q), n)).copy()
            return np.argpartition(-s, kc - 1, axis=1)[:, :kc].astype(np.int64)
    else:
        raise ValueError(f"unknown kNN backend {backend!r} (use numpy, faiss or auto)")
    out_s = np.empty((len(queries), k), dtype=np.float64)
    out_i = np.empty((len(queries), k), dtype=np.int64)
    for s0 in range(0, len(queries), block):
        q = queries[s0 : s0 + block]
        cand = candidates(q)  # (B, kc)
        q64 = q.astype(np.float64)
        sims = np.empty(cand.shape, dtype=np.float64)
        for c0 in range(0, len(q), 64):  # float64 re-scoring in small chunks (memory)
            sims[c0 : c0 + 64] = np.einsum("bd,bkd->bk", q64[c0 : c0 + 64], base64[cand[c0 : c0 + 64]])
        order = np.lexsort((cand, -sims), axis=1)
        sims, cand = np.take_along_axis(sims, order, 1), np.take_along_axis(cand, order, 1)
        out_s[s0 : s0 + len(q)], out_i[s0 : s0 + len(q)] = sims[:, :k], cand[:, :k]
        if kc < n:
            # could an item outside the candidate window tie with / beat the k-th one?
            for r in np.flatnonzero(sims[:, -1] >= sims[:, k - 1] - _TIE_TOL):
                out_s[s0 + r], out_i[s0 + r] = _exact_row(q[r], base64, k)
    return out_s, out_i


def _knn_scores(sims: np.ndarray, idx: np.ndarray, k: int, y_onehot: np.ndarray, temperature: float
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
    xtr, xva, xte = (_l2_normalize(x) for x in xs)
    if pt == MULTICLASS:
        y_tr = np.eye(data.n_classes, dtype=np.float64)[np.asarray(data.y_train)]
    else:
        y_tr = np.asarray(data.y_train, dtype=np.float64)
    ks = sorted({min(k, len(xtr)) for k in cfg.k_grid})
    kmax = ks[-1]
    backend = "faiss" if cfg.backend == "auto" and faiss_available() else \
        ("numpy" if cfg.backend == "auto" else cfg.backend)
    vs, vi = knn_search(xtr, xva, kmax, backend)
    metric = primary_metric(pt)
    best_score, best_k = float("nan"), ks[0]
    tried: dict[str, float] = {}
    for k in ks:
        score = score_predictions(_knn_scores(vs, vi, k, y_tr, cfg.temperature), data.y_valid, pt)[metric]
        tried[str(k)] = score
        if not math.isnan(score) and (math.isnan(best_score) or score > best_score):
            best_score, best_k = score, k
    valid_metrics = score_predictions(_knn_scores(vs, vi, best_k, y_tr, cfg.temperature), data.y_valid, pt)
    fit = time.perf_counter() - t0
    t1 = time.perf_counter()
    ts, ti = knn_search(xtr, xte, best_k, backend)
    metrics = score_predictions(_knn_scores(ts, ti, best_k, y_tr, cfg.temperature), data.y_test, pt)
    predict = time.perf_counter() - t1
    return ProbeResult("knn", metrics, valid_metrics, {"k": best_k, "backend": backend, "valid_by_k": tried},
                       fit, predict, True)


def run_probe(name: str, data: ProbeData, cfg: ProbeConfig | None = None, seed: int = 0,
              threads: int | None = 1) -> ProbeResult:
    """Run probe ``name`` ("linear", "mlp" or "knn") on one round with ``threads`` CPU threads."""
    cfg = cfg or ProbeConfig()
    if name == "linear":
        return linear_probe(data, cfg.linear, cfg.standardize, threads)
    if name == "mlp":
        return mlp_probe(data, cfg.mlp, seed, cfg.standardize, threads)
    if name == "knn":
        return knn_probe(data, cfg.knn, cfg.standardize, threads)
    raise ValueError(f"unknown probe {name!r}; choose from {', '.join(PROBES)}")
