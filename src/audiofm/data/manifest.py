"""One plain row type for every dataset, read and written as CSV or JSONL."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from io import StringIO
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


def _row_from_dict(d: Any, base: Path, where: str) -> Row:
    if not isinstance(d, dict):
        kind = "a JSON array" if isinstance(d, list) else type(d).__name__
        raise DataError(f"{where}: expected one JSON object per line (a row such as "
                        f'{{"path": "a.wav", "labels": ["dog"]}}), got {kind}')
    if not d.get("path"):
        raise DataError(f"{where}: missing 'path'")
    try:
        return _row(d, base)
    except (TypeError, ValueError) as e:  # e.g. a start time that is not a number, labels that are not a list
        raise DataError(f"{where}: invalid row ({' '.join(str(e).split())})") from None


def _row(d: dict[str, Any], base: Path) -> Row:
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
        if k in _LIST_FIELDS and not isinstance(v, list):
            raise TypeError(f"{k} must be a list or ';'-separated text, got {v!r}")
        if k == "attributes" and not isinstance(v, dict):
            raise TypeError(f"attributes must be a mapping, got {v!r}")
        kw[k] = v
    attrs = kw.pop("attributes", {})
    row = Row(**kw)
    row.path, row.id, row.labels = str(row.path), str(row.id), [str(x) for x in row.labels]
    row.attributes.update({str(a): str(b) for a, b in attrs.items()})
    p = Path(row.path)
    if not p.is_absolute():
        row.path = str(base / p)
    return row


def read_manifest(path: str | os.PathLike[str]) -> list[Row]:
    """Read a CSV/TSV (header with at least ``path``; lists ';'-separated) or JSON Lines
    (``.jsonl``/``.json``: one object per line) manifest, UTF-8 with or without a byte-order mark.

    Relative paths are resolved against the manifest's folder. A manifest without rows, a JSON
    array instead of JSON Lines, or a line that is not a row is a :class:`DataError`.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: manifest not found")
    base = p.parent
    rows: list[Row] = []
    suffix = p.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv", ".tsv"):
        raise DataError(f"{p}: unknown manifest format (use .csv, .tsv or .jsonl)")
    try:
        text = p.read_text(encoding="utf-8-sig")  # a byte-order mark (Excel's "CSV UTF-8") is dropped
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text (byte {e.start}); save the manifest as UTF-8") from None
    if suffix in (".jsonl", ".json"):
        if text.lstrip().startswith("["):
            raise DataError(f"{p}: holds a JSON array; a manifest is JSON Lines, one row object per line "
                            f'(e.g. {{"path": "a.wav", "labels": ["dog"]}})')
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    d = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{p}:{i}: invalid JSON ({e})") from None
                rows.append(_row_from_dict(d, base, f"{p}:{i}"))
    else:
        reader = csv.DictReader(StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        fields = [f.strip() for f in reader.fieldnames or []]
        if "path" not in fields:
            found = f"; found columns {', '.join(fields)}" if fields else " (the file is empty)"
            raise DataError(f"{p}: CSV manifest needs a header with a 'path' column{found}")
        reader.fieldnames = fields
        for i, d in enumerate(reader, 2):
            if None in d:
                raise DataError(f"{p}:{i}: more values than the header has columns")
            rows.append(_row_from_dict(dict(d), base, f"{p}:{i}"))
    if not rows:
        raise DataError(f"{p}: the manifest has no rows" + (" (only a header)" if suffix in (".csv", ".tsv") else ""))
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
