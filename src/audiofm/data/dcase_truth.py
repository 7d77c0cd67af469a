"""Published DCASE Task 2 ground truth: labels, domains and full names of evaluation clips.

Formats read (each row ``<file name>,<value>``, no header, unless said otherwise):

* the organisers' evaluator folders (2021-2025 ``dcaseYYYY_task2_evaluator``):
  ``ground_truth_data/ground_truth_<machine>_section_<ss>_test.csv`` (1 = anomaly),
  ``ground_truth_domain/...`` (0 = source, 1 = target),
  ``ground_truth_attributes/...`` (the development-style name, which also carries the
  attributes); 2021 files end ``_section_<ss>_{source|target}_test.csv`` (domain in the name);
* ``eval_data_list*.csv`` (2020 and the baselines' lists): a line with only the machine type,
  then ``<evaluation name>,<labelled name>[,<0|1>]`` lines;
* ``ground_truth_<ss>.csv`` inside a machine-type folder (``<name>,<0|1>``), or a CSV with a
  ``file_name`` header and an ``anomaly`` (or ``label``) column, file names possibly
  ``<machine>/<split>/<file>``.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .manifest import DataError

_EVAL_FILE = re.compile(r"ground_truth_(?P<machine>[^_]+)_section_(?P<section>\d\d)"
                        r"(?:_(?P<domain>source|target))?_test$")
_SECTION_FILE = re.compile(r"ground_truth_(?P<section>\d\d)$")
_KIND_DIRS = {"ground_truth_data": "label", "ground_truth_domain": "domain", "ground_truth_attributes": "name"}


@dataclass
class GroundTruth:
    """What the published ground truth says about one evaluation clip ("" = not said)."""

    label: str = ""     # "normal" | "anomaly"
    domain: str = ""    # "source" | "target"
    name: str = ""      # development-style name (shows domain, label, attributes)


Truth = dict[tuple[str, str], GroundTruth]   # (machine type, file name) → truth


def _flag(value: str, where: str, kind: str) -> str:
    v = value.strip()
    if v not in ("0", "1", "0.0", "1.0"):
        raise DataError(f"{where}: expected 0 or 1 for the {kind}, got {value!r}")
    one = v.startswith("1")
    if kind == "domain":
        return "target" if one else "source"
    return "anomaly" if one else "normal"


def _put(out: Truth, machine: str, file: str, **kw: str) -> None:
    key = (machine, Path(file.strip()).name)
    cur = out.setdefault(key, GroundTruth())
    for k, v in kw.items():
        old = getattr(cur, k)
        if old and v and old != v:
            raise DataError(f"ground truth disagrees with itself for {machine}/{key[1]}: {k} {old!r} vs {v!r}")
        if v:
            setattr(cur, k, v)


def _read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return [r for r in csv.reader(f) if r and any(c.strip() for c in r)]


def _read_file(path: Path, out: Truth, kind: str = "", default_machine: str = "") -> None:
    rows = _read_rows(path)
    stem = path.stem
    if stem.startswith("eval_data_list"):
        machine = ""
        for i, r in enumerate(rows, 1):
            if len(r) == 1:
                machine = r[0].strip()
                continue
            if not machine:
                raise DataError(f"{path}:{i}: a file line before any machine-type line")
            fields: dict[str, str] = {}
            for v in r[1:]:
                if v.strip() in ("0", "1"):
                    fields["label"] = _flag(v, f"{path}:{i}", "label")
                elif v.strip():
                    fields["name"] = Path(v.strip()).name
            _put(out, machine, r[0], **fields)
        return
    if rows and rows[0] and rows[0][0].strip() == "file_name":
        header = [h.strip() for h in rows[0]]
        col = next((header.index(c) for c in ("anomaly", "label", "is_anomaly") if c in header), None)
        if col is None:
            raise DataError(f"{path}: a header with file_name needs an 'anomaly' or 'label' column")
        for i, r in enumerate(rows[1:], 2):
            parts = Path(r[0].strip()).parts
            machine = parts[0] if len(parts) > 1 else default_machine or path.parent.name
            _put(out, machine, r[0], label=_flag(r[col], f"{path}:{i}", "label"))
        return
    m = _EVAL_FILE.match(stem)
    if m:
        machine = m.group("machine")
    elif _SECTION_FILE.match(stem):
        machine = default_machine or path.parent.name
    else:
        raise DataError(f"{path}: not a known DCASE ground-truth file (ground_truth_<machine>_section_<ss>_test.csv, "
                        "ground_truth_<ss>.csv, eval_data_list.csv, or a CSV with file_name and anomaly columns)")
    kind = kind or "label"
    domain = m.group("domain") if m else None
    for i, r in enumerate(rows, 1):
        if len(r) < 2:
            raise DataError(f"{path}:{i}: expected <file name>,<value>")
        fields = {"name": Path(r[1].strip()).name} if kind == "name" else {kind: _flag(r[1], f"{path}:{i}", kind)}
        if domain:
            fields["domain"] = domain
        _put(out, machine, r[0], **fields)


def read_ground_truth(path: str | os.PathLike[str], default_machine: str = "") -> Truth:
    """Ground truth by (machine type, file name) from a file or a folder of the formats above.

    A folder is searched for the evaluator's ``ground_truth_{data,domain,attributes}/`` folders,
    ``eval_data_list*.csv``, ``ground_truth_*.csv`` and, one level down, machine-type folders with
    ``ground_truth_<ss>.csv``. ``default_machine`` names the machine type of files that do not say.
    """
    p = Path(path)
    out: Truth = {}
    if p.is_file():
        _read_file(p, out, default_machine=default_machine)
    elif p.is_dir():
        files: list[tuple[Path, str, str]] = []
        for sub, kind in _KIND_DIRS.items():
            if (p / sub).is_dir():
                files += [(f, kind, "") for f in sorted((p / sub).glob("ground_truth_*.csv"))]
        files += [(f, "", default_machine) for f in sorted(p.glob("eval_data_list*.csv"))]
        files += [(f, "", default_machine or p.name) for f in sorted(p.glob("ground_truth_*.csv"))]
        for c in sorted(c for c in p.iterdir() if c.is_dir() and c.name not in _KIND_DIRS):
            files += [(f, "", c.name) for f in sorted(c.glob("ground_truth_*.csv"))]
        for f, kind, machine in files:
            _read_file(f, out, kind=kind, default_machine=machine)
    else:
        raise DataError(f"{p}: ground truth not found (a CSV file or a folder of them)")
    if not out:
        raise DataError(f"{p}: no ground-truth rows found")
    return out
