"""Shared pieces of the recurrent backbones: the S6 selective scan, causal depthwise conv,
reversal within each row's valid length, and the streaming helper.

The selective scan computes, per channel ``d`` and state ``n``::

    h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t u_t B_t        y_t = C_t · h_t

:func:`selective_scan_ref` is the plain sequential definition. :func:`selective_scan` is the
chunked CPU form with a hand-written, recomputing backward (:class:`_SelectiveScanFn`): the
sequence is processed in blocks (bounded buffers, so memory is linear in length and the
(B, L, d, n) states never exist for the whole sequence); a block's decays a_t = exp(Δ_t A) and
inputs b_t are computed for all its positions at once, the block is cut into K chunks whose
recurrences run side by side (one fused multiply-add per position for all chunks), and chunk
start states come from a two-pass carry (chunk-end states from zero, then
start_{j+1} = P_j start_j + end_j with P_j = exp(A ΣΔ) ≤ 1). Every exponent is Δ·A ≤ 0 or a
sum of them, so large Δ·A cannot overflow. The backward runs the same scheme in reverse for the
adjoint. For large batches K = 1 (the per-position step is already wide).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import DropPath, zero_padding

_LOG2E = math.log2(math.e)

# Work sizes of the chunked scan, in tensor elements. A *block* of positions is processed at a
# time (bounding the transient buffers: memory is linear in length); inside a block the positions
# are cut into K chunks whose steps run together, so that each step touches ~_SLICE_ELEMS elements.
_BLOCK_ELEMS = 1 << 19
_SLICE_ELEMS = 1 << 16


def _plan(length: int, per_pos: int, chunk_size: int | None, block_size: int | None) -> tuple[int, int]:
    """Block length Lb and chunk length T for a scan over ``length`` positions."""
    if block_size is None:
        block_size = max(1, _BLOCK_ELEMS // per_pos)
    lb = max(1, min(length, block_size))
    if chunk_size is None:
        k = max(1, min(lb, _SLICE_ELEMS // per_pos))
        chunk_size = -(-lb // k)
    return lb, max(1, min(chunk_size, lb))


class _Workspace(threading.local):
    """Per-thread scratch buffers reused across scan calls.

    Fresh multi-megabyte tensors are page-faulted in on first touch, which on a VM can cost as
    much as the arithmetic of the scan itself; the block buffers are therefore kept.
    """

    def __init__(self) -> None:
        self.store: dict[tuple[str, torch.dtype, torch.device, bool], Tensor] = {}

    def get(self, slot: str, shape: Sequence[int], like: Tensor) -> Tensor:
        numel = math.prod(shape)
        # buffers made under inference_mode are inference tensors, unusable by a later training
        # step (in-place update error), so each mode keeps its own
        key = (slot, like.dtype, like.device, torch.is_inference_mode_enabled())
        buf = self.store.get(key)
        if buf is None or buf.numel() < numel:
            buf = like.new_empty(numel)
            self.store[key] = buf
        return buf[:numel].view(*shape)


_WORKSPACE = _Workspace()


def _chunked(x: Tensor, k: int, t: int, slot: str) -> Tensor:
    """(Bt, l, c) -> (T, K, Bt, c): position-in-chunk major, zero-padded to K*T positions."""
    bt, length, c = x.shape
    out = _WORKSPACE.get(slot, (t, k, bt, c), x)
    view = out.permute(2, 1, 0, 3)  # (Bt, K, T, c)
    full = length // t
    if full:
        view[:, :full].copy_(x[:, : full * t].view(bt, full, t, c))
    if full < k:
        rem = length - full * t
        view[:, full, :rem].copy_(x[:, full * t :])
        view[:, full, rem:].zero_()
    return out


def _unchunked(x: Tensor, out: Tensor) -> None:
    """Write (T, K, Bt, c) into ``out: (Bt, l, c)``, dropping padded positions."""
    t, k, bt, c = x.shape
    length = out.shape[1]
    view = x.permute(2, 1, 0, 3)  # (Bt, K, T, c)
    full = length // t
    if full:
        out[:, : full * t].view(bt, full, t, c).copy_(view[:, :full])
    if full < k:
        out[:, full * t :].copy_(view[:, full, : length - full * t])


def _scan_block_fwd(
    dl: Tensor, du: Tensor, bm: Tensor, cm: Tensor, a2: Tensor, h: Tensor, t: int, y: Tensor
) -> tuple[Tensor, Tensor]:
    """Scan one block. dl, du: (Bt, l, d); bm, cm: (Bt, l, n); a2: (Bt, n, d) = A·log2(e);
    h: (Bt, n, d) incoming state; writes y (Bt, l, d). Returns the outgoing state and the
    chunk-start states (K, Bt, n, d)."""
    bt, length, d = dl.shape
    n = bm.shape[-1]
    k = -(-length // t)
    shape = (t, k, bt, n, d)
    dlc = _chunked(dl, k, t, "dl").unsqueeze(3)  # (T, K, Bt, 1, d)
    # Decays a_t = exp(Δ_t A) (exponents ≤ 0) and inputs b_t = Δ_t u_t B_t, all positions at once.
    a = torch.mul(dlc, a2, out=_WORKSPACE.get("a", shape, dl)).exp2_()  # (T, K, Bt, n, d)
    hs = _WORKSPACE.get("h", shape, dl)  # b_t, then h_t
    torch.mul(_chunked(bm, k, t, "b").unsqueeze(4), _chunked(du, k, t, "du").unsqueeze(3), out=hs)
    if k == 1:
        starts = h.unsqueeze(0)  # (1, Bt, n, d)
    else:
        # Phase 1: every chunk's end state from a zero start, all chunks at once; then carry
        # the true state across chunks, start_{j+1} = P_j start_j + e_j, P_j = exp(A ΣΔ) ≤ 1.
        e = _WORKSPACE.get("e", shape[1:], dl)
        e.copy_(hs[0])
        for i in range(1, t):
            torch.addcmul(hs[i], a[i], e, out=e)
        pj = torch.exp2(dlc.sum(0) * a2)  # (K, Bt, n, d)
        starts = torch.empty_like(e)
        for j in range(k):
            starts[j] = h
            h = torch.addcmul(e[j], pj[j], h)
    # Phase 2: the recurrence from the true start states, one fused multiply-add per position
    # for all chunks at once, in place: hs[i] = a_i hs[i-1] + b_i.
    hs[0].addcmul_(a[0], starts)
    for i in range(1, t):
        hs[i].addcmul_(a[i], hs[i - 1])
    if k == 1:
        h = hs[t - 1, 0].clone()
    m = t * bt * k
    cc = _chunked(cm, k, t, "c").view(m, 1, n)
    yc = torch.bmm(cc, hs.view(m, n, d), out=_WORKSPACE.get("y", (m, 1, d), dl))  # y_t = C_t · h_t
    _unchunked(yc.view(t, k, bt, d), y)
    return h, starts


def _scan_block_bwd(
    dl: Tensor,
    du: Tensor,
    bm: Tensor,
    cm: Tensor,
    a_nat: Tensor,
    starts: Tensor,
    dy: Tensor,
    rho: Tensor,
    t: int,
    grads: tuple[Tensor, Tensor, Tensor, Tensor],
) -> tuple[Tensor, Tensor]:
    """Backward of one block. ``rho``: (Bt, n, d) adjoint flowing in from after the block
    (a_{next} g_{next}). Writes d(Δu), dΔ (decay part), dB, dC of the block into ``grads``;
    returns dA (Bt, n, d) and the outgoing rho."""
    bt, _, d = dl.shape
    n = bm.shape[-1]
    k = starts.shape[0]
    m = t * bt * k
    shape = (t, k, bt, n, d)
    a2 = a_nat * _LOG2E
    dlc = _chunked(dl, k, t, "dl").unsqueeze(3)  # (T, K, Bt, 1, d)
    duc = _chunked(du, k, t, "du").unsqueeze(3)  # (T, K, Bt, 1, d)
    bc = _chunked(bm, k, t, "b")  # (T, K, Bt, n)
    # Recompute a_t and the states h_t of the block (starts are the states before each chunk).
    a = torch.mul(dlc, a2, out=_WORKSPACE.get("a", shape, dl)).exp2_()  # (T, K, Bt, n, d)
    hs = torch.mul(bc.unsqueeze(4), duc, out=_WORKSPACE.get("h", shape, dl))
    hs[0].addcmul_(a[0], starts)
    for i in range(1, t):
        hs[i].addcmul_(a[i], hs[i - 1])
    dyc = _chunked(dy, k, t, "dy").unsqueeze(3)  # (T, K, Bt, 1, d)
    # C_t dy_t, then g_t = ∂L/∂h_t
    gs = torch.mul(_chunked(cm, k, t, "c").unsqueeze(4), dyc, out=_WORKSPACE.get("g", shape, dl))
    if k > 1:
        # Adjoint each chunk passes to the previous one from its own outputs,
        # r = Σ_i (Π_{≤i} a) C_i dy_i, then the carry from later chunks, rho_{j-1} = r_j + P_j rho_j.
        r = _WORKSPACE.get("e", shape[1:], dl)
        torch.mul(gs[t - 1], a[t - 1], out=r)
        for i in reversed(range(t - 1)):
            r.add_(gs[i]).mul_(a[i])
        pj = torch.exp2(dlc.sum(0) * a2)  # chunk decays P_j: (K, Bt, n, d)
        gin = torch.empty_like(r)
        for j in reversed(range(k)):
            gin[j] = rho
            rho = torch.addcmul(r[j], pj[j], rho)
        gs[t - 1] += gin
    else:
        gs[t - 1] += rho.unsqueeze(0)
    for i in reversed(range(t - 1)):
        gs[i].addcmul_(a[i + 1], gs[i + 1])  # g_i = C_i dy_i + a_{i+1} g_{i+1}
    if k == 1:
        rho = a[0, 0] * gs[0, 0]
    g_du, g_dl, g_b, g_c = grads
    hv, gv = hs.view(m, n, d), gs.view(m, n, d)
    _unchunked(torch.bmm(dyc.view(m, 1, d), hv.transpose(1, 2)).view(t, k, bt, n), g_c)  # dC = h dy
    _unchunked(torch.bmm(duc.view(m, 1, d), gv.transpose(1, 2)).view(t, k, bt, n), g_b)  # dB = g Δu
    ddu = torch.bmm(bc.view(m, 1, n), gv, out=_WORKSPACE.get("y", (m, 1, d), dl))
    _unchunked(ddu.view(t, k, bt, d), g_du)  # d(Δu)_t = B_t · g_t
    # dz_t = ∂L/∂(Δ_t A) = g_t a_t h_{t-1}
    dz = a.mul_(gs)
    dz[1:] *= hs[: t - 1]
    dz[0] *= starts
    _unchunked(torch.mul(dz, a_nat, out=gs).sum(3), g_dl)  # dΔ_t += Σ_n dz_t A
    da = dz.mul_(dlc).sum(0).sum(0)  # dA = Σ_t dz_t Δ_t: (Bt, n, d)
    return da, rho


class _SelectiveScanFn(torch.autograd.Function):
    """Chunked selective scan with a recomputing backward (memory linear in length)."""

    @staticmethod
    def forward(
        ctx: Any,
        u: Tensor,
        delta: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        h0: Tensor | None,
        chunk_size: int | None,
        block_size: int | None,
    ) -> tuple[Tensor, Tensor]:
        # u, delta: (Bt, L, d); A: (Bt, d, n); B, C: (Bt, L, n); h0: (Bt, d, n) or None.
        bt, length, d = u.shape
        n = A.shape[-1]
        lb, t = _plan(length, bt * n * d, chunk_size, block_size)
        a2 = (A.transpose(1, 2) * _LOG2E).contiguous()  # (Bt, n, d)
        du = delta * u
        h = u.new_zeros(bt, n, d) if h0 is None else h0.transpose(1, 2).contiguous()
        y = torch.empty_like(u)
        all_starts = []
        for s in range(0, length, lb):
            sl = slice(s, s + lb)
            h, starts = _scan_block_fwd(delta[:, sl], du[:, sl], B[:, sl], C[:, sl], a2, h, t, y[:, sl])
            all_starts.append(starts)
        if any(ctx.needs_input_grad[:6]):
            ctx.save_for_backward(u, delta, A, B, C, *all_starts)
            ctx.plan = (lb, t)
            ctx.has_h0 = h0 is not None
        return y, h.transpose(1, 2)

    @staticmethod
    def backward(ctx: Any, dy: Tensor, dh_last: Tensor | None) -> tuple[Tensor | None, ...]:
        u, delta, A, B, C, *all_starts = ctx.saved_tensors
        lb, t = ctx.plan
        bt, length, d = u.shape
        n = A.shape[-1]
        a_nat = A.transpose(1, 2).contiguous()  # (Bt, n, d)
        du = delta * u
        rho = u.new_zeros(bt, n, d) if dh_last is None else dh_last.transpose(1, 2).contiguous()
        g_du, g_dl = torch.empty_like(u), torch.empty_like(u)
        g_b, g_c = torch.empty_like(B), torch.empty_like(C)
        da = u.new_zeros(bt, n, d)
        for s, starts in zip(reversed(range(0, length, lb)), reversed(all_starts)):
            sl = slice(s, s + lb)
            g_a, rho = _scan_block_bwd(
                delta[:, sl], du[:, sl], B[:, sl], C[:, sl], a_nat, starts, dy[:, sl], rho, t,
                (g_du[:, sl], g_dl[:, sl], g_b[:, sl], g_c[:, sl]),
            )
            da += g_a
        g_dl.addcmul_(g_du, u)
        g_du.mul_(delta)
        dh0 = rho.transpose(1, 2) if ctx.has_h0 else None
        return g_du, g_dl, da.transpose(1, 2), g_b, g_c, dh0, None, None


def _broadcast_a(A: Tensor, batch: int) -> Tensor:
    if A.dim() == 2:
        return A.unsqueeze(0).expand(batch, *A.shape)
    if A.shape[0] != batch:
        raise ValueError(f"A has batch {A.shape[0]}, inputs have {batch}")
    return A


@overload
def selective_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = ..., h0: Tensor | None = ...,
    return_last_state: Literal[False] = ..., chunk_size: int | None = ..., block_size: int | None = ...,
) -> Tensor: ...
@overload
def selective_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = ..., h0: Tensor | None = ...,
    *, return_last_state: Literal[True], chunk_size: int | None = ..., block_size: int | None = ...,
) -> tuple[Tensor, Tensor]: ...
def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    h0: Tensor | None = None,
    return_last_state: bool = False,
    chunk_size: int | None = None,
    block_size: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Chunked selective scan (pure PyTorch, fast on CPU, memory linear in length).

    u, delta: (B, L, d); A: (d, n) or (B, d, n), negative; B, C: (B, L, n); D: (d,) skip;
    h0: (B, d, n) initial state. Returns y (B, L, d) and, if asked, the last state (B, d, n).
    ``chunk_size``/``block_size`` override the automatic work sizes (tests use them).
    The scan runs in at least float32 (half-precision inputs are promoted, y cast back).
    """
    dtype = torch.promote_types(u.dtype, torch.float32)
    a = _broadcast_a(A, u.shape[0])
    y, h_last = _SelectiveScanFn.apply(
        *(t if t is None else t.to(dtype) for t in (u, delta, a, B, C, h0)), chunk_size, block_size
    )
    if D is not None:
        y = torch.addcmul(y, u.to(dtype), D.to(dtype))
    y = y.to(u.dtype)
    return (y, h_last) if return_last_state else y


@overload
def selective_scan_ref(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = ..., h0: Tensor | None = ...,
    return_last_state: Literal[False] = ...,
) -> Tensor: ...
@overload
def selective_scan_ref(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = ..., h0: Tensor | None = ...,
    *, return_last_state: Literal[True],
) -> tuple[Tensor, Tensor]: ...
def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    h0: Tensor | None = None,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Sequential reference of :func:`selective_scan` (one step per position; for tests)."""
    A = _broadcast_a(A, u.shape[0])
    h = u.new_zeros(A.shape) if h0 is None else h0
    ys = []
    for i in range(u.shape[1]):
        dt = delta[:, i].unsqueeze(-1)  # (B, d, 1)
        h = torch.exp(dt * A) * h + dt * u[:, i].unsqueeze(-1) * B[:, i].unsqueeze(1)
        ys.append((h * C[:, i].unsqueeze(1)).sum(-1))
    y = torch.stack(ys, 1)
    if D is not None:
        y = y + u * D
    return (y, h) if return_last_state else y


def selective_scan_traceable(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    """The selective scan in the form ``torch.export`` / ONNX traces with dynamic batch and
    length (the exportable layers): one :func:`~..layer_config.traceable_scan` step per
    position, no work buffers. u, delta: (..., L, d); A: (..., d, n) broadcasting against the
    leading dims of u (no dimension that depends on the batch, which a traced scan body would
    fix); B, C: (..., L, n) → y (..., L, d), zero initial state, no D skip."""
    from ..layer_config import traceable_scan

    def step(carry: tuple[Tensor, Tensor], xs: tuple[Tensor, Tensor, Tensor, Tensor]
             ) -> tuple[tuple[Tensor, Tensor], Tensor]:
        h, a = carry  # A rides in the carry (a closure would get fresh sizes when traced)
        dt, du, b, c = xs  # (..., d), (..., d), (..., n), (..., n)
        h = torch.exp(dt.unsqueeze(-1) * a) * h + du.unsqueeze(-1) * b.unsqueeze(-2)  # (..., d, n)
        return (h, a.clone()), (h * c.unsqueeze(-2)).sum(-1)

    h0 = u.new_zeros(*u.shape[:-2], u.shape[-1], A.shape[-1])
    _, y = traceable_scan(step, (h0, A), (delta, delta * u, B, C), dim=u.dim() - 2)  # y: (L, ..., d)
    return y.movedim(0, -2)


def selective_scan_fused(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> Tensor:
    """The CUDA kernel of ``mamba_ssm`` on the channel-last layout of :func:`selective_scan`.

    ``delta`` is pre-activation when ``delta_softplus`` (the bias is then added in the kernel).
    """
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError as err:
        raise ImportError(
            "impl='fused' needs the CUDA kernels of mamba-ssm: pip install mamba-ssm "
            "(on a CUDA machine), or use impl='torch'"
        ) from err
    if not u.is_cuda:
        raise RuntimeError("impl='fused' runs only on CUDA tensors; use impl='torch' on CPU")
    y = selective_scan_fn(
        u.transpose(1, 2),
        delta.transpose(1, 2),
        A,
        B.transpose(1, 2).contiguous(),
        C.transpose(1, 2).contiguous(),
        D,
        delta_bias=delta_bias,
        delta_softplus=delta_softplus,
    )
    return y.transpose(1, 2)


def fused_available(name: str) -> bool:
    """Whether the optional kernel package ``name`` can be imported."""
    import importlib.util

    return importlib.util.find_spec(name) is not None


def causal_conv(x: Tensor, weight: Tensor, bias: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Depthwise causal conv along time on channel-last ``x: (..., L, c)``.

    weight: (..., c, k) and bias: (..., c), leading dims broadcast against x's. ``state``:
    (..., k-1, c) previous inputs (zeros if None). Returns (y, new state)."""
    k = weight.shape[-1]
    if state is None:
        xp = F.pad(x, (0, 0, k - 1, 0))
    else:
        xp = torch.cat([state.to(x.dtype), x], -2)
    length = x.shape[-2]
    w = weight.movedim(-1, -2).contiguous()  # (..., k, c): each tap contiguous over channels
    y = torch.addcmul(bias.unsqueeze(-2), xp[..., :length, :], w[..., 0:1, :])
    for j in range(1, k):
        y.addcmul_(xp[..., j : j + length, :], w[..., j : j + 1, :])
    return y, xp[..., xp.shape[-2] - (k - 1) :, :]


def reverse_within_length(x: Tensor, pad_mask: Tensor | None) -> Tensor:
    """Reverse ``x: (B, N, ...)`` along time within each row's valid length; right-aligned
    padding stays in place. Applying it twice is the identity."""
    if pad_mask is None:
        return x.flip(1)
    n = x.shape[1]
    lengths = (~pad_mask).sum(1, keepdim=True)  # (B, 1)
    pos = torch.arange(n, device=x.device).unsqueeze(0)
    idx = torch.where(pos < lengths, lengths - 1 - pos, pos)  # (B, N)
    idx = idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, idx)


def stream_backbone(
    backbone: nn.Module, x_chunk: Tensor, states: Sequence[Any] | None = None
) -> tuple[Tensor, list[Any]]:
    """Run a forward-direction recurrent backbone on the next chunk of tokens.

    ``x_chunk``: (B, l, D) consecutive tokens (no padding); ``states``: the list returned by the
    previous call (None at the start). Feeding a sequence in pieces equals one pass.
    """
    return stream_blocks(list(backbone.blocks), x_chunk, states)  # type: ignore[arg-type]


def stream_blocks(
    blocks: Sequence[Any], x_chunk: Tensor, states: Sequence[Any] | None = None
) -> tuple[Tensor, list[Any]]:
    """:func:`stream_backbone` over an explicit list of blocks (e.g. the first N, for an
    intermediate layer): each block's ``step`` with its state, zero states when ``states`` is None."""
    for block in blocks:
        if not hasattr(block, "step"):
            raise TypeError(f"{type(block).__name__} does not support streaming")
    if states is None:
        states = [b.init_state(x_chunk.shape[0], x_chunk.device, x_chunk.dtype) for b in blocks]
    new_states = []
    for block, state in zip(blocks, states, strict=True):
        x_chunk, state = block.step(x_chunk, state)
        new_states.append(state)
    return x_chunk, new_states


class RecurrentBlock(nn.Module):
    """Pre-norm residual block around a recurrent mixer (Mamba, mLSTM): ``x + drop(mixer(norm x))``.

    ``reverse`` scans the sequence backwards within each row's valid length (the odd blocks of
    ``direction='alternating'``). Streaming (:meth:`step`) needs a forward-only block. A subclass
    sets ``mixer_cls`` (built as ``mixer_cls(cfg, bidirectional)``, providing ``forward(h,
    pad_mask)`` and ``step(h, state)``) and ``kind``, and implements ``init_state``.
    """

    kind = "recurrent"  # named in the streaming error
    mixer_cls: Callable[[Any, bool], nn.Module]

    def __init__(self, cfg: Any, drop_path: float, reverse: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.reverse = reverse
        self.bidirectional = cfg.direction == "bidirectional"
        self.norm = nn.LayerNorm(cfg.dim)
        self.mixer = type(self).mixer_cls(cfg, self.bidirectional)
        self.dropout = nn.Dropout(cfg.dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        h = zero_padding(self.norm(x), pad_mask)
        if self.reverse:
            h = reverse_within_length(h, pad_mask)
        h = self.mixer(h, pad_mask)
        if self.reverse:
            h = reverse_within_length(h, pad_mask)
        return x + self.drop_path(self.dropout(h))

    def _check_streamable(self) -> None:
        if self.bidirectional or self.reverse:
            raise ValueError(
                f"streaming needs direction='forward'; bidirectional and alternating {self.kind} blocks "
                "see future tokens"
            )

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        """Process the next chunk x: (B, l, D) of consecutive tokens (l ≥ 1)."""
        self._check_streamable()
        mixer: Any = self.mixer  # MambaMixer / MLSTMMixer: step(h, state) -> (out, state)
        h, state = mixer.step(self.norm(x), state)
        return x + self.drop_path(self.dropout(h)), state


_Block = TypeVar("_Block", bound=RecurrentBlock)


def recurrent_blocks(cfg: Any, block: Callable[..., _Block]) -> list[_Block]:
    """``cfg.depth`` blocks with linearly increasing drop-path; with ``direction='alternating'``
    every odd block scans backwards."""
    from .base import drop_path_rates

    return [block(cfg, p, reverse=cfg.direction == "alternating" and i % 2 == 1)
            for i, p in enumerate(drop_path_rates(cfg))]
