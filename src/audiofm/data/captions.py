"""Caption datasets for language-based audio retrieval: Clotho, AudioCaps, plain pairs, relevance.

Every reader returns :class:`~audiofm.data.manifest.Row` objects with ``captions`` filled (one row
per clip, all of its captions), and every problem in a file is reported at once in one
:class:`DataError` naming the file, the row (line number) and the expected columns.

Relevance (several relevant files per query, DCASE 2025 Task 6) is a mapping from query text to
the set of relevant clip ids (Clotho file names): :func:`read_relevance` reads both the
rendered set's long format and the DCASE 2025 ``query,audio_filenames`` list format.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .manifest import DataError, Row

CLOTHO_SPLITS = ("development", "validation", "evaluation")
AUDIOCAPS_COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")
RELEVANCE_LONG_COLUMNS = ("query_id", "caption", "file_name", "relevant_file_name")
RELEVANCE_LIST_COLUMNS = ("query", "audio_filenames")
PAIR_COLUMNS = ("path", "caption")

Relevance = dict[str, frozenset[str]]
"""Query text → ids of every relevant clip."""

_MAX_LISTED = 20


def _fail(path: Path, problems: list[str], expected: str) -> None:
    if problems:
        shown = problems[:_MAX_LISTED]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise DataError(f"{path}: {len(problems)} problem(s) (expected {expected}):\n  "
                        + "\n  ".join(shown) + more)


def _read_csv(path: Path, required: Sequence[str]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs of a CSV; the header must hold ``required``."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected a CSV with columns {', '.join(required)})")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # older Clotho metadata files are ISO-8859-1
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (header: {', '.join(header) or 'empty'};"
                        f" expected columns {', '.join(required)})")
    reader.fieldnames = header
    rows = [(reader.line_num, {k: (v or "").strip() for k, v in d.items() if k is not None})
            for d in reader]
    return header, rows


def _caption_columns(header: Sequence[str]) -> list[str]:
    cols = [h for h in header if h.startswith("caption_") and h[len("caption_"):].isdigit()]
    return sorted(cols, key=lambda c: int(c[len("caption_"):]))


def _find_captions_csv(source: Path, split: str | None) -> tuple[Path, str]:
    if source.is_file():
        name = source.stem
        guess = name[len("clotho_captions_"):] if name.startswith("clotho_captions_") else ""
        return source, split or guess
    if not source.is_dir():
        raise DataError(f"{source}: no such file or directory (expected a Clotho folder or a "
                        "clotho_captions_<split>.csv file)")
    if split is None:
        raise DataError(f"{source}: name the split to read (one of {', '.join(CLOTHO_SPLITS)})")
    return source / f"clotho_captions_{split}.csv", split


def read_clotho(source: str | os.PathLike[str], split: str | None = None, *,
                audio_dir: str | os.PathLike[str] | None = None, check_audio: bool = False) -> list[Row]:
    """Rows of a Clotho split: ``clotho_captions_<split>.csv`` (``file_name,caption_1..caption_N``).

    ``source`` is the Clotho folder (then ``split`` is required) or the captions CSV itself.
    Audio is looked for in ``audio_dir`` (default ``<folder>/<split>/``); ``check_audio`` reports
    every missing file. Columns of ``clotho_metadata_<split>.csv``, when present beside the
    captions file, become row attributes. Row id = file name (what relevance files name).
    """
    csv_path, split_name = _find_captions_csv(Path(source), split)
    header, rows = _read_csv(csv_path, ["file_name", "caption_1"])
    cap_cols = _caption_columns(header)
    folder = csv_path.parent
    audio_root = Path(audio_dir) if audio_dir is not None else folder / split_name
    meta = _read_clotho_metadata(folder / f"clotho_metadata_{split_name}.csv") if split_name else {}
    out: list[Row] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for line, d in rows:
        name = d.get("file_name", "")
        caps = [d[c] for c in cap_cols if d.get(c)]
        if not name:
            problems.append(f"line {line}: empty file_name")
            continue
        if name in seen:
            problems.append(f"line {line}: file_name {name!r} already on line {seen[name]}")
            continue
        seen[name] = line
        if not caps:
            problems.append(f"line {line}: {name!r} has no caption")
            continue
        path = audio_root / name
        if check_audio and not path.is_file():
            problems.append(f"line {line}: audio file {path} not found")
        out.append(Row(path=str(path), id=name, captions=caps, split=split_name,
                       attributes=dict(meta.get(name, {}))))
    _fail(csv_path, problems, f"columns file_name,{','.join(cap_cols) or 'caption_1'} with a non-empty file "
                              "name and at least one caption per row")
    if not out:
        raise DataError(f"{csv_path}: no rows")
    return out


def _read_clotho_metadata(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    _, rows = _read_csv(path, ["file_name"])
    return {d["file_name"]: {k: v for k, v in d.items() if k != "file_name"} for _, d in rows}


def read_audiocaps(path: str | os.PathLike[str], audio_dir: str | os.PathLike[str], *,
                   file_pattern: str = "{youtube_id}.wav", trimmed: bool = True, clip_seconds: float = 10.0,
                   check_audio: bool = False, split: str = "") -> list[Row]:
    """Rows of an AudioCaps-style CSV (``audiocap_id,youtube_id,start_time,caption``).

    Captions of the same (youtube_id, start_time) are one clip; row id =
    ``<youtube_id>_<start_time>``. The audio file is ``audio_dir / file_pattern`` formatted with
    ``youtube_id``, ``start_time`` (int seconds) and ``audiocap_id`` (the first one). With
    ``trimmed=False`` the file is the whole video's audio and the row is the segment
    [start_time, start_time + clip_seconds).
    """
    p = Path(path)
    _, rows = _read_csv(p, AUDIOCAPS_COLUMNS)
    root = Path(audio_dir)
    clips: dict[tuple[str, int], Row] = {}
    problems: list[str] = []
    for line, d in rows:
        bad = [c for c in AUDIOCAPS_COLUMNS if not d.get(c)]
        if bad:
            problems.append(f"line {line}: empty {', '.join(bad)}")
            continue
        try:
            start = int(float(d["start_time"]))
        except ValueError:
            problems.append(f"line {line}: start_time {d['start_time']!r} is not a number")
            continue
        key = (d["youtube_id"], start)
        row = clips.get(key)
        if row is None:
            try:
                name = file_pattern.format(youtube_id=key[0], start_time=start, audiocap_id=d["audiocap_id"])
            except (KeyError, IndexError) as e:
                raise DataError(f"{p}: file_pattern {file_pattern!r} uses an unknown field {e} (fields: "
                                "youtube_id, start_time, audiocap_id)") from None
            audio = root / name
            if check_audio and not audio.is_file():
                problems.append(f"line {line}: audio file {audio} not found")
            row = Row(path=str(audio), id=f"{key[0]}_{start}", split=split,
                      start=None if trimmed else float(start),
                      end=None if trimmed else float(start) + clip_seconds,
                      attributes={"youtube_id": key[0], "start_time": str(start), "audiocap_ids": ""})
            clips[key] = row
        row.captions.append(d["caption"])
        ids = row.attributes["audiocap_ids"]
        row.attributes["audiocap_ids"] = f"{ids};{d['audiocap_id']}" if ids else d["audiocap_id"]
    _fail(p, problems, f"columns {','.join(AUDIOCAPS_COLUMNS)}, all non-empty, start_time in seconds")
    if not clips:
        raise DataError(f"{p}: no rows")
    return list(clips.values())


def read_caption_pairs(path: str | os.PathLike[str], *, check_audio: bool = False) -> list[Row]:
    """Rows from a user's own (path, caption) pairs: CSV with columns ``path,caption`` or JSONL
    objects with those keys (optional ``id``, ``split``).

    Several lines with the same path are one clip with several captions; relative paths are
    resolved against the file's folder.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    items: list[tuple[int, dict[str, str]]] = []
    problems: list[str] = []
    if suffix in (".jsonl", ".json"):
        if not p.is_file():
            raise DataError(f"{p}: file not found (expected JSONL objects with keys path, caption)")
        for i, text in enumerate(p.read_text().splitlines(), 1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                problems.append(f"line {i}: invalid JSON ({e.msg})")
                continue
            if not isinstance(obj, dict):
                problems.append(f"line {i}: not a JSON object")
                continue
            items.append((i, {str(k): "" if v is None else str(v).strip() for k, v in obj.items()}))
    elif suffix == ".csv":
        _, items = _read_csv(p, PAIR_COLUMNS)
    else:
        raise DataError(f"{p}: unknown pairs format (use .csv with columns path,caption or .jsonl)")
    by_path: dict[str, Row] = {}
    for line, d in items:
        bad = [c for c in PAIR_COLUMNS if not d.get(c)]
        if bad:
            problems.append(f"line {line}: missing or empty {', '.join(bad)}")
            continue
        audio = Path(d["path"])
        if not audio.is_absolute():
            audio = p.parent / audio
        key = str(audio)
        row = by_path.get(key)
        if row is None:
            if check_audio and not audio.is_file():
                problems.append(f"line {line}: audio file {audio} not found")
            row = Row(path=key, id=d.get("id") or d["path"], split=d.get("split", ""))
            by_path[key] = row
        row.captions.append(d["caption"])
    ids: dict[str, str] = {}
    for r in by_path.values():
        if r.id in ids:
            problems.append(f"id {r.id!r} used for two files ({ids[r.id]} and {r.path})")
        ids[r.id] = r.path
    _fail(p, problems, "a non-empty path and caption on every line")
    if not by_path:
        raise DataError(f"{p}: no pairs")
    return list(by_path.values())


def _parse_list(value: str) -> list[str] | None:
    """A Python or JSON list literal of file names (as in the DCASE 2025 metadata_eval.csv)."""
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return None
    if isinstance(parsed, str):
        return [parsed]
    if isinstance(parsed, list | tuple) and all(isinstance(x, str) for x in parsed):
        return list(parsed)
    return None


def read_relevance(path: str | os.PathLike[str]) -> Relevance:
    """Query text → relevant clip ids, from either relevance format.

    - long format (the rendered set's ``relevance_evaluation.csv``): one row per (query,
      relevant file), columns ``query_id,caption,file_name,relevant_file_name``;
    - list format (DCASE 2025 Task 6 ``metadata_eval.csv``, read by the baseline's
      ``d25_t6/retrieval_module.py``): columns ``query,audio_filenames`` with a list literal,
      e.g. ``"['a.wav', 'b.wav']"``.

    The same query text on several rows (or query ids) gets the union of their files.
    """
    p = Path(path)
    header, rows = _read_csv(p, [])
    if "caption" in header and "relevant_file_name" in header:
        text_col, expected = "caption", "columns " + ",".join(RELEVANCE_LONG_COLUMNS)
    elif all(c in header for c in RELEVANCE_LIST_COLUMNS):
        text_col, expected = "query", "columns query,audio_filenames with a list of file names per query"
    else:
        raise DataError(f"{p}: unknown relevance format (header: {', '.join(header) or 'empty'}; expected "
                        f"columns {','.join(RELEVANCE_LONG_COLUMNS)} or {','.join(RELEVANCE_LIST_COLUMNS)})")
    found: dict[str, set[str]] = {}
    problems: list[str] = []
    for line, d in rows:
        text = d.get(text_col, "")
        if not text:
            problems.append(f"line {line}: empty {text_col}")
            continue
        if text_col == "caption":
            files = [d["relevant_file_name"]] if d.get("relevant_file_name") else []
        else:
            parsed = _parse_list(d.get("audio_filenames", ""))
            if parsed is None:
                problems.append(f"line {line}: audio_filenames {d.get('audio_filenames', '')!r} is not a list "
                                "of file names")
                continue
            files = [f.strip() for f in parsed if f.strip()]
        if not files:
            problems.append(f"line {line}: no relevant file for query {text!r}")
            continue
        found.setdefault(text, set()).update(files)
    _fail(p, problems, expected)
    if not found:
        raise DataError(f"{p}: no queries")
    return {q: frozenset(f) for q, f in found.items()}


def pair_relevance(rows: Iterable[Row]) -> Relevance:
    """Relevance of the original pairs: each caption → the clip(s) it was written for."""
    found: dict[str, set[str]] = {}
    for r in rows:
        for c in r.captions:
            found.setdefault(c, set()).add(r.id)
    return {q: frozenset(f) for q, f in found.items()}


def check_relevance(relevance: Mapping[str, Iterable[str]], rows: Sequence[Row], where: str = "relevance") -> None:
    """Every relevant id must be a clip of ``rows``; all unknown ids are named at once."""
    known = {r.id for r in rows}
    unknown = sorted({f for files in relevance.values() for f in files if f not in known})
    if unknown:
        shown = ", ".join(unknown[:_MAX_LISTED]) + (" ..." if len(unknown) > _MAX_LISTED else "")
        raise DataError(f"{where}: {len(unknown)} relevant file(s) are not clips of the dataset ({len(known)} "
                        f"clips): {shown}")
