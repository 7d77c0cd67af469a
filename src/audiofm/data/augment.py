"""Waveform augmentation primitives shared by pretraining (:class:`WaveAugmentConfig`) and
fine-tuning (:mod:`audiofm.adapt.augment`). Every random choice comes from an explicit
generator, so an augmented crop is a pure function of ``(clip, seed)``: exact resume, and N
processes see what one process sees."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
from torch import Tensor

from ..config import NonNegativeFloat, Range, check_ranges


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (any non-negative int below 2**64)."""
    return torch.Generator().manual_seed(int(seed))


def random_gain(wave: Tensor, max_db: float, gen: torch.Generator) -> Tensor:
    """Scale by a gain uniform in ``[-max_db, max_db]`` dB."""
    if max_db <= 0:
        return wave
    db = (torch.rand((), generator=gen) * 2 - 1) * max_db
    return wave * torch.pow(10.0, db / 20)


def add_noise(wave: Tensor, snr_db: tuple[float, float], gen: torch.Generator) -> Tensor:
    """Add white Gaussian noise at an SNR uniform in ``snr_db``; silent clips are returned as is."""
    power = wave.square().mean()
    if float(power) <= 0:
        return wave
    snr = snr_db[0] + torch.rand((), generator=gen) * (snr_db[1] - snr_db[0])
    noise = torch.randn(wave.shape, generator=gen)
    return wave + noise * torch.sqrt(power / torch.pow(10.0, snr / 10))


def snr_range(snr_db: tuple[float, float]) -> tuple[float, float]:
    """``snr_db`` as a (low, high) pair of floats; ValueError unless low ≤ high."""
    low, high = float(snr_db[0]), float(snr_db[1])
    if low > high:
        raise ValueError(f"snr_db must be (low, high), got {(low, high)}")
    return low, high


@dataclass
class WaveAugmentConfig:
    """Augmentation of each pretraining crop (all off by default; none of it has been measured to
    help at the small budgets of docs/pretraining.md). mix_prob: chance of adding a crop of
    another random clip of the corpus, scaled by a factor uniform in ``(0, mix_max]``
    (amplitude ratio; the model then reconstructs the mixture). gain_db: random gain uniform in
    ``[-gain_db, gain_db]`` dB. noise_prob / snr_db: chance of adding white noise at an SNR
    uniform in ``snr_db`` (low, high) dB. Applied in that order: mix, gain, noise."""

    mix_prob: Annotated[float, Range(ge=0, le=1)] = 0.0
    mix_max: Annotated[float, Range(gt=0, le=1)] = 0.5
    gain_db: NonNegativeFloat = 0.0
    noise_prob: Annotated[float, Range(ge=0, le=1)] = 0.0
    snr_db: tuple[float, float] = (10.0, 30.0)

    def __post_init__(self) -> None:
        check_ranges(self)
        self.snr_db = snr_range(self.snr_db)

    @property
    def active(self) -> bool:
        return self.mix_prob > 0 or self.gain_db > 0 or self.noise_prob > 0


def augment_crop(crop: np.ndarray, cfg: WaveAugmentConfig, seed: int,
                 partner: Callable[[int, int], np.ndarray], n_clips: int) -> np.ndarray:
    """``crop`` (float32 ``(S,)``) augmented by ``cfg`` with choices drawn from ``seed``;
    ``partner(clip, seed)`` returns a crop of the same length of corpus clip ``clip`` (of
    ``n_clips``) for mixing."""
    if not cfg.active:
        return crop
    g = generator(seed)
    x = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))
    if cfg.mix_prob > 0 and float(torch.rand((), generator=g)) < cfg.mix_prob:
        other = int(torch.randint(0, n_clips, (1,), generator=g))
        other_seed = int(torch.randint(0, 2**62, (1,), generator=g))
        scale = cfg.mix_max * (1.0 - float(torch.rand((), generator=g)))  # (0, mix_max]
        x = x + scale * torch.from_numpy(np.ascontiguousarray(partner(other, other_seed), dtype=np.float32))
    x = random_gain(x, cfg.gain_db, g)
    if cfg.noise_prob > 0 and float(torch.rand((), generator=g)) < cfg.noise_prob:
        x = add_noise(x, cfg.snr_db, g)
    return x.numpy()
