"""The MLP probe: one hidden layer (1024, ReLU, dropout 0.1; xavier init as in hear-eval-kit),
Adam, mini-batches, early stopping on the validation metric (patience in epochs), best epoch
kept. The seed fixes initialisation, shuffling and dropout."""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn

from ..data.tasks import MULTICLASS
from ..models.heads import MLPHead
from .metrics import fast_average_precision, score_predictions
from .probe_base import MLPProbeConfig, ProbeData, ProbeResult, better, probabilities, standardize
from .threads import limit_threads


def _monitor_score(logits: torch.Tensor, y: torch.Tensor, prediction_type: str) -> float:
    if prediction_type == MULTICLASS:
        return float((logits.argmax(1) == y).float().mean())
    return fast_average_precision(logits.numpy(), y.numpy())


def _loss(logits: torch.Tensor, y: torch.Tensor, prediction_type: str) -> torch.Tensor:
    if prediction_type == MULTICLASS:
        return nn.functional.cross_entropy(logits, y)
    # one-vs-rest: sum over classes, mean over clips
    return nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum") / len(y)



def _tensors(data: ProbeData, standardize_features: bool) -> tuple[torch.Tensor, ...]:
    xs = [data.x_train, data.x_valid, data.x_test]
    if standardize_features:
        xs = standardize(*xs)
    ydt = torch.long if data.prediction_type == MULTICLASS else torch.float32
    ys = [torch.as_tensor(np.asarray(y), dtype=ydt) for y in (data.y_train, data.y_valid, data.y_test)]
    return (*(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for x in xs), *ys)


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
            if better(score, vloss, best):
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
        if chosen is None or better(score, vloss, best):
            best, chosen = (score, vloss), (model, lr, epoch)
    assert chosen is not None
    model, lr, epoch = chosen
    fit = time.perf_counter() - t0
    t1 = time.perf_counter()
    with torch.no_grad():
        test_p = probabilities(model(xte), pt)
        valid_p = probabilities(model(xva), pt)
    metrics = score_predictions(test_p, data.y_test, pt)
    predict = time.perf_counter() - t1
    hp = {"lr": lr, "epochs": epoch, "hidden_dim": cfg.hidden_dim, "dropout": cfg.dropout,
          "valid_by_lr": tried}
    return ProbeResult("mlp", metrics, score_predictions(valid_p, data.y_valid, pt), hp, fit, predict, False)
