"""Datasets: one row type (:class:`Row`), manifests, and format adapters."""

from __future__ import annotations

import os
from pathlib import Path

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


def read_rows(source: str | os.PathLike[str], splits: list[str] | None = None) -> list[Row]:
    """Rows from a manifest file, a shard directory (``audiofm shards``), a HEAR task dir, a
    directory of HEAR tasks, or an audio folder.

    ``splits`` keeps only rows of those splits (HEAR split names such as "fold02", or "train").
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
    "write_manifest",
    "write_shards",
]
