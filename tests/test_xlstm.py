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
    preset_fields,
    stream_backbone,
)

F64 = torch.float64
TRANSFORMER_SIZES = {
    "debug": dict(dim=64, depth=2, heads=2),
    "tiny": dict(dim=192, depth=12, heads=3),
    "small": dict(dim=384, depth=12, heads=6),
    "base": dict(dim=768, depth=12, heads=12),
}



@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tests run small ops, which gain nothing from threads and can stall on a loaded box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


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


def test_streaming_in_pieces_equals_one_pass():
    model = small_xlstm("forward", depth=3, chunk_size=4).eval()
    x = torch.randn(2, 41, 16, dtype=F64)
    y_full = model(x)
    states, outs, start = None, [], 0
    for size in (1, 5, 7, 3, 25):
        y, states = stream_backbone(model, x[:, start : start + size], states)
        outs.append(y)
        start += size
    torch.testing.assert_close(torch.cat(outs, 1), y_full, atol=1e-10, rtol=0)


@pytest.mark.parametrize("direction", ["bidirectional", "alternating"])
def test_streaming_needs_forward_direction(direction):
    with pytest.raises(ValueError, match="direction='forward'"):
        stream_backbone(small_xlstm(direction), torch.randn(1, 4, 16, dtype=F64))


def test_fused_impl_raises_clearly_without_kernels():
    model = small_xlstm("forward", impl="fused").float()
    with pytest.raises((ImportError, RuntimeError), match="impl='torch'"):
        model(torch.randn(1, 8, 16))


def test_auto_impl_falls_back_to_torch_on_cpu():
    x = torch.randn(1, 9, 16, dtype=F64)
    torch.testing.assert_close(small_xlstm("forward", impl="auto")(x), small_xlstm("forward")(x))


@pytest.mark.parametrize("size", ["debug", "tiny"])
def test_preset_forward_backward(size):
    torch.manual_seed(0)
    model = build_backbone("xlstm", **preset_fields(size))
    torch.manual_seed(0)
    twin = build_backbone("xlstm", **preset_fields(size))
    x = torch.randn(2, 48, model.dim)
    pad = torch.zeros(2, 48, dtype=torch.bool)
    pad[1, 40:] = True
    y = model(x, pad)
    assert y.shape == x.shape and torch.isfinite(y).all()
    torch.testing.assert_close(twin(x, pad), y, atol=0, rtol=0)  # deterministic init and forward
    y.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


@pytest.mark.parametrize("size", ["debug", "tiny", "small", "base"])
@pytest.mark.parametrize("direction", ["bidirectional", "forward", "alternating"])
def test_preset_parameter_count_matches_transformer(size, direction):
    with torch.device("meta"):
        transformer = build_backbone("transformer", **TRANSFORMER_SIZES[size])
        model = build_backbone("xlstm", **preset_fields(size, direction))
    assert model.dim == transformer.dim
    assert abs(n_params(model) / n_params(transformer) - 1) < 0.10
