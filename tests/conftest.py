"""Shared fixtures: tiny generated audio, folders, HEAR tasks, and a quickly trained run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED_DATA = Path(os.environ.get("AUDIOFM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def tone(seconds: float = 1.0, sr: int = 16000, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    return (0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture
def audio_folder(tmp_path: Path) -> Path:
    """Two labelled sub-folders of short FLAC tones."""
    root = tmp_path / "audio"
    for label, f in (("low", 220.0), ("high", 1760.0)):
        (root / label).mkdir(parents=True)
        for i in range(4):
            sf.write(root / label / f"{label}_{i}.flac", tone(0.5 + 0.25 * i, freq=f * (1 + 0.05 * i), seed=i),
                     16000)
    return root


def make_hear_task(root: Path, name: str = "toy", folds: int = 3, per_class: int = 6,
                   mode: str = "new_split_kfold", labels: tuple[str, ...] = ("a", "b")) -> Path:
    """A HEAR task directory with generated tones (class = pitch)."""
    task = root / name
    splits = [f"fold{i:02d}" for i in range(folds)] if mode != "trainvaltest" else ["train", "valid", "test"]
    (task / "16000").mkdir(parents=True)
    meta = {"task_name": name, "version": "1", "embedding_type": "scene", "prediction_type": "multiclass",
            "split_mode": mode, "nfolds": folds, "splits": splits, "sample_duration": None,
            "evaluation": ["top1_acc"]}
    (task / "task_metadata.json").write_text(json.dumps(meta))
    (task / "labelvocabulary.csv").write_text("idx,label\n" + "".join(f"{i},{lab}\n" for i, lab in enumerate(labels)))
    k = 0
    for split in splits:
        (task / "16000" / split).mkdir()
        entries = {}
        for li, lab in enumerate(labels):
            for j in range(per_class):
                fname = f"{lab}_{k:04d}.flac"
                k += 1
                sf.write(task / "16000" / split / fname, tone(0.6, freq=300.0 * (li + 1) + 10 * j, seed=k), 16000)
                entries[fname] = [lab]
        (task / f"{split}.json").write_text(json.dumps(entries))
    return task


@pytest.fixture
def hear_task(tmp_path: Path) -> Path:
    return make_hear_task(tmp_path)


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one torch thread (small ops gain nothing and can stall on a loaded box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
