"""HEAR task directories (hear-preprocess output layout).

``task_metadata.json``, ``labelvocabulary.csv`` ("idx,label"), ``<split>.json``
(``{"file.wav": ["label", ...]}``) and the audio in ``<rate>/<split>/<file>``. Split modes:
``trainvaltest`` (train/valid/test) and ``new_split_kfold`` / ``presplit_kfold`` (folds
``fold00``...; the HEAR rotation uses fold i as test, fold i+1 as validation, the rest as train).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .manifest import DataError, Row


@dataclass
class Split:
    """One evaluation round: which splits train, validate and test."""

    name: str
    train: list[str]
    valid: list[str]
    test: list[str]


@dataclass
class HearTask:
    root: Path
    name: str
    metadata: dict[str, Any]
    vocabulary: list[str]
    sample_rate: int
    rows: list[Row] = field(default_factory=list)

    @property
    def prediction_type(self) -> str:
        return str(self.metadata.get("prediction_type", "multiclass"))

    @property
    def split_names(self) -> list[str]:
        return list(self.metadata["splits"])

    def rounds(self) -> list[Split]:
        """Evaluation rounds: one for train/valid/test, k for k-fold (HEAR rotation)."""
        return hear_rounds(self.metadata)

    def rows_for(self, splits: list[str]) -> list[Row]:
        want = set(splits)
        return [r for r in self.rows if r.split in want]


def hear_rounds(metadata: dict[str, Any]) -> list[Split]:
    mode = metadata.get("split_mode", "trainvaltest")
    splits = list(metadata.get("splits", []))
    if mode == "trainvaltest":
        missing = {"train", "valid", "test"} - set(splits)
        if missing:
            raise DataError(f"split_mode trainvaltest needs splits train/valid/test; missing {sorted(missing)}")
        return [Split("test", ["train"], ["valid"], ["test"])]
    if mode in ("new_split_kfold", "presplit_kfold"):
        k = len(splits)
        if k < 3:
            raise DataError(f"k-fold split mode needs at least 3 folds, got {splits}")
        out = []
        for i in range(k):
            test, valid = splits[i], splits[(i + 1) % k]
            train = [s for s in splits if s not in (test, valid)]
            out.append(Split(f"fold{i:02d}", train, [valid], [test]))
        return out
    raise DataError(f"unknown HEAR split_mode {mode!r}")


def _pick_rate(root: Path, requested: int | None) -> int:
    rates = sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())
    if not rates:
        raise DataError(f"{root}: no audio folder named by sample rate (e.g. {root}/16000/)")
    if requested is not None:
        if requested in rates:
            return requested
        # resampling from the closest rate above (or the highest) happens at load time
        above = [r for r in rates if r >= requested]
        return above[0] if above else rates[-1]
    return 16000 if 16000 in rates else rates[-1]


def read_hear_task(root: str | os.PathLike[str], sample_rate: int | None = None) -> HearTask:
    """Read a HEAR task directory; rows carry split, labels and the task-relative id."""
    root = Path(root)
    meta_path = root / "task_metadata.json"
    if not meta_path.is_file():
        raise DataError(f"{root}: not a HEAR task directory (no task_metadata.json)")
    metadata = _read_json(meta_path)
    if not isinstance(metadata, dict) or not isinstance(metadata.get("splits"), list):
        raise DataError(f"{meta_path}: missing 'splits' (a list of split names)")
    vocab_path = root / "labelvocabulary.csv"
    if not vocab_path.is_file():
        raise DataError(f"{root}: missing labelvocabulary.csv")
    with vocab_path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if "label" not in (reader.fieldnames or []):
            raise DataError(f"{vocab_path}: needs a header with a 'label' column (idx,label)")
        vocabulary = [r["label"] for r in reader]
    rate = _pick_rate(root, sample_rate)
    task = HearTask(root, str(metadata.get("task_name", root.name)), metadata, vocabulary, rate)
    known = set(vocabulary)
    for split in task.split_names:
        sp = root / f"{split}.json"
        if not sp.is_file():
            raise DataError(f"{root}: missing {split}.json listed in task_metadata.json")
        labels_by_file = _read_json(sp)
        if not isinstance(labels_by_file, dict) or not all(isinstance(v, list) for v in labels_by_file.values()):
            raise DataError(f'{sp}: expected a mapping of file name to its labels, e.g. {{"a.wav": ["dog"]}}')
        for fname, labels in labels_by_file.items():
            bad = [lab for lab in labels if str(lab) not in known]
            if bad:
                raise DataError(f"{sp}: {fname} has label(s) {bad} not in labelvocabulary.csv")
            path = root / str(rate) / split / fname
            task.rows.append(Row(path=str(path), id=f"{split}/{fname}", labels=[str(x) for x in labels],
                                 split=split))
    missing = [r.path for r in task.rows if not Path(r.path).is_file()]
    if missing:
        raise DataError(f"{root}: {len(missing)} audio file(s) listed in split JSON are missing, "
                        f"e.g. {missing[0]}")
    return task


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: invalid JSON ({e})") from None


def check_unique_names(tasks: list[HearTask]) -> None:
    """Results are keyed by task name: two task directories with one ``task_name`` are an error."""
    seen: dict[str, Path] = {}
    for t in tasks:
        if t.name in seen:
            raise DataError(f"{seen[t.name]} and {t.root} have the same task_name {t.name!r} "
                            "(task_metadata.json); give each task a unique task_name, or pick one with --only")
        seen[t.name] = t.root


def is_hear_task(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / "task_metadata.json").is_file()
