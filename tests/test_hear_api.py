"""HEAR 2021 API contract: attributes, shapes, millisecond centred timestamps, batch == one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import audiofm.hear as hear
from audiofm.eval.baselines import LogMelEmbedder


def _audio(n: int, samples: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, samples, generator=g) * 2 - 1) * 0.3


def _check_contract(model: hear.HearModel, samples: int, atol: float) -> None:
    for attr in ("sample_rate", "scene_embedding_size", "timestamp_embedding_size"):
        assert isinstance(getattr(model, attr), int)
    assert isinstance(model, torch.nn.Module)
    audio = _audio(3, samples)
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (3, model.scene_embedding_size) and scene.dtype == torch.float32
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    n_t = emb.shape[1]
    assert emb.shape == (3, n_t, model.timestamp_embedding_size) and emb.dtype == torch.float32
    assert ts.shape == (3, n_t) and n_t >= 1
    assert torch.equal(ts[0], ts[1]) and torch.equal(ts[0], ts[2])  # same for every sound
    if n_t > 1:
        hop = torch.diff(ts[0])
        assert torch.allclose(hop, hop[0].expand_as(hop), atol=1e-3) and 0 < float(hop[0]) <= 200
    assert 0 < float(ts[0, 0]) < 1000 * samples / model.sample_rate  # centred, in ms, inside the clip
    for i in range(3):  # batch == one by one
        one_scene = hear.get_scene_embeddings(audio[i : i + 1], model)
        one_emb, one_ts = hear.get_timestamp_embeddings(audio[i : i + 1], model)
        assert torch.allclose(one_scene[0], scene[i], atol=atol)
        assert torch.allclose(one_emb[0], emb[i], atol=atol) and torch.equal(one_ts[0], ts[i])


def test_contract_with_logmel_embedder() -> None:
    model = hear.HearModel(LogMelEmbedder(), batch_size=2)
    _check_contract(model, 16000, atol=1e-4)
    _, ts = hear.get_timestamp_embeddings(_audio(1, 16000), model)
    cfg = model.embedder.config  # type: ignore[attr-defined]
    expect = np.asarray([cfg.frame_centre(i) for i in range(ts.shape[1])]) * 1000
    assert np.allclose(ts[0].numpy(), expect, atol=1e-3)  # frame centres in milliseconds
    assert float(ts[0, 0]) == pytest.approx(16.0)  # 512-sample window at 16 kHz → centre at 16 ms


def test_contract_with_random_audiofm_model() -> None:
    pytest.importorskip("audiofm.api")
    model = hear.load_model(model_name="msm_vit_debug")
    assert model.sample_rate == 16000
    _check_contract(model, 24000, atol=1e-4)


def test_errors() -> None:
    model = hear.HearModel(LogMelEmbedder())
    with pytest.raises(ValueError, match="n_sounds, n_samples"):
        hear.get_scene_embeddings(torch.zeros(16000), model)
    with pytest.raises(ValueError, match="load_model"):
        hear.get_scene_embeddings(torch.zeros(1, 16000), torch.nn.Identity())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="checkpoint"):
        hear.load_model("")


def test_load_model_from_checkpoint(tmp_path) -> None:
    import audiofm
    from audiofm.checkpoint import CheckpointSpec, save_checkpoint
    from audiofm.models.registry import build_model, model_config

    cfg = model_config("msm_vit_debug")
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "ckpt", CheckpointSpec.from_model_config(cfg), build_model(cfg))
    model = hear.load_model(str(ckpt), pooling="meanmax")
    assert model.scene_embedding_size == 2 * model.timestamp_embedding_size
    audio = _audio(2, 16000)
    scene = hear.get_scene_embeddings(audio, model)
    ref = audiofm.load(str(ckpt), pooling="meanmax").embed(audio[1].numpy(), 16000).clip
    assert np.allclose(scene[1].numpy(), ref, atol=1e-5)
