"""Mamba-2 (SSD) backbone: chunked matmul scan vs sequential reference, config checks,
directions, padding, streaming, the preset's training step and checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

import audiofm
from audiofm import checkpoint as ckpt
from audiofm.checkpoint import CheckpointSpec
from audiofm.config import ConfigError
from audiofm.models import create_model
from audiofm.models.backbones import build_backbone
from audiofm.models.backbones._scan import reverse_within_length, stream_backbone
from audiofm.models.backbones._ssd import segsum, ssd_scan_traceable
from audiofm.models.backbones.mamba2 import ssd_scan, ssd_scan_ref
from audiofm.models.layer_config import set_layer_config

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")  # small ops; threads only add stalls
NAMES = ("x", "dt", "A", "B", "C", "D", "h0")


def ssd_inputs(b: int, length: int, h: int, p: int, n: int, dt_scale: float = 1.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, length, h, p, generator=g, dtype=F64)
    dt = torch.rand(b, length, h, generator=g, dtype=F64) * dt_scale
    a = -torch.rand(h, generator=g, dtype=F64) * 4 - 0.1
    bm = torch.randn(b, length, n, generator=g, dtype=F64)
    cm = torch.randn(b, length, n, generator=g, dtype=F64)
    d = torch.randn(h, generator=g, dtype=F64)
    h0 = torch.randn(b, h, p, n, generator=g, dtype=F64)
    return [t.requires_grad_() for t in (x, dt, a, bm, cm, d, h0)]


def test_segsum_is_the_masked_sum_of_log_decays():
    a = -torch.rand(2, 6, dtype=F64)
    s = segsum(a)
    for i in range(6):
        for j in range(6):
            want = a[:, j + 1 : i + 1].sum(-1) if i >= j else torch.full((2,), float("-inf"), dtype=F64)
            torch.testing.assert_close(s[:, i, j], want, atol=1e-15, rtol=0)


@pytest.mark.parametrize(  # 37 positions: chunks of 4, 8, 16 leave a partial one; blocks of 8 and 16 chunks
    ("chunk_size", "block_size"), [(1, None), (4, None), (8, None), (16, None), (37, None), (64, None),
                                   (4, 8), (1, 16), (8, 16)]
)
def test_chunked_ssd_matches_reference(chunk_size, block_size):
    ins = ssd_inputs(2, 37, 3, 4, 5)
    y_ref, h_ref = ssd_scan_ref(*ins, return_last_state=True)
    y, h = ssd_scan(*ins, return_last_state=True, chunk_size=chunk_size, block_size=block_size)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(h, h_ref, atol=1e-12, rtol=0)
    wy, wh = torch.randn_like(y), torch.randn_like(h)
    g_ref = torch.autograd.grad((y_ref * wy).sum() + (h_ref * wh).sum(), ins)
    g = torch.autograd.grad((y * wy).sum() + (h * wh).sum(), ins)
    for name, a, b in zip(NAMES, g, g_ref):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=0, msg=name)


def test_chunked_ssd_gradcheck():
    x, dt, a, bm, cm, d, h0 = ssd_inputs(1, 11, 2, 2, 3)

    def fn(*t):
        return ssd_scan(*t, return_last_state=True, chunk_size=4)

    assert torch.autograd.gradcheck(fn, (x, dt, a, bm, cm, d, h0))


def test_per_batch_a_split_in_two_and_traceable_form():
    x, dt, a, bm, cm, d, _ = ssd_inputs(3, 29, 2, 3, 4)
    a_b = (a.detach() * torch.tensor([1.0, 0.5, 2.0], dtype=F64)[:, None]).requires_grad_()
    y_ref = ssd_scan_ref(x, dt, a_b, bm, cm)
    torch.testing.assert_close(ssd_scan(x, dt, a_b, bm, cm, chunk_size=8), y_ref, atol=1e-12, rtol=0)
    # whole == first part, then the rest from the carried state (split inside a chunk)
    whole, h_whole = ssd_scan(x, dt, a, bm, cm, D=d, return_last_state=True, chunk_size=8)
    y1, h1 = ssd_scan(x[:, :13], dt[:, :13], a, bm[:, :13], cm[:, :13], D=d, return_last_state=True, chunk_size=8)
    y2, h2 = ssd_scan(x[:, 13:], dt[:, 13:], a, bm[:, 13:], cm[:, 13:], D=d, h0=h1, return_last_state=True,
                      chunk_size=8)
    torch.testing.assert_close(torch.cat([y1, y2], 1), whole, atol=1e-12, rtol=0)
    torch.testing.assert_close(h2, h_whole, atol=1e-12, rtol=0)
    torch.testing.assert_close(ssd_scan_traceable(x, dt, a, bm, cm), ssd_scan_ref(x, dt, a, bm, cm),
                               atol=1e-12, rtol=0)


def test_stable_with_large_steps_on_long_sequence():
    # Δ·A down to about -1600 per step: every exponent is a sum of terms ≤ 0, nothing overflows.
    x, dt, a, bm, cm, *_ = ssd_inputs(1, 4000, 2, 4, 4, dt_scale=100.0)
    a = (a.detach() * 4).requires_grad_()
    y = ssd_scan(x.float(), dt.float(), a.float(), bm.float(), cm.float(), chunk_size=64)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    for t in (x, dt, a, bm, cm):
        assert t.grad is not None and torch.isfinite(t.grad).all()
    sl = slice(0, 200)
    y_ref = ssd_scan_ref(x[:, sl], dt[:, sl], a, bm[:, sl], cm[:, sl])
    torch.testing.assert_close(ssd_scan(x[:, sl], dt[:, sl], a, bm[:, sl], cm[:, sl], chunk_size=32), y_ref,
                               atol=1e-10, rtol=0)


def small_mamba2(direction: str, depth: int = 2, **kw):
    torch.manual_seed(0)
    fields = dict(dim=16, depth=depth, d_state=4, headdim=8, expand=2, chunk_size=4, direction=direction)
    return build_backbone("mamba2", **{**fields, **kw}).to(F64)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="headdim=24 does not divide the inner width expand·dim = 32"):
        build_backbone("mamba2", dim=16, depth=1, headdim=24)
    with pytest.raises(ValueError, match="not a whole number of channels"):
        build_backbone("mamba2", dim=15, depth=1, expand=1.5)
    with pytest.raises(ConfigError, match="chunk_size"):
        build_backbone("mamba2", dim=16, depth=1, chunk_size=0)
    with pytest.raises(ValueError, match="dt_min"):
        build_backbone("mamba2", dim=16, depth=1, headdim=8, dt_min=0.5, dt_max=0.1)


def test_mixer_matches_a_sequential_reference_of_the_block():
    """The mixer's chunked scan equals the reference recurrence on the same conv'd features."""
    model = small_mamba2("forward", depth=1)
    mixer = model.blocks[0].mixer
    x = torch.randn(2, 19, 16, dtype=F64)
    y = mixer(x)
    with torch.no_grad():
        mixer.cfg.chunk_size = 1_000  # one chunk
        y_one = mixer(x)
        mixer.cfg.chunk_size = 4
    torch.testing.assert_close(y_one, y, atol=1e-12, rtol=0)
    # the reference recurrence on the mixer's own features
    z, xbc, dt_raw = mixer.in_proj(x).split([32, 32 + 2 * 4, mixer.cfg.nheads], -1)  # [z, x, B, C, Δ]
    from audiofm.models.backbones._scan import causal_conv

    n, h, p = 4, mixer.cfg.nheads, 8
    u, _ = causal_conv(xbc, mixer.conv_weight[0], mixer.conv_bias[0])
    xu, bm, cm = torch.nn.functional.silu(u).split([32, n, n], -1)
    dt = torch.nn.functional.softplus(dt_raw + mixer.dt_bias[0])
    ys = ssd_scan_ref(xu.view(2, 19, h, p), dt, mixer.A[0], bm, cm, mixer.D[0]).reshape(2, 19, 32)
    ref = mixer.out_proj(mixer.norm(ys * torch.nn.functional.silu(z)))
    torch.testing.assert_close(y, ref, atol=1e-12, rtol=0)


def test_bidirectional_block_reversal_symmetry():
    # With the two directions' parameters swapped, the reversed input gives the reversed output.
    model = small_mamba2("bidirectional", depth=1)
    block = model.blocks[0]
    x = torch.randn(2, 23, 16, dtype=F64)
    pad = torch.zeros(2, 23, dtype=torch.bool)
    pad[1, 15:] = True
    y, y_pad = block(x), block(x, pad)
    mixer = block.mixer
    with torch.no_grad():
        for p in (mixer.conv_weight, mixer.conv_bias, mixer.dt_bias, mixer.A_log, mixer.D):
            p.copy_(p.flip(0))
        w = mixer.in_proj.weight  # rows [z, x, (B, C, Δ) forward, (B, C, Δ) backward]
        e, k = 32, 2 * 4 + mixer.cfg.nheads
        fwd, bwd = w[2 * e : 2 * e + k].clone(), w[2 * e + k :].clone()
        w[2 * e : 2 * e + k], w[2 * e + k :] = bwd, fwd
    torch.testing.assert_close(block(x.flip(1)).flip(1), y, atol=1e-12, rtol=0)
    y_pad_rev = block(reverse_within_length(x, pad), pad)
    real = ~pad
    torch.testing.assert_close(reverse_within_length(y_pad_rev, pad)[real], y_pad[real], atol=1e-12, rtol=0)


@pytest.mark.parametrize("direction", ["forward", "bidirectional", "alternating"])
def test_padding_does_not_change_real_tokens_and_is_deterministic(direction):
    model = small_mamba2(direction, depth=3)
    x = torch.randn(2, 30, 16, dtype=F64)
    pad = torch.zeros(2, 30, dtype=torch.bool)
    pad[1, 19:] = True
    x_padded = x.clone()
    x_padded[1, 19:] = 7.0  # garbage in the padding must not leak
    y = model(x_padded, pad)
    assert y.shape == x.shape
    torch.testing.assert_close(model(x_padded, pad), y, atol=0, rtol=0)
    torch.testing.assert_close(small_mamba2(direction, depth=3)(x_padded, pad), y, atol=0, rtol=0)
    for row, n in enumerate([30, 19]):
        torch.testing.assert_close(y[row, :n], model(x[row : row + 1, :n])[0], atol=1e-10, rtol=0)


def test_exportable_build_matches_normal_build():
    x = torch.randn(2, 13, 16, dtype=F64)
    model = small_mamba2("bidirectional")
    torch.manual_seed(0)
    with set_layer_config(exportable=True):
        traced_form = build_backbone("mamba2", dim=16, depth=2, d_state=4, headdim=8, expand=2, chunk_size=4)
    traced_form = traced_form.to(F64)
    traced_form.load_state_dict(model.state_dict())
    assert traced_form.blocks[0].mixer.exportable
    torch.testing.assert_close(traced_form(x), model(x), atol=1e-12, rtol=0)


def test_recompute_gives_the_same_gradients():
    x = torch.randn(2, 21, 16, dtype=F64)
    grads = []
    for recompute in (True, False):
        model = small_mamba2("bidirectional", recompute=recompute).train()
        model(x).square().sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(g, grads[1][name], atol=1e-12, rtol=0, msg=name)


def test_streaming_state_shapes():
    model = small_mamba2("forward").eval()
    x = torch.randn(1, 9, 16, dtype=F64)
    _, states = stream_backbone(model, x)
    conv_state, h = states[0]
    assert conv_state.shape == (1, 3, 32 + 2 * 4) and h.shape == (1, 4, 8, 4)


def test_preset_pretraining_step_lowers_loss_and_round_trips(tmp_path):
    torch.manual_seed(0)
    m = create_model("msm_mamba2_tiny", segment_seconds=1.0)
    cfg = m.cfg.encoder.backbone_cfg
    assert (cfg.dim, cfg.depth, cfg.direction) == (192, 19, "bidirectional")
    wave = 0.1 * torch.randn(2, 16000)
    mask = m.sample_mask(2, 16000, torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        loss = m(wave, mask)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    path = ckpt.save_checkpoint(tmp_path / "ck", CheckpointSpec.from_model_config(m.cfg), m)
    assert ckpt.load_config(path) == m.cfg
    e = audiofm.load(path, chunk_seconds=None)  # one pass, as frame_embeddings below
    assert e.encoder.cfg.backbone == "mamba2"
    for k, v in m.encoder.state_dict().items():
        torch.testing.assert_close(e.encoder.state_dict()[k], v, atol=0, rtol=0)
    w = 0.1 * torch.randn(16000 * 2).numpy()
    m.encoder.eval()
    with torch.inference_mode():
        frames, _ = m.encoder.frame_embeddings(torch.from_numpy(w)[None])
    torch.testing.assert_close(torch.from_numpy(e.embed(w, 16000).frames), frames[0], atol=1e-5, rtol=0)
