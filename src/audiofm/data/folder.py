"""A folder of audio files as a dataset (recursive; optional label = parent folder name)."""

from __future__ import annotations

import os
from pathlib import Path

from ..audio import find_audio
from .manifest import DataError, Row


def read_folder(root: str | os.PathLike[str], label_from_parent: bool = False) -> list[Row]:
    """Rows for every audio file below ``root``; ids are paths relative to ``root``."""
    root = Path(root)
    files = find_audio(root)
    if not files:
        raise DataError(f"{root}: no audio files found (looked for .wav/.flac/.ogg/.mp3, recursively)")
    rows = []
    for f in files:
        rel = f.relative_to(root).as_posix()
        labels = [f.parent.name] if label_from_parent and f.parent != root else []
        rows.append(Row(path=str(f), id=rel, labels=labels))
    return rows
