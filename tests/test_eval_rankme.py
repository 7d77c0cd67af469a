"""RankMe and collapse diagnostics."""

from __future__ import annotations

import numpy as np
import pytest

from audiofm.eval.rankme import embedding_health, mean_pairwise_cosine, rankme


def test_rankme_bounds_and_known_cases() -> None:
    rng = np.random.default_rng(0)
    iso = rng.standard_normal((4000, 16))
    assert 15.0 < rankme(iso) <= 16.0  # isotropic → close to full rank
    rank1 = np.outer(rng.standard_normal(500), rng.standard_normal(16))
    assert rankme(rank1) == pytest.approx(1.0, abs=1e-3)
    # two equal singular values → effective rank 2 (entropy of (½, ½))
    two = np.zeros((10, 5))
    two[0, 0] = two[1, 1] = 3.0
    assert rankme(two) == pytest.approx(2.0, abs=1e-5)
    # definition: exp(entropy of σ / ‖σ‖₁ + ε)
    z = rng.standard_normal((50, 8)) * np.arange(1, 9)
    s = np.linalg.svd(z, compute_uv=False)
    p = s / s.sum() + 1e-7
    assert rankme(z) == pytest.approx(np.exp(-(p * np.log(p)).sum()))


def test_mean_pairwise_cosine_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    z = rng.standard_normal((60, 7)) + 0.5
    u = z / np.linalg.norm(z, axis=1, keepdims=True)
    sims = u @ u.T
    ref = (sims.sum() - np.trace(sims)) / (60 * 59)
    assert mean_pairwise_cosine(z) == pytest.approx(ref)


def test_collapse_signals() -> None:
    rng = np.random.default_rng(2)
    healthy = embedding_health(rng.standard_normal((300, 32)))
    assert healthy.dead_dim_frac == 0 and abs(healthy.mean_cosine) < 0.05 and healthy.rankme > 25
    collapsed = np.tile(rng.standard_normal(32), (300, 1)) + 1e-6 * rng.standard_normal((300, 32))
    collapsed[:, :16] = 1.0  # half the dims carry no variance at all
    h = embedding_health(collapsed)
    assert h.mean_cosine > 0.99 and h.rankme < 2 and h.dead_dim_frac >= 0.5
    assert h.as_dict()["n"] == 300
