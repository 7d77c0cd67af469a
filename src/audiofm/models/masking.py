"""Masking of patch tokens: random (unstructured), time, frequency, time+frequency, and inverse
block (data2vec 2.0 / EAT: the *visible* tokens form square blocks).

Every mode masks the same number of tokens in every row (so visible tokens batch densely).
Masks are ``(B, N)`` bool, True = masked, in the time-major token order of :mod:`.patch`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

MASK_MODES = ("random", "time", "freq", "timefreq", "block")


def _pick(B: int, n: int, k: int, generator: torch.Generator | None) -> Tensor:
    """(B, n) bool with exactly ``k`` True per row, uniformly at random."""
    noise = torch.rand(B, n, generator=generator)
    idx = noise.argsort(dim=1)[:, :k]
    out = torch.zeros(B, n, dtype=torch.bool)
    out.scatter_(1, idx, True)
    return out


def _inverse_block(B: int, Fp: int, Tp: int, n_keep: int, size: int, generator: torch.Generator | None) -> Tensor:
    """(B, Tp*Fp) bool, True = visible: ``size``×``size`` blocks (time × frequency, clipped at the
    edges) around centres taken in random order until they cover ``n_keep`` tokens; the cells
    of the last block beyond ``n_keep`` are dropped at random, so every row keeps exactly
    ``n_keep``."""
    N = Tp * Fp
    order = torch.rand(B, N, generator=generator).argsort(dim=1).numpy()
    tie = torch.rand(B, N, generator=generator)
    keep = np.zeros((B, Tp, Fp), dtype=bool)
    lo = size // 2
    for b in range(B):
        k = keep[b]
        for c in order[b]:
            t, f = divmod(int(c), Fp)
            k[max(0, t - lo) : t - lo + size, max(0, f - lo) : f - lo + size] = True
            if k.sum() >= n_keep:
                break
    covered = torch.from_numpy(keep.reshape(B, N))
    idx = torch.where(covered, tie, tie + 2.0).argsort(dim=1)[:, :n_keep]  # covered cells first
    out = torch.zeros(B, N, dtype=torch.bool)
    out.scatter_(1, idx, True)
    return out


def make_mask(
    B: int, Fp: int, Tp: int, ratio: float, mode: str = "random",
    generator: torch.Generator | None = None, block: int = 5,
) -> Tensor:
    """A ``(B, Tp*Fp)`` mask hiding about ``ratio`` of the tokens with structure ``mode``.

    random: tokens at random. time: whole time steps (all frequency patches). freq: whole
    frequency bands. timefreq: time steps and frequency bands, each at rate 1 - sqrt(1 - ratio),
    so their union covers about ``ratio``. block: inverse block masking (data2vec 2.0, EAT):
    the visible ``1 - ratio`` of the tokens are ``block``×``block`` squares of patches (time ×
    frequency) at random centres, everything else hidden. At least one token always stays visible.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    N = Fp * Tp
    if mode == "random":
        m = _pick(B, N, min(round(ratio * N), N - 1), generator)
    elif mode == "time":
        cols = _pick(B, Tp, min(round(ratio * Tp), Tp - 1), generator)  # (B, Tp)
        m = cols[:, :, None].expand(B, Tp, Fp).reshape(B, N)
    elif mode == "freq":
        rows = _pick(B, Fp, min(round(ratio * Fp), Fp - 1), generator)  # (B, Fp)
        m = rows[:, None, :].expand(B, Tp, Fp).reshape(B, N)
    elif mode == "timefreq":
        a = 1.0 - math.sqrt(1.0 - ratio)
        cols = _pick(B, Tp, min(round(a * Tp), Tp - 1), generator)
        rows = _pick(B, Fp, min(round(a * Fp), Fp - 1), generator)
        m = (cols[:, :, None] | rows[:, None, :]).reshape(B, N)
    elif mode == "block":
        if block < 1:
            raise ValueError(f"mask block size must be at least 1, got {block}")
        m = ~_inverse_block(B, Fp, Tp, N - min(round(ratio * N), N - 1), block, generator)
    else:
        raise ValueError(f"unknown mask mode {mode!r}; choose from {MASK_MODES}")
    return m


def visible_indices(mask: Tensor) -> Tensor:
    """Indices ``(B, n_visible)`` of unmasked tokens, ascending (token order preserved)."""
    B = mask.shape[0]
    return (~mask).nonzero()[:, 1].view(B, -1)


def masked_indices(mask: Tensor) -> Tensor:
    B = mask.shape[0]
    return mask.nonzero()[:, 1].view(B, -1)
