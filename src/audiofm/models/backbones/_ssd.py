"""The Mamba-2 (SSD, state-space duality) scan: scalar decay per head, chunked matmul form.

Per head ``h`` with head dimension P and a state of size N shared by all heads (one group)::

    H_t = exp(Δ_t A_h) H_{t-1} + Δ_t x_t B_tᵀ        y_t = H_t C_t (+ D_h x_t)

with ``H_t: (P, N)``. Because the decay is one scalar per head and step, the scan over a chunk of
Q positions is a masked matrix product (Dao & Gu 2024, "Transformers are SSMs"):

* intra-chunk: ``Y = (L ∘ C Bᵀ) (Δ x)`` with the decay matrix ``L[i, j] = exp(Σ_{j<k≤i} Δ_k A)``
  (0 above the diagonal), the segment sums taken as masked cumulative sums of the log-decays
  (:func:`segsum`: every entry is a sum of terms ≤ 0, no difference of large cumulative sums,
  nothing can overflow);
* chunk states from a zero start, ``S_c = Σ_j L[Q-1, j] (Δ x)_j B_jᵀ``, one batched matmul;
* a short recurrence over the K chunks carries the state, ``start_{c+1} = exp(Σ_c Δ A) start_c + S_c``;
* output = intra + ``exp(Σ_{k≤i} Δ_k A) C_i · start_c``.

Long sequences are cut into blocks of whole chunks (a few MB of work tensors each), the state
carried from block to block, so memory is linear in length.

The matmuls are over (Q × Q), (Q × N) and (P × N) tiles, so the work is compute- rather than
memory-bound (unlike the element-wise S6 scan of :mod:`._scan`, whose state is per channel).
Autograd differentiates the chunked form directly (memory per step is O(L·Q·heads); the mixer's
``recompute`` bounds what training keeps). :func:`ssd_scan_ref` is the plain sequential
definition, for tests; :func:`ssd_scan_traceable` the export form; :func:`ssd_scan_fused` the
``mamba_ssm`` Triton kernel.
"""

from __future__ import annotations

from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor

#: Elements of the largest work tensors of one block of :func:`ssd_scan`.
_BLOCK_ELEMS = 1 << 22


def segsum(a: Tensor) -> Tensor:
    """Segment sums of log-decays ``a: (..., Q)``: ``out[..., i, j] = Σ_{j<k≤i} a_k`` for
    ``i ≥ j`` (0 on the diagonal) and ``-inf`` above it, as masked cumulative sums (no
    differences of cumulative sums, so no cancellation)."""
    q = a.shape[-1]
    strict = torch.ones(q, q, dtype=torch.bool, device=a.device).tril(-1)
    x = a.unsqueeze(-1).expand(*a.shape, q).masked_fill(~strict, 0.0)  # x[..., i, j] = a_i [i > j]
    s = x.cumsum(-2)
    return s.masked_fill(~torch.ones_like(strict).tril(), float("-inf"))


def _decay_rate(A: Tensor, batch: int) -> Tensor:
    """A: (H,) or (Bt, H) → (Bt or 1, 1, H) to multiply Δ: (Bt, L, H)."""
    if A.dim() == 1:
        return A.view(1, 1, -1)
    if A.shape[0] != batch:
        raise ValueError(f"A has batch {A.shape[0]}, inputs have {batch}")
    return A.unsqueeze(1)


@overload
def ssd_scan(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = ..., h0: Tensor | None = ...,
    return_last_state: Literal[False] = ..., chunk_size: int = ..., block_size: int | None = ...,
) -> Tensor: ...
@overload
def ssd_scan(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = ..., h0: Tensor | None = ...,
    *, return_last_state: Literal[True], chunk_size: int = ..., block_size: int | None = ...,
) -> tuple[Tensor, Tensor]: ...
def ssd_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    h0: Tensor | None = None,
    return_last_state: bool = False,
    chunk_size: int = 32,
    block_size: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Chunked SSD scan (pure PyTorch; batched matmuls per chunk, a recurrence over chunks).

    x: (Bt, L, H, P); dt: (Bt, L, H) step sizes (after softplus, ≥ 0); A: (H,) or (Bt, H),
    negative; B, C: (Bt, L, N); D: (H,) skip; h0: (Bt, H, P, N) initial state. Returns
    y (Bt, L, H, P) and, if asked, the last state (Bt, H, P, N). A length that is not a
    multiple of ``chunk_size`` is zero-padded (Δ = 0: decay 1, no input, so the state is
    unchanged). Long inputs are processed in blocks of whole chunks (``block_size`` positions;
    None = about :data:`_BLOCK_ELEMS` elements of work tensors per block), the state carried
    from block to block: memory is linear in length and the work tensors stay small (large
    fresh buffers cost more than the arithmetic on CPU). Runs in at least float32
    (half-precision inputs are promoted, y cast back).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be ≥ 1, got {chunk_size}")
    out_dtype = x.dtype
    dtype = torch.promote_types(x.dtype, torch.float32)
    x, dt, A, B, C = (t.to(dtype) for t in (x, dt, A, B, C))
    h: Tensor | None = None if h0 is None else h0.to(dtype)
    bt, length, nh, p = x.shape
    n = B.shape[-1]
    q = max(1, min(chunk_size, length))
    if block_size is None:
        per_pos = bt * nh * (q + p + p * n // q)  # decay rows, x, chunk states per position
        block_size = max(4, _BLOCK_ELEMS // (per_pos * q)) * q
    block = max(q, block_size // q * q)
    ys = []
    for s in range(0, length, block):
        sl = slice(s, s + block)
        y_blk, h = _ssd_chunked(x[:, sl], dt[:, sl], A, B[:, sl], C[:, sl], h, q)
        ys.append(y_blk)
    assert h is not None
    y = ys[0] if len(ys) == 1 else torch.cat(ys, 1)
    if D is not None:
        y = torch.addcmul(y, x, D.to(dtype)[:, None])
    y = y.to(out_dtype)
    return (y, h) if return_last_state else y


def _ssd_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None, q: int
                 ) -> tuple[Tensor, Tensor]:
    """One block of :func:`ssd_scan` (no D skip, dtype already promoted): (y, last state)."""
    bt, length, nh, p = x.shape
    n = B.shape[-1]
    k = -(-length // q)
    pad = k * q - length
    a = dt * _decay_rate(A, bt)  # (Bt, L, H) log-decays Δ·A ≤ 0
    xdt = x * dt.unsqueeze(-1)  # (Bt, L, H, P)
    bm, cm = B, C
    if pad:
        a, bm, cm = (F.pad(t, (0, 0, 0, pad)) for t in (a, bm, cm))
        xdt = F.pad(xdt, (0, 0, 0, 0, 0, pad))
    # Chunks of the natural layout: B and C are shared by the heads, so the state and read-out
    # matmuls run over all heads at once with (H, P) flattened to E; only the intra-chunk
    # product is per head.
    e = nh * p
    a = a.view(bt, k, q, nh).transpose(-1, -2)  # (Bt, K, H, Q)
    xdt = xdt.view(bt, k, q, nh, p)
    bm, cm = bm.view(bt, k, q, n), cm.view(bt, k, q, n)
    acs = a.cumsum(-1)  # (Bt, K, H, Q): log-decay from the chunk's start through position i
    decay = segsum(a).exp()  # (Bt, K, H, Q, Q)
    cb = torch.matmul(cm, bm.transpose(-1, -2)).unsqueeze(2)  # C Bᵀ: (Bt, K, 1, Q, Q)
    # each chunk's end state from a zero start: Σ_j L[Q-1, j] (Δx)_j B_jᵀ, all heads at once
    w = decay[..., -1, :].transpose(-1, -2).unsqueeze(-1)  # (Bt, K, Q, H, 1)
    states = torch.matmul((xdt * w).view(bt, k, q, e).transpose(-1, -2), bm)  # (Bt, K, E, N)
    # carry the state across chunks
    chunk_decay = acs[..., -1].exp()[..., None, None]  # (Bt, K, H, 1, 1)
    h = x.new_zeros(bt, nh, p, n) if h0 is None else h0
    states = states.view(bt, k, nh, p, n)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (states, chunk_decay, h)):
        starts = []
        for c in range(k):
            starts.append(h)
            h = torch.addcmul(states[:, c], chunk_decay[:, c], h)
        start = torch.stack(starts, 1)  # (Bt, K, H, P, N)
    else:  # the same recurrence written into one buffer (no autograd: inference)
        start = x.new_empty(bt, k, nh, p, n)
        start[:, 0] = h
        for c in range(k - 1):
            torch.addcmul(states[:, c], chunk_decay[:, c], start[:, c], out=start[:, c + 1])
        h = torch.addcmul(states[:, k - 1], chunk_decay[:, k - 1], start[:, k - 1])
    # the state entering each chunk read out at every position, exp(acs_i) C_i · start, plus the
    # intra-chunk part (L ∘ C Bᵀ) (Δ x), per head, in one matmul-add
    c_dec = cm.unsqueeze(2) * acs.exp().unsqueeze(-1)  # (Bt, K, H, Q, N)
    y_off = torch.matmul(c_dec, start.transpose(-1, -2))  # (Bt, K, H, Q, P)
    xdt_h = xdt.transpose(2, 3).reshape(-1, q, p)  # (Bt*K*H, Q, P)
    y = torch.baddbmm(y_off.view(-1, q, p), (decay * cb).view(-1, q, q), xdt_h)
    y = y.view(bt, k, nh, q, p).transpose(2, 3).reshape(bt, k * q, nh, p)[:, :length]
    return y, h


@overload
def ssd_scan_ref(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = ..., h0: Tensor | None = ...,
    return_last_state: Literal[False] = ...,
) -> Tensor: ...
@overload
def ssd_scan_ref(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = ..., h0: Tensor | None = ...,
    *, return_last_state: Literal[True],
) -> tuple[Tensor, Tensor]: ...
def ssd_scan_ref(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    h0: Tensor | None = None,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Sequential reference of :func:`ssd_scan` (one step per position; for tests)."""
    bt, length, nh, p = x.shape
    rate = _decay_rate(A, bt)[:, 0]  # (Bt or 1, H)
    h = x.new_zeros(bt, nh, p, B.shape[-1]) if h0 is None else h0
    ys = []
    for t in range(length):
        da = torch.exp(dt[:, t] * rate)[..., None, None]  # (Bt, H, 1, 1)
        inp = (dt[:, t, :, None] * x[:, t]).unsqueeze(-1) * B[:, t, None, None, :]  # (Bt, H, P, N)
        h = da * h + inp
        ys.append((h * C[:, t, None, None, :]).sum(-1))  # (Bt, H, P)
    y = torch.stack(ys, 1)
    if D is not None:
        y = y + x * D[:, None]
    return (y, h) if return_last_state else y


def ssd_scan_traceable(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    """The SSD scan as one :func:`~..layer_config.traceable_scan` step per position (the
    exportable layers: ``torch.export`` / ONNX with dynamic batch and length). x: (..., L, H, P);
    dt: (..., L, H); A: (..., H) broadcasting against the leading dims; B, C: (..., L, N) →
    y (..., L, H, P), zero initial state, no D skip."""
    from ..layer_config import traceable_scan

    def step(carry: tuple[Tensor, Tensor], xs: tuple[Tensor, Tensor, Tensor, Tensor]
             ) -> tuple[tuple[Tensor, Tensor], Tensor]:
        h, a = carry  # A rides in the carry (a closure would get fresh sizes when traced)
        d, xd, b, c = xs  # (..., H), (..., H, P), (..., N), (..., N)
        h = torch.exp(d * a)[..., None, None] * h + xd.unsqueeze(-1) * b[..., None, None, :]  # (..., H, P, N)
        return (h, a.clone()), (h * c[..., None, None, :]).sum(-1)

    lead = x.shape[:-3]
    h0 = x.new_zeros(*lead, x.shape[-2], x.shape[-1], B.shape[-1])
    xd = x * dt.unsqueeze(-1)
    dim = x.dim() - 3
    _, y = traceable_scan(step, (h0, A), (dt, xd, B, C), dim=dim)  # y: (L, ..., H, P)
    return y.movedim(0, dim)


def ssd_scan_fused(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, dt_bias: Tensor, chunk_size: int
) -> Tensor:
    """``mamba_ssm``'s Triton SSD kernel (``mamba_chunk_scan_combined``) on the layout of
    :func:`ssd_scan`; ``dt`` is pre-activation (bias and softplus are applied in the kernel)."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except ImportError as err:
        raise ImportError(
            "impl='fused' needs the Triton kernels of mamba-ssm: pip install mamba-ssm "
            "(on a CUDA machine), or use impl='torch'"
        ) from err
    if not x.is_cuda:
        raise RuntimeError("impl='fused' runs only on CUDA tensors; use impl='torch' on CPU")
    return mamba_chunk_scan_combined(
        x.contiguous(), dt.contiguous(), A, B.unsqueeze(2).contiguous(), C.unsqueeze(2).contiguous(), chunk_size,
        D=D, dt_bias=dt_bias, dt_softplus=True,
    )
