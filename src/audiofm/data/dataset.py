"""Rows to waveforms, in one place: :func:`load_row` (an audio file or a shard member, at a
sample rate, cut to the row's segment), :func:`row_duration`, :func:`unreadable`; and for
training :class:`ClipStore` (decode once, cache in memory, deterministic random crops)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..audio import AudioError, audio_info, load_audio
from .manifest import DataError, Row
from .shards import is_member_ref, load_member, member_info


def load_row(row: Row, sr: int) -> np.ndarray:
    """The row's audio at ``sr`` (mono float32), cut to its ``start``/``end`` segment; from the
    file, or from the tar member a row read from shards names. Raises AudioError."""
    if is_member_ref(row.path):
        try:
            wave, _ = load_member(row.path, sr)
        except DataError as e:
            raise AudioError(str(e)) from None
    else:
        wave, _ = load_audio(row.path, sr)
    if row.start is None and row.end is None:
        return wave
    a = round((row.start or 0.0) * sr)
    b = len(wave) if row.end is None else round(row.end * sr)
    return wave[a:b]


def row_duration(row: Row) -> float:
    """Seconds of audio the row stands for (its segment, else the file's length from the header
    or the shard index). Raises AudioError."""
    if row.end is not None:
        return row.end - (row.start or 0.0)
    try:
        frames, rate = member_info(row.path) if is_member_ref(row.path) else audio_info(row.path)
    except DataError as e:
        raise AudioError(str(e)) from None
    return frames / rate - (row.start or 0.0)


def unreadable(rows: Sequence[Row]) -> list[str]:
    """Why each row that cannot be decoded cannot (every problem, not just the first)."""
    bad: list[str] = []
    for r in rows:
        try:
            if is_member_ref(r.path):
                load_member(r.path)
            else:
                load_audio(r.path)
        except (AudioError, DataError) as e:
            bad.append(str(e))
    return bad


class ClipStore:
    """Decoded mono waveforms of ``rows`` at ``sample_rate``, cached in memory up to a budget."""

    def __init__(self, rows: Sequence[Row], sample_rate: int, cache_mb: float = 4096) -> None:
        self.rows = list(rows)
        self.sample_rate = sample_rate
        self._cache: dict[int, np.ndarray] = {}
        self._budget = int(cache_mb * 2**20)
        self._used = 0

    def __len__(self) -> int:
        return len(self.rows)

    def check(self) -> None:
        """Decode every clip once; raise one error listing *all* bad files."""
        bad = unreadable(self.rows)
        if bad:
            lines = "\n  ".join(bad[:20])
            more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
            raise DataError(f"{len(bad)} of {len(self.rows)} audio files are unusable:\n  {lines}{more}\n"
                            "Fix or remove them from the dataset (or the manifest) and run again.")

    def wave(self, i: int) -> np.ndarray:
        w = self._cache.get(i)
        if w is None:
            r = self.rows[i]
            try:
                w = load_row(r, self.sample_rate)
            except AudioError as e:
                raise DataError(f"clip {r.id!r}: {e}") from None
            if w.size == 0:
                raise DataError(f"clip {r.id!r}: segment {r.start}-{r.end}s of {r.path} is empty")
            if self._used + w.nbytes <= self._budget:
                self._cache[i] = w
                self._used += w.nbytes
        return w

    def crop(self, i: int, length: int, seed: int) -> np.ndarray:
        """A random ``length``-sample crop of clip ``i``; shorter clips are tiled (repeated)."""
        w = self.wave(i)
        rng = np.random.default_rng(seed)
        if len(w) < length:
            w = np.tile(w, -(-length // len(w)))
            start = int(rng.integers(0, len(w) - length + 1)) if len(w) > length else 0
            return w[start : start + length]
        start = int(rng.integers(0, len(w) - length + 1))
        return w[start : start + length]
