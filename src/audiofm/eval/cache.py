"""Embedding cache: clip embeddings of a task, computed once per embedder and settings (by
:func:`audiofm.embed_io.embed_rows`, the one embedding loop).

An entry is one ``.npz`` file holding ``ids`` (N,), ``clip`` (N, D) float32 and ``meta`` (the
JSON of everything that went into the key). The key is the SHA-256 of:

* the embedder's ``fingerprint()`` (weights + its own embedding settings) and ``sample_rate``;
* the extra ``settings`` the caller passes (``layer``/``pooling`` for audiofm checkpoints);
* the task name, :func:`audiofm.data.fingerprint` of its rows (clip count + hash of ids) and a
  content stamp (hash of every clip's id, file size and segment bounds), so rebuilt audio with
  the same ids is not served stale;
* :data:`CACHE_FORMAT`.

Files live at ``<root>/<task>/<embedder name>-<key[:16]>.npz``, are written atomically
(:mod:`audiofm.io`), and are checked on load (key, ids, shape, finite values). A file
that fails the check is re-embedded with a :class:`CacheWarning`, never a crash.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Row, fingerprint
from ..data.shards import stored_size
from ..embed_io import EmbeddingError, clip_matrix, embed_rows
from ..embedding import AudioEmbedder
from ..io import atomic_path

__all__ = ["CACHE_FORMAT", "CacheResult", "CacheWarning", "EmbeddingCache", "EmbeddingError", "cache_key",
           "content_stamp", "embed_rows", "get_embeddings"]

CACHE_FORMAT = 1


class CacheWarning(UserWarning):
    """A cache file could not be used and was recomputed."""


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._") or "x"


def content_stamp(rows: Sequence[Row]) -> str:
    """Hash of (id, file size — or shard member size —, start, end) of every row, sorted by id
    (cheap: one stat per file)."""
    h = hashlib.sha256()
    for r in sorted(rows, key=lambda r: r.id):
        size = stored_size(r.path)
        h.update(f"{r.id}\0{size}\0{r.start}\0{r.end}\n".encode())
    return h.hexdigest()[:16]


def cache_key(embedder: AudioEmbedder, task: str, rows: Sequence[Row],
              settings: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """(hex key, the metadata it hashes) for ``embedder`` on ``rows`` of ``task``."""
    meta = {
        "format": CACHE_FORMAT,
        "embedder": embedder.fingerprint(),
        "embedder_name": embedder.name,
        "sample_rate": int(embedder.sample_rate),
        "settings": dict(sorted((settings or {}).items())),
        "task": task,
        "rows": fingerprint(list(rows)),
        "content": content_stamp(rows),
    }
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()
    return key, meta


@dataclass
class CacheResult:
    """Embeddings of a task's rows (in the order given) and how they were obtained."""

    clip: np.ndarray  # (N, D) float32
    cache_hit: bool
    seconds: float  # wall time to embed (0 on a hit, apart from loading)
    path: Path | None


class EmbeddingCache:
    """Directory of cached clip embeddings (see module docstring for the key)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path_for(self, embedder_name: str, task: str, key: str) -> Path:
        return self.root / _safe(task) / f"{_safe(embedder_name)}-{key[:16]}.npz"

    def load(self, path: Path, key: str, ids: Sequence[str]) -> np.ndarray | None:
        """Cached (N, D) embeddings aligned with ``ids``, or None (missing or unusable)."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                cached_ids = [str(i) for i in z["ids"]]
                clip = np.asarray(z["clip"], dtype=np.float32)
            if meta.get("key") != key:
                raise ValueError("key mismatch")
            if clip.ndim != 2 or clip.shape[0] != len(cached_ids):
                raise ValueError(f"embedding array has shape {clip.shape} for {len(cached_ids)} ids")
            index = {i: n for n, i in enumerate(cached_ids)}
            missing = [i for i in ids if i not in index]
            if missing:
                raise ValueError(f"{len(missing)} clip id(s) missing, e.g. {missing[0]!r}")
            if not np.all(np.isfinite(clip)):
                raise ValueError("non-finite values")
            return clip[[index[i] for i in ids]]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
            warnings.warn(f"{path}: unusable embedding cache file ({e}); re-embedding", CacheWarning,
                          stacklevel=2)
            return None

    def save(self, path: Path, key: str, meta: dict[str, Any], ids: Sequence[str], clip: np.ndarray) -> None:
        """Write atomically (:func:`audiofm.io.atomic_path`)."""
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            np.savez(f, ids=np.asarray(list(ids), dtype=str), clip=clip.astype(np.float32),
                     meta=np.asarray(json.dumps({**meta, "key": key}, sort_keys=True)))


def get_embeddings(embedder: AudioEmbedder, task: str, rows: Sequence[Row], *,
                   cache: EmbeddingCache | None, settings: dict[str, Any] | None = None,
                   batch_size: int = 16, progress: bool = True, label: str | None = None) -> CacheResult:
    """Embeddings of ``rows`` from the cache, or computed (and stored) on a miss."""
    ids = [r.id for r in rows]
    name = label or embedder.name
    path = None
    if cache is not None:
        key, meta = cache_key(embedder, task, rows, settings)
        path = cache.path_for(name, task, key)
        t0 = time.perf_counter()
        hit = cache.load(path, key, ids)
        if hit is not None:
            return CacheResult(hit, True, time.perf_counter() - t0, path)
    t0 = time.perf_counter()
    clip = clip_matrix(embed_rows(embedder, rows, batch_size=batch_size, progress=progress,
                                  desc=f"embed {name} · {task}"), dim=int(embedder.embed_dim))
    seconds = time.perf_counter() - t0
    if cache is not None and path is not None:
        cache.save(path, key, meta, ids, clip)
    return CacheResult(clip, False, seconds, path)
