import numpy as np
import pytest

from audiofm.api import random_like
from audiofm.audio import AudioError
from audiofm.embedding import POOLINGS


@pytest.fixture(scope="module")
def emb():
    return random_like("msm_vit_debug", seed=0)


def test_shapes_and_timestamps(emb):
    w = np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32)
    e = emb.embed(w, 16000)
    n_frames = 1 + (48000 - 512) // 160
    assert e.frames.shape == (-(-n_frames // 16), 64) and e.clip.shape == (64,)
    # patch t covers frames 16t..16t+15; centre = ((16t + 7.5) * 160 + 256) / 16000
    np.testing.assert_allclose(e.timestamps[:2], [(7.5 * 160 + 256) / 16000, (23.5 * 160 + 256) / 16000])
    np.testing.assert_allclose(e.clip, e.frames.mean(0), rtol=1e-5)


def test_deterministic_and_batch_equals_single(emb):
    rng = np.random.default_rng(1)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (8000, 20000, 16000 * 5)]
    a = emb.embed_batch(waves, 16000)
    b = emb.embed_batch(waves, 16000)
    for x, y, w in zip(a, b, waves):
        np.testing.assert_array_equal(x.clip, y.clip)
        np.testing.assert_allclose(x.frames, emb.embed(w, 16000).frames, atol=1e-5)


def test_five_minute_input_chunked_and_stitched(emb):
    sr = 16000
    w = np.random.default_rng(2).standard_normal(sr * 300).astype(np.float32) * 0.1
    e = emb.embed(w, sr)
    n_frames = 1 + (len(w) - 512) // 160
    assert e.frames.shape[0] == -(-n_frames // 16)
    assert np.all(np.diff(e.timestamps) > 0)
    assert e.timestamps[-1] == pytest.approx(300.0, abs=0.2)
    # chunking is exact: frames of chunk 2 equal embedding that chunk's samples alone
    hop, ln = emb._chunk_hop, emb._chunk_len
    alone = emb.embed(w[hop : hop + ln], sr)
    k = alone.frames.shape[0]
    np.testing.assert_allclose(e.frames[k : 2 * k], alone.frames, atol=1e-5)


def test_whole_pass_option_and_pooling():
    w = np.random.default_rng(3).standard_normal(16000 * 10).astype(np.float32)
    whole = random_like("msm_vit_debug", chunk_seconds=None).embed(w, 16000)
    chunked = random_like("msm_vit_debug").embed(w, 16000)
    assert whole.frames.shape == chunked.frames.shape
    np.testing.assert_allclose(whole.timestamps, chunked.timestamps)
    mm = random_like("msm_vit_debug", pooling="meanmax")
    assert mm.embed_dim == 128 and mm.embed(w, 16000).clip.shape == (128,)


def test_resamples_and_mixes_down(emb):
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t)] * 2, 1).astype(np.float32)
    e44 = emb.embed(stereo, 44100)
    t16 = np.arange(16000) / 16000
    e16 = emb.embed(np.sin(2 * np.pi * 440 * t16).astype(np.float32), 16000)
    cos = e44.clip @ e16.clip / np.linalg.norm(e44.clip) / np.linalg.norm(e16.clip)
    assert cos > 0.99


def test_bad_input(emb):
    with pytest.raises(AudioError, match="empty"):
        emb.embed(np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="NaN"):
        emb.embed(np.full(100, np.nan, np.float32), 16000)
    with pytest.raises(ValueError, match="layer"):
        random_like("msm_vit_debug", layer=5)


def test_intermediate_layer(emb):
    w = np.random.default_rng(4).standard_normal(16000).astype(np.float32)
    e0 = random_like("msm_vit_debug", layer=0).embed(w, 16000)
    assert e0.clip.shape == (64,) and not np.allclose(e0.clip, emb.embed(w, 16000).clip)


def test_embedder_from_an_encoder_and_one_pooling_definition():
    import torch

    from audiofm.api import Embedder
    from audiofm.models import create_model
    from audiofm.models.encoder import pool_frames

    torch.manual_seed(0)
    enc = create_model("msm_vit_debug").encoder
    w = np.random.default_rng(5).standard_normal(40000).astype(np.float32)  # several 1 s chunks
    clips = {}
    for pooling in POOLINGS:
        e = Embedder(enc, segment_seconds=1.0, name="enc", weights_id="w", pooling=pooling).embed(w, 16000)
        ref = pool_frames(torch.from_numpy(e.frames)[None], None, pooling)[0].numpy()
        np.testing.assert_array_equal(e.clip, ref)
        clips[pooling] = e.clip
    np.testing.assert_allclose(clips["meanmax"], np.concatenate([e.frames.mean(0), e.frames.max(0)]), rtol=1e-5,
                               atol=1e-6)
    with torch.no_grad():  # one chunk: the encoder's own differentiable clip embedding
        short = w[:15000]
        one = Embedder(enc, segment_seconds=1.0, name="enc", weights_id="w", pooling="meanmax").embed(short, 16000)
        ref = enc.eval().clip_embedding(torch.from_numpy(short)[None], pooling="meanmax")[0].numpy()
    np.testing.assert_allclose(one.clip, ref, atol=1e-5)
