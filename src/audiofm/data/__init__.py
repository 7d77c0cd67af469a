"""Datasets: one row type (:class:`Row`), manifests, and format adapters."""

from __future__ import annotations

import os
from pathlib import Path

from ..io import file_sha256
from .folder import read_folder
from .hear import HearTask, Split, hear_rounds, is_hear_task, read_hear_task
from .manifest import DataError, Row, fingerprint, read_manifest, write_manifest
from .shards import is_shard_dir, read_shards, write_shards
from .tasks import (
    MULTICLASS,
    MULTILABEL,
    PREDICTION_TYPES,
    LabelledRows,
    TaskError,
    check_task,
    encode_labels,
    label_matrix,
    pick_round,
    round_rows,
    select_rounds,
)


def read_rows(source: str | os.PathLike[str], splits: list[str] | None = None,
              left_out: list[Row] | None = None) -> list[Row]:
    """Rows from a manifest file, a shard directory (``audiofm shards``), a HEAR task dir, a
    directory of HEAR tasks, or an audio folder.

    ``splits`` keeps only rows of those splits (HEAR split names such as "fold02", or "train").
    From a directory of HEAR tasks it also leaves out the rows whose audio file is another split's
    (:func:`select_splits`: tasks cut from one source share clips, so one task's training fold can
    hold another's test clips); they are appended to ``left_out`` when a list is given.
    """
    p = Path(source)
    if p.is_file():
        rows = read_manifest(p)
    elif is_shard_dir(p):
        rows = read_shards(p)
    elif is_hear_task(p):
        rows = read_hear_task(p).rows
        for r in rows:
            r.id = f"{p.name}/{r.id}"
    elif p.is_dir() and any(is_hear_task(c) for c in p.iterdir() if c.is_dir()):
        rows = []
        for c in sorted(c for c in p.iterdir() if c.is_dir() and is_hear_task(c)):
            task_rows = read_hear_task(c).rows
            for r in task_rows:
                r.id = f"{c.name}/{r.id}"
            rows.extend(task_rows)
        if splits:
            rows, left = select_splits(rows, splits, str(p))
            if left_out is not None:
                left_out.extend(left)
            splits = None
    elif p.is_dir():
        rows = read_folder(p)
    else:
        raise DataError(f"{p}: no such file or directory (expected a manifest, HEAR task dir or audio folder)")
    if splits:
        want = set(splits)
        rows = [r for r in rows if r.split in want]
        if not rows:
            raise DataError(f"{p}: no rows in split(s) {sorted(want)}")
    return rows


def select_splits(rows: list[Row], splits: list[str], where: str = "data") -> tuple[list[Row], list[Row]]:
    """The rows of ``splits``, minus those whose audio file is byte for byte also the file of a
    row outside them — e.g. a clip in one task's training fold that is another task's test clip
    (HEAR tasks cut from one source share files: fsdd-digit and fsdd-speaker, the two tonejs
    tasks). Returns (kept, left out). Only files of equal size are hashed (SHA-256); audio that was
    re-encoded or re-cut is not recognised."""
    want = set(splits)
    chosen = [r for r in rows if r.split in want]
    if not chosen:
        raise DataError(f"{where}: no rows in split(s) {sorted(want)}")
    others = [r for r in rows if r.split not in want]
    sizes: dict[str, int] = {}

    def size(path: str) -> int:
        if path not in sizes:
            sizes[path] = os.path.getsize(path)
        return sizes[path]

    chosen_sizes = {size(r.path) for r in chosen}
    other_sizes = {size(r.path) for r in others}
    held = {file_sha256(r.path) for r in others if size(r.path) in chosen_sizes}
    kept: list[Row] = []
    left: list[Row] = []
    for r in chosen:
        (left if size(r.path) in other_sizes and file_sha256(r.path) in held else kept).append(r)
    if not kept:
        raise DataError(f"{where}: every row of split(s) {sorted(want)} is also audio of another split")
    return kept, left


__all__ = [
    "MULTICLASS",
    "MULTILABEL",
    "PREDICTION_TYPES",
    "DataError",
    "HearTask",
    "LabelledRows",
    "Row",
    "Split",
    "TaskError",
    "check_task",
    "encode_labels",
    "fingerprint",
    "hear_rounds",
    "is_hear_task",
    "is_shard_dir",
    "label_matrix",
    "pick_round",
    "read_folder",
    "read_hear_task",
    "read_manifest",
    "read_rows",
    "read_shards",
    "round_rows",
    "select_rounds",
    "select_splits",
    "write_manifest",
    "write_shards",
]
