"""Mamba (S6 selective state-space) backbone, uni- or bidirectional.

Each block is pre-norm residual: ``x + drop_path(mixer(norm(x)))``. The mixer projects to a
stream and a gate, runs a depthwise causal conv, SiLU, an input-dependent (Δ, B, C) selective
scan with a D skip, gates with SiLU(z) and projects back.

Bidirectional blocks (Vision-Mamba style) share the input and output projections; each
direction has its own conv, x/dt projections, A and D (counted in the parameter budget). The
backward direction scans each row reversed *within its valid length*, and the two directions'
SSM outputs are **averaged** before the gate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
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
    selective_scan,
    selective_scan_fused,
    selective_scan_ref,
    selective_scan_traceable,
    stream_backbone,
)
from .base import Backbone, BackboneConfig, Direction, preset_row

__all__ = [
    "MambaBlock",
    "MambaConfig",
    "build_mamba",
    "preset_fields",
    "selective_scan",
    "selective_scan_ref",
    "stream_backbone",
]

Impl = Literal["torch", "fused", "auto"]


@dataclass
class MambaConfig(BackboneConfig):
    """d_state: SSM state size per channel. expand: inner width / dim. d_conv: causal conv width.
    dt_rank: rank of the Δ projection ("auto" = ceil(dim / 16)). dt_min, dt_max: range of the
    initial Δ (log-uniform). direction: "forward", "bidirectional" (both directions, averaged) or
    "alternating" (even blocks forward, odd blocks reversed). impl: "torch" (chunked PyTorch scan),
    "fused" (mamba-ssm CUDA kernel; error if unavailable) or "auto" (fused when possible).
    chunk_size: positions per scan chunk (None = automatic). recompute: in training, recompute the
    mixer's inner activations (conv, projections, scan inputs) in backward instead of storing them
    (several times less activation memory for roughly a fifth more training time)."""

    d_state: PositiveInt = 16
    expand: PositiveFloat = 2.0
    d_conv: PositiveInt = 4
    dt_rank: PositiveInt | Literal["auto"] = "auto"
    dt_min: PositiveFloat = 0.001
    dt_max: PositiveFloat = 0.1
    direction: Direction = "bidirectional"
    impl: Impl = "torch"
    chunk_size: PositiveInt | None = None
    recompute: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.direction not in ("forward", "bidirectional", "alternating"):
            raise ValueError(f"unknown direction {self.direction!r}")
        if self.impl not in ("torch", "fused", "auto"):
            raise ValueError(f"unknown impl {self.impl!r}")

    @property
    def d_inner(self) -> int:
        return int(self.expand * self.dim)

    @property
    def rank(self) -> int:
        return math.ceil(self.dim / 16) if self.dt_rank == "auto" else int(self.dt_rank)


class SSMParams(nn.Module):
    """The direction-specific parameters of a Mamba mixer, stacked over ``ndir`` directions:
    causal conv, x projection (→ Δ rank, B, C), Δ projection, A (as A_log) and the D skip."""

    def __init__(self, cfg: MambaConfig, ndir: int) -> None:
        super().__init__()
        e, n, r = cfg.d_inner, cfg.d_state, cfg.rank
        self.d_state, self.rank = n, r
        bound = 1.0 / math.sqrt(cfg.d_conv)
        self.conv_weight = nn.Parameter(torch.empty(ndir, e, cfg.d_conv).uniform_(-bound, bound))
        self.conv_bias = nn.Parameter(torch.empty(ndir, e).uniform_(-bound, bound))
        self.x_proj = nn.Parameter(torch.empty(ndir, e, r + 2 * n).uniform_(-(e**-0.5), e**-0.5))
        # Δ init as in Mamba: weight ~ U(±rank^-0.5), softplus(bias) log-uniform in [dt_min, dt_max].
        self.dt_proj = nn.Parameter(torch.empty(ndir, r, e).uniform_(-(r**-0.5), r**-0.5))
        log_lo, log_hi = math.log(cfg.dt_min), math.log(cfg.dt_max)
        dt = torch.exp(torch.rand(ndir, e) * (log_hi - log_lo) + log_lo).clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        # S4D-real init: A = -(1..n) for every channel.
        a = torch.arange(1, n + 1, dtype=torch.float32)
        self.A_log = nn.Parameter(torch.log(a).repeat(ndir, e, 1))  # (ndir, E, n)
        self.D = nn.Parameter(torch.ones(ndir, e))

    def features(self, xs: Tensor, conv_state: Tensor | None = None) -> tuple[Tensor, ...]:
        """xs: (ndir, B, L, E) pre-conv streams -> u, dt (pre-softplus, no bias), B, C (each
        (ndir, B, L, ·)) and the new conv state."""
        nd, b, length, e = xs.shape
        u, conv_state = causal_conv(xs, self.conv_weight[:, None], self.conv_bias[:, None], conv_state)
        u = F.silu(u).view(nd, b * length, e)
        dt, bm, cm = torch.bmm(u, self.x_proj).split([self.rank, self.d_state, self.d_state], dim=-1)
        dt = torch.bmm(dt, self.dt_proj)  # (ndir, B*L, E)
        shape = (nd, b, length, -1)
        return u.view(shape), dt.view(shape), bm.view(shape), cm.view(shape), conv_state

    @property
    def A(self) -> Tensor:
        return -torch.exp(self.A_log)  # (ndir, E, n)


def _use_fused(impl: str, x: Tensor) -> bool:
    if impl == "torch":
        return False
    if impl == "fused":
        return True  # selective_scan_fused raises a clear error when it cannot run
    return x.is_cuda and fused_available("mamba_ssm")


class MambaMixer(nn.Module):
    """in_proj -> per direction (conv, SiLU, selective scan) -> average -> SiLU(z) gate -> out_proj."""

    def __init__(self, cfg: MambaConfig, bidirectional: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.ndir = 2 if bidirectional else 1
        self.exportable = is_exportable()  # the traceable scan (no work buffers, scan op)
        self.in_proj = nn.Linear(cfg.dim, 2 * cfg.d_inner, bias=False)
        self.ssm = SSMParams(cfg, self.ndir)
        self.out_proj = nn.Linear(cfg.d_inner, cfg.dim, bias=False)

    def forward(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        # x: (B, N, D); padded tokens are zero and come after every real token of their row.
        xs, z = self.in_proj(x).chunk(2, dim=-1)  # (B, N, E) each
        if self.cfg.recompute and self.training and torch.is_grad_enabled():
            y = checkpoint(self._ssm, xs, pad_mask, use_reentrant=False)
        else:
            y = self._ssm(xs, pad_mask)
        return self.out_proj(y * F.silu(z))

    def _ssm(self, xs: Tensor, pad_mask: Tensor | None) -> Tensor:
        """xs: (B, N, E) stream -> SSM output (B, N, E), directions averaged."""
        b, length, _ = xs.shape
        if self.ndir == 2:
            xs = torch.stack([xs, reverse_within_length(xs, pad_mask)])
        else:
            xs = xs.unsqueeze(0)
        u, dt, bm, cm, _ = self.ssm.features(xs)  # (ndir, B, N, ·)
        ssm = self.ssm
        if self.exportable:  # (ndir, B, N, ·) scanned over N; A: (ndir, 1, E, n)
            delta = F.softplus(dt + ssm.dt_bias[:, None, None])
            y = selective_scan_traceable(u, delta, ssm.A[:, None], bm, cm)
            y = torch.addcmul(y, u, ssm.D[:, None, None])
        elif _use_fused(self.cfg.impl, xs):
            y = torch.stack([
                selective_scan_fused(
                    u[i], dt[i], ssm.A[i].float(), bm[i], cm[i], ssm.D[i].float(),
                    delta_bias=ssm.dt_bias[i].float(), delta_softplus=True,
                ).to(xs.dtype)
                for i in range(self.ndir)
            ])
        else:
            # All directions in one scan call, stacked on the batch axis.
            delta = F.softplus(dt + ssm.dt_bias[:, None, None])
            a = ssm.A.repeat_interleave(b, 0)  # (ndir*B, E, n)
            flat = (self.ndir * b, length, -1)
            y = selective_scan(
                u.reshape(flat), delta.reshape(flat), a, bm.reshape(flat), cm.reshape(flat),
                chunk_size=self.cfg.chunk_size,
            ).view(u.shape)
            y = torch.addcmul(y, u, ssm.D[:, None, None])
        return y[0] if self.ndir == 1 else 0.5 * (y[0] + reverse_within_length(y[1], pad_mask))

    def step(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Forward-direction mixer on a chunk of consecutive tokens x: (B, l, D) with
        state (conv state (B, d_conv-1, E), SSM state (B, E, n)). Always the PyTorch scan."""
        ssm = self.ssm
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        u, dt, bm, cm, conv_state = ssm.features(xs.unsqueeze(0), state[0].unsqueeze(0))
        delta = F.softplus(dt[0] + ssm.dt_bias[0])
        y, h = selective_scan(u[0], delta, ssm.A[0], bm[0], cm[0], ssm.D[0], h0=state[1], return_last_state=True)
        return self.out_proj(y * F.silu(z)), (conv_state[0], h)


class MambaBlock(RecurrentBlock):
    """Pre-norm residual Mamba block; ``reverse`` scans the sequence backwards (alternating)."""

    kind = "Mamba"
    mixer_cls = MambaMixer
    mixer: MambaMixer
    cfg: MambaConfig

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Zero streaming state: (conv state (B, d_conv-1, E), SSM state (B, E, n))."""
        self._check_streamable()
        e = self.cfg.d_inner
        return (
            torch.zeros(batch, self.cfg.d_conv - 1, e, device=device, dtype=dtype),
            torch.zeros(batch, e, self.cfg.d_state, device=device, dtype=dtype),
        )


@register_backbone("mamba", MambaConfig)
def build_mamba(cfg: MambaConfig) -> Backbone:
    blocks = recurrent_blocks(cfg, MambaBlock)
    for block in blocks:
        # Mamba's pre-norm residual rescaling of the output projection.
        with torch.no_grad():
            block.mixer.out_proj.weight /= math.sqrt(cfg.depth)
    return Backbone(cfg, blocks)


@dataclass(frozen=True)
class MambaPreset:
    """One size of the Mamba encoder (width from :data:`~.base.SIZE_DIMS`): depth and expand
    chosen to match the Transformer of the same size in parameters."""

    depth: int
    expand: float


# "forward" rows also serve "alternating" (the same blocks, every other one reversed).
PRESETS: dict[str, dict[str, MambaPreset]] = {
    "bidirectional": {
        "debug": MambaPreset(depth=2, expand=2.5),
        "tiny": MambaPreset(depth=19, expand=2.0),
        "small": MambaPreset(depth=20, expand=2.0),
        "base": MambaPreset(depth=21, expand=2.0),
    },
    "forward": {
        "debug": MambaPreset(depth=2, expand=3.0),
        "tiny": MambaPreset(depth=21, expand=2.0),
        "small": MambaPreset(depth=22, expand=2.0),
        "base": MambaPreset(depth=23, expand=2.0),
    },
}


def preset_fields(size: str, direction: Direction = "bidirectional") -> dict[str, object]:
    """Backbone fields for ``size`` in debug/tiny/small/base whose parameter count matches the
    Transformer of the same size within 10%."""
    table = PRESETS["bidirectional" if direction == "bidirectional" else "forward"]
    return {**preset_row(table, size), "direction": direction}
