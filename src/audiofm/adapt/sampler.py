"""Class-balanced batches: P classes × K clips, a pure function of ``(seed, step)``.

Classes are visited in cycles: each cycle is a fresh permutation of the classes cut into
``ceil(C / P)`` batches (the last one topped up with other classes at random), so every class
appears at least once every ``ceil(C / P)`` steps. Within a class, K clips are drawn without
replacement (with replacement when the class has fewer than K clips). For multi-label data a
clip belongs to every class it carries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def seed_of(*xs: int) -> int:
    """Deterministic 63-bit seed from non-negative integers."""
    return int(np.random.SeedSequence(list(xs)).generate_state(1, dtype=np.uint64)[0] >> 1)


def auto_clips_per_class(batch_size: int, n_classes: int) -> int:
    """The smallest K ≥ 2 that divides ``batch_size`` with ``2 ≤ P = batch_size / K ≤ n_classes``."""
    for k in range(2, batch_size // 2 + 1):
        if batch_size % k == 0 and batch_size // k <= n_classes:
            return k
    raise ValueError(f"batch_size={batch_size} cannot be split into P ≥ 2 classes × K ≥ 2 clips with P ≤ "
                     f"{n_classes} classes; use a batch size with more divisors (e.g. 16)")


class ClassBalancedSampler:
    """``sampler(seed, step, batch_size) -> (ids, seeds)``: ``batch_size = P·K`` clip indices,
    grouped by class (K consecutive ids per class), and one seed per clip.

    labels: class indices of each clip (one list per clip; several for multi-label data).
    """

    def __init__(self, labels: Sequence[Sequence[int]], n_classes: int, classes_per_batch: int,
                 clips_per_class: int) -> None:
        members: list[list[int]] = [[] for _ in range(n_classes)]
        for i, labs in enumerate(labels):
            for c in labs:
                if not 0 <= c < n_classes:
                    raise ValueError(f"clip {i} has class {c} outside 0..{n_classes - 1}")
                members[c].append(i)
        self.classes = np.asarray([c for c in range(n_classes) if members[c]], dtype=np.int64)
        self.members = [np.asarray(m, dtype=np.int64) for m in members]
        self.P = classes_per_batch
        self.K = clips_per_class
        if self.K < 1 or self.P < 1:
            raise ValueError(f"need classes_per_batch ≥ 1 and clips_per_class ≥ 1, got P={self.P}, K={self.K}")
        if self.P > len(self.classes):
            raise ValueError(f"classes_per_batch={self.P} but only {len(self.classes)} classes have training clips; "
                             "lower the batch size or raise clips_per_class")

    @property
    def batch_size(self) -> int:
        return self.P * self.K

    @property
    def steps_per_cycle(self) -> int:
        """Steps in which every class appears at least once."""
        return math.ceil(len(self.classes) / self.P)

    def classes_at(self, seed: int, step: int) -> np.ndarray:
        """The P distinct classes of the batch at ``step``."""
        C, P = len(self.classes), self.P
        cycle, pos = divmod(step, self.steps_per_cycle)
        perm = np.random.default_rng([seed, cycle, 1]).permutation(C)
        chunk = perm[pos * P : (pos + 1) * P]
        if len(chunk) < P:  # last batch of the cycle: top up with other classes
            rest = np.setdiff1d(np.arange(C), chunk)
            fill = np.random.default_rng([seed, cycle, 2]).choice(rest, P - len(chunk), replace=False)
            chunk = np.concatenate([chunk, fill])
        return self.classes[chunk]

    def __call__(self, seed: int, step: int, batch_size: int) -> tuple[list[int], list[int]]:
        if batch_size != self.batch_size:
            raise ValueError(f"batch_size={batch_size} but the sampler makes {self.P} classes × {self.K} clips "
                             f"= {self.batch_size}")
        ids: list[int] = []
        for c in self.classes_at(seed, step):
            m = self.members[int(c)]
            rng = np.random.default_rng([seed, step, int(c), 3])
            ids.extend(int(i) for i in rng.choice(m, self.K, replace=len(m) < self.K))
        seeds = [seed_of(seed, step, j, 5) for j in range(len(ids))]
        return ids, seeds
