"""One plain row type for every dataset, read and written as CSV or JSONL."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..io import atomic_path, write_text


class DataError(ValueError):
    """A dataset could not be read; the message names the file and the fix."""


@dataclass
class Row:
    """One clip.

    id: unique clip id within the dataset (defaults to the path). path: audio file.
    labels: class labels (multi-label allowed). caption(s): text descriptions. split: named
    split or fold ("train", "fold00", ...). domain: e.g. DCASE "source"/"target".
    attributes: free key/value metadata. start/end: optional segment in seconds.
    """

    path: str
    id: str = ""
    labels: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    split: str = ""
    domain: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    start: float | None = None
    end: float | None = None

    def __post_init__(self) -> None:
        if not self.id:
            self.id = self.path


_LIST_FIELDS = {"labels", "captions"}
_FIELD_NAMES = [f.name for f in fields(Row)]


def _row_from_dict(d: dict[str, Any], base: Path, where: str) -> Row:
    if not d.get("path"):
        raise DataError(f"{where}: missing 'path'")
    kw: dict[str, Any] = {}
    for k, v in d.items():
        if k not in _FIELD_NAMES:
            kw.setdefault("attributes", {})[k] = str(v)
            continue
        if v is None or v == "":
            continue
        if k in _LIST_FIELDS and isinstance(v, str):
            v = [s for s in v.split(";") if s] if not v.startswith("[") else json.loads(v)
        elif k == "attributes" and isinstance(v, str):
            v = json.loads(v)
        elif k in ("start", "end"):
            v = float(v)
        kw[k] = v
    attrs = kw.pop("attributes", {})
    row = Row(**kw)
    row.attributes.update({str(a): str(b) for a, b in attrs.items()})
    p = Path(row.path)
    if not p.is_absolute():
        row.path = str(base / p)
    return row


def read_manifest(path: str | os.PathLike[str]) -> list[Row]:
    """Read a CSV (header with at least ``path``; lists ';'-separated) or JSONL manifest.

    Relative paths are resolved against the manifest's folder.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: manifest not found")
    base = p.parent
    rows: list[Row] = []
    if p.suffix.lower() in (".jsonl", ".json"):
        with p.open() as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    try:
                        d = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{p}:{i}: invalid JSON ({e})") from None
                    rows.append(_row_from_dict(d, base, f"{p}:{i}"))
    elif p.suffix.lower() in (".csv", ".tsv"):
        with p.open(newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if p.suffix.lower() == ".tsv" else ",")
            if reader.fieldnames is None or "path" not in reader.fieldnames:
                raise DataError(f"{p}: CSV manifest needs a header with a 'path' column")
            for i, d in enumerate(reader, 2):
                rows.append(_row_from_dict(dict(d), base, f"{p}:{i}"))
    else:
        raise DataError(f"{p}: unknown manifest format (use .csv, .tsv or .jsonl)")
    check_unique_ids(rows, str(p))
    return rows


def write_manifest(rows: Sequence[Row], path: str | os.PathLike[str]) -> None:
    """Write rows as CSV or JSONL (by extension), atomically."""
    p = Path(path)
    if p.suffix.lower() == ".jsonl":
        write_text(p, "".join(json.dumps(asdict(r)) + "\n" for r in rows))
    elif p.suffix.lower() == ".csv":
        with atomic_path(p) as tmp, tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=_FIELD_NAMES)
            w.writeheader()
            for r in rows:
                d = asdict(r)
                d["labels"] = ";".join(r.labels)
                d["captions"] = json.dumps(r.captions) if r.captions else ""
                d["attributes"] = json.dumps(r.attributes) if r.attributes else ""
                w.writerow(d)
    else:
        raise DataError(f"{p}: unknown manifest format (use .csv or .jsonl)")


def check_unique_ids(rows: Iterable[Row], where: str) -> None:
    seen: set[str] = set()
    for r in rows:
        if r.id in seen:
            raise DataError(f"{where}: duplicate clip id {r.id!r}")
        seen.add(r.id)


def fingerprint(rows: Sequence[Row]) -> dict[str, Any]:
    """Dataset fingerprint: clip count and a hash of the sorted clip ids."""
    h = hashlib.sha256()
    for i in sorted(r.id for r in rows):
        h.update(i.encode())
        h.update(b"\0")
    return {"clips": len(rows), "ids_sha256": h.hexdigest()[:16]}
