"""Masked spectrogram modelling (MSM): encode visible patches, predict the hidden ones — their
patches (``objective: reconstruct``, MAE / SSAST) or an EMA teacher's latent representation of
them (``objective: latent``, data2vec 2.0 / EAT; :mod:`.latent`)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import torch
from torch import Tensor, nn

from ..config import PositiveFloat, PositiveInt, Range, check_ranges, from_dict
from .backbones import build_backbone
from .encoder import AudioEncoder, EncoderConfig
from .latent import LatentConfig, ema_decay, ema_update, latent_loss, make_targets
from .masking import MASK_MODES, make_mask, masked_indices, visible_indices
from .patch import sincos_2d

OBJECTIVES = ("reconstruct", "latent")
# The prefix of training-only parts of any model (an MSM model's EMA teacher, a dual model's
# cluster head): kept in periodic checkpoints (resume), not in the weights a final checkpoint holds.
TRAINING_PARTS = ("aux.",)


@dataclass
class ModelConfig:
    """A whole MSM model. name: registry name it was created from. encoder: the part that is
    kept. decoder_*: the light Transformer decoder. mask_ratio / mask_mode: see
    :func:`~audiofm.models.masking.make_mask`. encoder_input: 'visible' (MAE: the encoder sees
    visible tokens only) or 'all' (SSAST: every token, masked ones replaced by a learned mask
    token). norm_targets: reconstruct per-patch normalised targets. mask_block: side (in
    patches) of the visible squares of ``mask_mode: block``. objective: 'reconstruct' (the
    decoder predicts the hidden patches) or 'latent' (it predicts an EMA teacher's
    representations of them; settings in ``latent``, :class:`~.latent.LatentConfig`).
    segment_seconds: training crop length, also the default chunk length when embedding long
    audio."""

    name: str = "custom"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder_dim: PositiveInt = 128
    decoder_depth: PositiveInt = 2
    decoder_heads: PositiveInt = 4
    mask_ratio: Annotated[float, Range(gt=0, lt=1)] = 0.75
    mask_mode: str = "random"
    encoder_input: str = "visible"
    norm_targets: bool = True
    mask_block: PositiveInt = 5
    objective: str = "reconstruct"
    latent: LatentConfig = field(default_factory=LatentConfig)
    segment_seconds: PositiveFloat = 4.0

    def __post_init__(self) -> None:
        if isinstance(self.latent, Mapping):  # as read back from a checkpoint's pretraining fields
            self.latent = from_dict(LatentConfig, dict(self.latent), where="latent")
        check_ranges(self)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {self.mask_mode!r}")
        if self.encoder_input not in ("visible", "all"):
            raise ValueError(f"encoder_input must be 'visible' or 'all', got {self.encoder_input!r}")

    @property
    def segment_samples(self) -> int:
        return round(self.segment_seconds * self.encoder.frontend.sample_rate)

    @property
    def num_masks(self) -> int:
        """Masks per clip in a training step (``latent.num_masks`` for the latent objective)."""
        return self.latent.num_masks if self.objective == "latent" else 1


class MSMModel(nn.Module):
    """Encoder + decoder (+ the EMA teacher ``aux.teacher`` for the latent objective);
    ``forward(wave, mask)`` returns the loss on the masked positions and extras."""

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
        self.decoder_pred = nn.Linear(Dd, D if cfg.objective == "latent" else P)
        # latent prediction with latent.pixel_weight > 0 also reconstructs the hidden patches
        self.decoder_pixels = (nn.Linear(Dd, P) if cfg.objective == "latent" and cfg.latent.pixel_weight > 0
                               else None)
        self._init_weights()
        if cfg.objective == "latent":
            # the teacher starts as a copy of the student and never receives gradients; under
            # "aux." it is a training-only part (TRAINING_PARTS): in periodic
            # checkpoints (resume), not in the final weights (export_state)
            self.aux = nn.ModuleDict({"teacher": copy.deepcopy(self.encoder).requires_grad_(False)})
            self.aux.train(False)

    @property
    def teacher(self) -> AudioEncoder | None:
        """The EMA teacher (latent objective), else None."""
        if self.cfg.objective != "latent":
            return None
        t = self.aux["teacher"]
        assert isinstance(t, AudioEncoder)
        return t

    def train(self, mode: bool = True) -> MSMModel:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.train(False)  # no dropout / drop-path in the targets
        return self

    def reset_teacher(self) -> None:
        """Make the teacher a copy of the student encoder (the start of a run)."""
        if self.teacher is not None:
            self.teacher.load_state_dict(self.encoder.state_dict())

    def ema_step(self, update: int, total: int) -> float:
        """Move the teacher towards the student after optimiser step ``update`` (0-based) of
        ``total`` (:func:`~.latent.ema_decay`, :func:`~.latent.ema_update`); returns τ."""
        if self.teacher is None:
            return 1.0
        tau = ema_decay(self.cfg.latent, update, total)
        ema_update(self.teacher, self.encoder, tau)
        return tau

    def export_state(self) -> dict[str, Tensor]:
        """The weights of a final checkpoint: everything but the training-only teacher, with the
        encoder ``latent.keep`` names (the teacher's weights as ``encoder.*`` for 'teacher')."""
        state = {k: v for k, v in self.state_dict().items() if not k.startswith(TRAINING_PARTS)}
        if self.teacher is not None and self.cfg.latent.keep == "teacher":
            state.update({f"encoder.{k}": v for k, v in self.teacher.state_dict().items()})
        return state

    def _init_weights(self) -> None:
        # backbones initialise their own blocks; here only the parts this class owns
        if self.mask_token is not None:
            nn.init.normal_(self.mask_token, std=0.02)
        if self.enc_mask_token is not None:
            nn.init.normal_(self.enc_mask_token, std=0.02)
        for lin in (self.encoder.patch_embed, self.decoder_embed, self.decoder_pred, self.decoder_pixels):
            if lin is None:
                continue
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def grid(self, num_samples: int) -> tuple[int, int]:
        """(Fp, Tp) for a waveform of ``num_samples`` samples."""
        fe = self.cfg.encoder.frontend
        return self.cfg.encoder.freq_patches, -(-fe.num_frames(num_samples) // self.cfg.encoder.patch_t)

    def sample_mask(self, batch: int, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Masks ``(M·batch, N)`` for ``batch`` clips, M = ``cfg.num_masks`` masks per clip, row
        ``m·batch + b`` = mask m of clip b (``view(M, batch, N)`` gives them per mask)."""
        Fp, Tp = self.grid(num_samples)
        return make_mask(self.cfg.num_masks * batch, Fp, Tp, self.cfg.mask_ratio, self.cfg.mask_mode, generator,
                         self.cfg.mask_block)

    def _student(self, x: Tensor, mask: Tensor, Fp: int, Tp: int) -> tuple[Tensor, Tensor]:
        """Embedded tokens ``x (R, N, D)`` and their ``mask (R, N)`` → the decoder's normalised
        output ``(R, N, Dd)`` and the encoder's output at the visible tokens ``(R, Nv, D)``."""
        enc = self.encoder
        R, N = mask.shape
        vis = visible_indices(mask)  # (R, Nv), ascending: token order kept
        if self.mask_token is not None:
            x_vis = torch.gather(x, 1, vis[..., None].expand(-1, -1, x.shape[-1]))
            h = enc.forward_tokens(x_vis)  # (R, Nv, D)
            hd = self.decoder_embed(h)
            full = self.mask_token.to(hd.dtype).expand(R, N, -1).clone()
            full.scatter_(1, vis[..., None].expand(-1, -1, hd.shape[-1]), hd)
        else:
            assert self.enc_mask_token is not None
            pos = sincos_2d(Fp, Tp, enc.dim).to(x)
            x = torch.where(mask[..., None], self.enc_mask_token.to(x.dtype) + pos, x)
            h_all = enc.forward_tokens(x)  # (R, N, D)
            h = torch.gather(h_all, 1, vis[..., None].expand(-1, -1, h_all.shape[-1]))
            full = self.decoder_embed(h_all)
        full = full + sincos_2d(Fp, Tp, full.shape[-1]).to(full)
        out = self.decoder(full)
        assert isinstance(out, Tensor)
        return self.decoder_norm(out), h

    def _patch_loss(self, pred: Tensor, patches: Tensor, hid: Tensor) -> tuple[Tensor, Tensor]:
        """The reconstruction loss: MSE of ``pred (M·B, N, P)`` against the (per-patch normalised
        with ``norm_targets``) ``patches (B, N, P)`` at the hidden tokens ``hid``; and the target."""
        target = patches
        if self.cfg.norm_targets:
            mu = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mu) / (var + 1e-6).sqrt()
        M, P = pred.shape[0] // patches.shape[0], patches.shape[-1]
        target = target.repeat(M, 1, 1) if M > 1 else target
        pred_m = torch.gather(pred, 1, hid[..., None].expand(-1, -1, P)).float()
        targ_m = torch.gather(target, 1, hid[..., None].expand(-1, -1, P)).float()
        return (pred_m - targ_m).square().mean(), target

    @torch.no_grad()
    def teacher_targets(self, patches: Tensor, Fp: int, Tp: int) -> Tensor:
        """The teacher's targets ``(B, N, D)`` for the whole (unmasked) patches ``(B, N, P)``."""
        t = self.teacher
        assert t is not None, "teacher_targets needs objective: latent"
        _, layers = t.backbone(t.embed_tokens(patches, Fp, Tp), None, return_layers=True)
        return make_targets(layers, self.cfg.latent.target_layers, self.cfg.latent.target_norm)

    def forward(self, wave: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """``wave: (B, S)`` fixed-length crops; ``mask: (M·B, N)`` True = hidden, M masks per
        clip with row ``m·B + b`` for clip b (:meth:`sample_mask`)."""
        enc = self.encoder
        tok = enc.tokenize(wave)
        patches, Fp, Tp = tok.patches, tok.Fp, tok.Tp
        mask = mask.to(patches.device)
        B, N = patches.shape[:2]
        if mask.shape[0] % B or mask.shape[1] != N:
            raise ValueError(f"mask {tuple(mask.shape)} does not fit {B} clips of {N} tokens")
        M = mask.shape[0] // B
        x = enc.embed_tokens(patches, Fp, Tp)  # (B, N, D)
        dec, h_vis = self._student(x.repeat(M, 1, 1) if M > 1 else x, mask, Fp, Tp)  # (M·B, N, Dd)
        pred = self.decoder_pred(dec)  # (M·B, N, out)
        hid = masked_indices(mask)
        if self.teacher is None:
            loss, target = self._patch_loss(pred, patches, hid)
            return {"loss": loss, "pred": pred, "target": target}
        lc = self.cfg.latent
        y = self.teacher_targets(patches, Fp, Tp)  # (B, N, D), no gradient
        D = y.shape[-1]
        target = y.repeat(M, 1, 1) if M > 1 else y
        frame = latent_loss(torch.gather(pred, 1, hid[..., None].expand(-1, -1, D)),
                            torch.gather(target, 1, hid[..., None].expand(-1, -1, D)), lc.loss)
        # utterance level (EAT): the mean-pooled student output predicts the clip's mean target
        clip = latent_loss(h_vis.mean(dim=1), y.mean(dim=1).repeat(M, 1), lc.loss)
        loss = frame + lc.clip_weight * clip if lc.clip_weight > 0 else frame
        out = {"frame_loss": frame.detach(), "clip_loss": clip.detach(), "pred": pred, "target": target}
        if self.decoder_pixels is not None:
            pixel, _ = self._patch_loss(self.decoder_pixels(dec), patches, hid)
            loss = loss + lc.pixel_weight * pixel
            out["pixel_loss"] = pixel.detach()
        return {"loss": loss, **out}


def count_parameters(module: nn.Module) -> int:
    """Parameters of ``module`` without the training-only parts (an MSM model's teacher)."""
    return sum(p.numel() for n, p in module.named_parameters() if not n.startswith(TRAINING_PARTS))


def describe(cfg: ModelConfig) -> dict[str, Any]:
    return {"name": cfg.name, "backbone": cfg.encoder.backbone, "dim": cfg.encoder.dim,
            "patch": f"{cfg.encoder.patch_f}x{cfg.encoder.patch_t}", "objective": cfg.objective}
