"""Scoring backends and the autoencoder baseline on synthetic data."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from audiofm.asd.scoring import BACKENDS, make_backend


def _embeddings(seed: int = 0):
    """Normal clips around per-domain centres (many source, few target), anomalies off-manifold."""
    rng = np.random.default_rng(seed)
    d = 16
    c_src, c_tgt = rng.normal(size=d) * 3, rng.normal(size=d) * 3
    train = np.concatenate([c_src + 0.3 * rng.normal(size=(60, d)), c_tgt + 0.3 * rng.normal(size=(6, d))])
    domains = ["source"] * 60 + ["target"] * 6
    normal = np.concatenate([c_src + 0.3 * rng.normal(size=(20, d)), c_tgt + 0.3 * rng.normal(size=(20, d))])
    anomal = np.concatenate([c_src + 1.5 * rng.normal(size=(20, d)), c_tgt + 1.5 * rng.normal(size=(20, d))])
    test = np.concatenate([normal, anomal])
    y = np.r_[np.zeros(40), np.ones(40)]
    return train, domains, test, y


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_backend_separates_anomalies(name):
    train, domains, test, y = _embeddings()
    kw = {"n_centers": 4} if name == "knn-kmeans" else {}
    b = make_backend(name, **kw).fit(train, domains)
    s = b.score(test)
    assert s.shape == (80,) and np.all(np.isfinite(s))
    assert roc_auc_score(y, s) > 0.9
    tr = b.train_scores()
    assert tr.shape == (66,) and np.all(np.isfinite(tr))
    assert np.median(tr) < np.median(s[y == 1])  # leave-one-out training scores look normal


def test_knn_k_and_leave_one_out():
    x = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]])
    b = make_backend("knn", k=1).fit(x)
    assert np.allclose(b.score(x), 0.0, atol=1e-6)          # every clip finds itself
    assert b.train_scores()[2] > 0.5                          # not when left out
    b2 = make_backend("knn", k=2, per_domain=None).fit(x)    # None kwargs are dropped
    assert b2.k == 2
    with pytest.raises(KeyError, match="available"):
        make_backend("nope")


def test_per_domain_min_helps_the_few_target_clips():
    """A target normal clip far from the source mass: pooled mean-of-k distances punish it,
    the per-domain minimum does not."""
    train, domains, test, _ = _embeddings(1)
    pooled = make_backend("knn", k=10).fit(train, domains).score(test)
    per = make_backend("knn-domain", k=5).fit(train, domains).score(test)
    tgt_normal = slice(20, 40)
    assert per[tgt_normal].mean() < pooled[tgt_normal].mean()


def test_autoencoder_loss_falls_and_scores():
    from asd_synth import machine_clip

    from audiofm.asd.autoencoder import AEConfig, AEDetector

    rng = np.random.default_rng(0)
    train = [machine_clip(rng, 120.0, False) for _ in range(6)]
    test = [machine_clip(rng, 120.0, False) for _ in range(3)] + [machine_clip(rng, 120.0, True) for _ in range(3)]
    for mode in ("mse", "mahalanobis"):
        det = AEDetector(AEConfig(epochs=6, batch_size=64, mode=mode))
        hist = det.fit(train, ["source"] * 5 + ["target"])
        assert hist[-1] < 0.8 * hist[0]
        s = det.score(test)
        assert s.shape == (6,) and s[3:].mean() > s[:3].mean()
        assert det.train_scores().shape == (6,)
