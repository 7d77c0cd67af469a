"""xLSTM (mLSTM) backbone: parallel == chunkwise == recurrent, directions, padding, streaming, presets."""

from __future__ import annotations

import pytest
import torch

from audiofm.models.backbones import build_backbone
from audiofm.models.backbones._scan import reverse_within_length
from audiofm.models.backbones.xlstm import (
    _headwise,
    _headwise_ref,
    _mlstm_chunkwise,
    mlstm_chunkwise,
    mlstm_parallel,
    mlstm_recurrent,
)

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")  # small ops; threads only add stalls


def cell_inputs(s: int, gate_scale: float = 1.0, seed: int = 0, b: int = 2, h: int = 3, dk: int = 5, dv: int = 4):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, s, dk, generator=g, dtype=F64)
    k = torch.randn(b, h, s, dk, generator=g, dtype=F64)
    v = torch.randn(b, h, s, dv, generator=g, dtype=F64)
    i = torch.randn(b, h, s, generator=g, dtype=F64) * gate_scale
    f = torch.randn(b, h, s, generator=g, dtype=F64) * gate_scale + 2
    return [t.requires_grad_() for t in (q, k, v, i, f)]


@pytest.mark.parametrize("gate_scale", [1.0, 8.0])
def test_parallel_chunkwise_recurrent_agree(gate_scale):
    ins = cell_inputs(29, gate_scale)
    h_par = mlstm_parallel(*ins)
    w = torch.randn_like(h_par)
    g_par = torch.autograd.grad((h_par * w).sum(), ins)
    h_rec, _ = mlstm_recurrent(*ins)
    forms = [("recurrent", h_rec)] + [(f"chunk{c}", mlstm_chunkwise(*ins, chunk_size=c)[0]) for c in (1, 4, 7, 64)]
    forms.append(("segments", mlstm_chunkwise(*ins, chunk_size=4, segment_chunks=2)[0]))
    for name, h in forms:
        torch.testing.assert_close(h, h_par, atol=1e-10, rtol=0, msg=name)
        g = torch.autograd.grad((h * w).sum(), ins)
        for gn, a, b in zip("qkvif", g, g_par):
            torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9, msg=f"{name} d{gn}")


def test_chunkwise_state_carries_between_calls():
    ins = cell_inputs(30)
    h_full, (c, n, m) = mlstm_chunkwise(*ins, chunk_size=4)
    h1, state = mlstm_chunkwise(*[t[:, :, :11] for t in ins], chunk_size=4)
    h2, _ = mlstm_chunkwise(*[t[:, :, 11:] for t in ins], state=state, chunk_size=3)
    torch.testing.assert_close(torch.cat([h1, h2], 2), h_full, atol=1e-12, rtol=0)
    _, state_rec = mlstm_recurrent(*ins)
    for a, b in zip((c, n, m), state_rec):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_chunkwise_stable_on_long_sequence_with_large_gates():
    q, k, v, i, f = cell_inputs(20_000, b=1, h=2, dk=4, dv=4)
    with torch.no_grad():
        i.mul_(50)  # input gate pre-activations up to ~±200: exp would overflow without m
        f.mul_(50)
    h, (c, n, _) = mlstm_chunkwise(q.float(), k.float(), v.float(), i.float(), f.float())
    assert torch.isfinite(h).all() and torch.isfinite(c).all() and torch.isfinite(n).all()
    h.square().mean().backward()
    for t in (q, k, v, i, f):
        assert t.grad is not None and torch.isfinite(t.grad).all()


def small_xlstm(direction: str, depth: int = 2, **kw):
    torch.manual_seed(0)
    return build_backbone("xlstm", dim=16, depth=depth, heads=2, direction=direction, **kw).to(F64)


def test_block_forms_agree():
    x = torch.randn(2, 37, 16, dtype=F64)
    outs = [small_xlstm("bidirectional", form=form, chunk_size=8)(x) for form in ("chunkwise", "parallel", "recurrent")]
    for y in outs[1:]:
        torch.testing.assert_close(y, outs[0], atol=1e-10, rtol=0)


def swap_directions(block: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in block.mixer.cell.parameters():
            p.copy_(p.flip(0))


def test_bidirectional_block_reversal_symmetry():
    # With the two directions' parameters swapped, the reversed input gives the reversed output.
    block = small_xlstm("bidirectional", depth=1).blocks[0]
    x = torch.randn(2, 23, 16, dtype=F64)
    pad = torch.zeros(2, 23, dtype=torch.bool)
    pad[1, 15:] = True
    y, y_pad = block(x), block(x, pad)
    swap_directions(block)
    torch.testing.assert_close(block(x.flip(1)).flip(1), y, atol=1e-12, rtol=0)
    y_pad_rev = block(reverse_within_length(x, pad), pad)
    real = ~pad
    torch.testing.assert_close(reverse_within_length(y_pad_rev, pad)[real], y_pad[real], atol=1e-12, rtol=0)


@pytest.mark.parametrize("direction", ["forward", "bidirectional", "alternating"])
def test_padding_does_not_change_real_tokens(direction):
    model = small_xlstm(direction, depth=3, chunk_size=8)
    x = torch.randn(2, 30, 16, dtype=F64)
    pad = torch.zeros(2, 30, dtype=torch.bool)
    pad[1, 19:] = True
    x_padded = x.clone()
    x_padded[1, 19:] = 7.0  # garbage in the padding must not leak
    y = model(x_padded, pad)
    for row, n in enumerate([30, 19]):
        torch.testing.assert_close(y[row, :n], model(x[row : row + 1, :n])[0], atol=1e-10, rtol=0)


# ----------------------------------------------------------------- the chunkwise kernel's paths


@pytest.mark.parametrize("s", [1, 5, 31, 32, 33, 97])
@pytest.mark.parametrize("chunk", [1, 4, 7, 32])
def test_chunkwise_paths_equal_parallel_float64(s, chunk):
    """Inference (in-place carry) and autograd (batched carry) paths, the traceable (scan) path,
    a ragged tail and several segments: outputs and final state equal the reference forms."""
    ins = cell_inputs(s, gate_scale=4.0, seed=s + chunk)
    ref = mlstm_parallel(*ins)
    _, state_ref = mlstm_recurrent(*ins)
    with torch.no_grad():
        paths = {
            "no-grad": mlstm_chunkwise(*ins, chunk_size=chunk),
            "no-grad segments": mlstm_chunkwise(*ins, chunk_size=chunk, segment_chunks=2),
            "traceable": _mlstm_chunkwise(*ins, None, chunk, 1e-6, traceable=True),
        }
    paths["autograd segments"] = mlstm_chunkwise(*ins, chunk_size=chunk, segment_chunks=2)
    for name, (h, state) in paths.items():
        torch.testing.assert_close(h, ref, atol=1e-10, rtol=1e-10, msg=name)
        for a, b in zip(state, state_ref):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10, msg=name)


@pytest.mark.parametrize("s", [13, 70])
def test_chunkwise_gradients_equal_parallel_float64(s):
    ins = cell_inputs(s, gate_scale=4.0, seed=7)
    h_ref = mlstm_parallel(*ins)
    w = torch.randn_like(h_ref)
    g_ref = torch.autograd.grad((h_ref * w).sum(), ins)
    c0 = torch.randn(2, 3, 5, 4, dtype=F64)
    for name, h in (("chunkwise ragged", mlstm_chunkwise(*ins, chunk_size=8, segment_chunks=3)[0]),
                    ("traceable", _mlstm_chunkwise(*ins, None, 8, 1e-6, traceable=True)[0])):
        g = torch.autograd.grad((h * w).sum(), ins)
        for gn, a, b in zip("qkvif", g, g_ref):
            torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9, msg=f"{name} d{gn}")
    # a carried initial state: gradients match the recurrent form, also into the state
    state = (c0.requires_grad_(), torch.randn(2, 3, 5, dtype=F64).requires_grad_(), torch.randn(2, 3, dtype=F64))
    h_rec, _ = mlstm_recurrent(*ins, state=state)
    h_chk, _ = mlstm_chunkwise(*ins, state=state, chunk_size=8)
    torch.testing.assert_close(h_chk, h_rec, atol=1e-10, rtol=0)
    gr = torch.autograd.grad((h_rec * w).sum(), [*ins, *state[:2]])
    gc = torch.autograd.grad((h_chk * w).sum(), [*ins, *state[:2]])
    for a, b in zip(gc, gr):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


def test_headwise_backward_equals_autograd_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 11, generator=g, dtype=F64, requires_grad=True)  # (nd, B, nb*bs, L)
    w = torch.randn(2, 4, 2, 2, generator=g, dtype=F64, requires_grad=True)  # (nd, nb, o, bs)
    assert torch.autograd.gradcheck(lambda a, b: _headwise(a, b), (x, w))
    y_ref = _headwise_ref(x, w)
    torch.testing.assert_close(_headwise(x, w), y_ref, atol=0, rtol=0)


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_block_no_grad_equals_grad_path_with_padding(direction):
    model = small_xlstm(direction, depth=2, chunk_size=8)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))  # non-zero gate weights
    x = torch.randn(2, 45, 16, dtype=F64)
    pad = torch.zeros(2, 45, dtype=torch.bool)
    pad[1, 29:] = True
    y = model(x, pad)
    with torch.no_grad():
        torch.testing.assert_close(model(x, pad), y, atol=1e-12, rtol=0)
    par = small_xlstm(direction, depth=2, form="parallel")
    par.load_state_dict(model.state_dict())
    torch.testing.assert_close(par(x, pad)[~pad], y[~pad], atol=1e-10, rtol=0)


def test_parameter_layout_unchanged_for_checkpoints():
    """Checkpoints written before the faster kernel load as they are: same names and shapes."""
    block = build_backbone("xlstm", dim=16, depth=1, heads=2, qkv_blocksize=4).blocks[0]
    shapes = {k: tuple(v.shape) for k, v in block.state_dict().items()}
    assert shapes == {
        "norm.weight": (16,), "norm.bias": (16,),
        "mixer.proj_up.weight": (64, 16), "mixer.proj_down.weight": (16, 32),
        "mixer.cell.conv_weight": (2, 32, 4), "mixer.cell.conv_bias": (2, 32),
        "mixer.cell.q_proj": (2, 8, 4, 4), "mixer.cell.k_proj": (2, 8, 4, 4), "mixer.cell.v_proj": (2, 8, 4, 4),
        "mixer.cell.gate_weight": (2, 4, 96), "mixer.cell.gate_bias": (2, 4),
        "mixer.cell.norm_weight": (2, 32), "mixer.cell.skip": (2, 32),
    }
