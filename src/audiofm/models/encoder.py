"""The audio encoder: front end → patches → patch embedding + positions → backbone → norm."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import TYPE_FROM, PositiveInt, check_ranges
from ..embedding import FREQ_MIXES, LAYER_MIXES, pooled_dim
from ..frontend import FrontendConfig, LogMel
from .backbones import BackboneConfig, as_backbone_config, backbone_config_class, build_backbone_from
from .layer_config import set_layer_config
from .patch import patchify, sincos_2d


def pool_frames(frames: Tensor, valid: Tensor | None = None, pooling: str = "mean") -> Tensor:
    """Clip embeddings ``(B, C)`` from frames ``(B, T, D)`` over the ``valid (B, T)`` ones (all
    when None): 'mean', 'max', 'meanmax' (mean and max concatenated, C = 2·D) or 'meanstd' (mean
    and population standard deviation, C = 2·D). The one definition of clip pooling, used by the
    embedding API and by training."""
    pooled_dim(frames.shape[-1], pooling)  # checks the name
    parts = []
    if pooling in ("mean", "meanmax", "meanstd"):
        w = None if valid is None else valid.to(frames.dtype)[..., None]  # (B, T, 1)
        mean = frames.mean(dim=1) if w is None else (frames * w).sum(dim=1) / w.sum(dim=1)
        parts.append(mean)
        if pooling == "meanstd":
            dev = (frames - mean[:, None]).square()
            var = dev.mean(dim=1) if w is None else (dev * w).sum(dim=1) / w.sum(dim=1)
            parts.append(var.sqrt())
    if pooling in ("max", "meanmax"):
        x = frames if valid is None else frames.masked_fill(~valid[..., None], float("-inf"))
        parts.append(x.amax(dim=1))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def merge_freq(h: Tensor, Tp: int, Fp: int, freq_mix: str = "mean") -> Tensor:
    """Frames ``(B, Tp, C)`` from token outputs ``(B, Tp·Fp, D)`` (time-major): the average of
    each time patch's ``Fp`` frequency patches (``freq_mix`` 'mean', C = D) or those patches
    concatenated from low to high frequency ('concat', C = Fp·D, as MSM-MAE and M2D read their
    encoders). The one definition, used by the encoder and the streaming embedder."""
    if freq_mix not in FREQ_MIXES:
        raise ValueError(f"freq_mix must be one of {', '.join(FREQ_MIXES)}, got {freq_mix!r}")
    B = h.shape[0]
    if freq_mix == "concat":
        return h.reshape(B, Tp, -1)
    return h.view(B, Tp, Fp, -1).mean(dim=2)


def block_range(depth: int, layer: int, layers: int = 1) -> range:
    """The blocks read for ``layers`` consecutive blocks ending at block ``layer`` (-1 = last) of
    a ``depth``-block encoder; ValueError naming the fix when they do not exist."""
    if not -depth <= layer < depth:
        raise ValueError(f"layer {layer} out of range for a {depth}-block encoder")
    top = layer % depth
    if not 1 <= layers <= top + 1:
        raise ValueError(f"layers={layers}: block {top} has {top + 1} block(s) up to it in a {depth}-block "
                         f"encoder; choose layers between 1 and {top + 1}")
    return range(top - layers + 1, top + 1)


def _backbone_cfg_type(data: Mapping[str, Any]) -> type[BackboneConfig]:
    """The config class of the backbone an encoder mapping names (for :func:`config.from_dict`)."""
    return backbone_config_class(str(data.get("backbone", "transformer")))


@dataclass
class EncoderConfig:
    """frontend: log-mel settings and normalisation stats. patch_f / patch_t: patch size in mel
    bins × frames. backbone: a registered backbone name ('transformer' | 'mamba' | 'mamba2' | 'xlstm').
    backbone_cfg: that backbone's typed config (:class:`~.backbones.base.BackboneConfig`
    subclass; a mapping of its fields is converted, missing fields take that class's defaults,
    None gives all defaults). ``to_dict`` writes it back as a mapping."""

    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    patch_f: PositiveInt = 16
    patch_t: PositiveInt = 16
    backbone: str = "transformer"
    backbone_cfg: BackboneConfig = field(default=None, metadata={TYPE_FROM: _backbone_cfg_type})  # type: ignore[assignment]

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.frontend.n_mels % self.patch_f:
            raise ValueError(f"n_mels={self.frontend.n_mels} is not divisible by patch_f={self.patch_f}")
        try:
            self.backbone_cfg = as_backbone_config(self.backbone, self.backbone_cfg)
        except KeyError as e:  # an unknown backbone name
            raise ValueError(e.args[0]) from None

    @property
    def dim(self) -> int:
        return self.backbone_cfg.dim

    @property
    def freq_patches(self) -> int:
        return self.frontend.n_mels // self.patch_f

    @property
    def patch_seconds(self) -> float:
        """Duration covered by one time patch (its hop), in seconds."""
        return self.patch_t * self.frontend.hop_length / self.frontend.sample_rate


@dataclass
class Tokens:
    """Patch tokens of a batch: ``patches (B, N, P)``, ``pad_mask (B, N)`` (True = padding),
    the grid ``(Fp, Tp)`` and valid time patches per item ``time_lengths (B,)``."""

    patches: Tensor
    pad_mask: Tensor
    Fp: int
    Tp: int
    time_lengths: Tensor


class AudioEncoder(nn.Module):
    """Front end → patches → patch embedding + positions → backbone → norm.

    ``exportable``: build the traceable layers (:mod:`~.layer_config`: DFT-basis front end, no
    data-dependent padding branch, scan-form recurrences) for ``torch.export`` / ONNX; same
    parameters, same outputs to float32 rounding (tests/test_export.py)."""

    def __init__(self, cfg: EncoderConfig, exportable: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.exportable = exportable
        with set_layer_config(exportable=exportable):
            self.frontend = LogMel(cfg.frontend, exportable=exportable)
            self.patch_embed = nn.Linear(cfg.patch_f * cfg.patch_t, cfg.dim)
            self.backbone = build_backbone_from(cfg.backbone, cfg.backbone_cfg)
            self.norm = nn.LayerNorm(cfg.dim)

    @property
    def dim(self) -> int:
        return self.cfg.dim

    def tokenize(self, wave: Tensor, lengths: Tensor | None = None, spec_mask: Tensor | None = None) -> Tokens:
        """``wave: (B, S)`` (right-padded; ``lengths`` = valid samples) → patch tokens.
        ``spec_mask (B, F, T)``: True = set that log-mel cell to 0 (SpecAugment)."""
        spec = self.frontend(wave)  # (B, F, T)
        if spec_mask is not None:
            spec = spec.masked_fill(spec_mask.to(spec.device), 0.0)
        frames = spec.shape[-1]
        if lengths is None:
            frame_len = torch.full((wave.shape[0],), frames, dtype=torch.long, device=wave.device)
        else:
            frame_len = self.frontend.frame_lengths(lengths.to(wave.device)).clamp(max=frames)
        return self.tokenize_spec(spec, frame_len)

    def tokenize_spec(self, spec: Tensor, frame_len: Tensor) -> Tokens:
        pt = self.cfg.patch_t
        T = spec.shape[-1]
        Tp = (T + pt - 1) // pt  # (not -(-T // pt): a traced negative floor division truncates in ONNX)
        # pad time to whole patches; padded frames are 0 (the normalised mean)
        t_idx = torch.arange(T, device=spec.device)
        spec = spec.masked_fill(t_idx[None, None, :] >= frame_len[:, None, None], 0.0)
        spec = F.pad(spec, (0, Tp * pt - T))
        patches = patchify(spec, self.cfg.patch_f, pt)
        Fp = self.cfg.freq_patches
        time_len = ((frame_len + pt - 1) // pt).clamp(min=1)  # (B,) time patches holding real frames
        col = torch.arange(Tp, device=spec.device).repeat_interleave(Fp)  # token → time index
        pad_mask = col[None, :] >= time_len[:, None]
        return Tokens(patches, pad_mask, Fp, Tp, time_len)

    def embed_tokens(self, patches: Tensor, Fp: int, Tp: int, t0: int = 0) -> Tensor:
        """Project patches ``(B, N, P)`` and add fixed positions → ``(B, N, D)``."""
        pos = sincos_2d(Fp, Tp, self.dim, t0).to(device=patches.device, dtype=patches.dtype)
        return self.patch_embed(patches) + pos

    def forward_tokens(
        self, x: Tensor, pad_mask: Tensor | None = None, layer: int = -1, layers: int = 1, layer_mix: str = "mean"
    ) -> Tensor:
        """Run the backbone on embedded tokens. ``layers`` = 1: ``layer`` -1 = last block + final
        norm, otherwise the raw output of block ``layer`` (0-based). ``layers`` > 1: the
        ``layers`` blocks ending at ``layer`` (:func:`block_range`), each output normalised over
        features without parameters (layer norm, as data2vec's targets), then averaged
        (``layer_mix`` 'mean', D dims) or concatenated ('concat', layers·D dims)."""
        blocks = block_range(self.backbone.depth, layer, layers)
        if layer_mix not in LAYER_MIXES:
            raise ValueError(f"layer_mix must be one of {', '.join(LAYER_MIXES)}, got {layer_mix!r}")
        if layers == 1 and blocks.start == self.backbone.depth - 1:
            out = self.backbone(x, pad_mask)
            assert isinstance(out, Tensor)
            return self.norm(out)
        _, outs = self.backbone(x, pad_mask, return_layers=True)
        if layers == 1:
            return outs[blocks.start]
        normed = [F.layer_norm(outs[i], outs[i].shape[-1:]) for i in blocks]
        return torch.stack(normed).mean(dim=0) if layer_mix == "mean" else torch.cat(normed, dim=-1)

    def frame_embeddings(self, wave: Tensor, lengths: Tensor | None = None, layer: int = -1,
                         spec_mask: Tensor | None = None, layers: int = 1, layer_mix: str = "mean",
                         freq_mix: str = "mean") -> tuple[Tensor, Tensor]:
        """``(B, Tp, C)`` frame embeddings and valid ``(B, Tp)``; ``layer`` / ``layers`` /
        ``layer_mix``: :meth:`forward_tokens`; ``freq_mix``: how a time patch's frequency patches
        make its frame (:func:`merge_freq`: mean, C = D, or concatenated, C = Fp·D)."""
        return self.frame_embeddings_from_tokens(self.tokenize(wave, lengths, spec_mask), layer, layers, layer_mix,
                                                 freq_mix)

    def frame_embeddings_from_tokens(self, tok: Tokens, layer: int = -1, layers: int = 1,
                                     layer_mix: str = "mean", freq_mix: str = "mean") -> tuple[Tensor, Tensor]:
        """:meth:`frame_embeddings` from tokens (e.g. of :meth:`tokenize_spec` on a log-mel)."""
        x = self.embed_tokens(tok.patches, tok.Fp, tok.Tp)
        # the exportable path always passes the mask (no branch on the data; an all-False
        # mask gives the same result)
        mask = tok.pad_mask if self.exportable or bool(tok.pad_mask.any()) else None
        h = self.forward_tokens(x, mask, layer, layers, layer_mix)
        frames = merge_freq(h, tok.Tp, tok.Fp, freq_mix)
        valid = torch.arange(tok.Tp, device=h.device)[None, :] < tok.time_lengths[:, None]
        return frames, valid

    def clip_embedding(self, wave: Tensor, lengths: Tensor | None = None, *, layer: int = -1,
                       pooling: str = "mean", spec_mask: Tensor | None = None, layers: int = 1,
                       layer_mix: str = "mean", freq_mix: str = "mean") -> Tensor:
        """Clip embeddings ``(B, C)``: the frames of :meth:`frame_embeddings` pooled over the
        valid ones (:func:`pool_frames`) — what ``audiofm.load(...).embed(...).clip`` returns for
        a clip that fits in one chunk. Differentiable (used by fine-tuning)."""
        frames, valid = self.frame_embeddings(wave, lengths, layer, spec_mask, layers, layer_mix, freq_mix)
        return pool_frames(frames, valid, pooling)
