"""What the adaptation recipes share: the encoder + head model, freezing, layer-wise learning
rates, training views, and the recipe base that turns labelled rows into engine steps.

A recipe trains ``AdaptModel = encoder + head`` with the shared engine on labelled rows
(:class:`~audiofm.data.tasks.LabelledRows`: a HEAR round, pseudo-labelled machine sounds, ...):
the training rows are optimised, the validation rows select the checkpoint, test rows are never
read. Both heads normalise with batch statistics, so the loss couples the clips of a batch: the
recipes are ``batch_coupled`` — under DDP the clip embeddings of every process are gathered
(with exact gradients) before the head, so N processes compute exactly what one process does
with the same global batch; gradient accumulation, which would split the batch, is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..api import Embedder
from ..checkpoint import CheckpointSpec, HeadSpec
from ..data.dataset import ClipStore
from ..data.tasks import LabelledRows, label_matrix
from ..embed_io import clip_matrix, embed_each
from ..models.encoder import AudioEncoder
from ..models.heads import Head, Standardize
from ..train.engine import Batch
from .augment import augment_wave, mixup_pairs, spec_mask
from .config import FinetuneConfig
from .sampler import seed_of


class AdaptModel(nn.Module):
    """The encoder being adapted plus a task head. ``forward`` → (clip embedding, head output).

    ``gather`` (``Batch.gather``) joins the clip embeddings of all processes before the head;
    ``mix = (perm, lam)`` mixes clip embeddings ``z_i ← λ_i z_i + (1 − λ_i) z_perm[i]`` (after
    the gather, so the pairs span the global batch). Frozen modules (see :func:`freeze_encoder`)
    stay in eval mode when the model trains.
    """

    def __init__(self, encoder: AudioEncoder, head: Head) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.frozen: list[nn.Module] = []

    def forward(self, wave: Tensor, lengths: Tensor | None = None, mask: Tensor | None = None,
                mix: tuple[Tensor, Tensor] | None = None, gather: Callable[[Tensor], Tensor] | None = None
                ) -> tuple[Tensor, Tensor]:
        z = self.encoder.clip_embedding(wave, lengths, spec_mask=mask)  # (B, D)
        if gather is not None:
            z = gather(z)  # (B_global, D)
        if mix is not None:
            perm, lam = (t.to(z.device) for t in mix)
            lam = lam.to(z.dtype)[:, None]
            z = lam * z + (1 - lam) * z[perm]
        return z, self.head(z)

    def train(self, mode: bool = True) -> AdaptModel:
        super().train(mode)
        for m in self.frozen:
            m.eval()
        return self


def freeze_encoder(model: AdaptModel, blocks: int, patch_embed: bool = False) -> list[str]:
    """Freeze the first ``blocks`` backbone blocks (and the patch embedding); returns the
    frozen parameter names. Frozen parameters get no gradient and are not optimised."""
    enc = model.encoder
    depth = len(enc.backbone.blocks)
    if blocks > depth:
        raise ValueError(f"freeze_blocks={blocks} but the encoder has only {depth} blocks")
    mods: list[tuple[str, nn.Module]] = [(f"encoder.backbone.blocks.{i}", enc.backbone.blocks[i])
                                         for i in range(blocks)]
    if patch_embed:
        mods.append(("encoder.patch_embed", enc.patch_embed))
    names = []
    for prefix, m in mods:
        for n, p in m.named_parameters():
            p.requires_grad_(False)
            names.append(f"{prefix}.{n}")
        model.frozen.append(m)
    model.train(model.training)
    return names


def layer_index(name: str, depth: int) -> int:
    """Depth of parameter ``name`` of an :class:`AdaptModel` for layer-wise lr decay: 0 = patch
    embedding, i + 1 = backbone block i, depth + 1 = everything above (final norm, head)."""
    if name.startswith("encoder.patch_embed."):
        return 0
    prefix = "encoder.backbone.blocks."
    if name.startswith(prefix):
        return int(name[len(prefix):].split(".", 1)[0]) + 1
    return depth + 1


def layerwise_param_groups(model: AdaptModel, weight_decay: float, layer_decay: float = 1.0
                           ) -> list[dict[str, Any]]:
    """AdamW groups with ``lr_scale = layer_decay ** (depth + 1 − layer_index)``; no weight
    decay on biases, norms and other 1-d parameters; frozen parameters left out."""
    depth = len(model.encoder.backbone.blocks)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lid = layer_index(name, depth)
        decay = p.ndim >= 2
        g = groups.setdefault((lid, decay), {
            "params": [], "names": [], "weight_decay": weight_decay if decay else 0.0,
            "lr_scale": layer_decay ** (depth + 1 - lid)})
        g["params"].append(p)
        g["names"].append(name)
    return [groups[k] for k in sorted(groups)]


class TaskRecipe:
    """The recipe base: labelled rows → decoded clips, targets, training views, validation
    embeddings; the subclasses add the head, the loss and the validation score.

    ``base`` is the encoder to adapt and ``base_spec`` its checkpoint spec (front end,
    normalisation statistics, segment length); ``head`` the task head.
    """

    batch_coupled = True  # batch-statistics heads and SupCon see the whole global batch

    def __init__(self, cfg: FinetuneConfig, encoder: AudioEncoder, base_spec: CheckpointSpec,
                 data: LabelledRows, head: Head) -> None:
        if not data.train or not data.valid:
            raise ValueError(f"{data.name}: round {data.round} has an empty training or validation split")
        self.cfg = cfg
        self.base_spec = base_spec
        self.model = AdaptModel(encoder, head)
        self.frozen = freeze_encoder(self.model, cfg.freeze_blocks, cfg.freeze_patch_embed)
        self.data = data
        self.prediction_type = data.prediction_type
        self.vocabulary = data.vocabulary
        self.train_rows, self.valid_rows = data.train, data.valid
        sr = encoder.cfg.frontend.sample_rate
        self.store = ClipStore(self.train_rows, sr, cfg.cache_mb)
        self.valid_store = ClipStore(self.valid_rows, sr, cfg.cache_mb / 4)
        self.y_train = label_matrix(self.train_rows, self.vocabulary)  # (N, C) one-/multi-hot
        self.y_valid = label_matrix(self.valid_rows, self.vocabulary)
        crop = cfg.augment.crop_seconds or base_spec.segment_seconds
        self.crop = round(crop * sr)
        self.seed = cfg.train.seed

    # -- what the engine asks -------------------------------------------------------------
    @property
    def spec(self) -> CheckpointSpec:
        """Spec of the checkpoints written during training: encoder + head (for resume)."""
        head = self.model.head
        kind = "encoder" if head.head_type == "projection" else "classifier"
        return CheckpointSpec(kind, self.base_spec.name, self.base_spec.encoder, self.base_spec.segment_seconds,
                              head=HeadSpec(head.head_type, head.config(), list(self.vocabulary),
                                            self.prediction_type))

    def result_spec(self) -> CheckpointSpec:
        """Spec of the adapted model written at the end (default: as during training)."""
        return self.spec

    def num_examples(self) -> int:
        return len(self.train_rows)

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        return layerwise_param_groups(self.model, weight_decay, self.cfg.layer_decay)

    # -- data -----------------------------------------------------------------------------
    def view(self, i: int, seed: int) -> Tensor:
        """The augmented crop of training clip ``i``, a pure function of ``(i, seed)``."""
        return augment_wave(self.store.wave(i), self.crop, self.cfg.augment, seed_of(seed, 1))

    def masks(self, lengths: Tensor, samples: int, seeds: list[int]) -> Tensor | None:
        """SpecAugment masks ``(B, F, T)`` for waves of ``lengths`` padded to ``samples``, or
        None when masking is off; clip j's mask depends only on ``seeds[j]`` and its length."""
        a = self.cfg.augment
        if not (a.time_masks or a.freq_masks):
            return None
        fe = self.base_spec.encoder.frontend
        T = fe.num_frames(samples)
        return torch.stack([spec_mask(fe.n_mels, T, fe.num_frames(int(n)), a, seed_of(s, 2))
                            for n, s in zip(lengths.tolist(), seeds)])

    def mixup(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Mixup pairs ``(perm, lam)`` over the *global* batch (the same on every process)."""
        return mixup_pairs(len(batch.global_ids), self.cfg.supervised.mixup_alpha,
                           seed_of(self.seed, batch.step, 0, 9))

    def embed(self, store: ClipStore) -> np.ndarray:
        """Deterministic clip embeddings ``(N, D)`` of whole clips, chunked like
        :func:`audiofm.load` (leaves the encoder in eval mode)."""
        encoder = self.model.encoder
        device = next(encoder.parameters()).device
        emb = Embedder(encoder, segment_seconds=self.base_spec.segment_seconds, name="adapt",
                       weights_id="training", device=device, batch_size=self.cfg.eval_batch_size)
        n = len(store)
        order = sorted(range(n), key=lambda i: len(store.wave(i)))
        return clip_matrix(embed_each(emb, n, store.wave, sample_rate=store.sample_rate, order=order,
                                      batch_size=self.cfg.eval_batch_size, progress=False,
                                      name_of=lambda i: store.rows[i].path))

    def prepare(self) -> dict[str, Any]:
        """Before training (not on resume): set the head's standardisation from the frozen
        training embeddings, then :meth:`init_head`. Returns what was decided (for the summary)."""
        self.model.eval()
        z = self.embed(self.store)
        norm = self.model.head.norm
        assert isinstance(norm, Standardize)  # both task heads start by standardising
        norm.set(z)
        out = self.init_head(z)
        self.model.train()
        return out

    def init_head(self, z_train: np.ndarray) -> dict[str, Any]:
        """Further head initialisation from the frozen training embeddings (default: none)."""
        return {}
