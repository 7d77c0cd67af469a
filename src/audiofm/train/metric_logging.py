"""What a run reports while it trains: ``metrics.jsonl`` (one JSON record per line, written by
the main process) and a progress bar with the latest loss and throughput."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ..io import write_text


class MetricsLog:
    """Appends records to ``path`` (flushed each time); a no-op when not ``enabled``."""

    def __init__(self, path: str | os.PathLike[str], enabled: bool = True) -> None:
        self.path = Path(path)
        self._f: IO[str] | None = open(self.path, "a") if enabled else None

    def write(self, record: dict[str, Any]) -> None:
        if self._f is not None:
            self._f.write(json.dumps(record) + "\n")
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def truncate_metrics(path: str | os.PathLike[str], step: int) -> None:
    """Drop the records logged after ``step`` (a resumed run logs them again)."""
    f = Path(path)
    if not f.exists():
        return
    keep = [ln for ln in f.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    write_text(f, "".join(k + "\n" for k in keep))


class Throughput:
    """Clips per second since the previous record, and seconds since the start."""

    def __init__(self) -> None:
        self.start = self._last = time.time()
        self._clips = 0

    def add(self, clips: int) -> None:
        self._clips += clips

    def elapsed(self) -> float:
        return time.time() - self.start

    def record(self) -> dict[str, float]:
        now = time.time()
        out = {"clips_per_s": round(self._clips / max(now - self._last, 1e-9), 2),
               "elapsed_s": round(now - self.start, 1)}
        self._last, self._clips = now, 0
        return out


def train_record(step: int, loss: float, lr: float, grad_norm: float, extras: dict[str, float],
                 speed: dict[str, float]) -> dict[str, Any]:
    """One ``metrics.jsonl`` line for an optimiser step."""
    return {"step": step, "loss": round(loss, 6), "lr": lr, "grad_norm": round(grad_norm, 4), **speed,
            **{k: round(v, 6) for k, v in extras.items()}}


class ProgressBar:
    """A tqdm bar over the optimiser steps on stderr; a no-op when not ``enabled``."""

    def __init__(self, total: int, initial: int, enabled: bool = True, desc: str = "train") -> None:
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr,
                             desc=desc)

    def update(self, record: dict[str, Any] | None = None) -> None:
        if self._bar is None:
            return
        if record is not None and "loss" in record:
            self._bar.set_postfix(loss=f"{record['loss']:.4f}", clips_s=record.get("clips_per_s"))
        self._bar.update(1)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.close()
