"""The one logistic-regression solver against scikit-learn (softmax and one-vs-rest), warm starts."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from audiofm.eval.linear import LogisticFit, fit_logistic


def blobs(n: int = 300, d: int = 6, c: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    x = rng.standard_normal((n, d)) + 1.5 * np.eye(c, d)[y]
    return x.astype(np.float32), y


@pytest.mark.parametrize("c", [0.01, 1.0, 100.0])
def test_softmax_matches_sklearn(c: float) -> None:
    x, y = blobs()
    fit = fit_logistic(x, np.eye(3, dtype=np.float32)[y], c, multiclass=True)
    ref = LogisticRegression(C=c, tol=1e-10, max_iter=10000).fit(x.astype(np.float64), y)
    # softmax is invariant to a per-feature shift of all classes; the L2 penalty picks the
    # zero-mean one in both solvers, so the parameters themselves agree
    assert fit.weight.shape == (3, 6) and fit.bias.shape == (3,)
    assert np.allclose(fit.weight, ref.coef_, atol=2e-4)
    assert np.allclose(fit.bias - fit.bias.mean(), ref.intercept_ - ref.intercept_.mean(), atol=2e-4)
    assert np.array_equal(fit.logits(x).argmax(1), ref.decision_function(x).argmax(1))


def test_one_vs_rest_matches_binary_sklearn_per_class() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 5)).astype(np.float32)
    y = (x[:, :3] + 0.5 * rng.standard_normal((400, 3)) > 0.3).astype(np.float32)  # 3 labels, multi-hot
    fit = fit_logistic(x, y, 0.5, multiclass=False)
    for j in range(3):
        ref = LogisticRegression(C=0.5, tol=1e-10, max_iter=10000).fit(x.astype(np.float64), y[:, j])
        assert np.allclose(fit.weight[j], ref.coef_[0], atol=2e-4)
        assert fit.bias[j] == pytest.approx(ref.intercept_[0], abs=2e-4)


def test_warm_start_and_errors() -> None:
    x, y = blobs(seed=2)
    onehot = np.eye(3, dtype=np.float32)[y]
    cold = fit_logistic(x, onehot, 1.0, True)
    warm = fit_logistic(x, onehot, 1.0, True, init=cold)
    assert warm.n_iter <= 2 < cold.n_iter  # starting at the optimum
    assert np.allclose(warm.weight, cold.weight, atol=1e-6)
    bigger_c = fit_logistic(x, onehot, 10.0, True, init=cold)
    assert np.abs(bigger_c.weight).sum() > np.abs(cold.weight).sum()  # weaker penalty, larger weights
    with pytest.raises(ValueError, match="init has weight"):
        fit_logistic(x, onehot, 1.0, True, init=LogisticFit(np.zeros((2, 6)), np.zeros(2), 0))
    with pytest.raises(ValueError, match="c must be"):
        fit_logistic(x, onehot, 0.0, True)
    with pytest.raises(ValueError, match="need x"):
        fit_logistic(x, onehot[:10], 1.0, True)
