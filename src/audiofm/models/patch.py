"""Spectrogram patches in a fixed, explicit token order, and fixed 2-D sin-cos positions.

Token order is **time-major**: token ``n = t * Fp + f`` for time patch ``t`` and frequency
patch ``f`` (all frequency patches of time step 0 first). Sequence backbones therefore scan
along time, padding (at the end of the time axis) is right-aligned, and streaming works by
appending whole time columns.
"""

from __future__ import annotations

import torch
from torch import Tensor


def patchify(spec: Tensor, pf: int, pt: int) -> Tensor:
    """``spec: (B, F, T)`` → tokens ``(B, Tp*Fp, pf*pt)``; F and T must divide by pf and pt."""
    B, F, T = spec.shape
    if F % pf or T % pt:
        raise ValueError(f"spectrogram {F}x{T} is not divisible into {pf}x{pt} patches")
    Fp, Tp = F // pf, T // pt
    x = spec.reshape(B, Fp, pf, Tp, pt).permute(0, 3, 1, 2, 4)  # (B, Tp, Fp, pf, pt)
    return x.reshape(B, Tp * Fp, pf * pt)


def unpatchify(tokens: Tensor, Fp: int, Tp: int, pf: int, pt: int) -> Tensor:
    """Inverse of :func:`patchify`: ``(B, Tp*Fp, pf*pt)`` → ``(B, Fp*pf, Tp*pt)``."""
    B = tokens.shape[0]
    x = tokens.reshape(B, Tp, Fp, pf, pt).permute(0, 2, 3, 1, 4)  # (B, Fp, pf, Tp, pt)
    return x.reshape(B, Fp * pf, Tp * pt)


def _sincos_1d(pos: Tensor, dim: int) -> Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    out = pos.double()[:, None] * omega[None]
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_2d(Fp: int, Tp: int, dim: int, t0: int = 0) -> Tensor:
    """Fixed positions ``(Tp*Fp, dim)`` in token order; first half encodes time, second frequency.

    ``t0`` offsets the time index (for streaming or chunked input).
    """
    if dim % 4:
        raise ValueError(f"embedding dim {dim} must be divisible by 4 for 2-D sin-cos positions")
    t = torch.arange(t0, t0 + Tp).repeat_interleave(Fp)
    f = torch.arange(Fp).repeat(Tp)
    return torch.cat([_sincos_1d(t, dim // 2), _sincos_1d(f, dim // 2)], dim=1).float()
