"""The latent-prediction objective (data2vec 2.0 / EAT): EMA teacher, targets, multi-mask loss,
inverse block masking, resume of the teacher, every backbone, and an end-to-end run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from crash import crash_after_checkpoint
from safetensors.torch import load_file

import audiofm
from audiofm.cli import main
from audiofm.models import create_model
from audiofm.models.latent import LatentConfig, ema_decay, ema_update, make_targets
from audiofm.models.masking import make_mask
from audiofm.train.schedule import param_groups

pytestmark = pytest.mark.usefixtures("one_thread")
SR = 16000


def _latent(name: str = "msm_vit_debug", **latent: object):
    torch.manual_seed(0)
    return create_model(name, objective="latent", segment_seconds=0.5, latent=latent or None)


def _wave(B: int = 2, seconds: float = 0.5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    f = 200.0 + 1800.0 * torch.rand(B, 1, generator=g)
    return (0.5 * torch.sin(2 * math.pi * f * t) + 0.05 * torch.randn(B, t.numel(), generator=g)).float()


# ------------------------------------------------------------------------------ teacher


def test_teacher_never_gets_gradients_nor_optimizer_updates():
    m = _latent(num_masks=2)
    assert m.teacher is not None and not any(p.requires_grad for p in m.teacher.parameters())
    opt = torch.optim.AdamW(param_groups(m, 0.05), lr=1e-2)
    before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    wave = _wave()
    out = m(wave, m.sample_mask(2, wave.shape[1], torch.Generator().manual_seed(0)))
    out["loss"].backward()
    assert all(p.grad is None for p in m.teacher.parameters())
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == ["enc_mask_token"] or missing == []  # only an SSAST-mode token could lack one
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in m.teacher.state_dict().items())
    assert not torch.equal(m.encoder.patch_embed.weight, m.teacher.patch_embed.weight)  # the student moved
    m.train()
    assert m.training and not m.teacher.training  # the teacher stays in eval mode


def test_ema_update_matches_the_hand_formula():
    torch.manual_seed(0)
    teacher, student = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    t0 = {k: v.double().clone() for k, v in teacher.state_dict().items()}
    s0 = {k: v.double().clone() for k, v in student.state_dict().items()}
    tau = 0.9
    ema_update(teacher, student, tau)
    for k, v in teacher.state_dict().items():
        torch.testing.assert_close(v.double(), tau * t0[k] + (1 - tau) * s0[k], rtol=0, atol=1e-7)
    ema_update(teacher, student, 1.0)  # τ = 1: unchanged
    ema_update(teacher, student, 0.0)  # τ = 0: a copy of the student
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in teacher.state_dict().items())


def test_the_models_ema_step_uses_the_schedule():
    m = _latent(ema_decay=0.5, ema_end_decay=0.9)
    with torch.no_grad():
        for p in m.encoder.parameters():
            p.add_(1.0)
    t0 = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    s = m.encoder.state_dict()
    assert m.ema_step(0, 11) == 0.5
    for k, v in m.teacher.state_dict().items():
        torch.testing.assert_close(v, 0.5 * t0[k] + 0.5 * s[k], rtol=0, atol=1e-6)


def test_decay_schedule_start_middle_end():
    lin = LatentConfig(ema_decay=0.999, ema_end_decay=0.9999)
    cos = LatentConfig(ema_decay=0.999, ema_end_decay=0.9999, ema_schedule="cosine")
    for cfg in (lin, cos):
        assert ema_decay(cfg, 0, 101) == pytest.approx(0.999, abs=1e-12)
        assert ema_decay(cfg, 50, 101) == pytest.approx(0.99945, abs=1e-12)  # both: the midpoint halfway
        assert ema_decay(cfg, 100, 101) == pytest.approx(0.9999, abs=1e-12)
        assert ema_decay(cfg, 500, 101) == pytest.approx(0.9999, abs=1e-12)  # held after the end
        assert ema_decay(cfg, 0, 1) == pytest.approx(0.9999, abs=1e-12)
    assert ema_decay(lin, 25, 101) == pytest.approx(0.999 + 0.25 * 0.0009, abs=1e-12)
    assert ema_decay(cos, 25, 101) == pytest.approx(0.9999 - 0.0009 * (1 + math.cos(math.pi / 4)) / 2, abs=1e-12)
    with pytest.raises(ValueError, match="ema_schedule"):
        LatentConfig(ema_schedule="step")


# ------------------------------------------------------------------------------ targets


def _ref_norm(x: torch.Tensor, dim: int) -> torch.Tensor:
    x = x.double()
    return (x - x.mean(dim, keepdim=True)) / (x.var(dim, unbiased=False, keepdim=True) + 1e-5).sqrt()


@pytest.mark.parametrize("norm", ["instance", "layer"])
def test_targets_against_a_direct_reference(norm):
    g = torch.Generator().manual_seed(0)
    layers = [torch.randn(2, 6, 8, generator=g) * (i + 1) + i for i in range(3)]
    y = make_targets(layers, 2, norm)
    dim = 1 if norm == "instance" else 2  # instance: each channel over tokens; layer: each token over channels
    ref = _ref_norm((_ref_norm(layers[1], dim) + _ref_norm(layers[2], dim)) / 2, 2)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(make_targets(layers, 8, norm), make_targets(layers, 3, norm))  # K clipped to depth


def test_teacher_targets_are_its_block_outputs():
    m = _latent(target_layers=2, target_norm="layer").eval()
    tok = m.encoder.tokenize(_wave())
    t = m.teacher
    x = t.embed_tokens(tok.patches, tok.Fp, tok.Tp)
    outs = []
    for block in t.backbone.blocks:  # every block's output, by hand
        x = block(x, None)
        outs.append(x)
    torch.testing.assert_close(m.teacher_targets(tok.patches, tok.Fp, tok.Tp), make_targets(outs, 2, "layer"))


# ------------------------------------------------------------------------------ multi-mask


@pytest.mark.parametrize("encoder_input", ["visible", "all"])
def test_multi_mask_loss_is_the_mean_of_single_mask_losses(encoder_input):
    torch.manual_seed(0)
    m = create_model("msm_vit_debug", objective="latent", encoder_input=encoder_input, segment_seconds=0.5,
                     latent={"num_masks": 3, "clip_weight": 0.5}).eval()
    wave = _wave(B=2)
    masks = m.sample_mask(2, wave.shape[1], torch.Generator().manual_seed(1))  # (3·2, N)
    calls = []
    m.teacher.patch_embed.register_forward_hook(lambda *a: calls.append(1))
    out = m(wave, masks)
    assert len(calls) == 1  # the teacher encodes each clip once for all its masks
    single = [m(wave, masks.view(3, 2, -1)[i]) for i in range(3)]
    for key in ("loss", "frame_loss", "clip_loss"):
        torch.testing.assert_close(out[key], torch.stack([s[key] for s in single]).mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["loss"], out["frame_loss"] + 0.5 * out["clip_loss"])


def test_pixel_weight_adds_the_reconstruction_loss_of_the_same_hidden_patches():
    """latent.pixel_weight w: loss = frame + clip_weight·clip + w·(patch MSE at the hidden tokens,
    from the decoder's second output), the MSE computed here directly; w = 0 has no second output."""
    assert create_model("msm_vit_debug", objective="latent", segment_seconds=0.5).decoder_pixels is None
    torch.manual_seed(0)
    m = create_model("msm_vit_debug", objective="latent", segment_seconds=0.5,
                     latent={"num_masks": 2, "clip_weight": 0.5, "pixel_weight": 0.3}).eval()
    wave = _wave(B=2)
    masks = m.sample_mask(2, wave.shape[1], torch.Generator().manual_seed(1))
    cap = {}
    m.decoder_pixels.register_forward_hook(lambda mod, inp, out: cap.update(pred=out))
    out = m(wave, masks)
    patches = m.encoder.tokenize(wave).patches.repeat(2, 1, 1)  # (2·2, N, P)
    t = (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6).sqrt()
    ref = (cap["pred"] - t).square().mean(-1)[masks].mean()  # every row hides the same count
    torch.testing.assert_close(out["pixel_loss"], ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["loss"], out["frame_loss"] + 0.5 * out["clip_loss"] + 0.3 * out["pixel_loss"])
    out["loss"].backward()
    assert m.decoder_pixels.weight.grad is not None and m.decoder_pred.weight.grad is not None
    assert "decoder_pixels.weight" in m.export_state()  # a final checkpoint rebuilds the same model


def test_inverse_block_masks():
    Fp, Tp, ratio = 8, 25, 0.8
    g = torch.Generator().manual_seed(0)
    m = make_mask(32, Fp, Tp, ratio, "block", g, block=3)
    assert torch.all(m.sum(1) == round(ratio * Fp * Tp))  # exactly the same count in every row
    assert torch.equal(m, make_mask(32, Fp, Tp, ratio, "block", torch.Generator().manual_seed(0), block=3))

    def visible_neighbours(mask: torch.Tensor) -> float:
        v = (~mask).view(-1, Tp, Fp).float()
        nb = F.pad(v, (1, 1, 1, 1))
        n = nb[:, :-2, 1:-1] + nb[:, 2:, 1:-1] + nb[:, 1:-1, :-2] + nb[:, 1:-1, 2:]
        return float((n * v).sum() / (v.sum() * 4))

    # visible tokens come in blocks: most of their neighbours are visible too (random: about 1 - ratio)
    rand = make_mask(32, Fp, Tp, ratio, "random", torch.Generator().manual_seed(0))
    assert visible_neighbours(m) > 0.45 > 0.3 > visible_neighbours(rand)


# ------------------------------------------------------------------------------ backbones


@pytest.mark.parametrize("name", ["msm_vit_debug", "msm_mamba_debug", "msm_mamba2_debug", "msm_xlstm_debug"])
def test_every_backbone_takes_one_latent_step(name):
    m = _latent(name, num_masks=2, ema_decay=0.5, ema_end_decay=0.5)
    m.cfg.mask_mode = "block"
    opt = torch.optim.AdamW(param_groups(m, 0.05), lr=1e-3)
    wave = _wave()
    out = m(wave, m.sample_mask(2, wave.shape[1], torch.Generator().manual_seed(0)))
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    out["loss"].backward()
    assert all(p.grad is None for p in m.teacher.parameters())
    opt.step()
    before = [p.clone() for p in m.teacher.parameters()]
    m.ema_step(0, 10)
    moved = [not torch.equal(a, b) for a, b in zip(before, m.teacher.parameters())]
    assert any(moved)


# ------------------------------------------------------------------------------ runs


@pytest.fixture
def sounds(tmp_path: Path) -> Path:
    """Generated sounds of a few kinds: tones, chirps, noise bursts and clicks."""
    root = tmp_path / "sounds"
    root.mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(int(0.75 * SR)) / SR
    for i in range(12):
        kind = i % 4
        if kind == 0:
            x = np.sin(2 * np.pi * rng.uniform(200, 2000) * t)
        elif kind == 1:
            x = np.sin(2 * np.pi * (rng.uniform(200, 600) + rng.uniform(500, 3000) * t) * t)
        elif kind == 2:
            x = rng.standard_normal(t.size) * (np.sin(2 * np.pi * rng.uniform(2, 8) * t) > 0)
        else:
            x = np.zeros(t.size)
            x[:: int(SR / rng.uniform(5, 20))] = 1.0
        sf.write(root / f"s{i:02d}.flac", (0.4 * x + 0.01 * rng.standard_normal(t.size)).astype(np.float32), SR)
    return root


def _pretrain(data: Path, out: Path, *extra: str, steps: int = 6) -> list[str]:
    return ["pretrain", "--model", "msm_vit_debug", "--data", str(data), "--out", str(out), "--objective", "latent",
            "--max-steps", str(steps), "--batch-size", "2", "--no-progress",
            "--set", "model_overrides.segment_seconds=0.5", "--set", "model_overrides.latent.num_masks=2",
            "--set", "model_overrides.latent.ema_decay=0.9", "--set", "train.warmup_steps=1",
            "--set", "train.log_every=1", "--set", "train.ckpt_every=2", "--set", "stats_clips=4", *extra]


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("clips_per_s", "elapsed_s")} for r in rows]


def test_resume_restores_the_teacher_and_equals_an_uninterrupted_run(tmp_path, audio_folder, monkeypatch, capsys):
    full, run = tmp_path / "full", tmp_path / "run"
    assert main(_pretrain(audio_folder, full)) == 0
    with crash_after_checkpoint(monkeypatch, step=4):
        main(_pretrain(audio_folder, run))
    crashed = load_file(run / "checkpoints" / "step_00000004" / "model.safetensors")
    teacher = {k: v for k, v in crashed.items() if k.startswith("aux.teacher.")}
    assert teacher and all(torch.equal(v, load_file(full / "checkpoints" / "step_00000004" / "model.safetensors")[k])
                           for k, v in teacher.items())
    assert main(["pretrain", "--out", str(run), "--resume", "--no-progress"]) == 0
    capsys.readouterr()
    a = load_file(full / "checkpoints" / "step_00000006" / "model.safetensors")
    b = load_file(run / "checkpoints" / "step_00000006" / "model.safetensors")
    assert set(a) == set(b) and any(k.startswith("aux.teacher.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the teacher too, bit for bit
    assert any(not torch.equal(teacher[k], b[k]) for k in teacher)  # and it moved after the resume
    assert _metrics(full) == _metrics(run)
    # the final weights are the student's, without the training-only teacher
    final = load_file(full / "model" / "model.safetensors")
    assert not any(k.startswith("aux.") for k in final)
    assert all(torch.equal(final[k], a[k]) for k in final)


def test_end_to_end_latent_pretraining(tmp_path, sounds, capsys):
    run = tmp_path / "run"
    assert main(_pretrain(sounds, run, "--set", "train.lr=2e-3", "--set", "model_overrides.mask_mode=block",
                          "--set", "model_overrides.latent.ema_decay=0.99",
                          "--set", "model_overrides.latent.pixel_weight=0.5", steps=40)) == 0
    rows = _metrics(run)
    losses = [r["loss"] for r in rows]
    assert len(losses) == 40 and all("frame_loss" in r and "clip_loss" in r and "pixel_loss" in r for r in rows)
    assert np.mean([r["pixel_loss"] for r in rows[-5:]]) < np.mean([r["pixel_loss"] for r in rows[:5]])
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    emb = audiofm.load(run / "model").embed(np.asarray(sf.read(sounds / "s00.flac")[0], dtype=np.float32), SR)
    assert emb.clip.shape == (64,) and np.isfinite(emb.clip).all()
    assert main(["info", str(run / "model")]) == 0 and "objective latent" in capsys.readouterr().out
    assert main(["info", str(run / "checkpoints" / "step_00000040")]) == 0  # with the teacher: described too
    # domain-adaptive continuation from the exported model: the teacher restarts from its encoder
    assert main(_pretrain(sounds, tmp_path / "cont", "--init", str(run / "model"), steps=2)) == 0


def test_keep_teacher_exports_the_teacher_as_the_encoder():
    m = _latent(keep="teacher", ema_decay=0.0)
    with torch.no_grad():
        for p in m.teacher.parameters():
            p.add_(1.0)
    state = m.export_state()
    assert not any(k.startswith("aux.") for k in state)
    assert all(torch.equal(state[f"encoder.{k}"], v) for k, v in m.teacher.state_dict().items())
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in state.items() if not k.startswith("encoder."))
