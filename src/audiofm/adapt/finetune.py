"""Adapting an encoder to a labelled HEAR task: supervised fine-tuning and contrastive-tuning.

Both recipes train ``AdaptModel = encoder + head`` with the shared :class:`~audiofm.train.engine.Engine`
(exact resume, DDP, bf16, validation-based best-checkpoint selection and early stopping) on the
training splits of one HEAR round; the round's validation split selects the checkpoint; its
test split is never read. The output directory is a normal checkpoint (``config.json`` +
``model.safetensors`` holding the full MSM model: tuned encoder, original decoder), so
``audiofm.load(out)`` embeds with the tuned encoder; supervised runs also write the classifier
head to ``head.safetensors`` + ``head.json`` (see :func:`load_classifier`).

* **supervised**: a linear head (z-scoring batch norm, optional dropout; initialised as a
  linear probe, LP-FT) on the clip embedding — the mean over valid frames, exactly what
  ``audiofm.load(...).embed`` returns — trained with cross-entropy (multiclass) or binary
  cross-entropy (multilabel); label smoothing; mixup at the waveform or the embedding level;
  SpecAugment masks; layer-wise learning-rate decay; frozen lower blocks; early stopping on
  validation accuracy (multiclass) or mAP (multilabel).
* **contrastive**: an MLP projection head (with batch norms, see :class:`ProjectionHead`) on the
  same clip embedding, SupCon over two augmented views of each clip in class-balanced batches
  (P classes × K clips); Jaccard-weighted positives for multilabel tasks. Validation score: kNN
  accuracy / mAP of the validation clips against the training clips. The projection head is
  dropped at the end.

Validation runs before the first step too: its score is reported, and with ``keep_start`` the
starting weights compete for "best".
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import checkpoint as ckpt
from ..api import Embedder
from ..config import ConfigError, from_dict, merge, to_dict
from ..data import DataError, HearTask, Row, Split, fingerprint, read_hear_task
from ..data.dataset import ClipStore
from ..models.encoder import AudioEncoder
from ..models.heads import ClassifierHead, ProjectionHead
from ..models.msm import ModelConfig, MSMModel
from ..models.registry import build_model, list_models, model_config
from ..train.engine import Batch, Engine, TrainConfig
from .augment import AugmentConfig, augment_wave, mixup_pairs, pad_batch, spec_mask
from .losses import supcon_loss
from .sampler import ClassBalancedSampler, auto_clips_per_class, seed_of

METHODS = ("supervised", "contrastive")
MULTICLASS, MULTILABEL = "multiclass", "multilabel"


# ----------------------------------------------------------------------------------- configs


@dataclass
class SupervisedConfig:
    """label_smoothing: ε of the targets (multiclass ``(1−ε)·y + ε/C``, multilabel
    ``(1−ε)·y + ε/2``). mixup_alpha: Beta(α, α) mixup of pairs within the batch (0 = off).
    mixup_level: 'waveform' mixes the two crops before the encoder (the longer length is kept),
    'embedding' mixes the two pooled clip embeddings before the head; targets are mixed with
    the same λ either way. head_dropout: dropout on the embedding before the linear head.
    head_init: 'probe' starts the head from a logistic-regression probe on the frozen training
    embeddings, its ``C`` chosen from ``probe_c_grid`` by validation log-loss (a calibrated head
    gives moderate gradients; LP-FT, Kumar et al. 2022: the encoder
    is then tuned from the linear probe's solution instead of being pulled around by a random
    head); 'random' starts from small random weights."""

    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    mixup_level: str = "embedding"
    head_dropout: float = 0.0
    head_init: str = "probe"
    probe_c_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)

    def __post_init__(self) -> None:
        self.probe_c_grid = tuple(float(c) for c in self.probe_c_grid)
        if self.head_init not in ("probe", "random"):
            raise ValueError(f"head_init must be 'probe' or 'random', got {self.head_init!r}")
        if self.mixup_level not in ("waveform", "embedding"):
            raise ValueError(f"mixup_level must be 'waveform' or 'embedding', got {self.mixup_level!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.mixup_alpha < 0 or not 0.0 <= self.head_dropout < 1.0:
            raise ValueError("mixup_alpha must be ≥ 0 and head_dropout in [0, 1)")


@dataclass
class ContrastiveConfig:
    """temperature: τ of the SupCon softmax. proj_hidden / proj_dim: the MLP projection head
    (Linear → ReLU → Linear; hidden 0 = the encoder width). clips_per_class: K of the P×K
    class-balanced batches (0 = the smallest K ≥ 2 with P = batch_size / K ≤ #classes)."""

    temperature: float = 0.1
    proj_hidden: int = 0
    proj_dim: int = 128
    clips_per_class: int = 0

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.proj_dim < 1 or self.proj_hidden < 0 or self.clips_per_class < 0:
            raise ValueError("proj_dim must be ≥ 1, proj_hidden and clips_per_class ≥ 0")


def _default_train() -> TrainConfig:
    return TrainConfig(max_steps=100, batch_size=16, lr=1e-4, warmup_steps=10, weight_decay=0.05,
                       betas=(0.9, 0.999), log_every=5, ckpt_every=100, keep_checkpoints=1)


def _default_augment() -> AugmentConfig:
    # white noise is off by default: at 10–30 dB SNR it swamped the upper mel bands of speech and
    # hurt validation accuracy on emodb-emotion (docs/adaptation.md)
    return AugmentConfig(gain_db=6.0, noise_prob=0.0, snr_db=(10.0, 30.0), time_masks=2, time_mask_frames=20,
                         freq_masks=2, freq_mask_bins=16)


@dataclass
class FinetuneConfig:
    """model: base checkpoint or run directory (a registry preset name gives a randomly
    initialised model, for development). task: HEAR task directory. method: 'supervised' or
    'contrastive'. fold: index of the HEAR round whose train/valid splits are used (k-fold: fold
    i is test, i+1 validation, the rest training); the test split is never read.
    epochs: training length in passes over the training split; when set it replaces
    ``train.max_steps`` (null: use ``train.max_steps``). warmup_fraction: warm-up as a fraction of
    the steps, replacing ``train.warmup_steps`` (null: keep it). evaluate_every_epochs: validation
    interval, replacing ``train.evaluate_every`` (0 = no validation: the last weights are kept;
    otherwise the best-scoring ones). keep_start: let the starting weights (the base encoder; for
    supervised, with its probe-initialised head) win the validation selection, so a run that only
    hurts returns the base; off by default, because the probe head's C was itself chosen on the
    validation split, which favours step 0, and on small validation sets ties keep the earlier
    weights. The start's validation score is reported either way. patience: stop after this many
    validations without improvement (0 = never). freeze_blocks: freeze the first N backbone blocks;
    freeze_patch_embed: also freeze the patch embedding (with both, no gradient flows below block N
    at all). layer_decay: layer-wise lr decay — block i of L trains at ``lr · decay^(L−i)``, the
    patch embedding at ``lr · decay^(L+1)``, the final norm and the head at ``lr`` (1 = off).
    cache_mb: decoded-audio cache. eval_batch_size: clips per batch when embedding for validation."""

    model: str = ""
    task: str = ""
    method: str = "supervised"
    fold: int = 0
    epochs: float | None = 10.0
    warmup_fraction: float | None = 0.1
    evaluate_every_epochs: float | None = 1.0
    keep_start: bool = False
    patience: int = 0
    freeze_blocks: int = 0
    freeze_patch_embed: bool = False
    layer_decay: float = 1.0
    augment: AugmentConfig = field(default_factory=_default_augment)
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    train: TrainConfig = field(default_factory=_default_train)
    cache_mb: float = 2048
    eval_batch_size: int = 16

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"epochs must be > 0 (or null), got {self.epochs}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.freeze_blocks < 0 or self.fold < 0 or self.patience < 0:
            raise ValueError("freeze_blocks, fold and patience must be ≥ 0")


def finetune_config_from(data: dict[str, Any]) -> FinetuneConfig:
    return from_dict(FinetuneConfig, merge(to_dict(FinetuneConfig()), data), where="finetune config")


# ------------------------------------------------------------------------------------ model


def fit_linear(fc: nn.Linear, x: Tensor, y: Tensor, multiclass: bool, c: float, iters: int = 100) -> None:
    """Fit ``fc`` as an L2-regularised logistic regression on ``x (N, D)`` → targets ``y (N, C)``
    (softmax cross-entropy or one-vs-rest BCE), penalty ‖W‖² / (2·c·N) as scikit-learn's ``C``;
    full-batch L-BFGS in float64 from zero."""
    n = len(x)
    x64, y64 = x.double(), y.double()
    w = torch.zeros(fc.weight.shape, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(fc.bias.shape, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe", tolerance_grad=1e-7)

    def closure() -> Tensor:
        opt.zero_grad()
        logits = x64 @ w.T + b
        if multiclass:
            loss = -(y64 * logits.log_softmax(dim=1)).sum(dim=1).mean()
        else:
            loss = F.binary_cross_entropy_with_logits(logits, y64, reduction="sum") / n
        loss = loss + 0.5 / (c * n) * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        fc.weight.copy_(w.detach())
        fc.bias.copy_(b.detach())


class AdaptModel(nn.Module):
    """The encoder being adapted plus a task head. ``forward`` → (clip embedding, head output).

    Frozen modules (see :func:`freeze_encoder`) stay in eval mode when the model trains.
    """

    def __init__(self, encoder: AudioEncoder, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.frozen: list[nn.Module] = []

    def forward(self, wave: Tensor, lengths: Tensor | None = None, mask: Tensor | None = None,
                mix: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        z = self.encoder.clip_embedding(wave, lengths, spec_mask=mask)  # (B, D)
        if mix is not None:  # embedding-level mixup: z_i ← λ_i z_i + (1 − λ_i) z_perm[i]
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


# ---------------------------------------------------------------------------------- recipes


def _targets(rows: list[Row], vocabulary: list[str], prediction_type: str) -> np.ndarray:
    """(N, C) float32 one-hot (multiclass) or multi-hot (multilabel) targets."""
    index = {lab: i for i, lab in enumerate(vocabulary)}
    y = np.zeros((len(rows), len(vocabulary)), dtype=np.float32)
    for n, r in enumerate(rows):
        for lab in r.labels:
            y[n, index[lab]] = 1.0
    return y


def embed_store(encoder: AudioEncoder, config: ModelConfig, store: ClipStore, batch_size: int = 16
                ) -> np.ndarray:
    """Deterministic clip embeddings ``(N, D)`` of every clip in ``store`` (whole clips, chunked
    like :func:`audiofm.load`; leaves the encoder in eval mode)."""
    device = next(encoder.parameters()).device
    emb = Embedder(encoder, segment_seconds=config.segment_seconds, name="adapt", weights_id="training",
                   device=device, batch_size=batch_size)
    n = len(store)
    order = sorted(range(n), key=lambda i: len(store.wave(i)))
    out = np.zeros((n, emb.embed_dim), dtype=np.float32)
    for s in range(0, n, batch_size):
        idx = order[s : s + batch_size]
        for i, e in zip(idx, emb.embed_batch([store.wave(i) for i in idx], store.sample_rate)):
            out[i] = e.clip
    return out


class _TaskRecipe:
    """What both recipes share: data, the P×… views, freezing, lr groups, validation embedding."""

    def __init__(self, cfg: FinetuneConfig, base: MSMModel, task: HearTask, split: Split, head: nn.Module) -> None:
        self.cfg = cfg
        self.msm = base
        self.config: ModelConfig = base.cfg
        self.model = AdaptModel(base.encoder, head)
        self.frozen = freeze_encoder(self.model, cfg.freeze_blocks, cfg.freeze_patch_embed)
        self.task = task
        self.prediction_type = task.prediction_type
        self.vocabulary = task.vocabulary
        self.train_rows = task.rows_for(split.train)
        self.valid_rows = task.rows_for(split.valid)
        if not self.train_rows or not self.valid_rows:
            raise DataError(f"{task.root}: round {split.name} has an empty training or validation split")
        sr = self.config.encoder.frontend.sample_rate
        self.store = ClipStore(self.train_rows, sr, cfg.cache_mb)
        self.valid_store = ClipStore(self.valid_rows, sr, cfg.cache_mb / 4)
        self.y_train = _targets(self.train_rows, self.vocabulary, self.prediction_type)
        self.y_valid = _targets(self.valid_rows, self.vocabulary, self.prediction_type)
        crop = cfg.augment.crop_seconds or self.config.segment_seconds
        self.crop = round(crop * sr)
        self.seed = cfg.train.seed

    def num_examples(self) -> int:
        return len(self.train_rows)

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        return layerwise_param_groups(self.model, weight_decay, self.cfg.layer_decay)

    def views(self, ids: list[int], seeds: list[int]) -> tuple[Tensor, Tensor, Tensor | None]:
        """Augmented crops of ``ids``: waves ``(B, S)``, lengths ``(B,)``, SpecAugment masks
        ``(B, F, T)`` (None when masking is off); clip j's view depends only on ``seeds[j]``."""
        a = self.cfg.augment
        waves = [augment_wave(self.store.wave(i), self.crop, a, seed_of(s, 1)) for i, s in zip(ids, seeds)]
        x, lengths = pad_batch(waves)
        return x, lengths, self.masks(lengths, x.shape[1], seeds)

    def masks(self, lengths: Tensor, samples: int, seeds: list[int]) -> Tensor | None:
        a = self.cfg.augment
        if not (a.time_masks or a.freq_masks):
            return None
        fe = self.config.encoder.frontend
        T = fe.num_frames(samples)
        return torch.stack([spec_mask(fe.n_mels, T, fe.num_frames(int(n)), a, seed_of(s, 2))
                            for n, s in zip(lengths.tolist(), seeds)])

    def embed(self, store: ClipStore) -> np.ndarray:
        return embed_store(self.model.encoder, self.config, store, self.cfg.eval_batch_size)

    def prepare(self) -> dict[str, Any]:
        """Before training (not on resume): set the head's standardisation from the frozen
        training embeddings, then :meth:`init_head`. Returns what was decided (for the summary)."""
        self.model.eval()
        z = self.embed(self.store)
        head = self.model.head
        assert isinstance(head, (ClassifierHead, ProjectionHead))
        head.norm.set(z)
        out = self.init_head(z)
        self.model.train()
        return out

    def init_head(self, z_train: np.ndarray) -> dict[str, Any]:
        """Further head initialisation from the frozen training embeddings (default: none)."""
        return {}


class SupervisedRecipe(_TaskRecipe):
    """Classification head on the clip embedding; CE / BCE with smoothing and mixup."""

    def __init__(self, cfg: FinetuneConfig, base: MSMModel, task: HearTask, split: Split) -> None:
        head = ClassifierHead(base.cfg.encoder.dim, len(task.vocabulary), cfg.supervised.head_dropout)
        super().__init__(cfg, base, task, split, head)

    def init_head(self, z_train: np.ndarray) -> dict[str, Any]:
        """With ``head_init='probe'``: the logistic-regression probe, C chosen on validation."""
        sc = self.cfg.supervised
        if sc.head_init != "probe":
            return {}
        head = self.model.head
        assert isinstance(head, ClassifierHead)
        ztr, zva = z_train, self.embed(self.valid_store)
        with torch.no_grad():
            xtr = head.norm(torch.from_numpy(ztr))
            xva = head.norm(torch.from_numpy(zva))
        best: tuple[float, float, float, dict[str, Tensor]] | None = None
        for c in sorted(sc.probe_c_grid):
            fit_linear(head.fc, xtr, torch.from_numpy(self.y_train), self.prediction_type == MULTICLASS, c)
            with torch.no_grad():
                logits = head.fc(xva).float()
                loss = float(self._loss_from_logits(logits, torch.from_numpy(self.y_valid)))
            if best is None or loss < best[0]:
                best = (loss, self._score(logits, self.y_valid), c,
                        {k: v.clone() for k, v in head.fc.state_dict().items()})
        assert best is not None
        head.fc.load_state_dict(best[3])
        return {"probe_C": best[2], "probe_valid_loss": best[0], "probe_valid_score": best[1]}

    def _score(self, logits: Tensor, y: np.ndarray) -> float:
        from ..eval.metrics import score_predictions

        if self.prediction_type == MULTICLASS:
            return score_predictions(logits.softmax(1).double().numpy(), y.argmax(1), MULTICLASS)["top1_acc"]
        return score_predictions(logits.sigmoid().double().numpy(), y, MULTILABEL)["mAP"]

    def _loss_from_logits(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = logits.float()
        if self.prediction_type == MULTICLASS:
            return -(target * logits.log_softmax(dim=1)).sum(dim=1).mean()
        # one-vs-rest: sum over classes, mean over clips (as the probes)
        return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / len(logits)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        ids, seeds, step = batch.ids, batch.seeds, batch.step
        sc = self.cfg.supervised
        device = next(model.parameters()).device
        x, lengths, mask = self.views(ids, seeds)
        y = torch.from_numpy(self.y_train[ids])  # (B, C)
        C = y.shape[1]
        eps = sc.label_smoothing
        target = (1 - eps) * y + eps / (C if self.prediction_type == MULTICLASS else 2)
        mix = None
        if sc.mixup_alpha > 0:
            perm, lam = mixup_pairs(len(ids), sc.mixup_alpha, seed_of(self.seed, step, batch.offset, 9))
            target = lam[:, None] * target + (1 - lam[:, None]) * target[perm]
            if sc.mixup_level == "waveform":
                x = lam[:, None] * x + (1 - lam[:, None]) * x[perm]
                lengths = torch.maximum(lengths, lengths[perm])
                if mask is not None:
                    mask = self.masks(lengths, x.shape[1], seeds)
            else:
                mix = (perm, lam)
        _, logits = model(x.to(device), lengths.to(device), mask, mix)
        loss = self._loss_from_logits(logits, target.to(device))
        extras: dict[str, float] = {}
        if self.prediction_type == MULTICLASS:
            extras["train_acc"] = float((logits.argmax(1).cpu() == y.argmax(1)).float().mean())
        return loss, extras

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation accuracy (multiclass) or mAP (multilabel) of the head; ``score`` = that."""
        from ..eval.metrics import score_predictions

        assert isinstance(model, AdaptModel)
        model.eval()
        z = self.embed(self.valid_store)
        with torch.inference_mode():
            logits = model.head(torch.from_numpy(z).to(next(model.parameters()).device)).float().cpu()
        target = torch.from_numpy(self.y_valid)
        loss = float(self._loss_from_logits(logits, target))
        if self.prediction_type == MULTICLASS:
            probs = logits.softmax(1).double().numpy()
            m = score_predictions(probs, self.y_valid.argmax(1), MULTICLASS)
        else:
            m = score_predictions(logits.sigmoid().double().numpy(), self.y_valid, MULTILABEL)
        out = {f"valid_{k}": v for k, v in m.items()}
        out["valid_loss"] = loss
        out["score"] = m["top1_acc" if self.prediction_type == MULTICLASS else "mAP"]
        return out


class ContrastiveRecipe(_TaskRecipe):
    """SupCon (Jaccard-weighted for multilabel) on a projection of two views per clip."""

    def __init__(self, cfg: FinetuneConfig, base: MSMModel, task: HearTask, split: Split) -> None:
        cc = cfg.contrastive
        D = base.cfg.encoder.dim
        super().__init__(cfg, base, task, split, ProjectionHead(D, cc.proj_hidden or D, cc.proj_dim))
        class_lists = [[int(c) for c in np.flatnonzero(y)] for y in self.y_train]
        n_active = len({c for cl in class_lists for c in cl})
        B = cfg.train.batch_size
        K = cc.clips_per_class or auto_clips_per_class(B, n_active)
        if B % K:
            raise ConfigError(f"train.batch_size={B} must be a multiple of contrastive.clips_per_class={K}")
        self.sampler = ClassBalancedSampler(class_lists, len(self.vocabulary), B // K, K)

    def batch_ids(self, seed: int, step: int, batch_size: int) -> tuple[list[int], list[int]]:
        return self.sampler(seed, step, batch_size)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        ids, seeds = batch.ids, batch.seeds
        device = next(model.parameters()).device
        a = self.cfg.augment
        waves = [augment_wave(self.store.wave(i), self.crop, a, seed_of(s, v))
                 for v in (1, 3) for i, s in zip(ids, seeds)]  # view 1 of every clip, then view 2
        x, lengths = pad_batch(waves)  # (2B, S)
        mask = self.masks(lengths, x.shape[1], [seed_of(s, v) for v in (2, 4) for s in seeds])
        _, proj = model(x.to(device), lengths.to(device), mask)
        y = torch.from_numpy(self.y_train[ids])
        labels = y.argmax(1) if self.prediction_type == MULTICLASS else y
        labels = torch.cat([labels, labels]).to(device)
        return supcon_loss(proj, labels, self.cfg.contrastive.temperature), {}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """kNN probe (eval package) of the validation clips against the training clips; the
        score is its validation accuracy (multiclass) or mAP (multilabel) at the best k."""
        from ..eval.probes import ProbeData, knn_probe

        model.eval()
        xtr, xva = self.embed(self.store), self.embed(self.valid_store)
        ytr, yva = self.y_train, self.y_valid
        if self.prediction_type == MULTICLASS:
            ytr, yva = ytr.argmax(1), yva.argmax(1)
        data = ProbeData(xtr, ytr, xva, yva, xva, yva, self.prediction_type, len(self.vocabulary))
        res = knn_probe(data)
        out = {f"valid_knn_{k}": v for k, v in res.valid_metrics.items()}
        out["valid_knn_k"] = float(res.hparams["k"])
        out["score"] = res.valid_metrics["top1_acc" if self.prediction_type == MULTICLASS else "mAP"]
        return out


# ------------------------------------------------------------------------------- entry point


def load_base(name_or_path: str, seed: int = 0) -> tuple[MSMModel, dict[str, Any]]:
    """The full MSM model of a checkpoint/run directory (strict), or a randomly initialised
    registry preset; plus provenance (path and weights hash, or preset and seed)."""
    p = Path(name_or_path)
    if p.exists():
        d = ckpt.resolve(p)
        model = build_model(ckpt.load_config(d))
        ckpt.load_weights(model, ckpt.load_state_dict(d), str(d))
        return model, {"checkpoint": str(d), "weights": ckpt.weights_id(d)}
    if name_or_path in list_models():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = MSMModel(model_config(name_or_path))
        return model, {"preset": name_or_path, "random_init_seed": seed}
    raise ckpt.CheckpointError(f"{p}: no such checkpoint or run directory (nor a model preset name)")


def check_task(task: HearTask) -> None:
    """Raise DataError unless ``task`` is a scene task with a supported prediction type."""
    where = task.root / "task_metadata.json"
    if task.metadata.get("embedding_type", "scene") != "scene":
        raise DataError(f"{where}: embedding_type {task.metadata.get('embedding_type')!r} is not supported "
                        "(fine-tuning needs clip-level 'scene' labels)")
    if task.prediction_type not in (MULTICLASS, MULTILABEL):
        raise DataError(f"{where}: prediction_type {task.prediction_type!r} is not supported "
                        "(multiclass or multilabel)")
    if task.prediction_type == MULTICLASS:
        bad = [r for r in task.rows if len(r.labels) != 1]
        if bad:
            raise DataError(f"{task.root}: multiclass task but {bad[0].id} has {len(bad[0].labels)} labels")


def pick_round(task: HearTask, fold: int) -> Split:
    rounds = task.rounds()
    if not 0 <= fold < len(rounds):
        raise ConfigError(f"--fold {fold}: {task.name} has {len(rounds)} round(s) "
                          f"(0..{len(rounds) - 1}: {', '.join(r.name for r in rounds)})")
    return rounds[fold]


def _check_out(out: Path, resume: bool) -> None:
    if (out / "config.json").exists():
        raise FileExistsError(f"{out} already holds a finished checkpoint; choose a new --out (nothing was "
                              "overwritten)")
    if resume:
        if not (out / "run_config.yaml").exists():
            raise FileNotFoundError(f"{out}: nothing to resume (no run_config.yaml)")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists; choose a new --out or pass --resume to continue an "
                              "interrupted run (nothing was overwritten)")


def _derive_schedule(cfg: FinetuneConfig, n_train: int) -> TrainConfig:
    t = replace(cfg.train)
    per_epoch = max(1, math.ceil(n_train / t.batch_size))
    if cfg.epochs is not None:
        t.max_steps = max(1, math.ceil(cfg.epochs * n_train / t.batch_size))
    if cfg.warmup_fraction is not None:
        t.warmup_steps = max(1, round(cfg.warmup_fraction * t.max_steps))
    if cfg.evaluate_every_epochs is not None:
        t.evaluate_every = max(1, round(cfg.evaluate_every_epochs * per_epoch)) if cfg.evaluate_every_epochs else 0
    t.patience = cfg.patience if t.evaluate_every else 0
    t.select_start = cfg.keep_start
    return t


def _write_checkpoint(out: Path, recipe: _TaskRecipe, meta: dict[str, Any]) -> None:
    """Write the tuned MSM model (and the classifier head) into ``out``; ``config.json`` last."""
    from safetensors.torch import save_file

    tmp = out / f".final-tmp-{os.getpid()}"
    spec = ckpt.CheckpointSpec.from_model_config(recipe.config)
    ckpt.save_checkpoint(tmp, spec, recipe.msm, None, meta, overwrite=True)
    if isinstance(recipe, SupervisedRecipe):
        head = recipe.model.head
        assert isinstance(head, ClassifierHead)
        state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
        save_file(state, str(out / "head.safetensors"), metadata={"format": "audiofm-head"})
        info = {"format": "audiofm-head", "format_version": 1, "kind": "linear", "pooling": "mean", "layer": -1,
                "dim": recipe.config.encoder.dim, "prediction_type": recipe.prediction_type,
                "vocabulary": recipe.vocabulary, "task": recipe.task.name}
        (out / "head.json").write_text(json.dumps(info, indent=2))
    os.replace(tmp / "model.safetensors", out / "model.safetensors")
    os.replace(tmp / "config.json", out / "config.json")
    shutil.rmtree(tmp)


def finetune(cfg: FinetuneConfig, out: str | os.PathLike[str], *, resume: bool = False,
             progress: bool = True) -> dict[str, Any]:
    """Adapt ``cfg.model`` to ``cfg.task`` and write the checkpoint directory ``out``.

    Returns a summary (also written to ``out/finetune.json`` on completion). An interrupted run
    leaves no ``config.json`` and continues with ``resume=True`` and the same configuration.
    """
    out = Path(out)
    _check_out(out, resume)
    task = read_hear_task(cfg.task)
    check_task(task)
    split = pick_round(task, cfg.fold)
    base, provenance = load_base(cfg.model, cfg.train.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)  # head initialisation
        kind = SupervisedRecipe if cfg.method == "supervised" else ContrastiveRecipe
        recipe: SupervisedRecipe | ContrastiveRecipe = kind(cfg, base, task, split)
    if resume:  # the head's initial state comes back with the checkpoint
        from ..config import load_yaml

        prepared = dict(load_yaml(out / "run_config.yaml").get("prepared") or {})
    else:
        prepared = recipe.prepare()
    train_cfg = _derive_schedule(cfg, recipe.num_examples())
    resolved = merge(to_dict(cfg), {"train": to_dict(train_cfg), "resolved_model": to_dict(recipe.config),
                                    "base": provenance, "round": to_dict(split), "prepared": prepared})
    data_fp = fingerprint(recipe.train_rows)
    engine = Engine(recipe, train_cfg, out, resume=resume, resolved_config=resolved,
                    data_fingerprint=data_fp, progress=progress)
    result = engine.fit()
    if not engine.dist.main or result["status"] not in ("completed", "time budget reached", "early stopped"):
        return result
    chosen = "last"
    if (out / "best" / "config.json").is_file():
        ckpt.load_weights(recipe.model, ckpt.load_state_dict(out / "best"), str(out / "best"))
        chosen = f"best (step {result['best_step']})"
    n_trainable = sum(p.numel() for p in recipe.model.encoder.parameters() if p.requires_grad)
    summary = {
        "method": cfg.method, "task": task.name, "task_dir": str(task.root), "round": split.name, "fold": cfg.fold,
        "train_splits": split.train, "valid_splits": split.valid, "train_clips": len(recipe.train_rows),
        "valid_clips": len(recipe.valid_rows), "base": provenance, "status": result["status"],
        "steps": result["step"], "max_steps": train_cfg.max_steps, "weights": chosen,
        "best_step": result["best_step"], "best_valid_score": result["best_score"],
        "start_valid_score": result.get("start_score"),
        "final_train_loss": result["loss"], "seconds": round(result["seconds"], 1),
        "encoder_trainable_parameters": n_trainable, "frozen_parameters": len(recipe.frozen), **prepared,
    }
    meta = {"step": result["step"], "data_fingerprint": data_fp,
            "adaptation": {k: summary[k] for k in ("method", "task", "round", "base", "weights", "best_valid_score")}}
    _write_checkpoint(out, recipe, meta)
    for staging in ("model", "best"):  # their content is now the top-level checkpoint
        if (out / staging).is_dir():
            shutil.rmtree(out / staging)
    (out / "finetune.json").write_text(json.dumps(summary, indent=2))
    return {**result, **summary, "checkpoint": str(out)}


# ------------------------------------------------------------------------------ classifier


class Classifier:
    """A supervised fine-tuned checkpoint as a classifier: ``predict(wave, sr)`` → class scores
    (softmax for multiclass, sigmoid for multilabel) in the order of ``vocabulary``."""

    def __init__(self, embedder: Embedder, head: ClassifierHead, info: dict[str, Any]) -> None:
        self.embedder = embedder
        self.head = head.eval()
        self.vocabulary: list[str] = list(info["vocabulary"])
        self.prediction_type: str = info["prediction_type"]

    def predict(self, wave: np.ndarray, sr: int) -> np.ndarray:
        z = torch.from_numpy(np.asarray(self.embedder.embed(wave, sr).clip, dtype=np.float32))[None]
        with torch.inference_mode():
            logits = self.head(z)[0]
        p = logits.softmax(0) if self.prediction_type == MULTICLASS else logits.sigmoid()
        return p.numpy()


def load_head(path: str | os.PathLike[str]) -> tuple[ClassifierHead, dict[str, Any]]:
    """The classifier head (eval mode) and ``head.json`` of a supervised fine-tuned checkpoint."""
    from safetensors.torch import load_file

    d = Path(path)
    if not (d / "head.json").is_file():
        raise ckpt.CheckpointError(f"{d}: no head.json; only `audiofm finetune --method supervised` checkpoints "
                                   "carry a classifier head")
    info = json.loads((d / "head.json").read_text())
    head = ClassifierHead(int(info["dim"]), len(info["vocabulary"]))
    ckpt.load_weights(head, load_file(str(d / "head.safetensors")), str(d / "head.safetensors"))
    return head.eval(), info


def load_classifier(path: str | os.PathLike[str], **embedder_kwargs: Any) -> Classifier:
    """Load a supervised fine-tuned checkpoint directory (``head.json`` + ``head.safetensors``)."""
    from ..api import load

    head, info = load_head(path)
    return Classifier(load(path, pooling="mean", **embedder_kwargs), head, info)
