"""Embedding settings that read more of the encoder: mean+std pooling and several blocks' outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from audiofm.api import Embedder, random_like
from audiofm.checkpoint import CheckpointSpec, save_checkpoint
from audiofm.cli import main
from audiofm.embedding import POOLINGS, pool_frames_np, pooled_dim
from audiofm.models import build_model, create_model, model_config
from audiofm.models.encoder import block_range, merge_freq, pool_frames


def test_meanstd_pooling_against_a_direct_formula() -> None:
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(3, 7, 5, generator=g, dtype=torch.float64)
    valid = torch.tensor([[True] * 7, [True] * 4 + [False] * 3, [True] + [False] * 6])
    out = pool_frames(frames, valid, "meanstd")
    assert out.shape == (3, 10)
    for b in range(3):
        x = frames[b, valid[b]].numpy()
        np.testing.assert_allclose(out[b, :5], x.mean(0), atol=1e-12)
        np.testing.assert_allclose(out[b, 5:], x.std(0), atol=1e-12)  # population std (ddof 0)
    np.testing.assert_array_equal(out[2, 5:], 0)  # one frame: no spread
    # the numpy form used by torch-free embedders agrees
    np.testing.assert_allclose(pool_frames_np(frames[0].numpy(), "meanstd"), out[0].numpy(), atol=1e-6)
    assert [pooled_dim(4, p) for p in POOLINGS] == [4, 4, 8, 8]
    with pytest.raises(ValueError, match="pooling must be one of"):
        pooled_dim(4, "median")


def test_meanstd_pooling_has_gradients() -> None:
    frames = torch.randn(2, 6, 4, dtype=torch.float64, requires_grad=True)
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[1, 3:] = False
    assert torch.autograd.gradcheck(lambda f: pool_frames(f, valid, "meanstd"), (frames,))


def test_several_blocks_against_a_direct_reference() -> None:
    torch.manual_seed(0)
    enc = create_model("msm_vit_debug").encoder.eval()
    depth = enc.backbone.depth
    wave = torch.randn(2, 16000) * 0.1
    lengths = torch.tensor([16000, 11000])
    with torch.no_grad():
        tok = enc.tokenize(wave, lengths)
        x = enc.embed_tokens(tok.patches, tok.Fp, tok.Tp)
        _, outs = enc.backbone(x, tok.pad_mask, return_layers=True)
        normed = [F.layer_norm(h, h.shape[-1:]) for h in outs[depth - 2 :]]
        for mix, ref in (("mean", torch.stack(normed).mean(0)), ("concat", torch.cat(normed, -1))):
            h = enc.forward_tokens(x, tok.pad_mask, -1, layers=2, layer_mix=mix)
            torch.testing.assert_close(h, ref)
        # layers=1 is what it always was: the last block + final norm, or one raw block
        torch.testing.assert_close(enc.forward_tokens(x, tok.pad_mask, -1, layers=1), enc.norm(outs[-1]))
        torch.testing.assert_close(enc.forward_tokens(x, tok.pad_mask, 0), outs[0])
        # reading blocks 0..1 ending at layer 1
        h = enc.forward_tokens(x, tok.pad_mask, 1, layers=2)
        torch.testing.assert_close(h, torch.stack([F.layer_norm(o, o.shape[-1:]) for o in outs[:2]]).mean(0))
    assert list(block_range(4, -1, 3)) == [1, 2, 3] and list(block_range(4, 1, 2)) == [0, 1]
    with pytest.raises(ValueError, match="choose layers between 1 and 2"):
        block_range(4, 1, 3)
    with pytest.raises(ValueError, match="out of range"):
        block_range(4, 4)


def test_embedder_reads_several_blocks() -> None:
    w = np.random.default_rng(1).standard_normal(40000).astype(np.float32)  # several chunks
    one = random_like("msm_vit_debug")
    dim = one.embed_dim
    mean2 = random_like("msm_vit_debug", layers=2)
    cat2 = random_like("msm_vit_debug", layers=2, layer_mix="concat", pooling="meanstd")
    assert mean2.embed_dim == dim and cat2.embed_dim == 4 * dim and cat2.frame_dim == 2 * dim
    e1, e2, e3 = one.embed(w, 16000), mean2.embed(w, 16000), cat2.embed(w, 16000)
    assert e2.frames.shape == e1.frames.shape and e3.frames.shape == (e1.frames.shape[0], 2 * dim)
    assert e3.clip.shape == (4 * dim,) and not np.allclose(e1.clip, e2.clip)
    np.testing.assert_allclose(e3.clip, np.concatenate([e3.frames.mean(0), e3.frames.std(0)]), rtol=1e-5, atol=1e-6)
    # the cache key: unchanged at the default (earlier caches stay valid), new when blocks change
    assert random_like("msm_vit_debug", layers=1, layer_mix="concat").fingerprint() == one.fingerprint()
    assert len({one.fingerprint(), mean2.fingerprint(), cat2.fingerprint()}) == 3
    with pytest.raises(ValueError, match="layer_mix must be one of mean, concat"):
        random_like("msm_vit_debug", layers=2, layer_mix="sum")
    with pytest.raises(ValueError, match="choose layers between"):
        random_like("msm_vit_debug", layers=9)
    assert isinstance(one, Embedder)
    # layers=0: every block up to ``layer``, recorded as their count (same embeddings, same cache key)
    depth = one.encoder.backbone.depth
    every, explicit = random_like("msm_vit_debug", layers=0), random_like("msm_vit_debug", layers=depth)
    assert every.layers == depth and every.fingerprint() == explicit.fingerprint()
    np.testing.assert_array_equal(every.embed(w, 16000).clip, explicit.embed(w, 16000).clip)
    assert random_like("msm_vit_debug", layer=0, layers=0).layers == 1
    with pytest.raises(ValueError, match="out of range"):
        random_like("msm_vit_debug", layer=depth, layers=0)


def _debug_checkpoint(tmp_path: Path) -> Path:
    cfg = model_config("msm_vit_debug")
    return save_checkpoint(tmp_path / "ckpt", CheckpointSpec.from_model_config(cfg), build_model(cfg))


CLI_SETTINGS = {  # embed flags, clip dims from the default embedder, evaluate flags, config entry, label, bad
    "layers": (["--layers", "2", "--layer-mix", "concat", "--pooling", "meanstd"], lambda e: 4 * e.embed_dim,
               ["--layers", "2", "--pooling", "meanstd"], ("layers", 2), "ckpt[layers=2,meanstd]",
               "layer_mix=sum", "layer-mix"),
    "freq_mix": (["--freq-mix", "concat"], lambda e: e.encoder.cfg.freq_patches * e.embed_dim,
                 ["--freq-mix", "concat", "--pooling", "meanstd"], ("freq_mix", "concat"),
                 "ckpt[freq-concat,meanstd]", "freq_mix=max", "--freq-mix must be one of mean, concat"),
}


@pytest.mark.parametrize("setting", list(CLI_SETTINGS))
def test_embed_and_evaluate_cli_take_the_settings(tmp_path: Path, hear_task: Path, capsys, setting: str) -> None:
    embed_flags, clip_dim, eval_flags, (key, value), label, bad, bad_message = CLI_SETTINGS[setting]
    ckpt = _debug_checkpoint(tmp_path)
    out = tmp_path / "e.npz"
    assert main(["embed", str(ckpt), str(hear_task), "--out", str(out), *embed_flags, "--no-progress"]) == 0
    with np.load(out) as z:
        assert z["clip"].shape[1] == clip_dim(random_like("msm_vit_debug"))
    run = tmp_path / "run"
    assert main(["evaluate", "--model", str(ckpt), "--baseline", "random", "--tasks", str(hear_task), "--probes",
                 "knn", "--seeds", "1", *eval_flags, "--out", str(run), "--no-progress"]) == 0
    assert json.loads((run / "config.json").read_text())[key] == value
    text = (run / "results.csv").read_text()
    assert label in text and f"random-init({label})" in text
    capsys.readouterr()
    assert main(["evaluate", "--model", str(ckpt), "--tasks", str(hear_task), "--probes", "knn", "--seeds", "1",
                 "--set", bad, "--out", str(tmp_path / "bad")]) == 2
    assert bad_message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_cli_layers_all(tmp_path: Path, hear_task: Path, capsys) -> None:
    ckpt = _debug_checkpoint(tmp_path)
    # --layers all: every block, labelled so
    run = tmp_path / "run_all"
    assert main(["evaluate", "--model", str(ckpt), "--tasks", str(hear_task), "--probes", "knn", "--seeds", "1",
                 "--layers", "all", "--pooling", "meanstd", "--out", str(run), "--no-progress"]) == 0
    assert json.loads((run / "config.json").read_text())["layers"] == 0
    assert "ckpt[layers=all,meanstd]" in (run / "results.csv").read_text()
    out_all = tmp_path / "all.npz"
    assert main(["embed", str(ckpt), str(hear_task), "--out", str(out_all), "--layers", "ALL", "--no-progress"]) == 0
    with pytest.raises(SystemExit):
        main(["embed", str(ckpt), str(hear_task), "--out", str(tmp_path / "x.npz"), "--layers", "most"])
    assert "expected a number of blocks or 'all', got 'most'" in capsys.readouterr().err


def test_freq_concat_against_a_direct_reference() -> None:
    """freq_mix='concat': each frame is its time patch's frequency patches, low to high, side
    by side — the token outputs re-laid out, nothing averaged; 'mean' is their average."""
    torch.manual_seed(0)
    enc = create_model("msm_vit_debug").encoder.eval()
    Fp, D = enc.cfg.freq_patches, enc.dim
    wave = torch.randn(2, 16000) * 0.1
    lengths = torch.tensor([16000, 9000])
    with torch.no_grad():
        tok = enc.tokenize(wave, lengths)
        h = enc.forward_tokens(enc.embed_tokens(tok.patches, tok.Fp, tok.Tp), tok.pad_mask)
        cat, valid = enc.frame_embeddings(wave, lengths, freq_mix="concat")
        mean, valid_m = enc.frame_embeddings(wave, lengths)
    assert cat.shape == (2, tok.Tp, Fp * D) and torch.equal(valid, valid_m)
    for t in (0, tok.Tp - 1):
        for f in range(Fp):  # token t·Fp + f is frequency patch f of time patch t (patchify's order)
            torch.testing.assert_close(cat[:, t, f * D : (f + 1) * D], h[:, t * Fp + f])
    torch.testing.assert_close(cat.view(2, tok.Tp, Fp, D).mean(2), mean)
    with pytest.raises(ValueError, match="freq_mix must be one of mean, concat"):
        merge_freq(h, tok.Tp, Fp, "max")


def test_embedder_freq_concat() -> None:
    w = np.random.default_rng(2).standard_normal(40000).astype(np.float32)  # several chunks
    one = random_like("msm_vit_debug")
    cat = random_like("msm_vit_debug", freq_mix="concat", pooling="meanstd")
    Fp = one.encoder.cfg.freq_patches
    assert cat.frame_dim == Fp * one.frame_dim and cat.embed_dim == 2 * Fp * one.frame_dim
    e1, e2 = one.embed(w, 16000), cat.embed(w, 16000)
    assert e2.frames.shape == (e1.frames.shape[0], Fp * one.frame_dim) and e2.clip.shape == (cat.embed_dim,)
    np.testing.assert_allclose(e2.frames.reshape(len(e2.frames), Fp, -1).mean(1), e1.frames, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(e2.clip, np.concatenate([e2.frames.mean(0), e2.frames.std(0)]), rtol=1e-5, atol=1e-6)
    # the cache key: unchanged at the default, new for concat; layers combine with it
    assert random_like("msm_vit_debug", freq_mix="mean").fingerprint() == one.fingerprint()
    assert cat.fingerprint() != random_like("msm_vit_debug", pooling="meanstd").fingerprint()
    both = random_like("msm_vit_debug", freq_mix="concat", layers=2, layer_mix="concat")
    assert both.embed_dim == 2 * Fp * one.frame_dim and "freq_mix='concat'" in repr(both)
    with pytest.raises(ValueError, match="freq_mix must be one of"):
        random_like("msm_vit_debug", freq_mix="sum")

