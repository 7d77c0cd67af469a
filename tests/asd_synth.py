"""Tiny machine-like audio in the DCASE 2023 layout for the ASD tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def machine_clip(rng: np.random.Generator, f0: float, anomaly: bool, seconds: float = 1.0) -> np.ndarray:
    """A humming machine (harmonics of ``f0`` with slow wander, broadband noise); an anomalous
    clip adds periodic knocks and a high whine."""
    t = np.arange(int(seconds * SR)) / SR
    wander = 1 + 0.01 * np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * t)
    phase = 2 * np.pi * np.cumsum(f0 * wander) / SR
    x = sum(np.sin(h * phase + rng.uniform(0, 2 * np.pi)) / h for h in range(1, 6))
    x = 0.2 * x + 0.02 * rng.standard_normal(len(t))
    if anomaly:
        knocks = (np.sin(2 * np.pi * 7 * t) > 0.97).astype(float) * rng.standard_normal(len(t))
        x = x + 0.4 * knocks + 0.08 * np.sin(2 * np.pi * 3100 * t)
    return (x / max(1.0, float(np.abs(x).max()))).astype(np.float32)


def make_dcase2023(root: Path, machines: tuple[str, ...] = ("fan", "pump"), n_source: int = 12, n_target: int = 3,
                   n_test: int = 4, seed: int = 0) -> Path:
    """``root/<machine>/{train,test}`` with names like
    ``section_00_source_train_normal_0000_mdl_A_spd_090.wav``; two models × two speeds; the
    target domain runs faster."""
    rng = np.random.default_rng(seed)
    base = {"A": 110.0, "B": 170.0}
    for mi, machine in enumerate(machines):
        d = root / machine
        (d / "train").mkdir(parents=True)
        (d / "test").mkdir()

        def write(split: str, dom: str, lab: str, i: int, d: Path = d, mi: int = mi) -> None:
            mdl = "AB"[i % 2]
            spd = ("090", "100")[(i // 2) % 2] if dom == "source" else ("120", "130")[(i // 2) % 2]
            f0 = base[mdl] * (1 + 0.2 * mi) * int(spd) / 100
            name = f"section_00_{dom}_{split}_{lab}_{i:04d}_mdl_{mdl}_spd_{spd}.wav"
            sf.write(d / split / name, machine_clip(rng, f0, lab == "anomaly"), SR)

        for i in range(n_source):
            write("train", "source", "normal", i)
        for i in range(n_target):
            write("train", "target", "normal", i)
        for dom in ("source", "target"):
            for lab in ("normal", "anomaly"):
                for i in range(n_test):
                    write("test", dom, lab, i)
    return root
