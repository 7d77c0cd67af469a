"""Pseudo-attribute labels for anomalous sound detection: agglomerative clustering of embeddings.

Per machine type, the training clips' embeddings are clustered (Ward linkage on L2-normalised
embeddings by default; any scipy linkage may be asked for), pooled or per domain, and each clip
gets the label ``<machine>/<cluster>``. Where the clips carry real attributes (file names or
``attributes_XX.csv``), those are used instead unless ``use_attributes=False``; where both exist,
:func:`attribute_agreement` says how well the clusters recover them.

Number of clusters: the cut of the one dendrogram with the highest **mean silhouette** over
``k = 2 .. max_clusters`` (Rousseeuw 1987), computed in the space the linkage used. If even the
best silhouette is below ``min_silhouette`` (0.25: Kaufman & Rousseeuw's "no substantial
structure" bound), the clips form one cluster. Silhouette is scale-free and compares within- to
between-cluster distances, so the same rule serves every machine type with no hand tuning;
unlike a distance-gap rule it does not depend on the absolute merge heights, which change with
the encoder and the embedding dimension.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..data.dcase import dcase_clip
from ..data.manifest import Row

LINKAGES = ("ward", "average", "complete", "single", "centroid", "median", "weighted")
MIN_SILHOUETTE = 0.25


@dataclass
class Clustering:
    """One clustering: ``labels`` (N,) in 0..n_clusters-1, and the silhouette of every k tried."""

    labels: np.ndarray
    n_clusters: int
    silhouettes: dict[int, float] = field(default_factory=dict)
    criterion: str = "silhouette"


def _prepare(x: np.ndarray, normalize: bool) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"embeddings must be a finite (N, D) array, got shape {x.shape}")
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def choose_count(z: np.ndarray, cuts: dict[int, np.ndarray], min_silhouette: float = MIN_SILHOUETTE,
                 sample_size: int | None = None, seed: int = 0) -> Clustering:
    """The labelling among ``cuts`` (count → labels of ``z``) with the highest mean silhouette, or
    one cluster when even that is below ``min_silhouette`` (the rule of this module's docstring;
    also used by :mod:`audiofm.retrieval.clusters`). ``sample_size``: silhouettes on a seeded
    subset of that many points (None = all)."""
    from sklearn.metrics import silhouette_score

    n = len(z)
    sample = sample_size if sample_size is not None and sample_size < n else None
    sil = {k: float(silhouette_score(z, lab, metric="euclidean", sample_size=sample, random_state=seed))
           for k, lab in cuts.items()}
    if not sil:
        return Clustering(labels=np.zeros(n, dtype=np.int64), n_clusters=1, criterion="no split")
    best = max(sil, key=lambda k: (sil[k], -k))
    if sil[best] < min_silhouette:
        return Clustering(labels=np.zeros(n, dtype=np.int64), n_clusters=1, silhouettes=sil,
                          criterion=f"best silhouette {sil[best]:.3f} < {min_silhouette}")
    return Clustering(labels=cuts[best].astype(np.int64), n_clusters=best, silhouettes=sil)


def cluster_embeddings(x: np.ndarray, linkage: str = "ward", max_clusters: int = 16, normalize: bool = True,
                       min_silhouette: float = MIN_SILHOUETTE, n_clusters: int | None = None,
                       sample_size: int | None = None, seed: int = 0) -> Clustering:
    """Agglomerative clustering with the number of clusters chosen by mean silhouette (see module),
    or cut at ``n_clusters`` when given."""
    from scipy.cluster.hierarchy import fcluster
    from scipy.cluster.hierarchy import linkage as build

    if linkage not in LINKAGES:
        raise ValueError(f"unknown linkage {linkage!r}; choose one of {', '.join(LINKAGES)}")
    z = _prepare(x, normalize)
    n = len(z)
    if n_clusters is not None:
        if not 1 <= n_clusters <= n:
            raise ValueError(f"n_clusters must be in 1..{n} (the number of points), got {n_clusters}")
        if n_clusters == 1:
            return Clustering(labels=np.zeros(n, dtype=np.int64), n_clusters=1, criterion="given")
        lab = fcluster(build(z, method=linkage, metric="euclidean"), t=n_clusters, criterion="maxclust") - 1
        return Clustering(labels=lab.astype(np.int64), n_clusters=int(lab.max()) + 1, criterion="given")
    if n < 3 or max_clusters < 2:
        return Clustering(labels=np.zeros(n, dtype=np.int64), n_clusters=1, criterion="too few clips")
    tree = build(z, method=linkage, metric="euclidean")
    cuts: dict[int, np.ndarray] = {}
    for k in range(2, min(max_clusters, n - 1) + 1):
        lab = fcluster(tree, t=k, criterion="maxclust") - 1
        got = int(lab.max()) + 1
        if got < 2 or got in cuts:       # ties in merge heights can skip a count
            continue
        cuts[got] = lab
    return choose_count(z, cuts, min_silhouette, sample_size, seed)


def attribute_agreement(true_labels: Sequence[str], cluster_labels: Sequence[int] | Sequence[str]) -> dict[str, float]:
    """Adjusted Rand index and normalised mutual information (scikit-learn) of clusters vs attributes."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    if len(true_labels) != len(cluster_labels):
        raise ValueError(f"{len(true_labels)} attribute labels but {len(cluster_labels)} cluster labels")
    t, c = list(true_labels), [str(v) for v in cluster_labels]
    return {"ari": float(adjusted_rand_score(t, c)), "nmi": float(normalized_mutual_info_score(t, c))}


def attribute_label(row: Row) -> str:
    """A clip's real attributes as one label (``k=v`` joined by ``;``); "" when hidden or absent."""
    clip = dcase_clip(row)
    if clip.attributes_hidden:
        return ""
    return ";".join(f"{k}={v}" for k, v in sorted(clip.attributes.items()))


@dataclass
class PseudoLabels:
    """Per-row labels ``<machine>/<label>`` and, per machine type, where they came from."""

    labels: list[str]
    source: dict[str, str]                     # machine → "attributes" | "clusters"
    clusterings: dict[str, Clustering] = field(default_factory=dict)   # key machine or machine/domain
    agreement: dict[str, dict[str, float]] = field(default_factory=dict)  # machine → {"ari", "nmi"}


def pseudo_attributes(rows: Sequence[Row], embeddings: np.ndarray, linkage: str = "ward", per_domain: bool = False,
                      use_attributes: bool = True, max_clusters: int = 16, normalize: bool = True,
                      min_silhouette: float = MIN_SILHOUETTE) -> PseudoLabels:
    """Attribute (or pseudo-attribute) labels for DCASE rows with embeddings (N, D), per machine type.

    A machine type uses its real attributes when every one of its clips has them and
    ``use_attributes``; otherwise its clips are clustered (per domain with ``per_domain``). When
    real attributes exist for all clips of a machine type that was clustered, the ARI/NMI of the
    clusters against them is recorded in ``agreement``.
    """
    x = np.asarray(embeddings)
    if len(rows) != len(x):
        raise ValueError(f"{len(rows)} rows but {len(x)} embeddings")
    clips = [dcase_clip(r) for r in rows]
    attrs = [attribute_label(r) for r in rows]
    labels = [""] * len(rows)
    out = PseudoLabels(labels=labels, source={})
    for machine in sorted({c.machine for c in clips}):
        idx = [i for i, c in enumerate(clips) if c.machine == machine]
        has_attrs = all(attrs[i] for i in idx)
        if use_attributes and has_attrs:
            out.source[machine] = "attributes"
            for i in idx:
                labels[i] = f"{machine}/{attrs[i]}"
            continue
        out.source[machine] = "clusters"
        groups = ({d: [i for i in idx if clips[i].domain == d] for d in sorted({clips[i].domain for i in idx})}
                  if per_domain else {"": idx})
        for dom, members in groups.items():
            cl = cluster_embeddings(x[members], linkage, max_clusters, normalize, min_silhouette)
            out.clusterings[f"{machine}/{dom}" if dom else machine] = cl
            for i, c in zip(members, cl.labels):
                labels[i] = f"{machine}/{dom}/c{c}" if dom else f"{machine}/c{c}"
        if has_attrs:
            out.agreement[machine] = attribute_agreement([attrs[i] for i in idx], [labels[i] for i in idx])
    return out
