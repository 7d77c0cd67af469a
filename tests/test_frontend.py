import numpy as np
import pytest
import torch

from audiofm.frontend import FrontendConfig, LogMel, mel_filterbank


def reference_logmel(x: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """Straightforward numpy log-mel: explicit frames, Hann window, rfft, loop-built triangles."""
    n_fft, hop, win = cfg.fft_size, cfg.hop_length, cfg.win_length
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left : left + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    n_frames = 1 + (len(x) - n_fft) // hop
    frames = np.stack([x[i * hop : i * hop + n_fft] * window for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (T, F)
    mel = lambda f: 2595 * np.log10(1 + f / 700)
    imel = lambda m: 700 * (10 ** (m / 2595) - 1)
    pts = imel(np.linspace(mel(cfg.f_min), mel(cfg.sample_rate / 2), cfg.n_mels + 2))
    freqs = np.linspace(0, cfg.sample_rate / 2, n_fft // 2 + 1)
    fb = np.zeros((n_fft // 2 + 1, cfg.n_mels))
    for m in range(cfg.n_mels):
        lo, c, hi = pts[m], pts[m + 1], pts[m + 2]
        for k, f in enumerate(freqs):
            if lo < f <= c:
                fb[k, m] = (f - lo) / (c - lo)
            elif c < f < hi:
                fb[k, m] = (hi - f) / (hi - c)
    return np.log(power @ fb + cfg.log_eps).T  # (n_mels, T)


@pytest.mark.parametrize("n_mels,hop_ms", [(128, 10.0), (64, 20.0)])
def test_logmel_matches_reference(n_mels, hop_ms):
    cfg = FrontendConfig(n_mels=n_mels, hop_ms=hop_ms)
    x = np.random.default_rng(0).standard_normal(8000).astype(np.float64)
    ours = LogMel(cfg).log_mel(torch.from_numpy(x).float()[None])[0].numpy()
    ref = reference_logmel(x, cfg)
    assert ours.shape == ref.shape == (n_mels, cfg.num_frames(8000))
    # compare where there is energy (log of tiny values amplifies float32 noise)
    sel = ref > np.log(1e-3)
    np.testing.assert_allclose(ours[sel], ref[sel], atol=2e-3)


def test_filterbank_triangles_peak_at_one_and_cover_range():
    fb = mel_filterbank(257, 40, 16000, 0.0, 8000.0)
    assert fb.shape == (257, 40)
    assert torch.all(fb >= 0) and torch.all(fb <= 1 + 1e-6)
    assert torch.all(fb.max(dim=0).values > 0.5)  # each filter hits some FFT bins


def test_normalisation_and_frame_geometry():
    cfg = FrontendConfig(mean=-5.0, std=2.0)
    lm = LogMel(cfg)
    x = torch.randn(2, 16000)
    np.testing.assert_allclose(lm(x).numpy(), ((lm.log_mel(x) + 5.0) / 2.0).numpy(), rtol=1e-6)
    assert cfg.num_frames(16000) == 1 + (16000 - 512) // 160
    assert cfg.num_frames(100) == 1  # shorter than a frame: padded to one frame
    assert lm(torch.randn(1, 100)).shape == (1, 128, 1)
    assert cfg.frame_centre(0) == pytest.approx(256 / 16000)
    assert lm.frame_lengths(torch.tensor([16000, 512, 10])).tolist() == [cfg.num_frames(16000), 1, 1]


def test_fp32_under_autocast_and_batched_equals_single():
    lm = LogMel(FrontendConfig())
    x = torch.randn(3, 9000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lm(x)
    assert y.dtype == torch.float32
    single = torch.cat([lm(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(y, single)


def test_streamable_frames_depend_only_on_their_samples():
    lm = LogMel(FrontendConfig())
    x = torch.randn(1, 32000)
    whole = lm(x)
    head = lm(x[:, :16000])
    torch.testing.assert_close(whole[..., : head.shape[-1]], head, atol=1e-4, rtol=1e-4)
