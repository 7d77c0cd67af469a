"""Settings of the adaptation recipes: :class:`FinetuneConfig` and its method sections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from ..config import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Range,
    Rate,
    check_ranges,
    from_dict,
)
from ..train.engine import TrainConfig
from .augment import AugmentConfig

METHODS = ("supervised", "contrastive")
HEAD_CHOICES = ("linear", "arcface", "adacos")


@dataclass
class SupervisedConfig:
    """label_smoothing: ε of the targets (multiclass ``(1−ε)·y + ε/C``, multilabel
    ``(1−ε)·y + ε/2``). mixup_alpha: Beta(α, α) mixup of pairs within the batch (0 = off).
    mixup_level: 'waveform' mixes the two crops before the encoder (the longer length is kept),
    'embedding' mixes the two pooled clip embeddings before the head; targets are mixed with
    the same λ either way. head_dropout: dropout on the embedding before the linear head.
    head: 'linear' (the classifier head), 'arcface' or 'adacos' (margin heads on the cosine to
    class centres, for attribute classification; these start from the class means of the frozen
    training embeddings whatever ``head_init`` says). margin_scale / margin: ArcFace's s and m.
    sub_clusters: centres per class of the margin heads.
    head_init: 'probe' starts the head from a logistic-regression probe on the frozen training
    embeddings, its ``C`` chosen from ``probe_c_grid`` by validation log-loss (a calibrated head
    gives moderate gradients; LP-FT, Kumar et al. 2022: the encoder
    is then tuned from the linear probe's solution instead of being pulled around by a random
    head); 'random' starts from small random weights."""

    label_smoothing: Rate = 0.0
    mixup_alpha: NonNegativeFloat = 0.0
    mixup_level: str = "embedding"
    head_dropout: Rate = 0.0
    head_init: str = "probe"
    probe_c_grid: tuple[PositiveFloat, ...] = (0.01, 0.1, 1.0, 10.0)
    head: str = "linear"
    margin_scale: PositiveFloat = 16.0
    margin: NonNegativeFloat = 0.2
    sub_clusters: PositiveInt = 1

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.head not in HEAD_CHOICES:
            raise ValueError(f"head must be one of {HEAD_CHOICES}, got {self.head!r}")
        self.probe_c_grid = tuple(float(c) for c in self.probe_c_grid)
        if self.head_init not in ("probe", "random"):
            raise ValueError(f"head_init must be 'probe' or 'random', got {self.head_init!r}")
        if self.mixup_level not in ("waveform", "embedding"):
            raise ValueError(f"mixup_level must be 'waveform' or 'embedding', got {self.mixup_level!r}")


@dataclass
class ContrastiveConfig:
    """temperature: τ of the SupCon softmax. proj_hidden / proj_dim: the MLP projection head
    (Linear → ReLU → Linear; hidden 0 = the encoder width). clips_per_class: K of the P×K
    class-balanced batches (0 = the smallest K ≥ 2 with P = batch_size / K ≤ #classes)."""

    temperature: PositiveFloat = 0.1
    proj_hidden: NonNegativeInt = 0
    proj_dim: PositiveInt = 128
    clips_per_class: NonNegativeInt = 0

    def __post_init__(self) -> None:
        check_ranges(self)


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
    fold: NonNegativeInt = 0
    epochs: PositiveFloat | None = 10.0
    warmup_fraction: Annotated[float, Range(ge=0, le=1)] | None = 0.1
    evaluate_every_epochs: NonNegativeFloat | None = 1.0
    keep_start: bool = False
    patience: NonNegativeInt = 0
    freeze_blocks: NonNegativeInt = 0
    freeze_patch_embed: bool = False
    layer_decay: Annotated[float, Range(gt=0, le=1)] = 1.0
    augment: AugmentConfig = field(default_factory=_default_augment)
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    train: TrainConfig = field(default_factory=_default_train)
    cache_mb: NonNegativeFloat = 2048
    eval_batch_size: PositiveInt = 16

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")


def finetune_config_from(data: dict[str, Any]) -> FinetuneConfig:
    return from_dict(FinetuneConfig, data, where="finetune config")


