"""The HEAR organisers' validator checks, for every backbone's debug preset.

Re-stated as test logic (not copied code) from ``hearvalidator/validate.py`` of the HEAR
validator at tag v2021.0.6 (github.com/hearbenchmark/hear-validator; the registry only serves
2021.0.2, which lacks the timestamp-range checks). Its checks on a torch model:

* ``check_sample_rate``: ``model.sample_rate`` in {16000, 22050, 32000, 44100, 48000};
* ``check_embedding_size``: ``scene_embedding_size`` and ``timestamp_embedding_size`` are ints;
* ``check_timestamp_embeddings``: for 2 sounds of white noise in [-1, 1] of 1.07 s, 1.98 s and
  4.0 s: float32 embeddings of 3 dims, timestamps of 2 dims, ``embeddings.shape[:2] ==
  timestamps.shape``, width == ``timestamp_embedding_size``; with more than one timestamp: the
  deviation of ``np.diff(timestamps)`` from its mean ≤ 1 ms (error), max timestamp ≤ 1000·length
  (error); warnings (not errors) when the hop exceeds 50 ms, the first timestamp exceeds the
  mean hop, or the last one ends more than a hop (or 50 ms) before the end of the audio;
* ``check_scene_embeddings``: 4 sounds of 2.74 s → float32 ``(4, scene_embedding_size)``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import audiofm.hear as hear

ACCEPTABLE_SAMPLE_RATE = [16000, 22050, 32000, 44100, 48000]
PRESETS = ["msm_vit_debug", "msm_mamba_debug", "msm_xlstm_debug"]
pytestmark = pytest.mark.usefixtures("one_thread")


class ModelError(AssertionError):
    """A failed validator check (the validator raises its own ModelError)."""


def _noise(num_audio: int, length: float, sr: int) -> torch.Tensor:
    return torch.rand((num_audio, int(length * sr))) * 2 - 1.0


def _check_timestamp_embeddings(model: hear.HearModel, num_audio: int, length: float) -> list[str]:
    """One round of the validator's timestamp check; returns the warnings it would give."""
    emb, ts = hear.get_timestamp_embeddings(_noise(num_audio, length, model.sample_rate), model)
    if emb.dtype != torch.float32:
        raise ModelError(f"embeddings are {emb.dtype}")
    embeddings, timestamps = emb.detach().cpu().numpy(), ts.detach().cpu().numpy()
    if embeddings.ndim != 3 or timestamps.ndim != 2:
        raise ModelError(f"shapes {embeddings.shape}, {timestamps.shape}")
    if embeddings.shape[0] != num_audio or embeddings.shape[:2] != timestamps.shape:
        raise ModelError(f"shapes {embeddings.shape}, {timestamps.shape} for {num_audio} sounds")
    if embeddings.shape[2] != model.timestamp_embedding_size:
        raise ModelError(f"width {embeddings.shape[2]} != {model.timestamp_embedding_size}")
    warned = []
    if timestamps.shape[1] > 1:
        diff = np.diff(timestamps)
        avg, mx = np.mean(diff), np.max(diff)
        if mx > 50.0:
            warned.append("hop > 50 ms")
        if np.max(np.abs(diff - avg)) > 1:
            raise ModelError(f"timestamps deviate by {np.max(np.abs(diff - avg))} ms from a regular hop")
        lo, hi = np.min(timestamps), np.max(timestamps)
        if lo > avg:
            warned.append(f"timestamps begin at {lo} ms")
        if hi < 1000 * length - avg or hi < 1000 * length - 50:
            warned.append(f"timestamps end at {hi} ms of {1000 * length} ms")
        if hi > 1000 * length:
            raise ModelError(f"timestamps end at {hi} ms, but the audio is {1000 * length} ms")
    return warned


def validate(model: hear.HearModel) -> list[str]:
    """Every check of ``ValidateModel.validate_model``; the warnings it would give."""
    if model.sample_rate not in ACCEPTABLE_SAMPLE_RATE:
        raise ModelError(f"sample rate {model.sample_rate}")
    if not isinstance(model.scene_embedding_size, int) or not isinstance(model.timestamp_embedding_size, int):
        raise ModelError("embedding sizes must be ints")
    if not isinstance(model, torch.nn.Module):
        raise ModelError("model must be a torch Module")
    warned = []
    for num_audio, length in ((2, 1.07), (2, 1.98), (2, 4.0)):
        warned += _check_timestamp_embeddings(model, num_audio, length)
    scene = hear.get_scene_embeddings(_noise(4, 2.74, model.sample_rate), model)
    if scene.dtype != torch.float32 or scene.detach().cpu().numpy().dtype != np.float32:
        raise ModelError(f"scene embeddings are {scene.dtype}")
    if scene.ndim != 2 or scene.shape != (4, model.scene_embedding_size):
        raise ModelError(f"scene embeddings {tuple(scene.shape)}")
    return warned


@pytest.mark.parametrize("preset", PRESETS)
def test_validator_passes_at_the_patch_hop(preset: str) -> None:
    model = hear.load_model(model_name=preset)
    warned = validate(model)
    # the known, documented warnings of a 160 ms hop; no error
    assert "hop > 50 ms" in warned


@pytest.mark.parametrize("preset", PRESETS)
def test_validator_passes_with_finer_timestamps(preset: str) -> None:
    model = hear.load_model(model_name=preset, timestamp_hop_ms=40)
    assert model.passes == 4
    warned = validate(model)
    assert warned == []  # 40 ms hop, from 11 ms to within a hop of the end: no warning either


def test_validator_regression_1_98_seconds() -> None:
    """1.98 s used to end at 2011 ms (the partial last patch's centre, past the end)."""
    model = hear.load_model(model_name="msm_vit_debug")
    for hop_ms in (None, 40.0, 20.0, 10.0):
        m = model if hop_ms is None else hear.load_model(model_name="msm_vit_debug", timestamp_hop_ms=hop_ms)
        for length in (0.03, 0.2, 1.07, 1.98, 2.0, 4.0, 7.31):
            _, ts = hear.get_timestamp_embeddings(_noise(1, length, 16000), m)
            t = ts[0].numpy().astype(np.float64)
            assert 0 <= t.min() and t.max() <= 1000 * length, (hop_ms, length, t)
            if len(t) > 1:
                step = hop_ms or 160.0
                np.testing.assert_allclose(np.diff(t), step, atol=1e-3)
                assert t.max() > 1000 * length - step - 91.5  # the last frame is near the end


def test_finer_timestamps_are_the_models_own_frames() -> None:
    """Each finer frame is the model's embedding of the audio shifted so that a time patch is
    centred at its timestamp: the unshifted pass reappears every 4th frame."""
    base = hear.load_model(model_name="msm_mamba_debug")
    fine = hear.load_model(model_name="msm_mamba_debug", timestamp_hop_ms=40)
    audio = _noise(2, 3.3, 16000)
    e0, t0 = hear.get_timestamp_embeddings(audio, base)
    e1, t1 = hear.get_timestamp_embeddings(audio, fine)
    idx = [int(i) for i in np.flatnonzero(np.isin(t1[0].numpy(), t0[0].numpy()))]
    assert len(idx) == t0.shape[1] and np.all(np.diff(idx) == 4)
    torch.testing.assert_close(e1[:, idx], e0, atol=1e-6, rtol=0)
    # batch == one by one still holds
    one, _ = hear.get_timestamp_embeddings(audio[1:], fine)
    torch.testing.assert_close(one[0], e1[1], atol=1e-5, rtol=0)


def test_timestamp_hop_must_divide_the_patch_hop() -> None:
    with pytest.raises(ValueError, match="40, 32, 20"):
        hear.load_model(model_name="msm_vit_debug", timestamp_hop_ms=30)
