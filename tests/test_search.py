"""Exact nearest-neighbour search: numpy and faiss paths against a brute-force float64 reference,
for every metric; leave-one-out; the Index (add / search / save / load); the kNN vote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audiofm.eval.knn import knn_scores
from audiofm.search import Index, faiss_available, knn_search

needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss not installed")


def brute_force(queries: np.ndarray, keys: np.ndarray, k: int, metric: str = "ip",
                exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    q, b = queries.astype(np.float64), keys.astype(np.float64)
    if metric == "cosine":
        q = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32).astype(np.float64)
        b = (keys / np.linalg.norm(keys, axis=1, keepdims=True)).astype(np.float32).astype(np.float64)
    sims = -((q[:, None, :] - b[None]) ** 2).sum(-1) if metric == "l2" else q @ b.T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    idx = np.stack([np.lexsort((np.arange(len(b)), -row))[:k] for row in sims])
    return np.take_along_axis(sims, idx, 1), idx


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    keys = unit(rng.standard_normal((700, 24)))
    keys[100:110] = keys[5]  # exact duplicates → ties broken by index
    queries = unit(rng.standard_normal((90, 24)))
    queries[:3] = keys[5]
    return keys, queries


@pytest.mark.parametrize("k", [1, 7, 50])
def test_numpy_matches_brute_force(data: tuple[np.ndarray, np.ndarray], k: int) -> None:
    keys, queries = data
    s, i = knn_search(queries, keys, k, metric="ip", backend="numpy", block=32)
    rs, ri = brute_force(queries, keys, k)
    assert np.array_equal(i, ri)
    assert np.allclose(s, rs, atol=1e-12)
    assert list(i[0, :11]) == [5, *range(100, 110)][:k]  # the tied duplicates, in index order


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_every_metric_matches_brute_force_on_unnormalised_vectors(metric: str) -> None:
    rng = np.random.default_rng(1)
    keys = (rng.standard_normal((400, 16)) * rng.uniform(0.5, 3.0, (400, 1))).astype(np.float32)
    keys[50:55] = keys[7]
    queries = (rng.standard_normal((40, 16)) * 2).astype(np.float32)
    queries[0] = keys[7]
    s, i = knn_search(queries, keys, 10, metric=metric, backend="numpy")
    rs, ri = brute_force(queries, keys, 10, metric)
    assert np.array_equal(i, ri), metric
    assert np.allclose(s, rs, atol=1e-9)
    if metric == "l2":
        assert s[0, 0] == 0.0 and list(i[0, :6]) == [7, 50, 51, 52, 53, 54]  # distance 0, ties by index


@pytest.mark.parametrize("backend", ["numpy", pytest.param("faiss", marks=needs_faiss)])
def test_exclude_self_is_leave_one_out(data: tuple[np.ndarray, np.ndarray], backend: str) -> None:
    keys, _ = data
    s, i = knn_search(keys, keys, 5, metric="cosine", backend=backend, exclude_self=True)
    rs, ri = brute_force(keys, keys, 5, "cosine", exclude_self=True)
    assert np.array_equal(i, ri) and not np.any(i == np.arange(len(keys))[:, None])
    assert np.allclose(s, rs, atol=1e-12)
    assert list(i[5]) == [100, 101, 102, 103, 104]  # its duplicates, not itself
    with pytest.raises(ValueError, match="queries to be the keys"):
        knn_search(keys[:3], keys, 1, exclude_self=True)


@needs_faiss
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("k", [1, 10, 50])
def test_faiss_path_equals_numpy_path(data: tuple[np.ndarray, np.ndarray], metric: str, k: int) -> None:
    keys, queries = data
    rng = np.random.default_rng(2)
    scaled = keys * rng.uniform(0.5, 2.0, (len(keys), 1)).astype(np.float32)
    sn, in_ = knn_search(queries, scaled, k, metric=metric, backend="numpy")
    sf, if_ = knn_search(queries, scaled, k, metric=metric, backend="faiss")
    assert np.array_equal(in_, if_)
    assert np.array_equal(sn, sf)


def test_k_equal_to_key_count_and_errors(data: tuple[np.ndarray, np.ndarray]) -> None:
    keys, queries = data
    small = keys[:20]
    _s, i = knn_search(queries, small, 20, metric="ip", backend="numpy")
    assert np.array_equal(i, brute_force(queries, small, 20)[1])
    with pytest.raises(ValueError, match="k must be"):
        knn_search(queries, small, 21)
    with pytest.raises(ValueError, match="backend"):
        knn_search(queries, small, 1, backend="annoy")
    with pytest.raises(ValueError, match="metric"):
        knn_search(queries, small, 1, metric="manhattan")
    with pytest.raises(ValueError, match="dims"):
        knn_search(queries[:, :5], small, 1)


@pytest.mark.parametrize("backend", ["numpy", pytest.param("faiss", marks=needs_faiss)])
def test_index_add_search_save_load(data: tuple[np.ndarray, np.ndarray], backend: str, tmp_path: Path) -> None:
    keys, queries = data
    ids = np.asarray([f"clip{i:04d}" for i in range(len(keys))])
    index = Index(24, metric="cosine", backend=backend)
    index.add(keys[:300], ids[:300])
    index.add(keys[300:], ids[300:])  # growing: the second batch is searched too
    assert len(index) == len(keys)
    s, got = index.search(queries, 7)
    rs, ri = knn_search(queries, keys, 7, backend="numpy")
    assert np.array_equal(got, ids[ri]) and np.array_equal(s, rs)
    path = index.save(tmp_path / "index.npz")
    assert not [p for p in tmp_path.iterdir() if p.name != "index.npz"]  # atomic: no temporary left
    again = Index.load(path)
    assert again.metric == "cosine" and again.dim == 24 and len(again) == len(keys)
    s2, got2 = again.search(queries, 7)
    assert np.array_equal(got2, got) and np.array_equal(s2, s)
    numbered = Index(24, metric="l2", backend="numpy")
    numbered.add(keys)
    assert np.array_equal(numbered.search(keys[:4], 1)[1][:, 0], np.arange(4))  # default ids: positions
    with pytest.raises(ValueError, match="24-d"):
        index.add(keys[:, :10])
    with pytest.raises(ValueError, match="do not match"):
        index.add(keys[:2], [1, 2])  # numbers into an index of string ids
    empty = Index.load(Index(3).save(tmp_path / "empty.npz"))
    assert len(empty) == 0 and empty.vectors.shape == (0, 3)


def test_weighted_vote() -> None:
    sims = np.asarray([[0.9, 0.87, 0.87]])
    idx = np.asarray([[0, 1, 2]])
    y = np.eye(2)[[0, 1, 1]]
    # k=1: only the nearest votes; k=3: two slightly farther neighbours outvote it
    assert knn_scores(sims, idx, 1, y, 0.07).argmax() == 0
    assert knn_scores(sims, idx, 3, y, 0.07).argmax() == 1
    # a very low temperature makes the nearest neighbour dominate
    assert knn_scores(sims, idx, 3, y, 0.01).argmax() == 0
    assert np.allclose(knn_scores(sims, idx, 3, y, 0.07).sum(), 1.0)
