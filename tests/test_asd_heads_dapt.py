"""Margin heads (ArcFace, AdaCos) and `audiofm pretrain --init` (domain-adaptive pretraining)."""

import json

import numpy as np
import pytest
import torch

from audiofm import checkpoint as ckpt
from audiofm.cli import main
from audiofm.models.heads import AdaCosHead, ArcFaceHead, build_head


@pytest.mark.parametrize("cls,kw", [(ArcFaceHead, {"scale": 10.0, "margin": 0.3}), (AdaCosHead, {}),
                                    (ArcFaceHead, {"sub_clusters": 3}), (AdaCosHead, {"sub_clusters": 2})])
def test_margin_heads(cls, kw):
    torch.manual_seed(0)
    head = cls(8, 4, **kw)
    z = torch.randn(12, 8, requires_grad=True)
    y = torch.eye(4)[torch.arange(12) % 4]
    logits = head.train_logits(z, y)
    assert logits.shape == (12, 4) and torch.isfinite(logits).all()
    (-(y * logits.log_softmax(1)).sum(1).mean()).backward()
    assert head.weight.grad is not None and z.grad is not None
    head.eval()
    with torch.no_grad():
        plain = head(z)
    assert plain.shape == (12, 4)
    rebuilt = build_head(head.head_type, **head.config())
    rebuilt.load_state_dict(head.state_dict())
    rebuilt.eval()
    assert torch.allclose(rebuilt(z), plain)


def test_arcface_margin_lowers_the_target_logit_and_adacos_adapts_scale():
    torch.manual_seed(0)
    z, y = torch.randn(16, 8), torch.eye(4)[torch.arange(16) % 4]
    arc = ArcFaceHead(8, 4, scale=16.0, margin=0.3)
    arc.train()
    with_margin = arc.train_logits(z, y)
    arc.eval()
    hard = y.bool()
    assert (with_margin[hard] < arc(z)[hard] + 1e-6).all()
    ada = AdaCosHead(8, 4)
    s0 = float(ada.scale)
    ada.train_logits(z, y)
    assert float(ada.scale) != s0 and "scale" in ada.state_dict()


def test_pretrain_init_continues_from_weights(tmp_path, audio_folder, capsys):
    base = tmp_path / "base"
    common = ["--data", str(audio_folder), "--batch-size", "2", "--no-progress",
              "--set", "train.warmup_steps=1"]
    assert main(["pretrain", "--model", "msm_vit_debug", "--out", str(base), "--max-steps", "2",
                 "--set", "model_overrides.segment_seconds=0.5", *common]) == 0
    dapt = tmp_path / "dapt"
    # a (near-)zero learning rate: the continued run must start exactly at the base weights
    assert main(["pretrain", "--init", str(base), "--out", str(dapt), "--max-steps", "1", "--lr", "1e-12",
                 *common]) == 0
    a, b = ckpt.load_state_dict(ckpt.resolve(base)), ckpt.load_state_dict(ckpt.resolve(dapt))
    assert set(a) == set(b)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6
    sa, sb = ckpt.load_spec(ckpt.resolve(base)), ckpt.load_spec(ckpt.resolve(dapt))
    assert (sb.encoder.frontend.mean, sb.encoder.frontend.std) == (sa.encoder.frontend.mean, sa.encoder.frontend.std)
    assert sb.segment_seconds == 0.5  # the init checkpoint's model config, not the preset's
    info = json.loads((dapt / "run_info.json").read_text())
    assert info  # a normal run directory

    # an encoder-only checkpoint (here: the MSM weights minus the decoder) and recomputed statistics
    enc_dir = tmp_path / "enc"
    spec = ckpt.CheckpointSpec("encoder", sa.name, sa.encoder, sa.segment_seconds)
    ckpt.save_checkpoint(enc_dir, spec, {k: v for k, v in a.items() if k.startswith("encoder.")})
    (tmp_path / "audio2").mkdir()
    import soundfile as sf

    for i, f in enumerate(sorted(audio_folder.rglob("*.flac"))):
        x, sr = sf.read(f)
        sf.write(tmp_path / "audio2" / f"{i}.flac", 0.1 * x, sr)  # 20 dB quieter: other statistics
    re = tmp_path / "re"
    assert main(["pretrain", "--init", str(enc_dir), "--recompute-stats", "--out", str(re), "--max-steps", "1",
                 "--lr", "1e-12", "--data", str(tmp_path / "audio2"), "--batch-size", "2", "--no-progress",
                 "--set", "train.warmup_steps=1"]) == 0
    c = ckpt.load_state_dict(ckpt.resolve(re))
    assert max(float((a[k] - c[k]).abs().max()) for k in a if k.startswith("encoder.")) < 1e-6
    assert ckpt.load_spec(ckpt.resolve(re)).encoder.frontend.mean < sa.encoder.frontend.mean - 1.0
    capsys.readouterr()
    assert np.isfinite(sa.encoder.frontend.std)


def test_pretrain_init_takes_the_objective_and_refuses_encoder_overrides(tmp_path, audio_folder, capsys):
    """--init a reconstruction run with --objective latent: the encoder continues, the decoder
    (another output size) starts fresh, and the teacher starts as a copy of the loaded encoder."""
    common = ["--data", str(audio_folder), "--batch-size", "2", "--no-progress", "--set", "train.warmup_steps=1"]
    base = tmp_path / "base"
    assert main(["pretrain", "--model", "msm_vit_debug", "--out", str(base), "--max-steps", "2", *common]) == 0
    lat = tmp_path / "lat"
    assert main(["pretrain", "--init", str(base), "--objective", "latent", "--out", str(lat), "--max-steps", "1",
                 "--lr", "1e-12", "--set", "model_overrides.latent.num_masks=2", "--set", "train.ckpt_every=1",
                 *common]) == 0
    a, b = ckpt.load_state_dict(ckpt.resolve(base)), ckpt.load_state_dict(ckpt.resolve(lat))
    enc = [k for k in a if k.startswith("encoder.")]
    assert enc and max(float((a[k] - b[k]).abs().max()) for k in enc) < 1e-6
    assert a["decoder_pred.weight"].shape != b["decoder_pred.weight"].shape  # pixels → latents
    cfg = ckpt.load_spec(ckpt.resolve(lat)).model_config()
    assert (cfg.objective, cfg.latent.num_masks) == ("latent", 2)
    last = ckpt.latest_checkpoint(lat / "checkpoints")
    assert last is not None
    state = ckpt.load_state_dict(last)  # a periodic checkpoint holds the teacher (a training-only part)
    assert max(float((state[f"aux.teacher.{k[len('encoder.'):]}"] - a[k]).abs().max()) for k in enc) < 1e-5
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert main(["pretrain", "--init", str(base), "--out", str(bad), "--max-steps", "1",
                 "--set", "model_overrides.encoder.patch_t=8", *common]) == 2
    err = capsys.readouterr().err
    assert "model_overrides.encoder" in err and "--init" in err and len(err.strip().splitlines()) == 1
    assert not bad.exists()
