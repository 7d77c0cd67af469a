"""Masked spectrogram modelling (MSM): encode visible patches, reconstruct the hidden ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

import torch
from torch import Tensor, nn

from ..config import PositiveFloat, PositiveInt, Range, check_ranges
from .backbones import build_backbone
from .encoder import AudioEncoder, EncoderConfig
from .masking import MASK_MODES, make_mask, masked_indices, visible_indices
from .patch import sincos_2d


@dataclass
class ModelConfig:
    """A whole MSM model. name: registry name it was created from. encoder: the part that is
    kept. decoder_*: the light Transformer decoder. mask_ratio / mask_mode: see
    :func:`~audiofm.models.masking.make_mask`. encoder_input: 'visible' (MAE: the encoder sees
    visible tokens only) or 'all' (SSAST: every token, masked ones replaced by a learned mask
    token). norm_targets: reconstruct per-patch normalised targets. segment_seconds: training crop
    length, also the default chunk length when embedding long audio."""

    name: str = "custom"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder_dim: PositiveInt = 128
    decoder_depth: PositiveInt = 2
    decoder_heads: PositiveInt = 4
    mask_ratio: Annotated[float, Range(gt=0, lt=1)] = 0.75
    mask_mode: str = "random"
    encoder_input: str = "visible"
    norm_targets: bool = True
    segment_seconds: PositiveFloat = 4.0

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {self.mask_mode!r}")
        if self.encoder_input not in ("visible", "all"):
            raise ValueError(f"encoder_input must be 'visible' or 'all', got {self.encoder_input!r}")

    @property
    def segment_samples(self) -> int:
        return round(self.segment_seconds * self.encoder.frontend.sample_rate)


class MSMModel(nn.Module):
    """Encoder + decoder; ``forward(wave, mask)`` returns the masked-patch MSE loss and extras."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = AudioEncoder(cfg.encoder)
        D, Dd = cfg.encoder.dim, cfg.decoder_dim
        P = cfg.encoder.patch_f * cfg.encoder.patch_t
        visible = cfg.encoder_input == "visible"
        # MAE: the decoder fills hidden positions with a mask token; SSAST: the encoder does
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd)) if visible else None
        self.enc_mask_token = None if visible else nn.Parameter(torch.zeros(1, 1, D))
        self.decoder_embed = nn.Linear(D, Dd)
        self.decoder = build_backbone("transformer", dim=Dd, depth=cfg.decoder_depth, heads=cfg.decoder_heads)
        self.decoder_norm = nn.LayerNorm(Dd)
        self.decoder_pred = nn.Linear(Dd, P)
        self._init_weights()

    def _init_weights(self) -> None:
        # backbones initialise their own blocks; here only the parts this class owns
        if self.mask_token is not None:
            nn.init.normal_(self.mask_token, std=0.02)
        if self.enc_mask_token is not None:
            nn.init.normal_(self.enc_mask_token, std=0.02)
        for lin in (self.encoder.patch_embed, self.decoder_embed, self.decoder_pred):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def grid(self, num_samples: int) -> tuple[int, int]:
        """(Fp, Tp) for a waveform of ``num_samples`` samples."""
        fe = self.cfg.encoder.frontend
        return self.cfg.encoder.freq_patches, -(-fe.num_frames(num_samples) // self.cfg.encoder.patch_t)

    def sample_mask(self, batch: int, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        Fp, Tp = self.grid(num_samples)
        return make_mask(batch, Fp, Tp, self.cfg.mask_ratio, self.cfg.mask_mode, generator)

    def forward(self, wave: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """``wave: (B, S)`` fixed-length crops; ``mask: (B, N)`` True = hidden."""
        enc = self.encoder
        tok = enc.tokenize(wave)
        patches, Fp, Tp = tok.patches, tok.Fp, tok.Tp
        mask = mask.to(patches.device)
        B, N, P = patches.shape
        x = enc.embed_tokens(patches, Fp, Tp)  # (B, N, D)
        vis = visible_indices(mask)  # (B, Nv), ascending: token order kept
        if self.mask_token is not None:
            x_vis = torch.gather(x, 1, vis[..., None].expand(-1, -1, x.shape[-1]))
            h = enc.forward_tokens(x_vis)  # (B, Nv, D)
            hd = self.decoder_embed(h)
            full = self.mask_token.to(hd.dtype).expand(B, N, -1).clone()
            full.scatter_(1, vis[..., None].expand(-1, -1, hd.shape[-1]), hd)
        else:
            assert self.enc_mask_token is not None
            pos = sincos_2d(Fp, Tp, enc.dim).to(x)
            x = torch.where(mask[..., None], self.enc_mask_token.to(x.dtype) + pos, x)
            full = self.decoder_embed(enc.forward_tokens(x))
        full = full + sincos_2d(Fp, Tp, full.shape[-1]).to(full)
        out = self.decoder(full)
        assert isinstance(out, Tensor)
        pred = self.decoder_pred(self.decoder_norm(out))  # (B, N, P)
        target = patches
        if self.cfg.norm_targets:
            mu = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mu) / (var + 1e-6).sqrt()
        hid = masked_indices(mask)
        pred_m = torch.gather(pred, 1, hid[..., None].expand(-1, -1, P)).float()
        targ_m = torch.gather(target, 1, hid[..., None].expand(-1, -1, P)).float()
        loss = (pred_m - targ_m).square().mean()
        return {"loss": loss, "pred": pred, "target": target}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(cfg: ModelConfig) -> dict[str, Any]:
    return {"name": cfg.name, "backbone": cfg.encoder.backbone, "dim": cfg.encoder.dim,
            "patch": f"{cfg.encoder.patch_f}x{cfg.encoder.patch_t}"}
