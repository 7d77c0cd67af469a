"""The sequence-backbone interface every encoder backbone implements.

A backbone maps tokens ``x: (B, N, D)`` to ``(B, N, D)``. Tokens arrive in the encoder's
explicit order (time-major over patches: all frequency patches of time step 0, then of time
step 1, ...), so recurrent backbones scan along time. ``pad_mask: (B, N)`` is True at padding;
padding is always *right-aligned* (every padded token comes after every real token of its row),
which lets recurrent backbones reverse each row within its valid length.

A backbone is a stack of residual blocks in ``self.blocks`` so that the encoder can return
intermediate layers, freeze the first N blocks, or checkpoint activations uniformly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ...config import PositiveInt, Rate, check_ranges

Direction = Literal["forward", "bidirectional", "alternating"]


@dataclass
class BackboneConfig:
    """Fields common to every backbone; each backbone subclasses this with its own fields.

    dim: token width. depth: number of residual blocks. dropout: dropout on residual branches.
    drop_path: stochastic-depth rate of the last block (linearly increasing from 0).
    """

    dim: PositiveInt = 192
    depth: PositiveInt = 12
    dropout: Rate = 0.0
    drop_path: Rate = 0.0

    def __post_init__(self) -> None:
        check_ranges(self)  # every field of the subclass too


#: Token width of each model size. Every backbone's preset of a size has this width (its
#: preset table sets the rest, matching the Transformer's parameter count), so the encoders of
#: one size are interchangeable behind the same patch embedding, decoder and heads.
SIZE_DIMS: dict[str, int] = {"debug": 64, "tiny": 192, "small": 384, "base": 768}


def preset_row(table: Mapping[str, Any], size: str) -> dict[str, Any]:
    """The config fields of ``size`` from a ``{size: dataclass row}`` preset table, with the
    size's width (:data:`SIZE_DIMS`) as ``dim``."""
    if size not in table:
        raise KeyError(f"unknown size {size!r}; available: {', '.join(table)}")
    return {"dim": SIZE_DIMS[size], **asdict(table[size])}


class DropPath(nn.Module):
    """Stochastic depth on a residual branch: drops whole samples with probability ``p``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep


def zero_padding(x: Tensor, pad_mask: Tensor | None) -> Tensor:
    """Zero the padded tokens of ``x: (B, N, D)`` so they cannot leak into recurrent states."""
    if pad_mask is None:
        return x
    return x.masked_fill(pad_mask.unsqueeze(-1), 0.0)


class Backbone(nn.Module):
    """A stack of residual blocks, each ``block(x, pad_mask) -> x`` on ``(B, N, D)``."""

    config: BackboneConfig

    def __init__(self, config: BackboneConfig, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.config = config
        self.dim = config.dim
        self.blocks = nn.ModuleList(blocks)
        self.grad_checkpointing = False

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def forward(
        self,
        x: Tensor,
        pad_mask: Tensor | None = None,
        return_layers: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Run all blocks. With ``return_layers`` also return every block's output."""
        layers: list[Tensor] = []
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, pad_mask, use_reentrant=False)
            else:
                x = block(x, pad_mask)
            if return_layers:
                layers.append(x)
        return (x, layers) if return_layers else x


def drop_path_rates(cfg: BackboneConfig) -> list[float]:
    """Per-block stochastic-depth rates, rising linearly from 0 to ``cfg.drop_path``."""
    if cfg.depth <= 1:
        return [cfg.drop_path] * cfg.depth
    return [cfg.drop_path * i / (cfg.depth - 1) for i in range(cfg.depth)]
