"""What the Mamba, Mamba-2 and xLSTM backbones share: streaming rules, fused-kernel fallback, presets."""

from __future__ import annotations

import pytest
import torch

from audiofm.models.backbones import build_backbone, mamba, mamba2, xlstm
from audiofm.models.backbones._scan import stream_backbone

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")  # small ops; threads only add stalls
KINDS = ["mamba", "mamba2", "xlstm"]
PRESETS = {"mamba": mamba.preset_fields, "mamba2": mamba2.preset_fields, "xlstm": xlstm.preset_fields}
SMALL = {"mamba": dict(d_state=4, expand=2), "mamba2": dict(d_state=4, expand=2, headdim=8), "xlstm": dict(heads=2)}
TRANSFORMER_SIZES = {
    "debug": dict(dim=64, depth=2, heads=2),
    "tiny": dict(dim=192, depth=12, heads=3),
    "small": dict(dim=384, depth=12, heads=6),
    "base": dict(dim=768, depth=12, heads=12),
}


def small(kind: str, direction: str, depth: int = 2, **kw):
    torch.manual_seed(0)
    return build_backbone(kind, dim=16, depth=depth, direction=direction, **SMALL[kind], **kw).to(F64)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_streaming_in_pieces_equals_one_pass(kind):
    model = small(kind, "forward", depth=3, **({"chunk_size": 4} if kind == "xlstm" else {})).eval()
    x = torch.randn(2, 41, 16, dtype=F64)
    y_full = model(x)
    states, outs, start = None, [], 0
    for size in (1, 5, 7, 3, 25):
        y, states = stream_backbone(model, x[:, start : start + size], states)
        outs.append(y)
        start += size
    torch.testing.assert_close(torch.cat(outs, 1), y_full, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("direction", ["bidirectional", "alternating"])
def test_streaming_needs_forward_direction(kind, direction):
    with pytest.raises(ValueError, match="direction='forward'"):
        stream_backbone(small(kind, direction), torch.randn(1, 4, 16, dtype=F64))


@pytest.mark.parametrize("kind", KINDS)
def test_fused_impl_raises_clearly_without_kernels(kind):
    model = small(kind, "forward", impl="fused").float()
    with pytest.raises((ImportError, RuntimeError), match="impl='torch'"):
        model(torch.randn(1, 8, 16))


@pytest.mark.parametrize("kind", KINDS)
def test_auto_impl_falls_back_to_torch_on_cpu(kind):
    x = torch.randn(1, 9, 16, dtype=F64)
    torch.testing.assert_close(small(kind, "forward", impl="auto")(x), small(kind, "forward")(x))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", ["debug", "tiny"])
def test_preset_forward_backward(kind, size):
    torch.manual_seed(0)
    model = build_backbone(kind, **PRESETS[kind](size))
    torch.manual_seed(0)
    twin = build_backbone(kind, **PRESETS[kind](size))
    x = torch.randn(2, 48, model.dim)
    pad = torch.zeros(2, 48, dtype=torch.bool)
    pad[1, 40:] = True
    y = model(x, pad)
    assert y.shape == x.shape and torch.isfinite(y).all()
    torch.testing.assert_close(twin(x, pad), y, atol=0, rtol=0)  # deterministic init and forward
    y.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", ["debug", "tiny", "small", "base"])
@pytest.mark.parametrize("direction", ["bidirectional", "forward", "alternating"])
def test_preset_parameter_count_matches_transformer(kind, size, direction):
    with torch.device("meta"):
        transformer = build_backbone("transformer", **TRANSFORMER_SIZES[size])
        model = build_backbone(kind, **PRESETS[kind](size, direction))
    assert model.dim == transformer.dim
    assert abs(n_params(model) / n_params(transformer) - 1) < 0.10


@pytest.mark.parametrize("kind", [*KINDS, "transformer"])
def test_bf16_autocast_training_step(kind):
    """`pretrain --precision bf16` on every backbone: forward and backward under CPU bf16 autocast
    (mixed bf16/float32 operands reach the hand-written backwards), gradients finite, float32
    like the weights, and close in direction to the float32 step's."""
    fields = TRANSFORMER_SIZES["debug"] if kind == "transformer" else PRESETS[kind]("debug")
    torch.manual_seed(0)
    model = build_backbone(kind, **fields)
    x = torch.randn(2, 48, model.dim)
    grads = {}
    for precision in ("fp32", "bf16"):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            y = model(x)
        y.float().square().mean().backward()
        grads[precision] = torch.cat([p.grad.flatten() for p in model.parameters()])
        assert all(p.grad.dtype == torch.float32 for p in model.parameters())
    assert torch.isfinite(grads["bf16"]).all()
    assert torch.nn.functional.cosine_similarity(grads["bf16"], grads["fp32"], dim=0) > 0.95
