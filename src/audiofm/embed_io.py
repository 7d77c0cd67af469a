"""Embedding whole datasets with progress, and writing the results (npz or parquet)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .audio import AudioError, load_audio
from .data.manifest import DataError, Row
from .embedding import AudioEmbedder, Embeddings


def embed_rows(model: AudioEmbedder, rows: Sequence[Row], batch_size: int = 16,
               progress: bool = True, desc: str = "embed") -> list[Embeddings]:
    """Embeddings of every row, in order. Unreadable files are all reported in one error."""
    out: list[Embeddings | None] = [None] * len(rows)
    bad: list[str] = []
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(rows), desc=desc, unit="clip", dynamic_ncols=True)
    try:
        for s in range(0, len(rows), batch_size):
            idx, waves = [], []
            for i in range(s, min(s + batch_size, len(rows))):
                r = rows[i]
                try:
                    w, _ = load_audio(r.path, model.sample_rate)
                except AudioError as e:
                    bad.append(str(e))
                    continue
                if r.start is not None or r.end is not None:
                    a = int((r.start or 0) * model.sample_rate)
                    b = int(r.end * model.sample_rate) if r.end is not None else len(w)
                    w = w[a:b]
                idx.append(i)
                waves.append(w)
            if waves:
                for i, emb in zip(idx, model.embed_batch(waves, model.sample_rate)):
                    out[i] = emb
            if bar is not None:
                bar.update(min(batch_size, len(rows) - s))
    finally:
        if bar is not None:
            bar.close()
    if bad:
        listing = "\n  ".join(bad[:20]) + (f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else "")
        raise DataError(f"{len(bad)} of {len(rows)} files could not be embedded:\n  {listing}\n"
                        "Fix or remove them and run again (no output was written).")
    return [e for e in out if e is not None]


def write_embeddings(embs: Sequence[Embeddings], rows: Sequence[Row], out: str | os.PathLike[str],
                     frames: bool = False, meta: dict[str, Any] | None = None) -> Path:
    """Write clip embeddings (and optionally frames + timestamps) atomically.

    npz: ``ids``, ``paths``, ``clip (N, D)``; with frames ``frames (M, D)``, ``timestamps (M,)``
    and ``frame_offsets (N+1,)`` (rows i's frames are ``frames[off[i]:off[i+1]]``), ``meta`` JSON.
    parquet: one row per clip (id, path, labels, clip; with frames: frames, timestamps).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    ids = np.array([r.id for r in rows])
    clip = np.stack([e.clip for e in embs]).astype(np.float32)
    if out.suffix == ".npz":
        arrays: dict[str, Any] = {"ids": ids, "paths": np.array([r.path for r in rows]), "clip": clip,
                                         "meta": np.array(json.dumps(meta or {}))}
        if frames:
            arrays["frames"] = np.concatenate([e.frames for e in embs]).astype(np.float32)
            arrays["timestamps"] = np.concatenate([e.timestamps for e in embs])
            arrays["frame_offsets"] = np.cumsum([0] + [len(e.frames) for e in embs])
        with open(tmp, "wb") as f:
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
        pq.write_table(table, tmp)
    else:
        raise ValueError(f"unknown output format {out.suffix!r} (use .npz or .parquet)")
    os.replace(tmp, out)
    return out
