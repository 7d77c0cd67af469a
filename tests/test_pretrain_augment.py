"""Waveform augmentation of pretraining crops: mixing another clip in, gain, noise."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from audiofm.cli import main
from audiofm.data.augment import WaveAugmentConfig, augment_crop


def _crop(n=800, seed=0):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def test_off_by_default_and_gain_is_a_bounded_constant_factor() -> None:
    crop = _crop()
    assert augment_crop(crop, WaveAugmentConfig(), 5, lambda j, s: crop, 10) is crop
    cfg = WaveAugmentConfig(gain_db=6.0)
    out = augment_crop(crop, cfg, 5, lambda j, s: crop, 10)
    ratio = out / crop
    assert np.allclose(ratio, ratio[0], rtol=1e-5) and 10 ** (-6 / 20) <= ratio[0] <= 10 ** (6 / 20)
    np.testing.assert_array_equal(out, augment_crop(crop, cfg, 5, lambda j, s: crop, 10))  # pure in the seed
    assert not np.allclose(out, augment_crop(crop, cfg, 6, lambda j, s: crop, 10))


def test_mixing_adds_a_scaled_crop_of_another_clip() -> None:
    crop, calls = _crop(), []

    def partner(j: int, s: int) -> np.ndarray:
        calls.append((j, s))
        return _crop(seed=1000 + j)

    cfg = WaveAugmentConfig(mix_prob=1.0, mix_max=0.5)
    out = augment_crop(crop, cfg, 3, partner, 7)
    (j, _), = calls
    assert 0 <= j < 7
    other = _crop(seed=1000 + j)
    scale = float(np.dot(out - crop, other) / np.dot(other, other))
    assert 0 < scale <= 0.5
    np.testing.assert_allclose(out, crop + scale * other, atol=1e-5)
    assert augment_crop(crop, WaveAugmentConfig(mix_prob=1.0), 3, partner, 7) == pytest.approx(out)
    assert calls[1] == calls[0]  # the same clip and crop seed for the same seed
    # probability 0 never calls the partner; noise changes the crop, with the given SNR range
    calls.clear()
    noisy = augment_crop(crop, WaveAugmentConfig(noise_prob=1.0, snr_db=(20.0, 20.0)), 3, partner, 7)
    assert not calls
    snr = 10 * np.log10(np.mean(crop**2) / np.mean((noisy - crop) ** 2))
    assert abs(snr - 20.0) < 1.0
    with pytest.raises(ValueError, match="mix_prob"):
        WaveAugmentConfig(mix_prob=1.5)


def test_pretraining_with_augmentation_learns_and_records_it(tmp_path, audio_folder, capsys) -> None:
    common = ["pretrain", "--model", "msm_vit_debug", "--data", str(audio_folder), "--max-steps", "12",
              "--batch-size", "4", "--no-progress", "--set", "model_overrides.segment_seconds=1.0",
              "--set", "train.warmup_steps=2", "--set", "train.log_every=1", "--set", "stats_clips=10"]
    run = tmp_path / "aug"
    assert main([*common, "--out", str(run), "--set", "augment.mix_prob=0.5", "--set", "augment.gain_db=6"]) == 0
    losses = [json.loads(ln)["loss"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    again = tmp_path / "again"  # deterministic: the augmentation is a pure function of (clip, seed)
    assert main([*common, "--out", str(again), "--set", "augment.mix_prob=0.5", "--set", "augment.gain_db=6"]) == 0
    assert [json.loads(ln)["loss"] for ln in (again / "metrics.jsonl").read_text().splitlines()] == losses
    saved = yaml.safe_load((run / "run_config.yaml").read_text())
    assert saved["augment"]["mix_prob"] == 0.5 and saved["augment"]["gain_db"] == 6.0
    plain = tmp_path / "plain"
    assert main([*common, "--out", str(plain), "--max-steps", "1"]) == 0
    assert "augment" not in yaml.safe_load((plain / "run_config.yaml").read_text())  # as earlier versions
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "bad"), "--set", "augment.mix_prob=2"]) == 2
    assert "augment.mix_prob" in capsys.readouterr().err and not (tmp_path / "bad").exists()
