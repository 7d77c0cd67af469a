"""Mamba backbone: chunked scan vs sequential reference, directions, padding, streaming, presets."""

from __future__ import annotations

import pytest
import torch

from audiofm.models.backbones import build_backbone
from audiofm.models.backbones._scan import reverse_within_length
from audiofm.models.backbones.mamba import (
    selective_scan,
    selective_scan_ref,
)

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")  # small ops; threads only add stalls


def scan_inputs(b: int, length: int, d: int, n: int, delta_scale: float = 1.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, length, d, generator=g, dtype=F64)
    delta = torch.rand(b, length, d, generator=g, dtype=F64) * delta_scale
    a = -torch.rand(d, n, generator=g, dtype=F64) * 4 - 0.1
    bm = torch.randn(b, length, n, generator=g, dtype=F64)
    cm = torch.randn(b, length, n, generator=g, dtype=F64)
    h0 = torch.randn(b, d, n, generator=g, dtype=F64)
    return [t.requires_grad_() for t in (u, delta, a, bm, cm, h0)]


@pytest.mark.parametrize(
    ("chunk_size", "block_size"), [(None, None), (1, None), (4, None), (5, 11), (7, 16), (64, None), (3, 37)]
)
def test_chunked_scan_matches_reference(chunk_size, block_size):
    ins = scan_inputs(2, 37, 5, 3)
    d_skip = torch.randn(5, dtype=F64)
    y_ref, h_ref = selective_scan_ref(*ins[:5], D=d_skip, h0=ins[5], return_last_state=True)
    y, h = selective_scan(
        *ins[:5], D=d_skip, h0=ins[5], return_last_state=True, chunk_size=chunk_size, block_size=block_size
    )
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(h, h_ref, atol=1e-10, rtol=0)
    wy, wh = torch.randn_like(y), torch.randn_like(h)
    g_ref = torch.autograd.grad((y_ref * wy).sum() + (h_ref * wh).sum(), ins)
    g = torch.autograd.grad((y * wy).sum() + (h * wh).sum(), ins)
    for name, a, b in zip(("u", "delta", "A", "B", "C", "h0"), g, g_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0, msg=name)


def test_scan_per_batch_a_and_no_initial_state():
    u, delta, a, bm, cm, _ = scan_inputs(3, 20, 4, 2)
    a_b = (a.detach() * torch.tensor([1.0, 0.5, 2.0], dtype=F64)[:, None, None]).requires_grad_()
    y_ref = selective_scan_ref(u, delta, a_b, bm, cm)
    y = selective_scan(u, delta, a_b, bm, cm, chunk_size=3)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=0)
    g_ref = torch.autograd.grad(y_ref.sum(), [u, delta, a_b, bm, cm])
    g = torch.autograd.grad(y.sum(), [u, delta, a_b, bm, cm])
    for a1, b1 in zip(g, g_ref):
        torch.testing.assert_close(a1, b1, atol=1e-10, rtol=0)


def test_scan_stable_with_large_delta_on_long_sequence():
    # Δ·A down to about -1600 per step: every exponent is ≤ 0, so nothing overflows.
    u, delta, a, bm, cm, _ = scan_inputs(1, 20_000, 4, 4, delta_scale=100.0)
    a = (a.detach() * 4).requires_grad_()
    y = selective_scan(u.float(), delta.float(), a.float(), bm.float(), cm.float())
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    for t in (u, delta, a, bm, cm):
        assert t.grad is not None and torch.isfinite(t.grad).all()
    # And it still equals the reference on a piece of it.
    sl = slice(0, 300)
    y_ref = selective_scan_ref(u[:, sl], delta[:, sl], a, bm[:, sl], cm[:, sl])
    y64 = selective_scan(u[:, sl], delta[:, sl], a, bm[:, sl], cm[:, sl], chunk_size=16)
    torch.testing.assert_close(y64, y_ref, atol=1e-10, rtol=0)


def small_mamba(direction: str, depth: int = 2, **kw):
    torch.manual_seed(0)
    return build_backbone("mamba", dim=16, depth=depth, d_state=4, expand=2, direction=direction, **kw).to(F64)


def swap_directions(block: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in block.mixer.ssm.parameters():
            p.copy_(p.flip(0))


def test_bidirectional_block_reversal_symmetry():
    # With the two directions' parameters swapped, the reversed input gives the reversed output.
    model = small_mamba("bidirectional", depth=1)
    block = model.blocks[0]
    x = torch.randn(2, 23, 16, dtype=F64)
    pad = torch.zeros(2, 23, dtype=torch.bool)
    pad[1, 15:] = True
    y, y_pad = block(x), block(x, pad)
    swap_directions(block)
    y_rev = block(x.flip(1))
    y_pad_rev = block(reverse_within_length(x, pad), pad)
    torch.testing.assert_close(y_rev.flip(1), y, atol=1e-12, rtol=0)
    # With padding, reversal is within each row's valid length.
    real = ~pad
    torch.testing.assert_close(reverse_within_length(y_pad_rev, pad)[real], y_pad[real], atol=1e-12, rtol=0)


@pytest.mark.parametrize("direction", ["forward", "bidirectional", "alternating"])
def test_padding_does_not_change_real_tokens(direction):
    model = small_mamba(direction, depth=3)
    x = torch.randn(2, 30, 16, dtype=F64)
    lengths = [30, 19]
    pad = torch.zeros(2, 30, dtype=torch.bool)
    pad[1, 19:] = True
    x_padded = x.clone()
    x_padded[1, 19:] = 7.0  # garbage in the padding must not leak
    y = model(x_padded, pad)
    for row, n in enumerate(lengths):
        y_alone = model(x[row : row + 1, :n])
        torch.testing.assert_close(y[row, :n], y_alone[0], atol=1e-10, rtol=0)
