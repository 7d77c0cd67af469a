"""Simulated crashes for resume tests: stop a training run right after a periodic checkpoint."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest


class Crash(Exception):
    """Raised in place of a real crash (kill -9, power loss) after a checkpoint was written."""


@contextlib.contextmanager
def crash_after_checkpoint(monkeypatch: pytest.MonkeyPatch, step: int) -> Iterator[None]:
    """Within the block, the engine raises :class:`Crash` right after writing the periodic
    checkpoint of ``step``; the block must end in that crash, and the engine is restored after."""
    import audiofm.train.engine as eng

    orig = eng.Engine.save

    def save_then_crash(self, optimizer, final=False):  # type: ignore[no-untyped-def]
        out = orig(self, optimizer, final)
        if self.step == step and not final:
            raise Crash()
        return out

    monkeypatch.setattr(eng.Engine, "save", save_then_crash)
    try:
        with pytest.raises(Crash):
            yield
    finally:
        monkeypatch.setattr(eng.Engine, "save", orig)
