"""Training views: random crop, gain, additive noise (waveform) and SpecAugment-style time and
frequency masks (log-mel), plus mixup pairing (the waveform primitives are
:mod:`audiofm.data.augment`'s). Every random choice comes from an explicit seed,
so a view is a pure function of ``(clip, seed)`` (exact resume, DDP == one process)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
from torch import Tensor

from ..config import NonNegativeFloat, NonNegativeInt, PositiveFloat, Range, check_ranges
from ..data.augment import add_noise, generator, random_gain, snr_range


@dataclass
class AugmentConfig:
    """crop_seconds: training crop length (None = the model's ``segment_seconds``); clips
    shorter than that are used whole (padded in the batch, the padding masked), never tiled.
    gain_db: random gain uniform in ``[-gain_db, gain_db]`` dB (0 = off). noise_prob: chance of
    adding white noise, at an SNR uniform in ``snr_db`` (low, high) dB. time_masks /
    time_mask_frames: number of time masks and their maximum width in log-mel frames;
    freq_masks / freq_mask_bins: the same over mel bins (SpecAugment; masked cells are set to
    0, the normalised mean; 0 masks = off)."""

    crop_seconds: PositiveFloat | None = None
    gain_db: NonNegativeFloat = 0.0
    noise_prob: Annotated[float, Range(ge=0, le=1)] = 0.0
    snr_db: tuple[float, float] = (10.0, 30.0)
    time_masks: NonNegativeInt = 0
    time_mask_frames: NonNegativeInt = 20
    freq_masks: NonNegativeInt = 0
    freq_mask_bins: NonNegativeInt = 16

    def __post_init__(self) -> None:
        check_ranges(self)
        self.snr_db = snr_range(self.snr_db)


def random_crop(wave: np.ndarray, length: int, gen: torch.Generator) -> Tensor:
    """A random ``length``-sample crop of ``wave (S,)``, or the whole clip when shorter."""
    n = len(wave)
    if n <= length:
        return torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    start = int(torch.randint(0, n - length + 1, (1,), generator=gen))
    return torch.from_numpy(np.ascontiguousarray(wave[start : start + length], dtype=np.float32))


def augment_wave(wave: np.ndarray, length: int, cfg: AugmentConfig, seed: int) -> Tensor:
    """One waveform view of a clip: random crop (≤ ``length`` samples), gain, noise."""
    g = generator(seed)
    x = random_crop(wave, length, g)
    x = random_gain(x, cfg.gain_db, g)
    if cfg.noise_prob > 0 and float(torch.rand((), generator=g)) < cfg.noise_prob:
        x = add_noise(x, cfg.snr_db, g)
    return x


def spec_mask(n_mels: int, frames: int, valid_frames: int, cfg: AugmentConfig, seed: int) -> Tensor:
    """SpecAugment mask ``(F, T)`` (True = masked): ``cfg.time_masks`` time stripes of width
    ≤ ``time_mask_frames`` inside the valid frames and ``cfg.freq_masks`` mel stripes of width
    ≤ ``freq_mask_bins``."""
    g = generator(seed)
    mask = torch.zeros(n_mels, frames, dtype=torch.bool)
    valid = max(1, min(valid_frames, frames))
    for _ in range(cfg.time_masks):
        w = int(torch.randint(0, min(cfg.time_mask_frames, valid) + 1, (1,), generator=g))
        t0 = int(torch.randint(0, valid - w + 1, (1,), generator=g))
        mask[:, t0 : t0 + w] = True
    for _ in range(cfg.freq_masks):
        w = int(torch.randint(0, min(cfg.freq_mask_bins, n_mels) + 1, (1,), generator=g))
        f0 = int(torch.randint(0, n_mels - w + 1, (1,), generator=g))
        mask[f0 : f0 + w, :] = True
    return mask


def pad_batch(waves: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Right-pad 1-D waveforms to ``(B, S_max)``; returns it and the valid lengths ``(B,)``."""
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    out = torch.zeros(len(waves), int(lengths.max()), dtype=torch.float32)
    for i, w in enumerate(waves):
        out[i, : len(w)] = w
    return out, lengths


def mixup_pairs(n: int, alpha: float, seed: int) -> tuple[Tensor, Tensor]:
    """Mixup partners and weights for ``n`` items: a permutation ``(n,)`` and ``λ (n,)`` drawn
    from Beta(α, α); item i becomes ``λ_i · x_i + (1 − λ_i) · x_perm[i]`` (targets likewise)."""
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    perm = torch.from_numpy(rng.permutation(n))
    lam = torch.from_numpy(rng.beta(alpha, alpha, size=n).astype(np.float32))
    return perm, lam
