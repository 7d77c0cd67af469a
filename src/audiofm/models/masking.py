"""Masking of patch tokens: random (unstructured), time, frequency, and time+frequency.

Every mode masks the same number of tokens in every row (so visible tokens batch densely).
Masks are ``(B, N)`` bool, True = masked, in the time-major token order of :mod:`.patch`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

MASK_MODES = ("random", "time", "freq", "timefreq")


def _pick(B: int, n: int, k: int, generator: torch.Generator | None) -> Tensor:
    """(B, n) bool with exactly ``k`` True per row, uniformly at random."""
    noise = torch.rand(B, n, generator=generator)
    idx = noise.argsort(dim=1)[:, :k]
    out = torch.zeros(B, n, dtype=torch.bool)
    out.scatter_(1, idx, True)
    return out


def make_mask(
    B: int, Fp: int, Tp: int, ratio: float, mode: str = "random",
    generator: torch.Generator | None = None,
) -> Tensor:
    """A ``(B, Tp*Fp)`` mask hiding about ``ratio`` of the tokens with structure ``mode``.

    random: tokens at random. time: whole time steps (all frequency patches). freq: whole
    frequency bands. timefreq: time steps and frequency bands, each at rate 1 - sqrt(1 - ratio),
    so their union covers about ``ratio``. At least one token always stays visible.
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
