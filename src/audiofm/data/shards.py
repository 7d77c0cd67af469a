"""Indexed webdataset shards: tar files of ``<key>.flac`` + ``<key>.json`` samples and an
``index.json`` that locates every member, so any clip is read by its global index.

Layout of a shard directory::

    index.json            the index (below); its presence makes the directory a data source
    shard-000000.tar      samples 0 .. shard_size-1: 000000000.flac, 000000000.json, ...
    shard-000001.tar      ...

A sample's key is its global index (9 digits), so the webdataset grouping by key (``key.ext``)
holds and the tar order is the dataset order. ``<key>.json`` holds the row: ``id``, ``labels``,
``captions``, ``split``, ``domain``, ``attributes``, ``start``/``end`` and ``source`` (the
original audio path). Audio is stored losslessly where the source is: FLAC files are copied
byte for byte, integer PCM (8/16/24 bit) is re-encoded as FLAC of the same width and channels
(decoding gives the same samples); float or lossy sources are stored as 24-bit FLAC.

``index.json`` follows the layout of webdataset's ``wids`` shard index (``shardlist`` of
``url`` / ``nsamples``) and adds, per shard, the byte ``offset``/``size`` of every member, its
frame count and sample rate; an ``audiofm`` section holds the clip count, the dataset
fingerprint (:func:`audiofm.data.fingerprint` of the rows) and, for HEAR input, each task's
metadata and vocabulary.

Why indexed (random access) rather than streamed: training draws its batches as a pure
function of ``(seed, step, index)`` (:mod:`audiofm.train.data_order`); reading clip ``i``
directly from its offset keeps that order, so a resumed run and N processes read exactly the
clips one uninterrupted process reads, and pretraining from shards equals pretraining from the
folder they were written from. A streamed shard reader (shuffle buffers, shards split over
workers) would make the order depend on the number of processes and on where a run stopped.

Rows read from shards have ``path = "<dir>/shard-000003.tar#000003001.flac"`` (a member
reference); :func:`audiofm.data.dataset.load_row` decodes it.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import AudioError, load_embedded
from ..io import atomic_dir
from .hear import HearTask, is_hear_task, read_hear_task
from .manifest import DataError, Row, fingerprint

INDEX = "index.json"
FORMAT = 1
_KIND = "wids-shard-index-v1"
_REF = re.compile(r"^(?P<tar>.+\.tar)#(?P<member>[^/#]+)$")
_EXACT = {"PCM_S8": "PCM_S8", "PCM_U8": "PCM_S8", "PCM_16": "PCM_16", "PCM_24": "PCM_24"}


def is_shard_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory written by :func:`write_shards` (holds its index)."""
    return (Path(path) / INDEX).is_file()


def is_member_ref(path: str) -> bool:
    """Whether ``path`` names a member of a shard (``<shard>.tar#<member>``)."""
    return ".tar#" in path and _REF.match(path) is not None


def shard_name(i: int) -> str:
    return f"shard-{i:06d}.tar"


def sample_key(i: int) -> str:
    return f"{i:09d}"


# ---------------------------------------------------------------------------------- writing


def _flac_bytes(path: str) -> bytes:
    """The audio of ``path`` as FLAC bytes: a FLAC file verbatim; integer PCM re-encoded at its
    own width (same samples); anything else quantised to 24 bits."""
    import soundfile as sf

    p = Path(path)
    try:
        info = sf.info(str(p))
        if info.frames == 0:
            raise AudioError(f"{p}: audio is empty (0 samples); remove it from the dataset")
        if info.format == "FLAC":
            return p.read_bytes()
        exact = _EXACT.get(info.subtype)
        # int32 reads are left-justified and FLAC writes shift back: integer samples are kept
        data = sf.read(str(p), dtype="int32" if exact else "float32", always_2d=True)[0]
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{p}: cannot decode audio ({e}); re-encode it as WAV/FLAC or remove it") from None
    except OSError as e:
        raise AudioError(f"{p}: cannot read ({e.strerror or e})") from None
    if not exact:
        if not np.all(np.isfinite(data)):
            raise AudioError(f"{p}: audio contains NaN or infinite samples")
        data = np.clip(np.round(data.astype(np.float64) * 2**23), -(2**23), 2**23 - 1).astype(np.int32) << 8
    buf = io.BytesIO()
    sf.write(buf, data, info.samplerate, format="FLAC", subtype=exact or "PCM_24")
    return buf.getvalue()


def _sample_json(row: Row, index: int) -> bytes:
    d = asdict(row)
    d["source"] = d.pop("path")
    d["index"] = index
    return json.dumps(d, sort_keys=True).encode()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444  # fixed metadata: the same input, the same bytes
    tar.addfile(info, io.BytesIO(data))


def _member_table(path: Path) -> dict[str, tuple[int, int]]:
    """name → (data offset, size) of every member of a tar file."""
    with tarfile.open(path, "r:") as tar:
        return {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}


def write_shards(rows: Sequence[Row], out: str | os.PathLike[str], shard_size: int = 1000, *,
                 source: str = "", tasks: dict[str, Any] | None = None, overwrite: bool = False,
                 progress: bool = False) -> dict[str, Any]:
    """Write ``rows`` as shards of ``shard_size`` samples in ``out`` (atomically: the directory
    appears complete or not at all) and return the index. Every unreadable file is reported in
    one DataError before anything is written. ``tasks``: HEAR task metadata kept in the index."""
    import soundfile as sf
    from tqdm.auto import tqdm

    if shard_size < 1:
        raise ValueError(f"shard_size must be ≥ 1, got {shard_size}")
    rows = list(rows)
    if not rows:
        raise DataError(f"{out}: no rows to write")
    bad: list[str] = []
    shardlist: list[dict[str, Any]] = []
    with atomic_dir(out, overwrite=overwrite) as tmp, \
            tqdm(total=len(rows), desc="shards", unit="clip", disable=not progress) as bar:
        for s, first in enumerate(range(0, len(rows), shard_size)):
            part = rows[first : first + shard_size]
            name = shard_name(s)
            frames, rates = [], []
            with tarfile.open(tmp / name, "w", format=tarfile.USTAR_FORMAT) as tar:
                for j, row in enumerate(part):
                    i = first + j
                    try:
                        audio = _flac_bytes(row.path)
                    except AudioError as e:
                        bad.append(str(e))
                        continue
                    info = sf.info(io.BytesIO(audio))
                    frames.append(int(info.frames))
                    rates.append(int(info.samplerate))
                    _add(tar, f"{sample_key(i)}.flac", audio)
                    _add(tar, f"{sample_key(i)}.json", _sample_json(row, i))
                    bar.update(1)
            if bad:
                continue
            table = _member_table(tmp / name)
            keys = [sample_key(first + j) for j in range(len(part))]
            shardlist.append({"url": name, "nsamples": len(part), "filesize": (tmp / name).stat().st_size,
                              "first": first, "keys": keys,
                              "flac": [list(table[f"{k}.flac"]) for k in keys],
                              "json": [list(table[f"{k}.json"]) for k in keys],
                              "frames": frames, "sample_rate": rates})
        if bad:
            listing = "\n  ".join(bad[:20])
            more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
            raise DataError(f"{len(bad)} of {len(rows)} audio files are unusable:\n  {listing}{more}\n"
                            "Fix or remove them and run again (no shards were written).")
        index = {"__kind__": _KIND, "wids_version": 1, "shardlist": shardlist,
                 "audiofm": {"format": FORMAT, "clips": len(rows), "shard_size": shard_size,
                             "fingerprint": fingerprint(rows), "source": source,
                             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "tasks": tasks or {}}}
        (tmp / INDEX).write_text(json.dumps(index, separators=(",", ":")) + "\n")
    return index


def hear_tasks_of(source: str | os.PathLike[str]) -> dict[str, Any]:
    """The HEAR task metadata an index keeps for ``source`` (a task dir or a dir of tasks; else
    empty), by task name as row ids are prefixed with it (:func:`audiofm.data.read_rows`)."""
    p = Path(source)
    if not p.is_dir():
        return {}
    dirs = [p] if is_hear_task(p) else sorted(c for c in p.iterdir() if c.is_dir() and is_hear_task(c))
    out = {}
    for d in dirs:
        t = read_hear_task(d)
        out[d.name] = {"metadata": t.metadata, "vocabulary": t.vocabulary, "sample_rate": t.sample_rate}
    return out


# ---------------------------------------------------------------------------------- reading


@dataclass
class _Member:
    offset: int
    size: int
    frames: int
    sample_rate: int


class ShardSet:
    """The shards of one directory: the index, rows and random access to members."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        path = self.root / INDEX
        try:
            self.index = json.loads(path.read_text())
        except OSError as e:
            raise DataError(f"{path}: cannot read the shard index ({e.strerror or e})") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid JSON ({e})") from None
        meta = self.index.get("audiofm")
        if self.index.get("__kind__") != _KIND or not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataError(f"{path}: not an audiofm shard index (format {FORMAT}); write it with `audiofm shards`")
        self.meta: dict[str, Any] = meta
        self.members: dict[str, _Member] = {}
        for sh in self.index["shardlist"]:
            tar = self.root / sh["url"]
            size = tar.stat().st_size if tar.is_file() else -1
            if size != sh["filesize"]:
                raise DataError(f"{tar}: {'missing' if size < 0 else f'{size} bytes'}, the index expects "
                                f"{sh['filesize']} bytes; rewrite the shards or restore the file")
            for k, (off, n), fr, sr in zip(sh["keys"], sh["flac"], sh["frames"], sh["sample_rate"]):
                self.members[f"{sh['url']}#{k}.flac"] = _Member(int(off), int(n), int(fr), int(sr))

    def __len__(self) -> int:
        return int(self.meta["clips"])

    @property
    def tasks(self) -> dict[str, Any]:
        """HEAR task metadata (``metadata``, ``vocabulary``, ``sample_rate``) by task name."""
        return dict(self.meta.get("tasks") or {})

    def member(self, name: str) -> _Member:
        m = self.members.get(name)
        if m is None:
            raise DataError(f"{self.root}: no member {name!r} in the shard index")
        return m

    def rows(self) -> list[Row]:
        """Every sample as a Row (dataset order); the fingerprint is checked against the index."""
        rows: list[Row] = []
        for sh in self.index["shardlist"]:
            url = sh["url"]
            with open(self.root / url, "rb") as f:
                for k, (off, n) in zip(sh["keys"], sh["json"]):
                    f.seek(off)
                    d = json.loads(f.read(n))
                    rows.append(Row(path=f"{self.root / url}#{k}.flac", id=d["id"], labels=d["labels"],
                                    captions=d["captions"], split=d["split"], domain=d["domain"],
                                    attributes=d["attributes"], start=d["start"], end=d["end"]))
        got, want = fingerprint(rows), self.meta["fingerprint"]
        if got != want:
            raise DataError(f"{self.root}: the samples' fingerprint {got} differs from the index's {want}; "
                            "the shards were changed after writing — rewrite them")
        return rows


_OPEN: dict[str, ShardSet] = {}


def open_shards(root: str | os.PathLike[str]) -> ShardSet:
    """The :class:`ShardSet` of ``root``, read once per process."""
    got = _OPEN.get(str(root))
    if got is None:
        key = Path(root).resolve()
        got = _OPEN.get(str(key)) or ShardSet(key)
        _OPEN[str(root)] = _OPEN[str(key)] = got
    return got


def read_shards(root: str | os.PathLike[str]) -> list[Row]:
    """Rows of the shards in ``root`` (their audio is decoded from the tar members)."""
    return open_shards(root).rows()


def _locate(ref: str) -> tuple[ShardSet, str, _Member]:
    m = _REF.match(ref)
    if m is None:
        raise AudioError(f"{ref}: not a shard member reference (<shard>.tar#<member>)")
    root, _, url = m["tar"].rpartition("/")
    shards = open_shards(root or ".")
    return shards, url, shards.member(f"{url}#{m['member']}")


def load_member(ref: str, sr: int | None = None) -> tuple[np.ndarray, int]:
    """Decode the audio member ``ref`` in place (at its offset in the tar; :func:`~audiofm.audio.load_embedded`)."""
    shards, url, m = _locate(ref)
    return load_embedded(shards.root / url, m.offset, m.frames, sr, name=ref)


def member_info(ref: str) -> tuple[int, int]:
    """(frames, sample rate) of the audio member ``ref``, from the index (nothing decoded)."""
    _, _, m = _locate(ref)
    return m.frames, m.sample_rate


def stored_size(path: str) -> int:
    """Bytes stored for ``path`` (a file, or a shard member); -1 when it cannot be found."""
    try:
        if is_member_ref(path):
            return _locate(path)[2].size
        return os.stat(path).st_size
    except (OSError, DataError, AudioError):
        return -1


def shard_tasks(root: str | os.PathLike[str], only: Sequence[str] | None = None) -> list[HearTask]:
    """The HEAR tasks kept in the shards of ``root`` (written from a task dir or a dir of tasks),
    with the rows and ids :func:`~audiofm.data.read_hear_task` gives; ``only`` selects by name.
    Their ``root`` is ``<shard dir>/<task>`` (not a directory: the audio is in the shards)."""
    shards = open_shards(root)
    tasks = shards.tasks
    if not tasks:
        raise DataError(f"{shards.root}: these shards were not written from HEAR tasks (no task metadata)")
    names = sorted(tasks)
    if only:
        missing = [o for o in only if o not in tasks]
        if missing:
            raise DataError(f"task(s) {missing} not in {shards.root}; available: {names}")
        names = list(only)
    rows = shards.rows()
    out = []
    for name in names:
        t = tasks[name]
        task = HearTask(shards.root / name, str(t["metadata"].get("task_name", name)), t["metadata"],
                        list(t["vocabulary"]), int(t["sample_rate"]))
        prefix = f"{name}/"
        for r in rows:
            if r.id.startswith(prefix):
                task.rows.append(Row(path=r.path, id=r.id[len(prefix):], labels=r.labels, captions=r.captions,
                                     split=r.split, domain=r.domain, attributes=r.attributes, start=r.start,
                                     end=r.end))
        out.append(task)
    return out
