"""Which clips each step trains on, and every seed: pure functions of ``(seed, step, index)``,
so a resumed run retraces an uninterrupted one and N processes split one global batch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .engine import Recipe


def mix(*xs: int) -> int:
    """Deterministic 63-bit seed from integers."""
    return int(np.random.SeedSequence(list(xs)).generate_state(1, dtype=np.uint64)[0] >> 1)


def batch_ids(seed: int, step: int, batch_size: int, n: int) -> tuple[list[int], list[int]]:
    """Dataset indices and per-clip seeds of the global batch at ``step`` (epoch-wise shuffles)."""
    ids, seeds = [], []
    for j in range(batch_size):
        g = step * batch_size + j
        epoch, pos = divmod(g, n)
        perm = _permutation(seed, epoch, n)
        ids.append(int(perm[pos]))
        seeds.append(mix(seed, step, j))
    return ids, seeds


_PERM: dict[tuple[int, int, int], np.ndarray] = {}


def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    key = (seed, epoch, n)
    if key not in _PERM:
        _PERM.clear()
        _PERM[key] = np.random.default_rng([seed, epoch]).permutation(n)
    return _PERM[key]


def seed_step(seed: int, step: int, rank: int) -> None:
    """Re-seed torch's global RNG for ``step`` on process ``rank`` (dropout and the like)."""
    torch.manual_seed(mix(seed, step, rank, 7))


def global_batch(recipe: Recipe, seed: int, step: int, batch_size: int) -> tuple[list[int], list[int]]:
    """The global batch at ``step``: the recipe's ``batch_ids(seed, step, batch_size)`` when it
    has one (e.g. class-balanced sampling), else :func:`batch_ids` over ``num_examples()``."""
    own = getattr(recipe, "batch_ids", None)
    if own is not None:
        ids, seeds = own(seed, step, batch_size)
        return list(ids), list(seeds)
    return batch_ids(seed, step, batch_size, recipe.num_examples())
