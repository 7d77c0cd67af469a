"""The log-mel baseline embedder and baseline-name resolution."""

from __future__ import annotations

import numpy as np
import pytest

from audiofm.embedding import AudioEmbedder
from audiofm.eval.baselines import LogMelEmbedder, make_baseline, parse_baseline
from audiofm.frontend import FrontendConfig


def test_logmel_contract() -> None:
    emb = LogMelEmbedder()
    assert isinstance(emb, AudioEmbedder) and emb.embed_dim == 256 and emb.sample_rate == 16000
    rng = np.random.default_rng(0)
    wave = rng.standard_normal(16000).astype(np.float32) * 0.1
    e = emb.embed(wave, 16000)
    cfg = emb.config
    n = cfg.num_frames(16000)
    assert e.clip.shape == (256,) and e.frames.shape == (n, 128) and e.timestamps.shape == (n,)
    x = e.frames  # the log-mel frames themselves
    assert np.allclose(e.clip[:128], x.mean(0), atol=1e-5) and np.allclose(e.clip[128:], x.std(0), atol=1e-5)
    import torch

    from audiofm.frontend import LogMel

    ref = LogMel(cfg)(torch.from_numpy(wave)[None])[0].T.numpy()
    assert np.allclose(x, ref, atol=1e-5)
    assert e.timestamps[0] == pytest.approx(cfg.fft_size / 2 / 16000)
    assert np.allclose(np.diff(e.timestamps), cfg.hop_length / 16000)


def test_logmel_batch_equals_single_and_resamples() -> None:
    emb = LogMelEmbedder()
    rng = np.random.default_rng(1)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (8000, 16000, 300, 12345)]
    batch = emb.embed_batch(waves, 16000)
    for w, b in zip(waves, batch):
        s = emb.embed(w, 16000)
        assert b.frames.shape == s.frames.shape
        assert np.allclose(b.clip, s.clip, atol=1e-4) and np.allclose(b.frames, s.frames, atol=1e-4)
    assert batch[2].frames.shape[0] == 1  # shorter than one window: one zero-padded frame
    e8k = emb.embed(waves[1][::2].copy(), 8000)  # resampled to 16 kHz
    assert e8k.frames.shape[0] == batch[1].frames.shape[0]


def test_fingerprint_tracks_settings() -> None:
    assert LogMelEmbedder().fingerprint() == LogMelEmbedder().fingerprint()
    assert LogMelEmbedder().fingerprint() != LogMelEmbedder(FrontendConfig(n_mels=64)).fingerprint()
    assert LogMelEmbedder(FrontendConfig(n_mels=64)).embed_dim == 128


def test_make_baseline_names() -> None:
    assert isinstance(make_baseline("logmel", []), LogMelEmbedder)
    with pytest.raises(ValueError, match="needs a --model"):
        make_baseline("random", [])
    with pytest.raises(KeyError, match="unknown peer"):
        make_baseline("no-such-peer", [])
    with pytest.raises(ValueError, match="takes no settings"):
        make_baseline("logmel:n_mels=64", [])


def test_baseline_settings_are_parsed_and_checked() -> None:
    assert parse_baseline("crepe") == ("crepe", {})
    assert parse_baseline("crepe:hop_ms=50:capacity=tiny:flag=true:x=0.5") == (
        "crepe", {"hop_ms": 50, "capacity": "tiny", "flag": True, "x": 0.5})
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_baseline("crepe:hop_ms")
    # unknown settings are named with the accepted ones, before any weights are loaded
    with pytest.raises(ValueError, match="no setting hop_sec.*hop_ms"):
        make_baseline("crepe:hop_sec=1", [])
    from audiofm.peers import get_peer

    with pytest.raises(ValueError, match="no setting overlap_s.*overlap"):  # the library call checks too
        get_peer("birdnet", overlap_s=1.0)
