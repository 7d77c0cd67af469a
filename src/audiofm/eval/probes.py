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
  :func:`audiofm.search.knn_search`); votes weighted by ``exp(sim / temperature)``; ``k``
  chosen on validation. Multilabel: weighted average of the neighbours' label vectors.
  Deterministic.

Modules: :mod:`.probe_base` (settings, data, result), :mod:`.linear` (the logistic-regression
solver), :mod:`.mlp`, :mod:`.knn`; this one dispatches by name.
"""

from __future__ import annotations

from .knn import faiss_available, knn_probe, knn_scores, knn_search
from .linear import LogisticFit, fit_logistic, linear_probe
from .mlp import mlp_probe
from .probe_base import (
    KNNProbeConfig,
    LinearProbeConfig,
    MLPProbeConfig,
    ProbeConfig,
    ProbeData,
    ProbeResult,
    better,
    probabilities,
    standardize,
)
from .registry import DETERMINISTIC_PROBES, PROBES

__all__ = ["DETERMINISTIC_PROBES", "PROBES", "KNNProbeConfig", "LinearProbeConfig", "LogisticFit", "MLPProbeConfig",
           "ProbeConfig", "ProbeData", "ProbeResult", "better", "faiss_available", "fit_logistic", "knn_probe",
           "knn_scores", "knn_search", "linear_probe", "mlp_probe", "probabilities", "run_probe", "standardize"]


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
