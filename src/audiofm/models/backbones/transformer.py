"""Pre-norm Transformer backbone using ``scaled_dot_product_attention`` with padding masks."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from ...config import PositiveFloat, PositiveInt
from . import register_backbone
from .base import Backbone, BackboneConfig, DropPath, drop_path_rates, preset_row


@dataclass
class TransformerConfig(BackboneConfig):
    """heads: attention heads (dim must divide). mlp_ratio: MLP hidden width / dim.
    qkv_bias: bias on the query/key/value projection."""

    heads: PositiveInt = 3
    mlp_ratio: PositiveFloat = 4.0
    qkv_bias: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: Tensor, pad_mask: Tensor | None) -> Tensor:
        B, N, D = x.shape
        # qkv: (3, B, H, N, D/H)
        qkv = self.qkv(x).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask = None
        if pad_mask is not None:
            # True = may attend; padded keys are excluded. (B, 1, 1, N)
            attn_mask = (~pad_mask)[:, None, None, :]
        y = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.proj(y.transpose(1, 2).reshape(B, N, D))


class TransformerBlock(nn.Module):
    def __init__(self, cfg: TransformerConfig, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.attn = Attention(cfg.dim, cfg.heads, cfg.qkv_bias, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.dim)
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.dim, hidden), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(hidden, cfg.dim)
        )
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), pad_mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


@register_backbone("transformer", TransformerConfig)
def build_transformer(cfg: TransformerConfig) -> Backbone:
    backbone = Backbone(cfg, [TransformerBlock(cfg, p) for p in drop_path_rates(cfg)])
    for m in backbone.modules():  # MAE/ViT initialisation
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return backbone


@dataclass(frozen=True)
class TransformerPreset:
    """One size of the Transformer encoder (width from :data:`~.base.SIZE_DIMS`)."""

    depth: int
    heads: int


PRESETS: dict[str, TransformerPreset] = {
    "debug": TransformerPreset(depth=2, heads=2),
    "tiny": TransformerPreset(depth=12, heads=3),
    "small": TransformerPreset(depth=12, heads=6),
    "base": TransformerPreset(depth=12, heads=12),
}


def preset_fields(size: str) -> dict[str, object]:
    """Backbone fields of the ViT-style encoder of ``size`` in debug/tiny/small/base."""
    return preset_row(PRESETS, size)
