"""The built-in demo dataset: labelled families of generated sounds, deterministic from a seed.

Families: harmonic tones, chords, noise colours, click/impulse trains, chirps, AM tones,
FM tones and vowel-like formant sounds. Each clip draws its parameters at random (pitch,
duration, timbre, gain) and gets a little background noise, so families overlap in simple
statistics and the task is not trivial for a log-mel baseline.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..io import atomic_path
from .manifest import Row, write_manifest

SR = 16000
Gen = Callable[[np.random.Generator, np.ndarray], np.ndarray]


def _env(rng: np.random.Generator, n: int) -> np.ndarray:
    a = int(rng.uniform(0.005, 0.1) * SR)
    r = int(rng.uniform(0.05, 0.4) * SR)
    e = np.ones(n)
    e[:a] = np.linspace(0, 1, a)
    e[-r:] *= np.linspace(1, 0, r)
    return e


def _harmonic(rng: np.random.Generator, t: np.ndarray, f0: float | None = None) -> np.ndarray:
    f0 = f0 or rng.uniform(80, 800)
    decay = rng.uniform(0.3, 1.5)
    out = np.zeros_like(t)
    for k in range(1, 20):
        if k * f0 > SR / 2 - 200:
            break
        out += k ** -decay * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
    return out


def harmonic_tone(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    return _harmonic(rng, t)


def chord(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    root = rng.uniform(100, 400)
    steps = [0, int(rng.choice([3, 4])), 7] + ([int(rng.choice([10, 11, 12]))] if rng.random() < 0.5 else [])
    out = np.zeros_like(t)
    for s in steps:
        out += _harmonic(rng, t, root * 2 ** (s / 12))
    return out


def noise_colour(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    n = len(t)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1]
    slope = rng.choice([-2.0, -1.0, 0.0, 1.0]) + rng.uniform(-0.3, 0.3)
    return np.fft.irfft(spec * f ** (slope / 2), n)


def click_train(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    out = np.zeros_like(t)
    rate = rng.uniform(2, 40)
    jitter = rng.uniform(0, 0.3)
    pos = 0.0
    klen = int(rng.uniform(0.001, 0.01) * SR)
    kernel = rng.standard_normal(klen) * np.exp(-np.arange(klen) / (klen / 4))
    while pos < t[-1]:
        i = int(pos * SR)
        out[i : i + klen] += kernel[: len(out[i : i + klen])]
        pos += (1 / rate) * (1 + jitter * rng.uniform(-1, 1))
    return out


def chirp(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    f1, f2 = rng.uniform(100, 4000, size=2)
    dur = t[-1] + 1 / SR
    if rng.random() < 0.5:
        phase = 2 * np.pi * (f1 * t + (f2 - f1) * t**2 / (2 * dur))
    else:
        k = (f2 / f1) ** (1 / dur)
        phase = 2 * np.pi * f1 * (k**t - 1) / np.log(k)
    return np.sin(phase)


def am_tone(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    mod = 1 + rng.uniform(0.5, 1.0) * np.sin(2 * np.pi * rng.uniform(2, 30) * t)
    return mod * _harmonic(rng, t)


def fm_tone(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    fc, fm, idx = rng.uniform(200, 2000), rng.uniform(2, 12), rng.uniform(2, 40)
    return np.sin(2 * np.pi * fc * t + idx * np.sin(2 * np.pi * fm * t))


_VOWELS = {"a": (730, 1090, 2440), "i": (270, 2290, 3010), "u": (300, 870, 2240),
           "e": (530, 1840, 2480), "o": (570, 840, 2410)}


def formant_vowel(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    f0 = rng.uniform(90, 250) * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    formants = np.array(_VOWELS[str(rng.choice(list(_VOWELS)))]) * rng.uniform(0.9, 1.1)
    out = np.zeros_like(t)
    for k in range(1, 40):
        fk = k * f0.mean()
        if fk > SR / 2 - 200:
            break
        gain = sum(np.exp(-0.5 * ((fk - F) / 90.0) ** 2) for F in formants) + 0.02
        out += gain * np.sin(k * phase)
    return out


FAMILIES: dict[str, Gen] = {
    "harmonic_tone": harmonic_tone, "chord": chord, "noise_colour": noise_colour,
    "click_train": click_train, "chirp": chirp, "am_tone": am_tone, "fm_tone": fm_tone,
    "formant_vowel": formant_vowel,
}


def generate_clip(family: str, rng: np.random.Generator) -> np.ndarray:
    """One clip of ``family`` (1.5-4 s at 16 kHz), peak-normalised with random gain and noise."""
    n = int(rng.uniform(1.5, 4.0) * SR)
    t = np.arange(n) / SR
    x = FAMILIES[family](rng, t) * _env(rng, n)
    x = x / (np.abs(x).max() + 1e-9)
    x = x + rng.standard_normal(n) * 10 ** (-rng.uniform(20, 40) / 20)
    return (x / (np.abs(x).max() + 1e-9) * rng.uniform(0.1, 0.9)).astype(np.float32)


def make_demo_dataset(out: str | os.PathLike[str], per_family: int = 120, seed: int = 0,
                      test_fraction: float = 0.2, valid_fraction: float = 0.2) -> list[Row]:
    """Write ``out/<family>/<family>_NNNN.flac`` and ``out/manifest.csv`` (splits
    train/valid/test, stratified by family)."""
    import soundfile as sf

    out = Path(out)
    rows: list[Row] = []
    for fi, family in enumerate(FAMILIES):
        (out / family).mkdir(parents=True, exist_ok=True)
        n_test = round(per_family * test_fraction)
        n_valid = round(per_family * valid_fraction)
        for j in range(per_family):
            rng = np.random.default_rng([seed, fi, j])
            path = out / family / f"{family}_{j:04d}.flac"
            if not path.exists():
                with atomic_path(path) as tmp:
                    sf.write(tmp, generate_clip(family, rng), SR, format="FLAC", subtype="PCM_16")
            rows.append(Row(path=str(path.relative_to(out)), id=f"{family}/{path.name}", labels=[family],
                            split="test" if j < n_test else "valid" if j < n_test + n_valid else "train"))
    write_manifest(rows, out / "manifest.csv")
    return rows
