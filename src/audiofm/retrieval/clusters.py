"""Pseudo-classes from caption embeddings: the clustering auxiliary task of arXiv 2509.16649.

Caption embeddings (from the text tower, an ``(N, D)`` array) are L2-normalised and clustered by
k-means (scikit-learn, ``n_init`` = 10, seeded) or agglomeratively (Ward, through
:func:`audiofm.asd.pseudo.cluster_embeddings`). With ``n_clusters="auto"`` the count is the one
with the highest mean silhouette over ``k = 2 .. max_clusters``, and one cluster when even that is
below ``min_silhouette`` — the rule of :mod:`audiofm.asd.pseudo` (:func:`~audiofm.asd.pseudo.choose_count`),
shared, not copied. Each clip then gets one pseudo-class, the majority over its captions
(:func:`clip_labels`; ties go to the smallest label).

Cost: k-means is linear in N; Ward needs the full linkage (O(N²) memory, ~1.5 GB at 20 000
captions), so use k-means for a whole Clotho development split. Silhouettes are computed on a
seeded subset of ``silhouette_sample`` points when N is larger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..asd.pseudo import MIN_SILHOUETTE, _prepare, choose_count, cluster_embeddings
from ..data.manifest import Row

METHODS = ("kmeans", "agglomerative")
KMEANS_N_INIT = 10


@dataclass
class ClusterResult:
    """labels (N,) in 0..n_clusters-1; silhouette of the result (nan for one cluster); the
    silhouette of every count tried; how the count was chosen; k-means inertia (None otherwise)."""

    labels: np.ndarray
    n_clusters: int
    method: str
    silhouette: float
    silhouettes: dict[int, float] = field(default_factory=dict)
    criterion: str = "given"
    inertia: float | None = None


def _kmeans(z: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, float]:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=KMEANS_N_INIT, random_state=seed).fit(z)
    return km.labels_.astype(np.int64), float(km.inertia_)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered by first appearance (so equal partitions give equal arrays)."""
    _, first, inv = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inv].astype(np.int64)


def _silhouette(z: np.ndarray, labels: np.ndarray, sample: int | None, seed: int) -> float:
    from sklearn.metrics import silhouette_score

    k = len(np.unique(labels))
    if k < 2 or k >= len(z):
        return float("nan")
    size = sample if sample is not None and sample < len(z) else None
    return float(silhouette_score(z, labels, metric="euclidean", sample_size=size, random_state=seed))


def cluster_captions(embeddings: np.ndarray, n_clusters: int | Literal["auto"] = "auto",
                     method: Literal["kmeans", "agglomerative"] = "kmeans", seed: int = 0, *,
                     max_clusters: int = 16, normalize: bool = True, min_silhouette: float = MIN_SILHOUETTE,
                     silhouette_sample: int | None = 5000) -> ClusterResult:
    """Cluster caption embeddings ``(N, D)`` into pseudo-classes (see module)."""
    if method not in METHODS:
        raise ValueError(f"unknown clustering method {method!r}; choose one of {', '.join(METHODS)}")
    if n_clusters != "auto" and (not isinstance(n_clusters, int | np.integer) or isinstance(n_clusters, bool)):
        raise ValueError(f"n_clusters must be a positive int or 'auto', got {n_clusters!r}")
    z = _prepare(embeddings, normalize)
    n = len(z)
    if n == 0:
        raise ValueError("no embeddings to cluster")
    if n_clusters != "auto" and not 1 <= int(n_clusters) <= n:
        raise ValueError(f"n_clusters must be in 1..{n} (the number of captions), got {n_clusters}")
    inertia: float | None = None
    if method == "agglomerative":
        cl = cluster_embeddings(z, "ward", max_clusters, normalize=False, min_silhouette=min_silhouette,
                                n_clusters=None if n_clusters == "auto" else int(n_clusters),
                                sample_size=silhouette_sample, seed=seed)
        labels, count, sils, criterion = cl.labels, cl.n_clusters, cl.silhouettes, cl.criterion
    elif n_clusters != "auto":
        labels, inertia = _kmeans(z, int(n_clusters), seed)
        count, sils, criterion = int(n_clusters), {}, "given"
    else:
        fits = {k: _kmeans(z, k, seed) for k in range(2, min(max_clusters, n - 1) + 1)}
        cl = choose_count(z, {k: lab for k, (lab, _) in fits.items()}, min_silhouette, silhouette_sample, seed)
        labels, count, sils = cl.labels, cl.n_clusters, cl.silhouettes
        criterion = cl.criterion
        inertia = fits[count][1] if count in fits else float(np.square(z - z.mean(0)).sum())
    labels = _relabel(np.asarray(labels))
    sil = sils.get(count, float("nan")) if sils else _silhouette(z, labels, silhouette_sample, seed)
    return ClusterResult(labels=labels, n_clusters=int(count), method=method, silhouette=float(sil),
                         silhouettes=dict(sils), criterion=criterion, inertia=inertia)


def clip_labels(caption_labels: Sequence[int] | np.ndarray, caption_clip_index: Sequence[int] | np.ndarray,
                n_clips: int | None = None) -> np.ndarray:
    """One pseudo-class per clip: the most frequent label among its captions, ties to the
    smallest label; ``-1`` for a clip without captions. ``n_clips`` defaults to max index + 1."""
    lab = np.asarray(caption_labels, dtype=np.int64)
    idx = np.asarray(caption_clip_index, dtype=np.int64)
    if lab.shape != idx.shape or lab.ndim != 1:
        raise ValueError(f"caption_labels {lab.shape} and caption_clip_index {idx.shape} must be 1-D and equal")
    if lab.size and (lab.min() < 0 or idx.min() < 0):
        raise ValueError("labels and clip indices must be >= 0")
    m = int(idx.max()) + 1 if idx.size else 0
    n = m if n_clips is None else int(n_clips)
    if n < m:
        raise ValueError(f"clip index {m - 1} is out of range for n_clips={n}")
    k = int(lab.max()) + 1 if lab.size else 1
    votes = np.zeros((n, k), dtype=np.int64)
    np.add.at(votes, (idx, lab), 1)
    out = votes.argmax(axis=1)               # argmax returns the first (smallest) label of a tie
    out[votes.sum(axis=1) == 0] = -1
    return out.astype(np.int64)


def caption_index(rows: Sequence[Row]) -> tuple[list[str], np.ndarray]:
    """Every caption of ``rows`` in order, and the index of its clip (for :func:`clip_labels`)."""
    texts = [c for r in rows for c in r.captions]
    index = np.array([i for i, r in enumerate(rows) for _ in r.captions], dtype=np.int64)
    return texts, index
