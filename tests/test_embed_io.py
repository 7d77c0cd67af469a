"""The one embedding loop: order, checks, unreadable files reported at once, writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_eval_suite import ConstantFake

from audiofm.data import DataError, Row
from audiofm.embed_io import EmbeddingError, clip_matrix, embed_each, embed_rows, write_embeddings
from audiofm.embedding import Embeddings


class Recorder(ConstantFake):
    """ConstantFake that records each batch's wave lengths and can misbehave on request."""

    def __init__(self, mode: str = "") -> None:
        super().__init__()
        self.batches: list[list[int]] = []
        self.mode = mode

    def embed_batch(self, waves: list[np.ndarray], sr: int) -> list[Embeddings]:
        self.batches.append([len(w) for w in waves])
        out = super().embed_batch(waves, sr)
        if self.mode == "short":
            return out[:-1]
        if self.mode == "shape" and self.calls == 2:
            out[0] = Embeddings(np.zeros(4, np.float32), out[0].frames, out[0].timestamps)
        if self.mode == "nan" and self.calls == 2:
            out[0] = Embeddings(np.full(3, np.nan, np.float32), out[0].frames, out[0].timestamps)
        return out


def test_embed_each_batches_in_order_returns_index_order() -> None:
    waves = [np.full(100 * (i + 1), 0.1, np.float32) for i in range(5)]
    emb = Recorder()
    out = embed_each(emb, 5, lambda i: waves[i], order=[4, 2, 0, 1, 3], batch_size=2, progress=False)
    assert emb.batches == [[500, 300], [100, 200], [400]]
    assert np.allclose([float(e.clip[1]) for e in out], [len(w) / 16000 for w in waves])  # index order
    with pytest.raises(ValueError, match="permutation"):
        embed_each(emb, 3, lambda i: waves[i], order=[0, 0, 1], progress=False)


@pytest.mark.parametrize(("mode", "match"), [("short", "returned 1 embeddings for 2"),
                                             ("shape", "clip embedding of wave 2 has shape"),
                                             ("nan", "non-finite embedding for wave 2")])
def test_embed_each_checks_name_the_item(mode: str, match: str) -> None:
    waves = [np.full(160, 0.1, np.float32)] * 4
    with pytest.raises(EmbeddingError, match=match):
        embed_each(Recorder(mode), 4, lambda i: waves[i], batch_size=2, progress=False,
                   name_of=lambda i: f"wave {i}")


def _clip(path: Path, seconds: float) -> str:
    sf.write(path, np.sin(np.arange(int(16000 * seconds)) / 5).astype(np.float32) * 0.3, 16000)
    return str(path)


def test_embed_rows_by_duration_segments_and_all_bad_files_at_once(tmp_path: Path) -> None:
    rows = [Row(_clip(tmp_path / f"c{i}.wav", s), id=f"c{i}") for i, s in enumerate((0.5, 0.2, 0.3))]
    rows.append(Row(rows[0].path, id="seg", start=0.1, end=0.15))
    emb = Recorder()
    out = embed_rows(emb, rows, batch_size=2, progress=False)
    assert emb.batches == [[800, 3200], [4800, 8000]]  # shortest first: seg, c1 | c2, c0
    assert [round(float(e.clip[1]), 3) for e in out] == [0.5, 0.2, 0.3, 0.05]
    m = clip_matrix(out)
    assert m.shape == (4, 3) and m.dtype == np.float32
    assert clip_matrix([], dim=3).shape == (0, 3)

    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    bad = [*rows, Row(str(tmp_path / "junk.wav")), Row(str(tmp_path / "missing.wav"))]
    emb = Recorder()
    with pytest.raises(DataError, match="2 of 6 files could not be embedded") as e:
        embed_rows(emb, bad, progress=False)
    assert "junk.wav" in str(e.value) and "missing.wav" in str(e.value)
    assert emb.calls == 0  # nothing embedded when the headers already show a problem


def test_write_embeddings_npz(tmp_path: Path) -> None:
    rows = [Row(_clip(tmp_path / f"c{i}.wav", 0.2 + 0.1 * i), id=f"c{i}") for i in range(3)]
    embs = embed_rows(ConstantFake(), rows, progress=False)
    out = write_embeddings(embs, rows, tmp_path / "out" / "emb.npz", frames=True, meta={"model": "fake"})
    with np.load(out) as z:
        assert list(z["ids"]) == ["c0", "c1", "c2"] and z["clip"].shape == (3, 3)
        assert list(z["frame_offsets"]) == [0, 1, 2, 3]
    assert [p.name for p in out.parent.iterdir()] == ["emb.npz"]  # atomic: no temporary left
