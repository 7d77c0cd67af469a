"""xLSTM backbone of mLSTM blocks (matrix memory, exponential gating; arXiv 2405.04517).

Per head the mLSTM cell keeps a matrix memory C, a normaliser n and a stabiliser m::

    m_t = max(log f_t + m_{t-1}, ĩ_t)              log f_t = logsigmoid(f̃_t)
    C_t = exp(log f_t + m_{t-1} - m_t) C_{t-1} + exp(ĩ_t - m_t) k_t v_tᵀ     (n likewise with k_t)
    h_t = C_tᵀ q_t / (max(|n_tᵀ q_t|, exp(-m_t)) + eps)

with k scaled by 1/sqrt(d_head) and the zero initial state (C, n, m) = (0, 0, 0). Three equivalent
forms: :func:`mlstm_parallel` (quadratic), :func:`mlstm_chunkwise` (linear in length; default)
and :func:`mlstm_recurrent` (step by step). The stabiliser only rescales (the output is invariant
to it up to eps), so no gradient flows through it.

A block is the paper's pre-up-projection mLSTM block: LayerNorm, up-projection to a stream and a
gate z, causal conv + SiLU, head-wise q/k (from the conv path) and v (from the stream), input and
forget gates from [q, k, v], the cell, per-head group norm, learnable skip, SiLU(z) output gate and
down-projection. Bidirectional blocks share the up/down projections; each direction has its own
conv, q/k/v, gates, group-norm weight and skip (counted in the parameter budget); the backward
direction runs on each row reversed within its valid length and the two directions are averaged.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from ...config import PositiveFloat, PositiveInt
from ..layer_config import is_exportable
from . import register_backbone
from ._scan import (
    RecurrentBlock,
    causal_conv,
    fused_available,
    recurrent_blocks,
    reverse_within_length,
    stream_backbone,
)
from .base import Backbone, BackboneConfig, Direction, preset_row

__all__ = [
    "MLSTMBlock",
    "XLSTMConfig",
    "build_xlstm",
    "mlstm_chunkwise",
    "mlstm_parallel",
    "mlstm_recurrent",
    "preset_fields",
    "stream_backbone",
]

Form = Literal["chunkwise", "parallel", "recurrent"]
Impl = Literal["torch", "fused", "auto"]
State = tuple[Tensor, Tensor, Tensor]  # C (B, H, dk, dv), n (B, H, dk), m (B, H)


@dataclass
class XLSTMConfig(BackboneConfig):
    """heads: mLSTM heads. proj_factor: inner width / dim. conv_kernel: causal conv width.
    qkv_blocksize: block size of the block-diagonal q/k/v projections. form: "chunkwise" (linear
    in length), "parallel" (quadratic) or "recurrent". chunk_size: positions per chunk.
    direction: "forward", "bidirectional" (both directions, averaged) or "alternating" (even
    blocks forward, odd blocks reversed). impl: "torch", "fused" (mlstm_kernels on CUDA; error if
    unavailable) or "auto". eps: added to the normaliser. recompute: in training, recompute the
    mixer's inner activations (conv, q/k/v, gates, cell) in backward instead of storing them
    (several times less activation memory for roughly a fifth more training time)."""

    heads: PositiveInt = 4
    proj_factor: PositiveFloat = 2.0
    conv_kernel: PositiveInt = 4
    qkv_blocksize: PositiveInt = 4
    form: Form = "chunkwise"
    chunk_size: PositiveInt = 32
    direction: Direction = "bidirectional"
    impl: Impl = "torch"
    eps: PositiveFloat = 1e-6
    recompute: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.direction not in ("forward", "bidirectional", "alternating"):
            raise ValueError(f"unknown direction {self.direction!r}")
        if self.form not in ("chunkwise", "parallel", "recurrent"):
            raise ValueError(f"unknown form {self.form!r}")
        if self.impl not in ("torch", "fused", "auto"):
            raise ValueError(f"unknown impl {self.impl!r}")
        if self.inner % (self.heads * self.qkv_blocksize):
            raise ValueError(
                f"inner width {self.inner} must be divisible by heads*qkv_blocksize "
                f"= {self.heads * self.qkv_blocksize}"
            )

    @property
    def inner(self) -> int:
        return int(self.proj_factor * self.dim)


# ----------------------------------------------------------------------------- cell forms


def _zero_state(q: Tensor, dv: int) -> State:
    b, h, _, dk = q.shape
    return q.new_zeros(b, h, dk, dv), q.new_zeros(b, h, dk), q.new_zeros(b, h)


def mlstm_recurrent(
    q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, state: State | None = None, eps: float = 1e-6
) -> tuple[Tensor, State]:
    """Step-by-step mLSTM. q, k: (B, H, S, dk); v: (B, H, S, dv); i, f: gate pre-activations
    (B, H, S). Returns h (B, H, S, dv) and the final state."""
    c, n, m = state if state is not None else _zero_state(q, v.shape[-1])
    k = k * k.shape[-1] ** -0.5
    lf = F.logsigmoid(f)
    hs = []
    for t in range(q.shape[2]):
        m_new = torch.maximum(lf[:, :, t] + m, i[:, :, t]).detach()
        fa = torch.exp(lf[:, :, t] + m - m_new)[..., None]  # (B, H, 1)
        ia = torch.exp(i[:, :, t] - m_new)[..., None]
        kt, vt, qt = k[:, :, t], v[:, :, t], q[:, :, t]
        c = fa[..., None] * c + ia[..., None] * kt[..., :, None] * vt[..., None, :]
        n = fa * n + ia * kt
        num = (qt[..., None] * c).sum(-2)  # (B, H, dv)
        den = torch.maximum((qt * n).sum(-1).abs(), torch.exp(-m_new)) + eps
        hs.append(num / den[..., None])
        m = m_new
    return torch.stack(hs, 2), (c, n, m)


def mlstm_parallel(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, eps: float = 1e-6) -> Tensor:
    """Quadratic (attention-like) stabilised mLSTM from the zero state; shapes as
    :func:`mlstm_recurrent`."""
    s = q.shape[2]
    k = k * k.shape[-1] ** -0.5
    fc = F.logsigmoid(f).cumsum(-1)  # (B, H, S)
    causal = torch.ones(s, s, dtype=torch.bool, device=q.device).tril()
    log_d = (fc[..., :, None] - fc[..., None, :] + i[..., None, :]).masked_fill(~causal, -math.inf)
    # Stabiliser of row t: the max over its inputs and the zero initial state (m_0 = 0).
    m = torch.maximum(log_d.max(-1).values, fc).detach()  # (B, H, S)
    p = (q @ k.transpose(-1, -2)) * torch.exp(log_d - m[..., None])  # (B, H, S, S)
    den = torch.maximum(p.sum(-1).abs(), torch.exp(-m)) + eps
    return (p @ v) / den[..., None]


def mlstm_chunkwise(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    i: Tensor,
    f: Tensor,
    state: State | None = None,
    chunk_size: int = 32,
    eps: float = 1e-6,
    segment_chunks: int = 64,
) -> tuple[Tensor, State]:
    """Chunkwise mLSTM, linear in length: quadratic inside chunks, the (C, n, m) state carried
    between chunks. Shapes as :func:`mlstm_recurrent`. Long inputs are processed in segments of
    ``segment_chunks`` chunks so that the per-chunk states never exist for the whole sequence."""
    t = max(1, chunk_size)
    seg = t * segment_chunks
    s = q.shape[2]
    if s <= seg and (s % t == 0 or s < t):
        return _mlstm_chunkwise(q, k, v, i, f, state, chunk_size, eps)
    # segments of whole chunks, then the ragged tail (< chunk_size) as a chunk of its own length:
    # no padded copies of q, k, v
    bounds = [*range(0, s - s % t, seg), s - s % t, s]
    hs = []
    for start, stop in itertools.pairwise(bounds):
        if stop <= start:
            continue
        sl = slice(start, stop)
        h, state = _mlstm_chunkwise(
            q[:, :, sl], k[:, :, sl], v[:, :, sl], i[:, :, sl], f[:, :, sl], state, chunk_size, eps
        )
        hs.append(h)
    assert state is not None
    return torch.cat(hs, 2), state


def _mlstm_chunkwise(
    q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, state: State | None, chunk_size: int, eps: float,
    traceable: bool = False,
) -> tuple[Tensor, State]:
    b, nh, s, dk = q.shape
    dv = v.shape[-1]
    # traceable: a fixed chunk length, always padded (no branch on the length), scan carry
    t = max(1, chunk_size) if traceable else max(1, min(chunk_size, s))
    nc = (s + t - 1) // t  # (a traced negative floor division would truncate in ONNX)
    lf = F.logsigmoid(f)
    if traceable or nc * t != s:
        # Padded positions: no input (ĩ = -inf, k = v = 0) and no forgetting (log f = 0).
        pad = nc * t - s
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        lf = F.pad(lf, (0, pad))
        i = F.pad(i, (0, pad), value=-math.inf)
    # Every matmul runs on contiguous (B, H, NC, T, d) chunks (a strided operand would be copied
    # by each matmul), and the 1/sqrt(dk) key scale is folded into the (small) gate tensors.
    qc = q.contiguous().view(b, nh, nc, t, dk)
    kc = k.contiguous().view(b, nh, nc, t, dk)
    vc = v.contiguous().view(b, nh, nc, t, dv)
    log_scale = -0.5 * math.log(dk)
    ic = i.reshape(b, nh, nc, t)
    bc = lf.reshape(b, nh, nc, t).cumsum(-1)  # within-chunk cumulative log forget (inclusive)
    g = bc[..., -1]  # (B, H, NC) log forget of the whole chunk
    w = g[..., None] - bc + ic  # log weight of input s in the chunk-end state
    w_max = w.max(-1).values.detach()  # (B, H, NC)
    c0, n0, m0 = state if state is not None else _zero_state(q, dv)
    m_prev, m_last = _chunk_stabilisers(m0.detach(), g.detach(), w_max, traceable)  # (B, H, NC), (B, H)
    m_after = torch.cat([m_prev[..., 1:], m_last[..., None]], -1)
    decay = torch.exp(g + m_prev - m_after)  # (B, H, NC): what is left of the carried state
    # each chunk's own contribution to the state, stabilised by the stabiliser after the chunk
    kw = kc * torch.exp(w - (m_after[..., None] - log_scale))[..., None]  # (B, H, NC, T, dk)
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    log_d = (bc[..., :, None] - bc[..., None, :] + ic[..., None, :]).masked_fill(~causal, -math.inf)
    inter_log = bc + m_prev[..., None]  # log scale of the carried state at row t
    m_row = torch.maximum(log_d.max(-1).values, inter_log).detach()  # (B, H, NC, T)
    p = (qc @ kc.transpose(-1, -2)) * torch.exp(log_d - (m_row - log_scale)[..., None])  # (B, H, NC, T, T)
    qi = qc * torch.exp(inter_log - m_row)[..., None]  # q rescaled to read the carried state
    num, (c, n), n_prev = _carry(p @ vc, (c0, n0), qi, kw, vc, decay, traceable)  # num: (B, H, NC, T, dv)
    qn = p.sum(-1) + (qi @ n_prev[..., None]).squeeze(-1)  # q·n: (B, H, NC, T)
    den = torch.maximum(qn.abs(), torch.exp(-m_row)) + eps
    h = (num / den[..., None]).view(b, nh, nc * t, dv)
    return (h if nc * t == s else h[:, :, :s]), (c, n, m_last)


def _chunk_stabilisers(m0: Tensor, g: Tensor, w_max: Tensor, traceable: bool) -> tuple[Tensor, Tensor]:
    """The stabiliser m before each chunk ``(B, H, NC)`` and after the last ``(B, H)``, from
    ``m_{j+1} = max(m_j + g_j, w_max_j)`` (a pure rescaling: callers pass detached tensors)."""
    if traceable:
        from ..layer_config import traceable_scan

        def step(m: Tensor, xs: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            return torch.maximum(m + xs[0], xs[1]), m.clone()

        m_last, before = traceable_scan(step, m0, (g, w_max), dim=2)
        return before.movedim(0, 2), m_last
    # unrolled: m_{j+1} = G_j + max(m_0, max_{l<=j} (w_max_l - G_l)), G the inclusive cumsum of g
    gc = g.cumsum(-1)
    m_after = gc + torch.maximum(torch.cummax(w_max - gc, -1).values, m0[..., None])
    return torch.cat([m0[..., None], m_after[..., :-1]], -1), m_after[..., -1]


def _carry(num: Tensor, state: tuple[Tensor, Tensor], qi: Tensor, kw: Tensor, vc: Tensor, decay: Tensor,
           traceable: bool) -> tuple[Tensor, tuple[Tensor, Tensor], Tensor]:
    """Carry ``(C, n)`` across the chunks (axis 2): ``C <- decay_j C + kw_jᵀ v_j`` and
    ``n <- decay_j n + Σ_t kw_j``; add each chunk's read-out of the C before it, ``qi_j C``, to
    ``num``. Returns ``num``, the final ``(C, n)`` and the n before each chunk ``(B, H, NC, dk)``."""
    c, n = state
    u_n = kw.sum(-2)  # (B, H, NC, dk)
    if traceable:
        from ..layer_config import traceable_scan

        Pair = tuple[Tensor, Tensor]

        def step(carry: Pair, xs: tuple[Tensor, ...]) -> tuple[Pair, Pair]:
            cj, nj = carry
            q_j, k_j, v_j, un_j, d_j = xs
            c_new = torch.addcmul(k_j.transpose(-1, -2) @ v_j, cj, d_j[..., None, None])
            return (c_new, torch.addcmul(un_j, nj, d_j[..., None])), (q_j @ cj, nj.clone())

        (c, n), (reads, n_prev) = traceable_scan(step, (c, n), (qi, kw, vc, u_n, decay), dim=2)
        return num + reads.movedim(0, 2), (c, n), n_prev.movedim(0, 2)
    ns = []  # n is small: a plain loop
    for un_j, d_j in zip(u_n.unbind(2), decay.unbind(2)):
        ns.append(n)
        n = torch.addcmul(un_j, n, d_j[..., None])
    n_prev = torch.stack(ns, 2)
    if torch.is_grad_enabled() and any(x.requires_grad for x in (num, c, qi, kw, vc, decay)):
        # autograd: every chunk's contribution and read-out in one batched matmul each (the
        # per-chunk states are kept for backward anyway); only the decay-and-add is a loop
        u = kw.transpose(-1, -2) @ vc  # (B, H, NC, dk, dv)
        cs = []
        for u_j, d_j in zip(u.unbind(2), decay.unbind(2)):
            cs.append(c)
            c = torch.addcmul(u_j, c, d_j[..., None, None])
        return num + qi @ torch.stack(cs, 2), (c, n), n_prev
    # inference: in place, one chunk at a time on (B*H)-batched views; the per-chunk states are
    # never stored together (a chunk's state is larger than its activations)
    b, nh, nc, t, _ = qi.shape
    flat = (b * nh, c.shape[-2], c.shape[-1])
    c = c.reshape(flat).clone()
    # in-place baddbmm is outside autocast: under bf16 autocast the intra-chunk part arrives in
    # bf16; the carry and its read-outs stay in the state's dtype (float32)
    num, qi, kw, vc = (x.to(c.dtype) for x in (num, qi, kw, vc))
    for j in range(nc):
        num[:, :, j].view(b * nh, t, -1).baddbmm_(qi[:, :, j].view(b * nh, t, -1), c)
        c.mul_(decay[:, :, j].reshape(b * nh, 1, 1)).baddbmm_(kw[:, :, j].view(b * nh, t, -1).transpose(1, 2),
                                                              vc[:, :, j].view(b * nh, t, -1))
    return num, (c.view(b, nh, *flat[1:]), n), n_prev


def mlstm_recurrent_traceable(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, eps: float = 1e-6) -> Tensor:
    """:func:`mlstm_recurrent` from the zero state as a traceable scan over time (the
    exportable layers' recurrent form); shapes as :func:`mlstm_recurrent`."""
    from ..layer_config import traceable_scan

    k = k * k.shape[-1] ** -0.5
    lf = F.logsigmoid(f)

    def step(carry: State, xs: tuple[Tensor, ...]) -> tuple[State, Tensor]:
        c, n, m = carry
        lf_t, i_t, k_t, v_t, q_t = xs  # (B, H), (B, H), (B, H, dk), (B, H, dv), (B, H, dk)
        m_new = torch.maximum(lf_t + m, i_t).detach()
        fa = torch.exp(lf_t + m - m_new)[..., None]  # (B, H, 1)
        ia = torch.exp(i_t - m_new)[..., None]
        c = fa[..., None] * c + ia[..., None] * k_t[..., :, None] * v_t[..., None, :]
        n = fa * n + ia * k_t
        num = (q_t[..., None] * c).sum(-2)  # (B, H, dv)
        den = torch.maximum((q_t * n).sum(-1).abs(), torch.exp(-m_new)) + eps
        return (c, n, m_new), num / den[..., None]

    _, h = traceable_scan(step, _zero_state(q, v.shape[-1]), (lf, i, k, v, q), dim=2)  # (S, B, H, dv)
    return h.permute(1, 2, 0, 3)


def mlstm_fused(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, chunk_size: int, eps: float) -> Tensor:
    """The chunkwise Triton kernel of ``mlstm_kernels`` (CUDA only)."""
    try:
        from mlstm_kernels.torch import get_mlstm_kernel
    except ImportError as err:
        raise ImportError(
            "impl='fused' needs the mLSTM kernels: pip install mlstm_kernels (on a CUDA machine), "
            "or use impl='torch'"
        ) from err
    if not q.is_cuda:
        raise RuntimeError("impl='fused' runs only on CUDA tensors; use impl='torch' on CPU")
    kernel = get_mlstm_kernel("chunkwise--triton_xl_chunk")
    return kernel(q=q, k=k, v=v, i=i, f=f, chunk_size=chunk_size, eps=eps)


# ----------------------------------------------------------------------------- block


def _headwise_ref(x: Tensor, weight: Tensor) -> Tensor:
    """Block-diagonal projection on channel-first x: (nd, B, nb*bs, L) with weight
    (nd, nb, o, bs) -> (nd, B, nb*o, L): ``bs`` multiply-adds along the contiguous time axis."""
    nd, b, _, length = x.shape
    nb, o, bs = weight.shape[1:]
    xb = x.view(nd, b, nb, 1, bs, length)
    w = weight[:, None, :, :, :, None]  # (nd, 1, nb, o, bs, 1)
    y = xb[..., 0, :] * w[..., 0, :]
    for j in range(1, bs):
        y.addcmul_(xb[..., j, :], w[..., j, :])
    return y.view(nd, b, nb * o, length)


class _Headwise(torch.autograd.Function):
    """:func:`_headwise_ref` with a hand-written backward: the input gradient is the same
    projection with each block transposed, the weight gradient one batched matmul (autograd of
    the multiply-adds would reduce over broadcast axes once per term, several times slower)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        return _headwise_ref(x, weight)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        nd, b, _, length = x.shape
        nb, o, bs = weight.shape[1:]
        gy = gy.contiguous()
        gx = _headwise_ref(gy, weight.transpose(-1, -2)).to(x.dtype) if ctx.needs_input_grad[0] else None
        gw = None
        if ctx.needs_input_grad[1]:  # under autocast x may be bf16 while gy (like the output) is float32
            xb = x.view(nd, b, nb, bs, length).to(gy.dtype)
            gw = torch.matmul(gy.view(nd, b, nb, o, length), xb.transpose(-1, -2)).sum(1)  # (nd, nb, o, bs)
            gw = gw.to(weight.dtype)
        return gx, gw


def _headwise(x: Tensor, weight: Tensor, traceable: bool = False) -> Tensor:
    """The block-diagonal q/k/v projection (see :func:`_headwise_ref`); ``traceable``: without
    the custom autograd function (export)."""
    return _headwise_ref(x, weight) if traceable else _Headwise.apply(x, weight)


def _small_init(dim: int) -> float:
    return math.sqrt(2 / (5 * dim))


class MLSTMParams(nn.Module):
    """The direction-specific part of an mLSTM block, stacked over ``ndir`` directions."""

    def __init__(self, cfg: XLSTMConfig, ndir: int) -> None:
        super().__init__()
        e, nh, bs = cfg.inner, cfg.heads, cfg.qkv_blocksize
        nb = e // bs
        bound = 1.0 / math.sqrt(cfg.conv_kernel)
        self.conv_weight = nn.Parameter(torch.empty(ndir, e, cfg.conv_kernel).uniform_(-bound, bound))
        self.conv_bias = nn.Parameter(torch.empty(ndir, e).uniform_(-bound, bound))
        std = _small_init(e)
        self.q_proj = nn.Parameter(torch.randn(ndir, nb, bs, bs) * std)  # (ndir, blocks, out, in)
        self.k_proj = nn.Parameter(torch.randn(ndir, nb, bs, bs) * std)
        self.v_proj = nn.Parameter(torch.randn(ndir, nb, bs, bs) * std)
        # Input and forget gate pre-activations per head from [q, k, v]; zero weights at init,
        # forget bias positive (long memory), input bias small negative.
        self.gate_weight = nn.Parameter(torch.zeros(ndir, 2 * nh, 3 * e))
        self.gate_bias = nn.Parameter(
            torch.cat([torch.full((nh,), -1.0), torch.linspace(3.0, 6.0, nh)]).repeat(ndir, 1)
        )
        self.norm_weight = nn.Parameter(torch.ones(ndir, e))  # per-head group norm
        self.skip = nn.Parameter(torch.ones(ndir, e))


class MLSTMMixer(nn.Module):
    """Up-projection -> per direction (conv, q/k/v, gates, mLSTM cell, group norm, skip) ->
    average -> SiLU(z) output gate -> down-projection."""

    def __init__(self, cfg: XLSTMConfig, bidirectional: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.ndir = 2 if bidirectional else 1
        self.exportable = is_exportable()  # the traceable cell forms
        self.proj_up = nn.Linear(cfg.dim, 2 * cfg.inner, bias=False)
        self.cell = MLSTMParams(cfg, self.ndir)
        self.proj_down = nn.Linear(cfg.inner, cfg.dim, bias=False)
        nn.init.normal_(self.proj_up.weight, std=_small_init(cfg.dim))
        nn.init.normal_(self.proj_down.weight, std=2 / max(cfg.depth, 1) / math.sqrt(cfg.dim))

    def _cell(
        self, q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, state: State | None
    ) -> tuple[Tensor, State | None]:
        cfg = self.cfg
        if self.exportable and state is None:  # the traceable forms (no fused kernel, no segments)
            if cfg.form == "parallel":
                return mlstm_parallel(q, k, v, i, f, cfg.eps), None
            if cfg.form == "recurrent":
                return mlstm_recurrent_traceable(q, k, v, i, f, cfg.eps), None
            return _mlstm_chunkwise(q, k, v, i, f, None, cfg.chunk_size, cfg.eps, traceable=True)[0], None
        fused = cfg.impl == "fused" or (cfg.impl == "auto" and q.is_cuda and fused_available("mlstm_kernels"))
        if state is None and fused:
            return mlstm_fused(q, k, v, i, f, cfg.chunk_size, cfg.eps), None
        if state is None and cfg.form == "parallel":
            return mlstm_parallel(q, k, v, i, f, cfg.eps), None
        if cfg.form == "recurrent":
            return mlstm_recurrent(q, k, v, i, f, state, cfg.eps)
        return mlstm_chunkwise(q, k, v, i, f, state, cfg.chunk_size, cfg.eps)

    def _mix(
        self, xm: Tensor, conv_state: Tensor | None = None, state: State | None = None
    ) -> tuple[Tensor, Tensor, State | None]:
        """xm: (nd, B, L, E) per-direction streams -> cell output after norm and skip."""
        cfg, p = self.cfg, self.cell
        nd, b, length, e = xm.shape
        nh = cfg.heads
        dh = e // nh
        xc, conv_state = causal_conv(xm, p.conv_weight[:, None], p.conv_bias[:, None], conv_state)
        xc = F.silu(xc)
        # q, k, v and the gates channel-first, (nd, B, E, L), where the small blocks are fast.
        xct, xmt = xc.transpose(-1, -2).contiguous(), xm.transpose(-1, -2).contiguous()
        q = _headwise(xct, p.q_proj, self.exportable)
        k = _headwise(xct, p.k_proj, self.exportable)
        v = _headwise(xmt, p.v_proj, self.exportable)
        gw = p.gate_weight[:, None]  # (nd, 1, 2H, 3E)
        gates = torch.matmul(gw[..., :e], q).add_(p.gate_bias[:, None, :, None])
        gates.add_(torch.matmul(gw[..., e : 2 * e], k)).add_(torch.matmul(gw[..., 2 * e :], v))
        i, f = gates.view(nd * b, 2 * nh, length).chunk(2, 1)  # (nd*B, H, L) each

        def heads(x: Tensor) -> Tensor:  # (nd, B, E, L) -> (nd*B, H, L, dh), contiguous for the cell
            return x.view(nd * b, nh, dh, length).transpose(-1, -2).contiguous()

        h, state = self._cell(heads(q), heads(k), heads(v), i, f, state)  # (nd*B, H, L, dh)
        h = F.layer_norm(h, (dh,), eps=1e-5)  # group norm: per head
        # skip + per-head norm weight, written token-major: (nd, B, L, H, dh)
        out = xc * p.skip[:, None, None]
        out.view(nd, b, length, nh, dh).addcmul_(
            h.view(nd, b, nh, length, dh).transpose(2, 3), p.norm_weight.view(nd, 1, 1, nh, dh)
        )
        return out, conv_state, state

    def _mix_out(self, xm: Tensor) -> Tensor:
        return self._mix(xm)[0]

    def forward(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        # x: (B, N, D); padded tokens are zero and come after every real token of their row.
        xm, z = self.proj_up(x).chunk(2, dim=-1)  # (B, N, E) each
        if self.ndir == 2:
            xm = torch.stack([xm, reverse_within_length(xm, pad_mask)])
        else:
            xm = xm.unsqueeze(0)
        if self.cfg.recompute and self.training and torch.is_grad_enabled():
            h = checkpoint(self._mix_out, xm, use_reentrant=False)
        else:
            h = self._mix_out(xm)
        y = h[0] if self.ndir == 1 else 0.5 * (h[0] + reverse_within_length(h[1], pad_mask))
        return self.proj_down(y * F.silu(z))

    def step(self, x: Tensor, state: tuple[Tensor, State]) -> tuple[Tensor, tuple[Tensor, State]]:
        """Forward-direction mixer on a chunk x: (B, l, D) of consecutive tokens with state
        (conv state (B, k-1, E), (C, n, m)). Always the PyTorch chunkwise/recurrent form."""
        xm, z = self.proj_up(x).chunk(2, dim=-1)
        h, conv_state, cell_state = self._mix(xm.unsqueeze(0), state[0].unsqueeze(0), state[1])
        assert cell_state is not None
        return self.proj_down(h[0] * F.silu(z)), (conv_state[0], cell_state)


class MLSTMBlock(RecurrentBlock):
    """Pre-norm residual mLSTM block; ``reverse`` scans the sequence backwards (alternating)."""

    kind = "mLSTM"
    mixer_cls = MLSTMMixer
    mixer: MLSTMMixer
    cfg: XLSTMConfig

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, State]:
        """Zero streaming state: (conv state (B, k-1, E), (C, n, m))."""
        self._check_streamable()
        cfg = self.cfg
        dh = cfg.inner // cfg.heads

        def zeros(*shape: int) -> Tensor:
            return torch.zeros(shape, device=device, dtype=dtype)

        conv = zeros(batch, cfg.conv_kernel - 1, cfg.inner)
        return conv, (zeros(batch, cfg.heads, dh, dh), zeros(batch, cfg.heads, dh), zeros(batch, cfg.heads))


@register_backbone("xlstm", XLSTMConfig)
def build_xlstm(cfg: XLSTMConfig) -> Backbone:
    blocks = recurrent_blocks(cfg, MLSTMBlock)
    return Backbone(cfg, blocks)


@dataclass(frozen=True)
class XLSTMPreset:
    """One size of the xLSTM encoder (width from :data:`~.base.SIZE_DIMS`): depth and proj_factor
    chosen to match the Transformer of the same size in parameters."""

    depth: int
    proj_factor: float


# "forward" rows also serve "alternating" (the same blocks, every other one reversed).
PRESETS: dict[str, dict[str, XLSTMPreset]] = {
    "bidirectional": {
        "debug": XLSTMPreset(depth=2, proj_factor=2.75),
        "tiny": XLSTMPreset(depth=21, proj_factor=2.0),
        "small": XLSTMPreset(depth=22, proj_factor=2.0),
        "base": XLSTMPreset(depth=23, proj_factor=2.0),
    },
    "forward": {
        "debug": XLSTMPreset(depth=2, proj_factor=3.25),
        "tiny": XLSTMPreset(depth=22, proj_factor=2.0),
        "small": XLSTMPreset(depth=23, proj_factor=2.0),
        "base": XLSTMPreset(depth=23, proj_factor=2.0),
    },
}


def preset_fields(size: str, direction: Direction = "bidirectional") -> dict[str, object]:
    """Backbone fields for ``size`` in debug/tiny/small/base whose parameter count matches the
    Transformer of the same size within 10%."""
    table = PRESETS["bidirectional" if direction == "bidirectional" else "forward"]
    return {**preset_row(table, size), "direction": direction}
