"""Waveform access for training: decode once, cache in memory, deterministic random crops."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..audio import AudioError, load_audio, scan_files
from .manifest import DataError, Row


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
        bad = scan_files([r.path for r in self.rows], decode=True)
        if bad:
            lines = "\n  ".join(f"{b.reason}" for b in bad[:20])
            more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
            raise DataError(f"{len(bad)} of {len(self.rows)} audio files are unusable:\n  {lines}{more}\n"
                            "Fix or remove them from the dataset (or the manifest) and run again.")

    def wave(self, i: int) -> np.ndarray:
        w = self._cache.get(i)
        if w is None:
            r = self.rows[i]
            try:
                w, _ = load_audio(r.path, self.sample_rate)
            except AudioError as e:
                raise DataError(f"clip {r.id!r}: {e}") from None
            if r.start is not None or r.end is not None:
                s = int((r.start or 0.0) * self.sample_rate)
                e_ = int(r.end * self.sample_rate) if r.end is not None else len(w)
                w = w[s:e_]
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
