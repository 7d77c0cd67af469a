"""Caption clustering into pseudo-classes (audiofm.retrieval.clusters)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from audiofm.data.manifest import Row
from audiofm.retrieval.clusters import caption_index, clip_labels, cluster_captions


def blobs(k: int, per: int = 12, dim: int = 16, spread: float = 0.03, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.repeat(np.arange(k), per)
    x = centres[truth] + spread * rng.standard_normal((k * per, dim))
    order = rng.permutation(len(x))
    return x[order].astype(np.float32), truth[order]


@pytest.mark.parametrize("method", ["kmeans", "agglomerative"])
@pytest.mark.parametrize("k", [3, 5])
def test_recovers_separated_clusters_given_and_auto(method: str, k: int) -> None:
    x, truth = blobs(k, seed=k)
    given = cluster_captions(x, k, method, seed=0)
    assert given.n_clusters == k and given.method == method
    assert adjusted_rand_score(truth, given.labels) == 1.0
    assert given.silhouette > 0.8
    auto = cluster_captions(x, "auto", method, seed=0, max_clusters=8)
    assert auto.n_clusters == k, auto.silhouettes
    assert adjusted_rand_score(truth, auto.labels) == 1.0
    assert set(auto.silhouettes) == set(range(2, 9))
    assert auto.silhouette == pytest.approx(max(auto.silhouettes.values()))
    assert (auto.inertia is not None) == (method == "kmeans")


def test_deterministic_per_seed_and_labels_in_range() -> None:
    x, _ = blobs(4, spread=0.3, seed=1)
    a = cluster_captions(x, 4, "kmeans", seed=3)
    b = cluster_captions(x, 4, "kmeans", seed=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.labels.dtype == np.int64 and set(a.labels.tolist()) == set(range(4))
    assert a.labels[0] == 0                     # labels numbered by first appearance


def test_auto_gives_one_cluster_without_structure() -> None:
    x = np.random.default_rng(0).standard_normal((60, 32))
    for method in ("kmeans", "agglomerative"):
        r = cluster_captions(x, "auto", method, seed=0, max_clusters=6)
        assert r.n_clusters == 1 and np.all(r.labels == 0)
        assert "silhouette" in r.criterion and np.isnan(r.silhouette)


def test_bad_arguments() -> None:
    x, _ = blobs(2)
    with pytest.raises(ValueError, match="method"):
        cluster_captions(x, 2, "spectral")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_clusters"):
        cluster_captions(x, 0)
    with pytest.raises(ValueError, match="n_clusters"):
        cluster_captions(x, "many")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        cluster_captions(np.full((4, 3), np.nan))


def test_clip_labels_majority_and_ties() -> None:
    labels = [2, 2, 1, 3, 1, 1, 0, 4, 4, 0]
    clips = [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    # clip 0: 2,2,1 → 2; clip 1: 3,1,1 → 1; clip 2: 0,4 tie → 0; clip 3: 4,0 tie → 0; clip 4: none → -1
    np.testing.assert_array_equal(clip_labels(labels, clips, n_clips=5), [2, 1, 0, 0, -1])
    np.testing.assert_array_equal(clip_labels(labels, clips), [2, 1, 0, 0])
    with pytest.raises(ValueError, match="out of range"):
        clip_labels(labels, clips, n_clips=2)
    with pytest.raises(ValueError, match="equal"):
        clip_labels([0, 1], [0])


def test_caption_index_pairs_with_clip_labels() -> None:
    rows = [Row(path="a.wav", captions=["x", "y"]), Row(path="b.wav", captions=["z"]), Row(path="c.wav")]
    texts, idx = caption_index(rows)
    assert texts == ["x", "y", "z"] and idx.tolist() == [0, 0, 1]
    assert clip_labels([1, 1, 0], idx, n_clips=len(rows)).tolist() == [1, 0, -1]
