"""Streaming embeddings of forward-direction recurrent encoders == one pass over the whole input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiofm import checkpoint as ckpt
from audiofm.api import load, random_like
from audiofm.audio import AudioError
from audiofm.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")


def forward_embedder(tmp_path, preset: str, **kw):
    torch.manual_seed(0)
    model = create_model(preset, segment_seconds=1.0, encoder={"backbone_cfg": {"direction": "forward"},
                                                              "frontend": {"mean": -4.0, "std": 3.0}})
    ckpt.save_checkpoint(tmp_path / preset, ckpt.CheckpointSpec.from_model_config(model.cfg), model)
    return load(tmp_path / preset, chunk_seconds=None, **kw)


def signal(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 440 * t * (1 + 0.2 * t)) + 0.05 * rng.normal(size=t.size)).astype(np.float32)


def stream_all(stream, wave: np.ndarray, sizes: list[int]):
    out, times, start, i = [], [], 0, 0
    while start < wave.size:
        n = sizes[i % len(sizes)]
        f, t = stream.push(wave[start : start + n])
        assert f.shape[0] == t.shape[0]
        out.append(f)
        times.append(t)
        start, i = start + n, i + 1
    f, t = stream.flush()
    return np.concatenate([*out, f]), np.concatenate([*times, t])


@pytest.mark.parametrize("preset", ["msm_mamba_debug", "msm_mamba2_debug", "msm_xlstm_debug"])
@pytest.mark.parametrize("seconds", [0.01, 0.3, 2.37])
def test_stream_equals_one_pass(tmp_path, preset, seconds):
    emb = forward_embedder(tmp_path, preset)
    wave = signal(seconds)
    whole = emb.embed(wave, 16000)
    frames, times = stream_all(emb.stream(), wave, [1, 7, 400, 2561, 160, 33])
    assert frames.shape == whole.frames.shape
    np.testing.assert_allclose(frames, whole.frames, atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(times, whole.timestamps)


def test_stream_emits_as_patches_complete_and_pools(tmp_path):
    emb = forward_embedder(tmp_path, "msm_mamba_debug", pooling="meanmax")
    stream = emb.stream()
    patch = 16 * 160  # samples per time patch (16 frames, 10 ms hop)
    f, _ = stream.push(signal(0.1))  # 1600 samples: fewer than one patch's frames
    assert f.shape[0] == 0
    f, t = stream.push(signal(1.0, seed=1))
    frames_so_far = 1 + (17600 - 512) // 160  # 512-sample frames (25 ms window in a 512 FFT), 10 ms hop
    assert f.shape[0] == stream.frames_emitted == frames_so_far // 16 > 0
    assert np.all(np.diff(t) == pytest.approx(patch / 16000))
    stream.flush()
    whole = emb.embed(np.concatenate([signal(0.1), signal(1.0, seed=1)]), 16000)
    np.testing.assert_allclose(stream.clip(), whole.clip, atol=2e-5, rtol=1e-4)
    with pytest.raises(RuntimeError, match="flushed"):
        stream.push(signal(0.1))


def test_stream_at_another_rate_and_intermediate_layer(tmp_path):
    emb = forward_embedder(tmp_path, "msm_xlstm_debug", layer=0)
    wave = signal(1.5, sr=22050)
    whole = emb.embed(wave, 22050)
    frames, _ = stream_all(emb.stream(sr=22050), wave, [1000, 3333])
    assert frames.shape == whole.frames.shape
    # streamed resampling (soxr.ResampleStream) differs from one-shot soxr only near the edges
    assert np.corrcoef(frames.ravel(), whole.frames.ravel())[0, 1] > 0.999


def test_stream_refuses_what_cannot_stream(tmp_path):
    with pytest.raises(ValueError, match="cannot stream"):
        random_like("msm_vit_debug").stream()
    with pytest.raises(ValueError, match="direction='forward'"):
        random_like("msm_mamba_debug").stream()  # presets are bidirectional
    emb = forward_embedder(tmp_path, "msm_mamba_debug")
    with pytest.raises(AudioError, match="empty"):
        emb.stream().flush()
    with pytest.raises(AudioError, match="NaN"):
        emb.stream().push(np.array([0.0, np.nan], dtype=np.float32))


@pytest.mark.parametrize("preset", ["msm_mamba_debug", "msm_mamba2_debug", "msm_xlstm_debug"])
def test_ten_minutes_in_one_pass(tmp_path, preset):
    """A 10-minute file in one pass (no chunking); for a causal encoder its first frames equal
    those of the first 16 s alone, and streaming the last minute continues it exactly."""
    emb = forward_embedder(tmp_path, preset)
    sr = 16000
    wave = np.tile(signal(10.0), 60)  # 600 s
    out = emb.embed(wave, sr)
    assert out.frames.shape == (600 * 100 // 16, emb.frame_dim) and np.all(np.isfinite(out.frames))
    head = emb.embed(wave[: 16 * sr], sr).frames
    np.testing.assert_allclose(out.frames[: head.shape[0] - 1], head[:-1], atol=2e-5, rtol=1e-4)
    frames, _ = stream_all(emb.stream(), wave, [sr * 30])
    np.testing.assert_allclose(frames, out.frames, atol=5e-5, rtol=1e-3)


def test_stream_with_frequency_patches_concatenated(tmp_path):
    emb = forward_embedder(tmp_path, "msm_mamba2_debug", freq_mix="concat")
    wave = signal(1.3)
    whole = emb.embed(wave, 16000)
    frames, _ = stream_all(emb.stream(), wave, [1000, 3333])
    assert frames.shape == whole.frames.shape and frames.shape[1] == emb.frame_dim
    np.testing.assert_allclose(frames, whole.frames, atol=2e-5, rtol=1e-4)
    # several blocks cannot stream (the stream carries one stack's state): refused, not ignored
    with pytest.raises(ValueError, match="streaming reads one block"):
        forward_embedder(tmp_path / "l2", "msm_mamba2_debug", layers=2).stream()
