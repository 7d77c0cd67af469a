"""Labelled scene tasks: the checks, label encodings and evaluation rounds that evaluation and
adaptation share.

A HEAR task (:class:`~audiofm.data.hear.HearTask`) is usable when it is a *scene* task (one
prediction per clip) of prediction type ``multiclass`` (exactly one label per clip) or
``multilabel``. Its rounds (:meth:`HearTask.rounds`) say which splits train, validate and test;
:func:`round_rows` turns one round into :class:`LabelledRows`, what recipes take instead of
the task object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .hear import HearTask, Split
from .manifest import DataError, Row

MULTICLASS = "multiclass"
MULTILABEL = "multilabel"
PREDICTION_TYPES = (MULTICLASS, MULTILABEL)
PARTS = ("train", "valid", "test")


class TaskError(DataError):
    """A task or round cannot be used as asked; the message names the task and the fix."""


def check_task(task: HearTask) -> None:
    """Raise TaskError unless ``task`` is a scene task of a supported prediction type whose
    multiclass clips carry exactly one label each."""
    where = task.root / "task_metadata.json"
    kind = task.metadata.get("embedding_type", "scene")
    if kind != "scene":
        raise TaskError(f"{where}: embedding_type {kind!r} (timestamp/event tasks) is not supported; "
                        "only scene tasks (one label set per clip) are — exclude the task (e.g. with --only)")
    if task.prediction_type not in PREDICTION_TYPES:
        raise TaskError(f"{where}: prediction_type {task.prediction_type!r} is not supported "
                        f"(use {' or '.join(PREDICTION_TYPES)})")
    if task.prediction_type == MULTICLASS:
        bad = [r for r in task.rows if len(r.labels) != 1]
        if bad:
            raise TaskError(f"{task.root}: multiclass task but {bad[0].id} has {len(bad[0].labels)} labels "
                            f"({len(bad)} such clips); fix the split JSON or set prediction_type multilabel")


def _index(vocabulary: Sequence[str]) -> dict[str, int]:
    return {lab: i for i, lab in enumerate(vocabulary)}


def _unknown(rows: Sequence[Row], index: dict[str, int]) -> None:
    for r in rows:
        bad = [lab for lab in r.labels if lab not in index]
        if bad:
            raise TaskError(f"clip {r.id!r}: label(s) {bad} are not in the vocabulary")


def label_matrix(rows: Sequence[Row], vocabulary: Sequence[str]) -> np.ndarray:
    """(N, C) float32 targets: one-hot for single-label clips, multi-hot otherwise."""
    index = _index(vocabulary)
    _unknown(rows, index)
    y = np.zeros((len(rows), len(vocabulary)), dtype=np.float32)
    for n, r in enumerate(rows):
        for lab in r.labels:
            y[n, index[lab]] = 1.0
    return y


def encode_labels(rows: Sequence[Row], vocabulary: Sequence[str], prediction_type: str) -> np.ndarray:
    """(N,) int64 class indices (multiclass) or (N, C) float32 multi-hot (multilabel)."""
    if prediction_type == MULTICLASS:
        index = _index(vocabulary)
        _unknown(rows, index)
        bad = [r for r in rows if len(r.labels) != 1]
        if bad:
            raise TaskError(f"clip {bad[0].id!r}: multiclass needs exactly one label, got {bad[0].labels}")
        return np.asarray([index[r.labels[0]] for r in rows], dtype=np.int64)
    if prediction_type == MULTILABEL:
        return label_matrix(rows, vocabulary)
    raise TaskError(f"unknown prediction_type {prediction_type!r} (use {' or '.join(PREDICTION_TYPES)})")


def select_rounds(rounds: list[Split], folds: list[int] | None = None, max_folds: int | None = None,
                  where: str = "task") -> list[Split]:
    """Rounds to run: indices in ``folds`` (in the task's order; indices a task does not have are
    skipped, so one ``--folds`` works across tasks with different fold counts), then the first
    ``max_folds``. Raises TaskError when nothing is left."""
    out = rounds
    if folds is not None:
        if any(i < 0 for i in folds):
            raise TaskError(f"--folds must be non-negative round indices, got {folds}")
        want = set(folds)
        out = [r for i, r in enumerate(rounds) if i in want]
        if not out:
            raise TaskError(f"{where}: --folds {folds} selects none of its {len(rounds)} round(s) "
                            f"({', '.join(r.name for r in rounds)})")
    if max_folds is not None:
        if max_folds < 1:
            raise TaskError(f"--max-folds must be ≥ 1, got {max_folds}")
        out = out[:max_folds]
    return out


def pick_round(task: HearTask, fold: int) -> Split:
    """Round ``fold`` of ``task``; the error names the valid range and the rounds."""
    rounds = task.rounds()
    if not 0 <= fold < len(rounds):
        raise TaskError(f"--fold {fold}: {task.name} has {len(rounds)} round(s) "
                        f"(0..{len(rounds) - 1}: {', '.join(r.name for r in rounds)})")
    return rounds[fold]


@dataclass
class LabelledRows:
    """One round of a labelled task: what recipes and probes take instead of a HEAR task."""

    name: str
    round: str
    vocabulary: list[str]
    prediction_type: str
    train: list[Row]
    valid: list[Row]
    test: list[Row]

    def rows(self, part: str) -> list[Row]:
        """The rows of ``part`` ("train", "valid" or "test")."""
        if part not in PARTS:
            raise ValueError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
        rows: list[Row] = getattr(self, part)
        return rows

    def labels(self, part: str) -> np.ndarray:
        """:func:`encode_labels` of ``part``."""
        return encode_labels(self.rows(part), self.vocabulary, self.prediction_type)

    def targets(self, part: str) -> np.ndarray:
        """:func:`label_matrix` of ``part``: (N, C) float32."""
        return label_matrix(self.rows(part), self.vocabulary)


def round_rows(task: HearTask, split: Split) -> LabelledRows:
    """The train/valid/test rows of round ``split`` (each in the task's row order).

    Raises TaskError when a part has no clips."""
    parts = {}
    for part, names in zip(PARTS, (split.train, split.valid, split.test)):
        rows = task.rows_for(names)
        if not rows:
            raise TaskError(f"{task.root}: round {split.name} has no clips in {part} split(s) {names}")
        parts[part] = rows
    return LabelledRows(task.name, split.name, list(task.vocabulary), task.prediction_type,
                        parts["train"], parts["valid"], parts["test"])


__all__ = ["MULTICLASS", "MULTILABEL", "PARTS", "PREDICTION_TYPES", "LabelledRows", "TaskError", "check_task",
           "encode_labels", "label_matrix", "pick_round", "round_rows", "select_rounds"]
