"""xLSTM (mLSTM) backbone: parallel == chunkwise == recurrent, directions, padding, streaming, presets."""

from __future__ import annotations

import pytest
import torch

from audiofm.models.backbones import build_backbone
from audiofm.models.backbones._scan import reverse_within_length
from audiofm.models.backbones.xlstm import (
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
