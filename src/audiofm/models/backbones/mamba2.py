"""Mamba-2 (SSD: scalar decay per head, chunked matmul scan) backbone, uni- or bidirectional.

Each block is pre-norm residual: ``x + drop_path(mixer(norm(x)))``. The mixer follows the
reference Mamba-2 block (Dao & Gu 2024): one input projection to ``(z, x, B, C, Δ)``, a depthwise
causal conv + SiLU over ``(x, B, C)``, the SSD scan with ``H = d_inner / headdim`` heads of
dimension ``headdim``, a scalar decay ``exp(Δ_t A_h)`` per head and step, state size
``d_state`` with B, C shared by the heads (one group), a D skip per head, then
``RMSNorm(y · SiLU(z))`` and the output projection.

Bidirectional blocks (as in :mod:`.mamba`) share the projection of the stream x and the gate z
and the output projection; each direction has its own B, C, Δ projections, conv, A, Δ bias and
D (counted in the parameter budget). The backward direction scans each row reversed *within its
valid length*, and the two directions' SSM outputs are **averaged** before the gated norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ...config import PositiveFloat, PositiveInt, Range
from ..layer_config import is_exportable
from . import register_backbone
from ._scan import RecurrentBlock, causal_conv, fused_available, recurrent_blocks, reverse_within_length
from ._ssd import ssd_scan, ssd_scan_fused, ssd_scan_ref, ssd_scan_traceable
from .base import Backbone, BackboneConfig, Direction, preset_row

__all__ = ["Mamba2Block", "Mamba2Config", "build_mamba2", "preset_fields", "ssd_scan", "ssd_scan_ref"]

Impl = Literal["torch", "fused", "auto"]


@dataclass
class Mamba2Config(BackboneConfig):
    """d_state: SSM state size N (shared by the heads). expand: inner width / dim. headdim: head
    dimension P (heads = expand·dim / headdim, which must be a whole number). d_conv: causal conv
    width. dt_min, dt_max: range of the initial Δ (log-uniform). a_min, a_max: range of the
    initial -A per head (uniform). direction: "forward", "bidirectional" (both directions,
    averaged) or "alternating" (even blocks forward, odd blocks reversed). impl: "torch" (chunked
    PyTorch SSD scan), "fused" (mamba-ssm Triton kernel; error if unavailable) or "auto" (fused
    when possible). chunk_size: positions per SSD chunk (the matmul tile; 32 was the fastest on
CPU of 16-128, benchmarks/bench_mamba2.py). recompute: in
    training, recompute the mixer's conv and scan in backward instead of storing them."""

    d_state: PositiveInt = 64
    expand: PositiveFloat = 2.0
    headdim: PositiveInt = 64
    d_conv: PositiveInt = 4
    dt_min: PositiveFloat = 0.001
    dt_max: PositiveFloat = 0.1
    a_min: Annotated[float, Range(ge=1.0)] = 1.0
    a_max: Annotated[float, Range(ge=1.0)] = 16.0
    direction: Direction = "bidirectional"
    impl: Impl = "torch"
    chunk_size: PositiveInt = 32
    recompute: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.direction not in ("forward", "bidirectional", "alternating"):
            raise ValueError(f"unknown direction {self.direction!r}")
        if self.impl not in ("torch", "fused", "auto"):
            raise ValueError(f"unknown impl {self.impl!r}")
        inner = self.expand * self.dim
        if inner != int(inner):
            raise ValueError(f"expand·dim = {self.expand}·{self.dim} = {inner:g} is not a whole number of channels")
        if int(inner) % self.headdim:
            divisors = [p for p in (16, 32, 48, 64, 96, 128) if int(inner) % p == 0]
            raise ValueError(
                f"headdim={self.headdim} does not divide the inner width expand·dim = {int(inner)}; "
                f"choose a divisor (e.g. {', '.join(map(str, divisors)) or 'another expand'})"
            )
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min={self.dt_min} is larger than dt_max={self.dt_max}")
        if self.a_min > self.a_max:
            raise ValueError(f"a_min={self.a_min} is larger than a_max={self.a_max}")

    @property
    def d_inner(self) -> int:
        return int(self.expand * self.dim)

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim


def _use_fused(impl: str, x: Tensor) -> bool:
    if impl == "torch":
        return False
    if impl == "fused":
        return True  # ssd_scan_fused raises a clear error when it cannot run
    return x.is_cuda and fused_available("mamba_ssm")


class Mamba2Mixer(nn.Module):
    """in_proj → (z, x, per direction B, C, Δ) → per direction (conv, SiLU, SSD scan, D skip) →
    average → RMSNorm(y · SiLU(z)) → out_proj."""

    def __init__(self, cfg: Mamba2Config, bidirectional: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.ndir = nd = 2 if bidirectional else 1
        self.exportable = is_exportable()  # the traceable per-position scan
        e, n, h = cfg.d_inner, cfg.d_state, cfg.nheads
        self.conv_dim = e + 2 * n
        # [z, x, (B, C, Δ) of each direction]; with one direction, the reference block's order.
        self.in_proj = nn.Linear(cfg.dim, 2 * e + nd * (2 * n + h), bias=False)
        bound = 1.0 / math.sqrt(cfg.d_conv)
        self.conv_weight = nn.Parameter(torch.empty(nd, self.conv_dim, cfg.d_conv).uniform_(-bound, bound))
        self.conv_bias = nn.Parameter(torch.empty(nd, self.conv_dim).uniform_(-bound, bound))
        # Δ bias: softplus(dt_bias) log-uniform in [dt_min, dt_max]; -A uniform in [a_min, a_max].
        log_lo, log_hi = math.log(cfg.dt_min), math.log(cfg.dt_max)
        dt = torch.exp(torch.rand(nd, h) * (log_hi - log_lo) + log_lo).clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_log = nn.Parameter(torch.log(torch.empty(nd, h).uniform_(cfg.a_min, cfg.a_max)))
        self.D = nn.Parameter(torch.ones(nd, h))
        self.norm = nn.RMSNorm(e, eps=1e-5)
        self.out_proj = nn.Linear(e, cfg.dim, bias=False)

    @property
    def A(self) -> Tensor:
        return -torch.exp(self.A_log)  # (ndir, H)

    def _split(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(B, L, D) → the gate z (B, L, E) and the SSM inputs: one direction: the pre-conv
        stream (x, B, C) (B, L, E+2N) and Δ (B, L, H); two: x (B, L, E) and each direction's
        (B, C, Δ) (B, L, 2N+H). Columns follow the in_proj rows, so these are views, no copies."""
        e, n, h = self.cfg.d_inner, self.cfg.d_state, self.cfg.nheads
        sizes = [e, e + 2 * n, h] if self.ndir == 1 else [e, e, 2 * n + h, 2 * n + h]
        z, *parts = self.in_proj(x).split(sizes, dim=-1)
        return z, parts

    def forward(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        # x: (B, N, D); padded tokens are zero and come after every real token of their row.
        z, parts = self._split(x)
        if self.cfg.recompute and self.training and torch.is_grad_enabled():
            y = checkpoint(self._ssm, pad_mask, *parts, use_reentrant=False)
        else:
            y = self._ssm(pad_mask, *parts)
        return self.out_proj(self.norm(y * F.silu(z)))

    def _ssm(self, pad_mask: Tensor | None, *parts: Tensor) -> Tensor:
        """The SSM inputs of :meth:`_split` → SSM output (B, N, E), directions averaged."""
        if self.ndir == 1:
            xbc, dt = parts
            return self._scan(xbc.unsqueeze(0), dt.unsqueeze(0))[0][0]
        n = self.cfg.d_state
        xs, fwd, bwd = parts
        streams = torch.stack([
            torch.cat([xs, fwd[..., : 2 * n]], -1),
            reverse_within_length(torch.cat([xs, bwd[..., : 2 * n]], -1), pad_mask),
        ])
        dts = torch.stack([fwd[..., 2 * n :], reverse_within_length(bwd[..., 2 * n :], pad_mask)])
        y = self._scan(streams, dts)[0]  # (2, B, N, E)
        return 0.5 * (y[0] + reverse_within_length(y[1], pad_mask))

    def _scan(
        self, xbc: Tensor, dt_raw: Tensor, conv_state: Tensor | None = None, h0: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """xbc: (ndir, B, L, E+2N) pre-conv streams, dt_raw: (ndir, B, L, H) pre-activation Δ →
        y (ndir, B, L, E) with the D skip, the new conv state and (with ``h0``: (B, H, P, N),
        one direction) the last SSM state."""
        cfg, nd = self.cfg, self.ndir
        _, b, length, _ = xbc.shape
        e, n, h, p = cfg.d_inner, cfg.d_state, cfg.nheads, cfg.headdim
        u, conv_state = causal_conv(xbc, self.conv_weight[:, None], self.conv_bias[:, None], conv_state)
        xs, bm, cm = F.silu(u).split([e, n, n], dim=-1)
        xs = xs.reshape(nd, b, length, h, p)
        if self.exportable and h0 is None:  # (ndir, B, L, ·) scanned over L; A: (ndir, 1, H)
            dt = F.softplus(dt_raw + self.dt_bias[:, None, None])
            y = ssd_scan_traceable(xs, dt, self.A[:, None], bm, cm)
            y = torch.addcmul(y, xs, self.D[:, None, None, :, None])
            h_last = None
        elif h0 is None and _use_fused(cfg.impl, xbc):
            y = torch.stack([
                ssd_scan_fused(xs[i], dt_raw[i], self.A[i].float(), bm[i], cm[i], self.D[i].float(),
                               self.dt_bias[i].float(), cfg.chunk_size).to(xs.dtype)
                for i in range(nd)
            ])
            h_last = None
        else:
            # All directions in one scan call, stacked on the batch axis.
            dt = F.softplus(dt_raw + self.dt_bias[:, None, None])  # (ndir, B, L, H)
            a = self.A.repeat_interleave(b, 0)  # (ndir*B, H)
            y, h_last = ssd_scan(
                xs.flatten(0, 1), dt.flatten(0, 1), a, bm.flatten(0, 1), cm.flatten(0, 1),
                h0=h0, return_last_state=True, chunk_size=cfg.chunk_size,
            )
            y = torch.addcmul(y.view(xs.shape), xs, self.D[:, None, None, :, None])
        return y.reshape(nd, b, length, e), conv_state, h_last

    def step(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Forward-direction mixer on a chunk of consecutive tokens x: (B, l, D) with state
        (conv state (B, d_conv-1, E+2N), SSM state (B, H, P, N)). Always the PyTorch scan."""
        z, (xbc, dt) = self._split(x)
        y, conv_state, h = self._scan(xbc.unsqueeze(0), dt.unsqueeze(0), state[0].unsqueeze(0), state[1])
        assert h is not None
        return self.out_proj(self.norm(y[0] * F.silu(z))), (conv_state[0], h)


class Mamba2Block(RecurrentBlock):
    """Pre-norm residual Mamba-2 block; ``reverse`` scans the sequence backwards (alternating)."""

    kind = "Mamba-2"
    mixer_cls = Mamba2Mixer
    mixer: Mamba2Mixer
    cfg: Mamba2Config

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Zero streaming state: (conv state (B, d_conv-1, E+2N), SSM state (B, H, P, N))."""
        self._check_streamable()
        cfg = self.cfg
        return (
            torch.zeros(batch, cfg.d_conv - 1, self.mixer.conv_dim, device=device, dtype=dtype),
            torch.zeros(batch, cfg.nheads, cfg.headdim, cfg.d_state, device=device, dtype=dtype),
        )


@register_backbone("mamba2", Mamba2Config)
def build_mamba2(cfg: Mamba2Config) -> Backbone:
    blocks = recurrent_blocks(cfg, Mamba2Block)
    for block in blocks:
        # pre-norm residual rescaling of the output projection (as in Mamba)
        with torch.no_grad():
            block.mixer.out_proj.weight /= math.sqrt(cfg.depth)
    return Backbone(cfg, blocks)


@dataclass(frozen=True)
class Mamba2Preset:
    """One size of the Mamba-2 encoder (width from :data:`~.base.SIZE_DIMS`): depth, expand,
    state and head sizes chosen to match the Transformer of the same size in parameters."""

    depth: int
    expand: float
    d_state: int
    headdim: int


# "forward" rows also serve "alternating" (the same blocks, every other one reversed).
PRESETS: dict[str, dict[str, Mamba2Preset]] = {
    "bidirectional": {
        "debug": Mamba2Preset(depth=2, expand=3.0, d_state=32, headdim=16),
        "tiny": Mamba2Preset(depth=19, expand=2.0, d_state=64, headdim=64),
        "small": Mamba2Preset(depth=21, expand=2.0, d_state=64, headdim=64),
        "base": Mamba2Preset(depth=22, expand=2.0, d_state=64, headdim=64),
    },
    "forward": {
        "debug": Mamba2Preset(depth=2, expand=3.5, d_state=32, headdim=16),
        "tiny": Mamba2Preset(depth=21, expand=2.0, d_state=64, headdim=64),
        "small": Mamba2Preset(depth=22, expand=2.0, d_state=64, headdim=64),
        "base": Mamba2Preset(depth=23, expand=2.0, d_state=64, headdim=64),
    },
}


def preset_fields(size: str, direction: Direction = "bidirectional") -> dict[str, object]:
    """Backbone fields for ``size`` in debug/tiny/small/base whose parameter count matches the
    Transformer of the same size within 10%."""
    table = PRESETS["bidirectional" if direction == "bidirectional" else "forward"]
    return {**preset_row(table, size), "direction": direction}
