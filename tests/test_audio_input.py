"""In-memory audio: accepted layouts and sample types, converted or refused, never guessed."""

import numpy as np
import pytest

from audiofm.audio import AudioError, prepare, to_float, to_mono


def test_integer_pcm_is_scaled_to_full_scale():
    x = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    np.testing.assert_allclose(to_float(x), [0.0, 0.5, -1.0, 32767 / 32768])
    np.testing.assert_allclose(to_float(np.array([2**30], dtype=np.int32)), [0.5])
    np.testing.assert_allclose(to_float(np.array([128, 0, 255], dtype=np.uint8)), [0.0, -1.0, 127 / 128])
    assert to_float(np.array([0.25], dtype=np.float64)).dtype == np.float32
    with pytest.raises(AudioError, match="dtype complex"):
        to_float(np.zeros(4, dtype=np.complex64))


def test_channel_first_and_channel_last_are_both_averaged_over_channels():
    rng = np.random.default_rng(0)
    left, right = rng.standard_normal(1000), rng.standard_normal(1000)
    want = ((left + right) / 2).astype(np.float32)
    np.testing.assert_allclose(to_mono(np.stack([left, right], 1)), want, atol=1e-6)  # (T, C)
    np.testing.assert_allclose(to_mono(np.stack([left, right], 0)), want, atol=1e-6)  # (C, T)
    np.testing.assert_allclose(to_mono(left[None, :]), left.astype(np.float32))  # (1, T)
    # int16 channel-first stereo through the whole preparation: scaled, averaged, not squashed
    pcm = (np.stack([left, right], 0) * 3000).astype(np.int16)
    out = prepare(pcm, 16000, 16000)
    assert out.shape == (1000,) and np.abs(out).max() < 1.0
    np.testing.assert_allclose(out, pcm.astype(np.float32).mean(0) / 32768, atol=1e-6)


@pytest.mark.parametrize("shape", [(64, 64), (100, 200), (2, 3, 100)])
def test_ambiguous_layouts_are_refused_with_the_expected_shapes(shape):
    with pytest.raises(AudioError, match=r"\(T,\)") as e:
        to_mono(np.zeros(shape, dtype=np.float32), "clip.wav")
    assert "clip.wav" in str(e.value) and "\n" not in str(e.value)


def test_embed_accepts_int16_and_channel_first_like_float_mono():
    from audiofm.api import random_like

    emb = random_like("msm_vit_debug")
    rng = np.random.default_rng(1)
    x = (0.3 * rng.standard_normal(16000)).astype(np.float32)
    pcm = np.round(x * 32768).clip(-32768, 32767).astype(np.int16)
    ref = emb.embed(pcm.astype(np.float32) / 32768, 16000).clip
    np.testing.assert_allclose(emb.embed(pcm, 16000).clip, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(emb.embed(np.stack([pcm, pcm]), 16000).clip, ref, rtol=1e-5, atol=1e-6)
