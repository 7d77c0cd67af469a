"""The one embedding loop (:func:`embed_each`, :func:`embed_rows`) and writing embeddings to
files (npz or parquet).

:func:`embed_each` batches items in a given order, checks what the embedder returns (one
embedding per input, one clip shape for all, finite values) and gives the results back in
index order. :func:`embed_rows` feeds it dataset rows — decoded (and cut to ``start``/``end``)
at the embedder's rate, batched by duration so a batch pads little — and reports every
unreadable file in one error before anything is returned. The evaluation cache, ``audiofm
embed`` and adaptation's validation embeddings all use it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .audio import AudioError
from .data.dataset import load_row, row_duration, unreadable
from .data.manifest import DataError, Row
from .embedding import AudioEmbedder, Embeddings
from .io import atomic_path

__all__ = ["EmbeddingError", "clip_matrix", "embed_each", "embed_rows", "load_row", "row_duration",
           "write_embeddings"]

MAX_LISTED = 20  # unreadable files named in one error


class EmbeddingError(RuntimeError):
    """An embedder returned something unusable; the message names the model and the item."""


def embed_each(embedder: AudioEmbedder, n: int, load: Callable[[int], np.ndarray], *,
               sample_rate: int | None = None, order: Sequence[int] | None = None, batch_size: int = 16,
               progress: bool = True, desc: str = "embed", name_of: Callable[[int], str] | None = None,
               collect: tuple[type[BaseException], ...] = ()) -> list[Embeddings]:
    """Embeddings of items ``0..n-1``, in index order.

    ``load(i)``: item i's mono wave at ``sample_rate`` (default: the embedder's rate). Items are
    embedded ``batch_size`` at a time in ``order`` (default: index order). Raises
    EmbeddingError, naming the item (``name_of(i)``, default "item i"), when the embedder returns
    the wrong number of embeddings, a clip embedding of another shape than the first one, or
    non-finite values. ``collect``: exception types of ``load`` that do not stop the loop: such
    items are skipped and all of them are reported at the end in one DataError.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    sr = int(sample_rate if sample_rate is not None else embedder.sample_rate)
    seq = list(range(n)) if order is None else [int(i) for i in order]
    if sorted(seq) != list(range(n)):
        raise ValueError(f"order must be a permutation of 0..{n - 1}")
    name = name_of or (lambda i: f"item {i}")
    out: list[Embeddings | None] = [None] * n
    shape: tuple[int, ...] | None = None
    failed: list[str] = []
    with tqdm(total=n, desc=desc, unit="clip", disable=not progress, dynamic_ncols=True) as bar:
        for s in range(0, n, batch_size):
            idx, waves = [], []
            for i in seq[s : s + batch_size]:
                try:
                    waves.append(load(i))
                except collect as err:
                    failed.append(str(err))
                    continue
                idx.append(i)
            bar.update(len(seq[s : s + batch_size]) - len(idx))
            if not idx:
                continue
            embs = embedder.embed_batch(waves, sr)
            if len(embs) != len(idx):
                raise EmbeddingError(f"{embedder.name}: embed_batch returned {len(embs)} embeddings "
                                     f"for {len(idx)} clips")
            for i, e in zip(idx, embs):
                clip = np.asarray(e.clip)
                if shape is None:
                    shape = clip.shape
                    if clip.ndim != 1:
                        raise EmbeddingError(f"{embedder.name}: clip embedding of {name(i)} has shape "
                                             f"{clip.shape}, expected a vector (D,)")
                if clip.shape != shape:
                    raise EmbeddingError(f"{embedder.name}: clip embedding of {name(i)} has shape "
                                         f"{clip.shape}, expected {shape}")
                if not np.all(np.isfinite(clip)):
                    raise EmbeddingError(f"{embedder.name}: non-finite embedding for {name(i)}; "
                                         "check the audio and the model")
                out[i] = e
            bar.update(len(idx))
    if failed:
        raise _unreadable(failed, n)
    return [e for e in out if e is not None]


def _unreadable(problems: list[str], n: int) -> DataError:
    listing = "\n  ".join(problems[:MAX_LISTED])
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return DataError(f"{len(problems)} of {n} files could not be embedded:\n  {listing}{more}\n"
                     "Fix or remove them and run again (no output was written).")


def embed_rows(embedder: AudioEmbedder, rows: Sequence[Row], *, batch_size: int = 16, progress: bool = True,
               desc: str | None = None) -> list[Embeddings]:
    """Embeddings of every row, in order.

    Rows are embedded in batches of similar duration (sorted by duration, ties by id: the order
    is fixed, so results are deterministic). Every unreadable file is reported in one DataError
    — checked from the headers first and, if any fails, by decoding every file — and nothing is
    returned then.
    """
    rows = list(rows)
    durations: list[float] = []
    bad_header = False
    for r in rows:
        try:
            durations.append(row_duration(r))
        except AudioError:
            durations.append(float("inf"))
            bad_header = True
    if bad_header:
        raise _unreadable(unreadable(list({r.path: r for r in rows}.values())), len(rows))
    order = sorted(range(len(rows)), key=lambda i: (durations[i], rows[i].id))
    sr = int(embedder.sample_rate)
    return embed_each(embedder, len(rows), lambda i: load_row(rows[i], sr), sample_rate=sr, order=order,
                      batch_size=batch_size, progress=progress, desc=desc or f"embed {embedder.name}",
                      name_of=lambda i: rows[i].path, collect=(AudioError,))


def clip_matrix(embs: Sequence[Embeddings], dim: int | None = None) -> np.ndarray:
    """(N, D) float32 matrix of the clip embeddings (``dim`` gives D when ``embs`` is empty)."""
    if not embs:
        return np.zeros((0, dim or 0), dtype=np.float32)
    return np.stack([np.asarray(e.clip, dtype=np.float32) for e in embs])


def write_embeddings(embs: Sequence[Embeddings], rows: Sequence[Row], out: str | os.PathLike[str],
                     frames: bool = False, meta: dict[str, Any] | None = None) -> Path:
    """Write clip embeddings (and optionally frames + timestamps) atomically.

    npz: ``ids``, ``paths``, ``clip (N, D)``; with frames ``frames (M, D)``, ``timestamps (M,)``
    and ``frame_offsets (N+1,)`` (rows i's frames are ``frames[off[i]:off[i+1]]``), ``meta`` JSON.
    parquet: one row per clip (id, path, labels, clip; with frames: frames, timestamps).
    """
    out = Path(out)
    ids = np.array([r.id for r in rows])
    clip = clip_matrix(embs)
    if out.suffix == ".npz":
        arrays: dict[str, Any] = {"ids": ids, "paths": np.array([r.path for r in rows]), "clip": clip,
                                  "meta": np.array(json.dumps(meta or {}))}
        if frames:
            arrays["frames"] = np.concatenate([e.frames for e in embs]).astype(np.float32)
            arrays["timestamps"] = np.concatenate([e.timestamps for e in embs])
            arrays["frame_offsets"] = np.cumsum([0] + [len(e.frames) for e in embs])
        with atomic_path(out) as tmp, tmp.open("wb") as f:
            np.savez(f, **arrays)
    elif out.suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as e:
            raise ImportError("writing parquet needs pyarrow: pip install 'audiofm[parquet]'") from e
        cols: dict[str, Any] = {"id": ids.tolist(), "path": [r.path for r in rows],
                                "labels": [r.labels for r in rows], "clip": list(clip)}
        if frames:
            cols["frames"] = [e.frames.astype(np.float32).tolist() for e in embs]
            cols["timestamps"] = [e.timestamps.tolist() for e in embs]
        table = pa.table(cols).replace_schema_metadata({"audiofm": json.dumps(meta or {})})
        with atomic_path(out) as tmp:
            pq.write_table(table, tmp)
    else:
        raise ValueError(f"unknown output format {out.suffix!r} (use .npz or .parquet)")
    return out
