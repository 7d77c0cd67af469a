"""Embedding cache: hits skip embedding, any change in the key misses, bad files are recomputed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_eval_suite import ConstantFake, write_task

from audiofm.data import read_hear_task
from audiofm.embed_io import clip_matrix, embed_rows
from audiofm.eval.baselines import LogMelEmbedder
from audiofm.eval.cache import CacheWarning, EmbeddingCache, get_embeddings


@pytest.fixture
def task(tmp_path: Path):
    return read_hear_task(write_task(tmp_path, "t", folds=3, per_class=3))


def test_hit_skips_embedding(task, tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    fake = ConstantFake()
    first = get_embeddings(fake, task.name, task.rows, cache=cache, batch_size=4, progress=False)
    calls = fake.calls
    assert not first.cache_hit and calls == 5  # 18 clips in batches of 4
    second = get_embeddings(fake, task.name, task.rows, cache=cache, batch_size=4, progress=False)
    assert second.cache_hit and fake.calls == calls
    assert np.array_equal(first.clip, second.clip)
    # rows in another order come back aligned with that order
    rev = list(reversed(task.rows))
    third = get_embeddings(fake, task.name, rev, cache=cache, progress=False)
    assert np.array_equal(third.clip, first.clip[::-1]) and fake.calls == calls
    assert not list(cache.root.rglob(".*tmp*"))  # atomic writes leave no temporary files


def test_key_changes_miss(task, tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    fake = ConstantFake()
    get_embeddings(fake, task.name, task.rows, cache=cache, settings={"layer": -1}, progress=False)
    n = fake.calls
    get_embeddings(fake, task.name, task.rows, cache=cache, settings={"layer": 2}, progress=False)
    assert fake.calls > n  # other settings
    n = fake.calls
    get_embeddings(fake, task.name, task.rows[:-1], cache=cache, settings={"layer": 2}, progress=False)
    assert fake.calls > n  # other rows
    n = fake.calls
    fake.fingerprint = lambda: "fake-v2"  # type: ignore[method-assign]
    get_embeddings(fake, task.name, task.rows, cache=cache, settings={"layer": 2}, progress=False)
    assert fake.calls > n  # other weights
    n = fake.calls
    get_embeddings(fake, task.name, task.rows, cache=cache, settings={"layer": 2}, progress=False)
    assert fake.calls == n  # and each of those is now cached
    # rewriting a clip's audio (different size) invalidates the entry
    target = Path(task.rows[0].path)
    size = target.stat().st_size
    target.write_bytes(next(Path(r.path).read_bytes() for r in task.rows if Path(r.path).stat().st_size != size))
    get_embeddings(fake, task.name, task.rows, cache=cache, settings={"layer": 2}, progress=False)
    assert fake.calls > n


def test_corrupt_file_is_recomputed_with_warning(task, tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    fake = ConstantFake()
    res = get_embeddings(fake, task.name, task.rows, cache=cache, progress=False)
    assert res.path is not None
    res.path.write_bytes(b"not a zip file")
    n = fake.calls
    with pytest.warns(CacheWarning, match="re-embedding"):
        again = get_embeddings(fake, task.name, task.rows, cache=cache, progress=False)
    assert fake.calls > n and np.array_equal(again.clip, res.clip) and not again.cache_hit
    # repaired: the next call hits
    assert get_embeddings(fake, task.name, task.rows, cache=cache, progress=False).cache_hit
    # a truncated array (ids present, rows missing) is also caught
    with np.load(res.path) as z:
        ids, clip, meta = z["ids"], z["clip"], z["meta"]
    np.savez(res.path.with_suffix(""), ids=ids[:-1], clip=clip[:-1], meta=meta)
    with pytest.warns(CacheWarning, match="missing"):
        get_embeddings(fake, task.name, task.rows, cache=cache, progress=False)


def test_batched_embedding_is_deterministic_and_order_independent(task) -> None:
    emb = LogMelEmbedder()
    a = clip_matrix(embed_rows(emb, task.rows, batch_size=5, progress=False))
    b = clip_matrix(embed_rows(emb, task.rows, batch_size=1, progress=False))
    assert a.shape == (len(task.rows), 256) and a.dtype == np.float32
    assert np.allclose(a, b, atol=1e-4)
    assert np.array_equal(a, clip_matrix(embed_rows(emb, task.rows, batch_size=5, progress=False)))
