"""Exact nearest-neighbour search: the one primitive behind kNN probes, kNN anomaly scores and
retrieval.

:func:`knn_search` returns the ``k`` best keys of every query, sorted by descending score with
ties broken by the lower key index. Scores: cosine similarity (``metric="cosine"``, vectors
L2-normalised in float32 first), inner product (``"ip"``) or negative squared Euclidean
distance (``"l2"``). Candidates come from a float32 search — numpy matmul, or faiss
``IndexFlatIP`` / ``IndexFlatL2`` — and are re-scored in float64 and re-ranked; a query whose
candidate window could hide a (near-)tie falls back to a full float64 ranking. Both backends
therefore return the same neighbours and the same scores.

:class:`Index` keeps a growing set of vectors with ids for repeated searches and saves to one
``.npz`` file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .io import atomic_path

METRICS = ("cosine", "ip", "l2")
BACKENDS = ("auto", "numpy", "faiss")
INDEX_FORMAT = "audiofm-index"
_MARGIN = 16  # extra candidates fetched in float32 before the exact float64 re-ranking
_TIE_TOL = 1e-4  # float32 score error bound (unit vectors) used to detect boundary near-ties


def faiss_available() -> bool:
    """Whether the optional ``faiss`` package is importable."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str) -> str:
    """"auto" → "faiss" when installed, else "numpy"; "faiss" without faiss raises ImportError."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown search backend {backend!r} (use {', '.join(BACKENDS)})")
    if backend == "auto":
        return "faiss" if faiss_available() else "numpy"
    if backend == "faiss" and not faiss_available():
        raise ImportError("search backend 'faiss' needs the faiss package: pip install faiss-cpu "
                          "(or use backend='numpy', same results)")
    return backend


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit length (float32; zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def _matrix(x: Any, name: str) -> np.ndarray:
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array (N, D), got shape {a.shape}")
    return a


class _Searcher:
    """Exact search over fixed ``keys`` (already normalised for cosine)."""

    def __init__(self, keys: np.ndarray, metric: str, backend: str) -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r} (use {', '.join(METRICS)})")
        self.keys = keys
        self.metric = metric
        self.backend = resolve_backend(backend)
        self._keys64: np.ndarray | None = None
        self._faiss: Any = None
        self._sqnorm = np.einsum("nd,nd->n", keys, keys, dtype=np.float64)  # (N,) squared norms
        self._kmax = float(self._sqnorm.max(initial=0.0))

    @property
    def keys64(self) -> np.ndarray:
        if self._keys64 is None:
            self._keys64 = self.keys.astype(np.float64)
        return self._keys64

    def _candidates(self, q: np.ndarray, kc: int) -> np.ndarray:
        n = len(self.keys)
        if self.backend == "faiss":
            if self._faiss is None:
                import faiss

                self._faiss = (faiss.IndexFlatL2 if self.metric == "l2" else faiss.IndexFlatIP)(self.keys.shape[1])
                self._faiss.add(self.keys)
            return np.asarray(self._faiss.search(q, kc)[1], dtype=np.int64)
        if kc >= n:
            return np.broadcast_to(np.arange(n), (len(q), n)).copy()
        s = q @ self.keys.T
        if self.metric == "l2":
            s = 2 * s - self._sqnorm.astype(np.float32)[None, :]  # −‖q − k‖² + ‖q‖²
        return np.argpartition(-s, kc - 1, axis=1)[:, :kc].astype(np.int64)

    def _rescore(self, q64: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """Float64 scores (B, kc) of candidate keys ``cand`` for queries ``q64``."""
        sims = np.empty(cand.shape, dtype=np.float64)
        for c0 in range(0, len(q64), 64):  # small chunks (memory)
            k64 = self.keys[cand[c0 : c0 + 64]].astype(np.float64)  # (b, kc, D)
            if self.metric == "l2":
                sims[c0 : c0 + 64] = -((k64 - q64[c0 : c0 + 64, None, :]) ** 2).sum(-1)
            else:
                sims[c0 : c0 + 64] = np.einsum("bd,bkd->bk", q64[c0 : c0 + 64], k64)
        return sims

    def _exact_row(self, q: np.ndarray, k: int, skip: int | None) -> tuple[np.ndarray, np.ndarray]:
        q64 = q.astype(np.float64)
        if self.metric == "l2":
            sims = -((self.keys64 - q64) ** 2).sum(axis=1)
        else:
            sims = self.keys64 @ q64
        if skip is not None:
            sims[skip] = -np.inf
        order = np.lexsort((np.arange(len(sims)), -sims))[:k]
        return sims[order], order

    def _tolerance(self, q: np.ndarray) -> float:
        if self.metric == "cosine":
            return _TIE_TOL
        qmax = float(np.einsum("nd,nd->n", q, q, dtype=np.float64).max(initial=0.0))
        scale = qmax + self._kmax if self.metric == "l2" else np.sqrt(qmax * self._kmax)
        return _TIE_TOL * max(1.0, scale)

    def search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None, block: int = 1024
               ) -> tuple[np.ndarray, np.ndarray]:
        """``exclude[i]``: a key index query i must not return (or None)."""
        n = len(self.keys)
        avail = n - (exclude is not None)
        if not 1 <= k <= avail:
            raise ValueError(f"k must be in [1, {avail}], got {k}")
        extra = 1 if exclude is not None else 0
        kc = min(n, k + _MARGIN + extra)
        out_s = np.empty((len(queries), k), dtype=np.float64)
        out_i = np.empty((len(queries), k), dtype=np.int64)
        tol = self._tolerance(queries) if len(queries) else 0.0
        for s0 in range(0, len(queries), block):
            q = queries[s0 : s0 + block]
            cand = self._candidates(q, kc)  # (B, kc)
            sims = self._rescore(q.astype(np.float64), cand)
            if exclude is not None:
                sims[cand == exclude[s0 : s0 + len(q), None]] = -np.inf
            order = np.lexsort((cand, -sims), axis=1)
            sims, cand = np.take_along_axis(sims, order, 1), np.take_along_axis(cand, order, 1)
            out_s[s0 : s0 + len(q)], out_i[s0 : s0 + len(q)] = sims[:, :k], cand[:, :k]
            if kc < n:
                # could a key outside the candidate window tie with / beat the k-th one?
                last = sims[:, kc - 1 - extra]
                for r in np.flatnonzero(last >= sims[:, k - 1] - tol):
                    skip = None if exclude is None else int(exclude[s0 + r])
                    out_s[s0 + r], out_i[s0 + r] = self._exact_row(q[r], k, skip)
        return out_s, out_i


def knn_search(queries: Any, keys: Any, k: int, *, metric: str = "cosine", backend: str = "auto",
               exclude_self: bool = False, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest ``keys`` (N, D) of every query (Q, D).

    Returns (scores (Q, k) float64, indices (Q, k) int64), best first, ties by lower index (see
    the module docstring for the scores). ``exclude_self``: the queries are the keys (Q == N) and
    query i never returns key i (leave-one-out). ``backend``: "numpy", "faiss" or "auto"."""
    q, kk = _matrix(queries, "queries"), _matrix(keys, "keys")
    if q.shape[1] != kk.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} dims but keys have {kk.shape[1]}")
    if metric == "cosine":
        q, kk = l2_normalize(q), l2_normalize(kk)
    exclude = None
    if exclude_self:
        if len(q) != len(kk):
            raise ValueError(f"exclude_self needs the queries to be the keys; got {len(q)} queries, {len(kk)} keys")
        exclude = np.arange(len(q))
    return _Searcher(kk, metric, backend).search(q, k, exclude, block)


class Index:
    """Exact search over a growing set of vectors with ids (numpy or faiss backend).

    >>> index = Index(dim=192)
    >>> index.add(train_embeddings, ids=[r.id for r in rows])
    >>> scores, ids = index.search(query_embeddings, k=10)
    """

    def __init__(self, dim: int, metric: str = "cosine", backend: str = "auto") -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r} (use {', '.join(METRICS)})")
        resolve_backend(backend)
        self.dim = int(dim)
        self.metric = metric
        self.backend = backend
        self._vectors: list[np.ndarray] = []
        self._ids: list[np.ndarray] = []
        self._searcher: _Searcher | None = None

    def __len__(self) -> int:
        return sum(len(v) for v in self._vectors)

    @property
    def vectors(self) -> np.ndarray:
        """(N, D) float32, as added (not normalised)."""
        return np.concatenate(self._vectors) if self._vectors else np.zeros((0, self.dim), np.float32)

    @property
    def ids(self) -> np.ndarray:
        return np.concatenate(self._ids) if self._ids else np.zeros(0, np.int64)

    def add(self, vectors: Any, ids: Any = None) -> None:
        """Add (M, D) ``vectors`` with ``ids`` (M,) ints or strings; default: running positions."""
        v = _matrix(vectors, "vectors")
        if v.shape[1] != self.dim:
            raise ValueError(f"index holds {self.dim}-d vectors, got {v.shape[1]}-d")
        if not np.all(np.isfinite(v)):
            raise ValueError("vectors must be finite")
        i = np.arange(len(self), len(self) + len(v)) if ids is None else np.asarray(ids)
        if i.shape != (len(v),):
            raise ValueError(f"need one id per vector: {len(v)} vectors, ids of shape {i.shape}")
        if self._ids and (self._ids[0].dtype.kind in "US") != (i.dtype.kind in "US"):
            raise ValueError(f"ids of type {i.dtype} do not match the index's ({self._ids[0].dtype})")
        self._vectors.append(v.copy())
        self._ids.append(i)
        self._searcher = None

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores (Q, k) float64, ids (Q, k)) of the ``k`` best vectors per query."""
        q = _matrix(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"index holds {self.dim}-d vectors, got {q.shape[1]}-d queries")
        if self._searcher is None:
            keys = self.vectors
            self._searcher = _Searcher(l2_normalize(keys) if self.metric == "cosine" else keys, self.metric,
                                       self.backend)
        if self.metric == "cosine":
            q = l2_normalize(q)
        scores, idx = self._searcher.search(q, k)
        return scores, self.ids[idx]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the vectors, ids and settings to one ``.npz`` file, atomically."""
        meta = {"format": INDEX_FORMAT, "version": 1, "dim": self.dim, "metric": self.metric,
                "backend": self.backend}
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            np.savez(f, vectors=self.vectors, ids=self.ids, meta=np.asarray(json.dumps(meta)))
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], backend: str | None = None) -> Index:
        """Read an index written by :meth:`save` (``backend`` overrides the stored one)."""
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != INDEX_FORMAT:
                raise ValueError(f"{path}: not an audiofm search index")
            index = cls(int(meta["dim"]), meta["metric"], backend or meta["backend"])
            if len(z["vectors"]):
                index.add(z["vectors"], z["ids"])
        return index
