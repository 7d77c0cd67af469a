"""Probes on synthetic Gaussian clusters (known Bayes accuracy) and metrics against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score

from audiofm.eval.metrics import d_prime, fast_average_precision, mean_average_precision, score_predictions
from audiofm.eval.probes import (
    KNNProbeConfig,
    LinearProbeConfig,
    MLPProbeConfig,
    ProbeConfig,
    ProbeData,
    knn_probe,
    linear_probe,
    mlp_probe,
    run_probe,
    standardize,
)
from audiofm.eval.suite import limit_threads


@pytest.fixture(autouse=True)
def _one_thread():
    with limit_threads(1):
        yield


MEANS = 1.2 * np.asarray([[1, 0], [-1, 0], [0, 1], [0, -1]], dtype=np.float64)  # 4 classes in 2 dims


def clusters(n: int, seed: int, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Unit-variance Gaussians around MEANS (first 2 dims), pure noise in the rest, offset and scaled
    dims to exercise standardisation."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(MEANS), n)
    x = rng.standard_normal((n, dim))
    x[:, :2] += MEANS[y]
    x = x * np.linspace(1, 20, dim) + 50.0
    return x.astype(np.float32), y


def bayes_accuracy(x: np.ndarray, y: np.ndarray, dim: int = 8) -> float:
    z = (x - 50.0) / np.linspace(1, 20, dim)
    d2 = ((z[:, None, :2] - MEANS[None]) ** 2).sum(-1)
    return float(np.mean(d2.argmin(1) == y))


@pytest.fixture(scope="module")
def gauss() -> ProbeData:
    (xtr, ytr), (xva, yva), (xte, yte) = clusters(1500, 0), clusters(500, 1), clusters(3000, 2)
    return ProbeData(xtr, ytr, xva, yva, xte, yte, "multiclass", 4)


def test_linear_reaches_bayes(gauss: ProbeData) -> None:
    bayes = bayes_accuracy(gauss.x_test, gauss.y_test)
    res = linear_probe(gauss)
    assert 0.6 < bayes < 0.8  # a non-trivial problem
    assert res.metrics["top1_acc"] == pytest.approx(bayes, abs=0.02)
    assert res.deterministic and res.hparams["C"] in LinearProbeConfig().c_grid
    assert set(res.hparams["valid_by_C"]) == {f"{c:g}" for c in LinearProbeConfig().c_grid}
    again = linear_probe(gauss)
    assert again.metrics == res.metrics and again.hparams["C"] == res.hparams["C"]


def test_linear_matches_sklearn_at_fixed_c(gauss: ProbeData) -> None:
    xtr, xte = standardize(gauss.x_train, gauss.x_test)
    for c in (0.01, 1.0):
        ours = linear_probe(gauss, LinearProbeConfig(c_grid=(c,), tol=1e-6, max_iter=500))
        ref = LogisticRegression(C=c, max_iter=2000, tol=1e-8).fit(xtr, gauss.y_train)
        assert ours.metrics["top1_acc"] == pytest.approx(ref.score(xte, gauss.y_test), abs=0.005)


def test_mlp_reaches_bayes_and_seeds(gauss: ProbeData) -> None:
    cfg = MLPProbeConfig(hidden_dim=64, max_epochs=150, patience=20, batch_size=256, lr_grid=(3e-3,))
    bayes = bayes_accuracy(gauss.x_test, gauss.y_test)
    a = mlp_probe(gauss, cfg, seed=0)
    assert a.metrics["top1_acc"] == pytest.approx(bayes, abs=0.03)
    assert not a.deterministic and 1 <= a.hparams["epochs"] <= cfg.max_epochs
    assert mlp_probe(gauss, cfg, seed=0).metrics == a.metrics  # same seed → same result
    b = mlp_probe(gauss, cfg, seed=1)
    assert b.hparams["epochs"] != a.hparams["epochs"] or b.metrics != a.metrics


def test_knn_near_bayes_and_k_choice(gauss: ProbeData) -> None:
    res = knn_probe(gauss)
    bayes = bayes_accuracy(gauss.x_test, gauss.y_test)
    assert res.metrics["top1_acc"] > bayes - 0.06
    assert res.hparams["k"] in KNNProbeConfig().k_grid and res.hparams["k"] > 1  # noisy classes → large k
    assert res.hparams["backend"] in ("numpy", "faiss")


def test_standardize_uses_train_statistics_only() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(5, 2, (100, 3)).astype(np.float32)
    test = rng.normal(-7, 9, (50, 3)).astype(np.float32)
    train[:, 2] = 3.0  # constant dim: centred, not divided by 0
    ztr, zte = standardize(train, test)
    assert np.allclose(ztr[:, :2].mean(0), 0, atol=1e-5) and np.allclose(ztr[:, :2].std(0), 1, atol=1e-4)
    expect = (test[:, 0] - train[:, 0].mean()) / train[:, 0].std()
    assert np.allclose(zte[:, 0], expect, atol=1e-4)
    assert np.all(ztr[:, 2] == 0) and np.all(np.isfinite(zte))


def multilabel_data(n: int, seed: int, c: int = 5, dim: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.3).astype(np.float32)
    y[y.sum(1) == 0, 0] = 1
    mu = np.random.default_rng(99).standard_normal((c, dim)) * 1.5
    return (y @ mu + rng.standard_normal((n, dim))).astype(np.float32), y


def test_multilabel_probes() -> None:
    (xtr, ytr), (xva, yva), (xte, yte) = (multilabel_data(600, s) for s in (0, 1, 2))
    data = ProbeData(xtr, ytr, xva, yva, xte, yte, "multilabel", 5)
    cfg = ProbeConfig(mlp=MLPProbeConfig(hidden_dim=64, max_epochs=60, batch_size=256, lr_grid=(3e-3,)))
    for probe in ("linear", "mlp", "knn"):
        res = run_probe(probe, data, cfg, seed=0)
        assert set(res.metrics) == {"mAP", "d_prime"}
        assert res.metrics["mAP"] > 0.8, probe
        assert res.metrics["d_prime"] > 1.5, probe


def test_multilabel_metrics_against_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((200, 6)) < 0.3).astype(np.float32)
    scores = y * 0.6 + rng.random((200, 6))
    assert mean_average_precision(scores, y) == pytest.approx(average_precision_score(y, scores, average="macro"))
    aucs = roc_auc_score(y, scores, average=None)
    assert d_prime(scores, y) == pytest.approx(float(np.mean(np.sqrt(2) * norm.ppf(aucs))))
    # classes without positives are left out of mAP, not counted as 0
    y2 = y.copy()
    y2[:, 5] = 0
    ref = np.mean([average_precision_score(y2[:, c], scores[:, c]) for c in range(5)])
    assert mean_average_precision(scores, y2) == pytest.approx(ref)
    # the fast AP used for early stopping agrees when there are no ties
    assert fast_average_precision(scores, y) == pytest.approx(mean_average_precision(scores, y), abs=1e-9)
    # perfect separation gives a finite d'
    assert np.isfinite(d_prime(y * 2.0 + 0.1 * rng.random(y.shape), y))
    acc = score_predictions(np.eye(3)[[0, 1, 2, 2]], np.asarray([0, 1, 1, 2]), "multiclass")
    assert acc == {"top1_acc": 0.75}
