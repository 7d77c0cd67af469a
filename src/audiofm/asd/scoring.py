"""Anomaly-score backends on clip embeddings, registered by name.

A backend is fitted on the normal training embeddings of one machine type (with each clip's
domain) and scores test embeddings: higher = more anomalous. ``make_backend(name, **kwargs)``
builds one (``None`` kwargs are dropped, so CLI defaults never override the backend's own).

* ``knn`` — mean cosine distance to the ``k`` nearest training clips (all domains pooled);
* ``knn-domain`` — the same per domain, the minimum over domains (the few target clips get their
  own neighbourhood instead of being outvoted by the many source clips);
* ``knn-kmeans`` — cosine distance to the nearest of: the source clips' k-means centres
  (``n_centers``) and every target clip (the DCASE 2023-2024 top systems' handling of the
  source/target imbalance, e.g. Wilkinghoff's; centres are fitted on L2-normalised embeddings);
* ``mahalanobis`` — Mahalanobis distance to each domain's mean under its shrunk covariance
  (Ledoit-Wolf, scikit-learn), the minimum over domains.

Cosine neighbours come from :func:`audiofm.search.knn_search`; scores of the training clips
themselves (for the decision threshold) are leave-one-out where a clip would find itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from ..search import knn_search, l2_normalize


def _domains(domains: Sequence[str] | None, n: int) -> np.ndarray:
    d = np.asarray(["source"] * n if domains is None else [x or "source" for x in domains])
    if len(d) != n:
        raise ValueError(f"{n} embeddings but {len(d)} domains")
    return d


class Backend:
    """Base: :meth:`fit` on training embeddings ``(N, D)`` and domains, :meth:`score` test ``(Q, D)``."""

    name: ClassVar[str] = ""

    def fit(self, train: np.ndarray, domains: Sequence[str] | None = None) -> Backend:
        raise NotImplementedError

    def score(self, test: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def train_scores(self) -> np.ndarray:
        """Scores of the training clips (leave-one-out where a clip would match itself)."""
        raise NotImplementedError


def _knn_distance(queries: np.ndarray, keys: np.ndarray, k: int, exclude_self: bool = False) -> np.ndarray:
    """Mean cosine distance ``1 − cos`` to the ``k`` nearest keys (Q,)."""
    k = max(1, min(k, len(keys) - (1 if exclude_self else 0)))
    sim, _ = knn_search(queries, keys, k, metric="cosine", exclude_self=exclude_self)
    return np.asarray(1.0 - sim.mean(axis=1))


class KnnBackend(Backend):
    """Mean cosine distance to the ``k`` nearest training clips; ``per_domain``: min over domains."""

    name = "knn"

    def __init__(self, k: int = 1, per_domain: bool = False) -> None:
        if k < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        self.k, self.per_domain = k, per_domain

    def fit(self, train: np.ndarray, domains: Sequence[str] | None = None) -> KnnBackend:
        self.train = np.asarray(train, dtype=np.float32)
        d = _domains(domains, len(self.train))
        self.groups = ({g: self.train[d == g] for g in sorted(set(d))} if self.per_domain else {"all": self.train})
        self._train_domains = d
        return self

    def score(self, test: np.ndarray) -> np.ndarray:
        q = np.asarray(test, dtype=np.float32)
        return np.min([_knn_distance(q, keys, self.k) for keys in self.groups.values()], axis=0)

    def train_scores(self) -> np.ndarray:
        out = np.empty(len(self.train))
        for g, keys in self.groups.items():
            mask = np.ones(len(self.train), bool) if g == "all" else self._train_domains == g
            own = _knn_distance(keys, keys, self.k, exclude_self=True) if len(keys) > 1 else np.zeros(len(keys))
            others = [_knn_distance(self.train[mask], k2, self.k) for g2, k2 in self.groups.items() if g2 != g]
            out[mask] = np.min([own, *others], axis=0)
        return out


class KnnDomainBackend(KnnBackend):
    """:class:`KnnBackend` with ``per_domain=True``."""

    name = "knn-domain"

    def __init__(self, k: int = 1) -> None:
        super().__init__(k, per_domain=True)


class KmeansTargetBackend(Backend):
    """Cosine distance to the nearest of the source k-means centres and all target clips."""

    name = "knn-kmeans"

    def __init__(self, n_centers: int = 16, seed: int = 0) -> None:
        if n_centers < 1:
            raise ValueError(f"n_centers must be ≥ 1, got {n_centers}")
        self.n_centers, self.seed = n_centers, seed

    def fit(self, train: np.ndarray, domains: Sequence[str] | None = None) -> KmeansTargetBackend:
        from sklearn.cluster import KMeans

        x = l2_normalize(np.asarray(train, dtype=np.float64))
        d = _domains(domains, len(x))
        src, tgt = x[d != "target"], x[d == "target"]
        parts = []
        if len(src):
            n = min(self.n_centers, len(src))
            km = KMeans(n_clusters=n, n_init=10, random_state=self.seed).fit(src)
            parts.append(km.cluster_centers_)
        parts.append(tgt)
        self.keys = np.concatenate([p for p in parts if len(p)]).astype(np.float32)
        self.train, self._n_centres = x.astype(np.float32), len(parts[0]) if len(src) else 0
        self._target_rows = np.flatnonzero(d == "target")
        return self

    def score(self, test: np.ndarray) -> np.ndarray:
        return _knn_distance(np.asarray(test, dtype=np.float32), self.keys, 1)

    def train_scores(self) -> np.ndarray:
        out = self.score(self.train)
        for j, i in enumerate(self._target_rows):  # a target clip must not find itself
            keep = np.delete(np.arange(len(self.keys)), self._n_centres + j)
            out[i] = _knn_distance(self.train[i:i + 1], self.keys[keep], 1)[0] if len(keep) else 0.0
        return out


class MahalanobisBackend(Backend):
    """Mahalanobis distance to each domain's mean under its Ledoit-Wolf shrunk covariance; min
    over domains. A domain with fewer than 2 clips borrows the pooled covariance."""

    name = "mahalanobis"

    def fit(self, train: np.ndarray, domains: Sequence[str] | None = None) -> MahalanobisBackend:
        from sklearn.covariance import LedoitWolf

        x = np.asarray(train, dtype=np.float64)
        d = _domains(domains, len(x))
        pooled = LedoitWolf().fit(x)
        self.models: list[tuple[np.ndarray, np.ndarray]] = []
        for g in sorted(set(d)):
            xg = x[d == g]
            prec = LedoitWolf().fit(xg).precision_ if len(xg) >= 2 else pooled.precision_
            self.models.append((xg.mean(axis=0), prec))
        self.train = x
        return self

    def score(self, test: np.ndarray) -> np.ndarray:
        q = np.asarray(test, dtype=np.float64)
        dist = []
        for mu, prec in self.models:
            diff = q - mu  # (Q, D)
            dist.append(np.sqrt(np.maximum(np.einsum("qd,de,qe->q", diff, prec, diff), 0.0)))
        return np.min(dist, axis=0)

    def train_scores(self) -> np.ndarray:
        return self.score(self.train)


BACKENDS: dict[str, Callable[..., Backend]] = {
    b.name: b for b in (KnnBackend, KnnDomainBackend, KmeansTargetBackend, MahalanobisBackend)}


def make_backend(name: str, **kwargs: Any) -> Backend:
    """The backend registered as ``name`` (see the module); ``None`` kwargs are dropped."""
    if name not in BACKENDS:
        raise KeyError(f"unknown scoring backend {name!r}; available: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name](**{k: v for k, v in kwargs.items() if v is not None})
