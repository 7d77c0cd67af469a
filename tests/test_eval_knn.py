"""Exact kNN search: numpy and faiss paths against a brute-force float64 reference."""

from __future__ import annotations

import numpy as np
import pytest

from audiofm.eval.probes import _knn_scores, faiss_available, knn_search


def brute_force(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = queries.astype(np.float64) @ base.astype(np.float64).T
    idx = np.stack([np.lexsort((np.arange(len(base)), -row))[:k] for row in sims])
    return np.take_along_axis(sims, idx, 1), idx


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    base = unit(rng.standard_normal((700, 24)))
    base[100:110] = base[5]  # exact duplicates → ties broken by index
    queries = unit(rng.standard_normal((90, 24)))
    queries[:3] = base[5]
    return base, queries


@pytest.mark.parametrize("k", [1, 7, 50])
def test_numpy_matches_brute_force(data: tuple[np.ndarray, np.ndarray], k: int) -> None:
    base, queries = data
    s, i = knn_search(base, queries, k, backend="numpy", block=32)
    rs, ri = brute_force(base, queries, k)
    assert np.array_equal(i, ri)
    assert np.allclose(s, rs, atol=1e-12)
    assert list(i[0, :11]) == [5, *range(100, 110)][:k]  # the tied duplicates, in index order


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed")
@pytest.mark.parametrize("k", [1, 10, 50])
def test_faiss_path_equals_numpy_path(data: tuple[np.ndarray, np.ndarray], k: int) -> None:
    base, queries = data
    sn, in_ = knn_search(base, queries, k, backend="numpy")
    sf, if_ = knn_search(base, queries, k, backend="faiss")
    assert np.array_equal(in_, if_)
    assert np.array_equal(sn, sf)


def test_k_equal_to_base_size_and_errors(data: tuple[np.ndarray, np.ndarray]) -> None:
    base, queries = data
    small = base[:20]
    _s, i = knn_search(small, queries, 20, backend="numpy")
    assert np.array_equal(i, brute_force(small, queries, 20)[1])
    with pytest.raises(ValueError, match="k must be"):
        knn_search(small, queries, 21)
    with pytest.raises(ValueError, match="backend"):
        knn_search(small, queries, 1, backend="annoy")


def test_weighted_vote() -> None:
    sims = np.asarray([[0.9, 0.87, 0.87]])
    idx = np.asarray([[0, 1, 2]])
    y = np.eye(2)[[0, 1, 1]]
    # k=1: only the nearest votes; k=3: two slightly farther neighbours outvote it
    assert _knn_scores(sims, idx, 1, y, 0.07).argmax() == 0
    assert _knn_scores(sims, idx, 3, y, 0.07).argmax() == 1
    # a very low temperature makes the nearest neighbour dominate
    assert _knn_scores(sims, idx, 3, y, 0.01).argmax() == 0
    assert np.allclose(_knn_scores(sims, idx, 3, y, 0.07).sum(), 1.0)
