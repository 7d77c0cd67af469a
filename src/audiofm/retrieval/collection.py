"""Search your own sound collection by text: an index directory built from an audio folder.

:meth:`Collection.build` embeds every audio file below a folder (recursive; the formats this
libsndfile decodes) with a text-audio model's ``embed_audio_batch`` and stores the vectors in an
:class:`audiofm.search.Index` next to a manifest. Re-running it on the same folder is
incremental: files whose size and modification time are unchanged keep their vectors, new and
changed files are embedded, deleted ones are dropped. An unreadable file is reported (one line)
and skipped. :meth:`Collection.open` reads an index (loading the model whose checkpoint it
records) and :meth:`Collection.search` ranks the files for a text query.

Index directory::

    collection.json       manifest (the commit point): format, root folder, model name +
                          fingerprint + checkpoint, backend, and per file: relative path, size,
                          mtime_ns, duration; "vectors" names the vector file
    vectors-NNNNNN.npz    audiofm.search.Index (row i = file i of the manifest)

An update writes a new vector file, then replaces ``collection.json`` atomically, then removes
the old vector file: a crash at any point leaves the previous index usable.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..audio import AUDIO_EXTENSIONS, AudioError, audio_info, find_audio
from ..data.dataset import load_row
from ..data.manifest import DataError, Row
from ..embed_io import EmbeddingError
from ..io import write_json
from ..outputs import RunLock, check_output
from ..search import Index

__all__ = ["BACKENDS", "MANIFEST", "Collection", "CollectionError", "Entry", "Hit", "TextAudioModelLike",
           "UpdateReport", "load_model", "readable_suffixes"]

MANIFEST = "collection.json"
FORMAT = "audiofm-collection"
VERSION = 1
#: --backend names → audiofm.search backends ("exact" = numpy matmul; faiss is exact too)
BACKENDS = {"auto": "auto", "exact": "numpy", "faiss": "faiss"}
BATCH_SECONDS = 1200.0  # at most this much audio decoded at once (a longer file goes alone)
_SF_FORMAT = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".opus": "OGG", ".mp3": "MP3", ".aiff": "AIFF",
              ".aif": "AIFF", ".au": "AU"}


class CollectionError(ValueError):
    """An index directory that cannot be used as asked; the message says what to do."""


class TextAudioModelLike(Protocol):
    """What a collection needs of a model (``audiofm.retrieval.model.TextAudioModel``)."""

    name: str
    sample_rate: int
    embed_dim: int

    def embed_audio_batch(self, waves: list[np.ndarray], sr: int) -> np.ndarray: ...

    def embed_text(self, texts: list[str]) -> np.ndarray: ...

    def fingerprint(self) -> str: ...


@dataclass
class Entry:
    """One indexed file: ``path`` relative to the collection root (POSIX separators)."""

    path: str
    size: int
    mtime_ns: int
    duration: float


@dataclass
class Hit:
    """One search result: the file's absolute ``path``, cosine ``score``, 1-based ``rank`` and
    ``position`` in the index (what ``audiofm serve`` serves as /audio/<position>)."""

    path: str
    score: float
    rank: int
    position: int
    duration: float

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "score": self.score, "path": self.path, "position": self.position,
                "duration": self.duration}


@dataclass
class UpdateReport:
    """What one :meth:`Collection.build` did (file counts) and why files were skipped."""

    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)  # one line per unreadable file
    unsupported: dict[str, int] = field(default_factory=dict)  # suffix → files this libsndfile cannot decode
    pending: int = 0  # new or changed files not embedded because the update was interrupted
    interrupted: bool = False

    @property
    def embedded(self) -> int:
        return self.added + self.changed

    def summary(self) -> str:
        total = self.added + self.changed + self.unchanged
        text = (f"{total} files indexed: {self.added} added, {self.changed} changed, {self.unchanged} unchanged, "
                f"{self.removed} removed")
        if self.skipped:
            text += f"; {len(self.skipped)} unreadable (skipped)"
        for suffix, n in sorted(self.unsupported.items()):
            text += f"; {n} {suffix} files skipped (this libsndfile cannot decode {suffix})"
        if self.pending:
            text += f"; interrupted with {self.pending} files still to embed (run again to finish)"
        return text


def readable_suffixes() -> tuple[str, ...]:
    """The audio suffixes (audiofm.audio.AUDIO_EXTENSIONS) this installation's libsndfile decodes."""
    import soundfile as sf

    formats = set(sf.available_formats())
    return tuple(s for s in AUDIO_EXTENSIONS if _SF_FORMAT.get(s, "") in formats)


def load_model(path: str | os.PathLike[str]) -> TextAudioModelLike:
    """The text-audio model of a dual checkpoint (or run directory): :func:`audiofm.retrieval.model.load_dual`."""
    from .model import load_dual
    from .text import TextModelError

    try:
        return load_dual(path)
    except TextModelError as e:
        raise CollectionError(f"{path}: {e}") from None


def _fingerprint_error(where: Path, info: dict[str, Any], model: TextAudioModelLike, fp: str,
                       checkpoint: str | os.PathLike[str] | None = None) -> CollectionError:
    m = info["model"]
    built = f"{m['name']} ({m['checkpoint']}, fingerprint {m['fingerprint']})" if m.get("checkpoint") else \
        f"{m['name']} (fingerprint {m['fingerprint']})"
    given = f"{model.name} ({checkpoint}, fingerprint {fp})" if checkpoint else f"{model.name} (fingerprint {fp})"
    return CollectionError(f"{where} was built with model {built}, not {given}; use the same model, or build a "
                           "new index for this one with audiofm index CKPT AUDIO_DIR --out NEW")


def _read_manifest(index_dir: Path) -> dict[str, Any]:
    path = index_dir / MANIFEST
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise CollectionError(f"{index_dir}: not a collection index (no {MANIFEST}); build one with "
                              "audiofm index CKPT AUDIO_DIR --out INDEX") from None
    except (OSError, ValueError) as e:
        raise CollectionError(f"{path}: unreadable collection manifest ({e}); rebuild the index") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CollectionError(f"{path}: not an audiofm collection manifest; rebuild the index")
    if int(info.get("version", 0)) > VERSION:
        raise CollectionError(f"{path}: collection format {info['version']} is newer than this audiofm reads "
                              f"({VERSION}); upgrade audiofm")
    return info


class Collection:
    """An indexed audio folder: ``entries`` (index order), their vectors in ``index``, the
    ``model`` that embedded them (also used for text queries)."""

    def __init__(self, index_dir: Path, root: Path, entries: list[Entry], index: Index,
                 model: TextAudioModelLike, info: dict[str, Any]) -> None:
        self.index_dir = index_dir
        self.root = root
        self.entries = entries
        self.index = index
        self.model = model
        self.info = info

    def __len__(self) -> int:
        return len(self.entries)

    def path(self, position: int) -> Path:
        """Absolute path of file ``position`` of the index (IndexError outside 0..len-1)."""
        if not 0 <= position < len(self.entries):
            raise IndexError(f"no file {position} in this index of {len(self.entries)} files")
        return self.root / self.entries[position].path

    # ---- reading ----------------------------------------------------------------------------

    @classmethod
    def open(cls, index_dir: str | os.PathLike[str], model: TextAudioModelLike | str | os.PathLike[str] | None = None,
             backend: str | None = None) -> Collection:
        """Open an index directory. ``model``: a loaded text-audio model, a checkpoint path, or
        None for the checkpoint recorded in the index; its fingerprint must be the index's.
        ``backend``: auto, exact or faiss (default: the one the index was built with)."""
        d = Path(index_dir)
        info = _read_manifest(d)
        checkpoint: Path | None = None
        if model is None:
            ckpt = info["model"].get("checkpoint")
            if not ckpt:
                raise CollectionError(f"{d}: the index records no checkpoint path; pass the model it was built with")
            if not Path(ckpt).exists():
                raise CollectionError(f"{d}: the checkpoint it was built with, {ckpt}, is gone; pass the model "
                                      "(--model CKPT) or rebuild the index")
            checkpoint = Path(ckpt)
            model = load_model(ckpt)
        elif isinstance(model, (str, os.PathLike)):
            checkpoint = Path(model).resolve()
            model = load_model(model)
        fp = model.fingerprint()
        if fp != info["model"]["fingerprint"]:
            raise _fingerprint_error(d, info, model, fp, checkpoint)
        try:
            index = Index.load(d / info["vectors"], backend=BACKENDS[backend or info["backend"]])
        except FileNotFoundError:  # an update committed (and removed the old vectors) meanwhile
            info = _read_manifest(d)
            index = Index.load(d / info["vectors"], backend=BACKENDS[backend or info["backend"]])
            if info["model"]["fingerprint"] != fp:
                raise _fingerprint_error(d, info, model, fp, checkpoint) from None
        entries = [Entry(**e) for e in info["files"]]
        if len(index) != len(entries):
            raise CollectionError(f"{d}: {info['vectors']} holds {len(index)} vectors for {len(entries)} files; "
                                  "rebuild the index")
        return cls(d, Path(info["root"]), entries, index, model, info)

    def search(self, text: str, k: int = 10) -> list[Hit]:
        """The ``k`` files that best match ``text``, best first (fewer when the index is smaller)."""
        if not text.strip():
            raise ValueError("the query is empty; describe the sound, e.g. 'a dog barks twice'")
        q = np.asarray(self.model.embed_text([text]), dtype=np.float32)  # (1, D)
        return self.search_embedding(q[0], k)

    def search_embedding(self, vector: np.ndarray, k: int = 10) -> list[Hit]:
        """The ``k`` files nearest to an embedding ``vector`` (D,) of the model's shared space."""
        if k < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        k = min(k, len(self.index))
        if k == 0:
            return []
        scores, ids = self.index.search(np.asarray(vector, dtype=np.float32)[None, :], k)
        return [Hit(path=str(self.path(int(i))), score=float(s), rank=r + 1, position=int(i),
                    duration=self.entries[int(i)].duration)
                for r, (s, i) in enumerate(zip(scores[0], ids[0]))]

    # ---- building ---------------------------------------------------------------------------

    @classmethod
    def build(cls, index_dir: str | os.PathLike[str], audio_dir: str | os.PathLike[str],
              model: TextAudioModelLike | str | os.PathLike[str], *, checkpoint: str | os.PathLike[str] | None = None,
              batch_size: int = 16, backend: str | None = None, progress: bool = True,
              log: Callable[[str], None] | None = None) -> tuple[Collection, UpdateReport]:
        """Create the index ``index_dir`` of every audio file below ``audio_dir``, or bring an
        existing one up to date (only new and changed files are embedded).

        ``model``: a loaded text-audio model or a checkpoint path; ``checkpoint``: the path to
        record for a loaded model (what :meth:`open` loads without a model). ``backend``: auto,
        exact or faiss (default: the index's, else auto). ``log`` gets one line per unreadable
        file. Returns the collection and what changed. Ctrl-C (KeyboardInterrupt) saves the files
        embedded so far, then re-raises: running again embeds only the rest."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r} (use {', '.join(BACKENDS)})")
        d, root = Path(index_dir), Path(audio_dir)
        if not root.is_dir():
            raise CollectionError(f"{root}: not a directory; give the folder of audio files to index")
        root = root.resolve()
        if isinstance(model, (str, os.PathLike)):
            checkpoint = checkpoint or model
        old = _read_manifest(d) if (d / MANIFEST).exists() else None  # the cheap checks before loading a model
        inputs = [root] + ([Path(checkpoint)] if checkpoint else [])
        check_output(d, folder=True, overwrite=old is not None, inputs=inputs)
        if old is not None and Path(old["root"]) != root:
            raise CollectionError(f"{d} indexes {old['root']}, not {root}; give that folder, or build a new index "
                                  "with --out NEW")
        if isinstance(model, (str, os.PathLike)):
            model = load_model(model)
        fp = model.fingerprint()
        created = not d.exists()
        try:
            with RunLock(d):
                old = _read_manifest(d) if (d / MANIFEST).exists() else None  # as it is now that we hold the lock
                if old is not None and old["model"]["fingerprint"] != fp:
                    raise _fingerprint_error(d, old, model, fp, Path(checkpoint).resolve() if checkpoint else None)
                return cls._update(d, root, model, fp, old, checkpoint, batch_size, backend, progress,
                                   log or (lambda s: None))
        except BaseException:
            if created and d.is_dir() and not any(d.iterdir()):
                d.rmdir()  # nothing was written: leave no empty index folder behind
            raise

    @classmethod
    def _update(cls, d: Path, root: Path, model: TextAudioModelLike, fp: str, old: dict[str, Any] | None,
                checkpoint: str | os.PathLike[str] | None, batch_size: int, backend: str | None, progress: bool,
                log: Callable[[str], None]) -> tuple[Collection, UpdateReport]:
        report = UpdateReport()
        suffixes = readable_suffixes()
        files: list[Path] = []
        for f in find_audio(root):
            if f.suffix.lower() in suffixes:
                files.append(f)
            else:
                report.unsupported[f.suffix.lower()] = report.unsupported.get(f.suffix.lower(), 0) + 1
        known: dict[str, tuple[Entry, int]] = {}
        old_vectors = np.zeros((0, model.embed_dim), np.float32)
        if old is not None:
            old_vectors = Index.load(d / old["vectors"]).vectors
            known = {e["path"]: (Entry(**e), i) for i, e in enumerate(old["files"])}
        keep: list[tuple[Entry, np.ndarray]] = []
        todo: list[tuple[Entry, tuple[Entry, int] | None]] = []  # (entry, its old entry and vector row)
        seen: set[str] = set()
        for f in files:
            rel = f.relative_to(root).as_posix()
            seen.add(rel)
            try:
                st = f.stat()
            except OSError as e:
                report.skipped.append(f"{f}: cannot stat ({e.strerror or e})")
                continue
            prev = known.get(rel)
            if prev is not None and prev[0].size == st.st_size and prev[0].mtime_ns == st.st_mtime_ns:
                keep.append((prev[0], old_vectors[prev[1]]))
                report.unchanged += 1
                continue
            try:
                frames, rate = audio_info(f)
            except AudioError as e:
                report.skipped.append(str(e))
                continue
            todo.append((Entry(rel, int(st.st_size), int(st.st_mtime_ns), frames / rate), prev))
        report.removed = sum(1 for rel in known if rel not in seen)
        new, done = _embed(model, root, [e for e, _ in todo], batch_size, progress, report.skipped)
        for (entry, prev), vec, reached in zip(todo, new, done):
            if not reached:  # interrupted before this file: a changed file keeps its old vector until next time
                report.pending += 1
                if prev is not None:
                    keep.append((prev[0], old_vectors[prev[1]]))
            elif vec is not None:
                keep.append((entry, vec))
                if prev is not None:
                    report.changed += 1
                else:
                    report.added += 1
        report.interrupted = not all(done)
        for line in report.skipped:
            log(line)
        if old is None and not keep:
            if report.interrupted:
                raise KeyboardInterrupt
            found = len(files) + sum(report.unsupported.values())
            raise DataError(f"{root}: no audio file could be indexed ({found} found, {len(report.skipped)} "
                            f"unreadable; looked for {', '.join(suffixes)} recursively); nothing was written")
        keep.sort(key=lambda ev: ev[0].path)
        entries = [e for e, _ in keep]
        backend = backend or (old["backend"] if old else "auto")
        index = Index(model.embed_dim, metric="cosine", backend=BACKENDS[backend])
        if keep:
            index.add(np.stack([v for _, v in keep]), ids=np.arange(len(keep)))
        generation = int(old["generation"]) + 1 if old else 1
        info: dict[str, Any] = {
            "format": FORMAT, "version": VERSION, "generation": generation, "root": str(root),
            "model": {"name": model.name, "fingerprint": fp,
                      "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
                      "sample_rate": int(model.sample_rate), "embed_dim": int(model.embed_dim)},
            "backend": backend, "vectors": f"vectors-{generation:06d}.npz",
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": [e.__dict__ for e in entries],
        }
        index.save(d / info["vectors"])
        write_json(d / MANIFEST, info)  # the commit point
        for stale in d.glob("vectors-*.npz"):
            if stale.name != info["vectors"]:
                stale.unlink(missing_ok=True)
        if report.interrupted:  # after saving what was done: the next run embeds only the rest
            raise KeyboardInterrupt
        return cls(d, root, entries, index, model, info), report


def _embed(model: TextAudioModelLike, root: Path, entries: Sequence[Entry], batch_size: int, progress: bool,
           skipped: list[str]) -> tuple[list[np.ndarray | None], list[bool]]:
    """Unit vectors (D,) of ``entries`` (None for a file that cannot be decoded or embedded, with
    a line in ``skipped``) and whether each was reached: Ctrl-C stops the loop after the batches
    done so far. Files go in batches of similar duration, so batches pad little.

    Not :func:`audiofm.embed_io.embed_each`: that loop stops at unreadable files (an evaluation
    must not silently lose clips) and drives an ``AudioEmbedder``; here a file that fails is
    skipped and the model is a text-audio model."""
    from tqdm.auto import tqdm

    sr = int(model.sample_rate)
    out: list[np.ndarray | None] = [None] * len(entries)
    done = [False] * len(entries)
    order = sorted(range(len(entries)), key=lambda i: (entries[i].duration, entries[i].path))
    with tqdm(total=len(entries), desc=f"index {model.name}", unit="file", disable=not progress or not entries,
              dynamic_ncols=True) as bar:
        try:
            for batch in _batches(order, [e.duration for e in entries], batch_size):
                idx, waves, failed = [], [], []
                for i in batch:
                    try:
                        waves.append(load_row(Row(path=str(root / entries[i].path)), sr))
                        idx.append(i)
                    except AudioError as e:
                        failed.append(str(e))
                vecs = _embed_batch(model, waves, sr, [entries[i].path for i in idx], failed) if idx else []
                for i, vec in zip(idx, vecs):
                    out[i] = vec
                for i in batch:
                    done[i] = True
                skipped.extend(failed)
                bar.update(len(batch))
        except KeyboardInterrupt:
            bar.close()
    return out, done


def _batches(order: list[int], durations: list[float], size: int) -> list[list[int]]:
    """``order`` cut into batches of at most ``size`` files and :data:`BATCH_SECONDS` of audio."""
    out: list[list[int]] = []
    seconds = 0.0
    for i in order:
        if not out or len(out[-1]) >= size or seconds + durations[i] > BATCH_SECONDS:
            out.append([])
            seconds = 0.0
        out[-1].append(i)
        seconds += durations[i]
    return out


def _embed_batch(model: TextAudioModelLike, waves: list[np.ndarray], sr: int, names: list[str],
                 skipped: list[str]) -> list[np.ndarray | None]:
    """One batch; when the model refuses it (ValueError: e.g. a clip too short for it), each file
    alone, so one bad file does not cost its batch."""
    try:
        embs = np.asarray(model.embed_audio_batch(waves, sr), dtype=np.float32)
    except ValueError:
        if len(waves) == 1:
            raise
        return [v for w, n in zip(waves, names) for v in _embed_one(model, w, sr, n, skipped)]
    if embs.shape != (len(waves), model.embed_dim):
        raise EmbeddingError(f"{model.name}: embed_audio_batch returned shape {embs.shape} for {len(waves)} "
                              f"files, expected ({len(waves)}, {model.embed_dim})")
    vecs: list[np.ndarray | None] = []
    for n, e in zip(names, embs):
        if np.all(np.isfinite(e)):
            vecs.append(e)
        else:
            skipped.append(f"{n}: the model gave a non-finite embedding; check the audio")
            vecs.append(None)
    return vecs


def _embed_one(model: TextAudioModelLike, wave: np.ndarray, sr: int, name: str, skipped: list[str]
               ) -> list[np.ndarray | None]:
    try:
        return _embed_batch(model, [wave], sr, [name], skipped)
    except ValueError as e:
        skipped.append(f"{name}: cannot be embedded ({e})")
        return [None]


def duration_text(seconds: float) -> str:
    """'0:07' / '1:02:03' for a duration in seconds."""
    s = max(0, math.floor(seconds + 0.5))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
