"""Settings of retrieval training (``audiofm retrieval train``): :class:`RetrievalConfig` and its
sections. Everything is typed and checked by :func:`audiofm.config.from_dict` before anything is
written; defaults live here once (help texts read them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from ..config import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Range, check_ranges
from ..train.engine import TrainConfig
from .augment import MODES
from .model import DualEncoderConfig

DATA_FORMATS = ("auto", "clotho", "audiocaps", "pairs")
CLUSTER_METHODS = ("kmeans", "agglomerative")


@dataclass
class RetrievalDataConfig:
    """source: a Clotho folder (``clotho_captions_<split>.csv``, audio in ``<folder>/<split>/``),
    an AudioCaps folder or one of its CSVs (``<split>.csv`` with audiocap_id,youtube_id,start_time,
    caption, e.g. train/val/test: set the splits; audio in ``audio_dir`` or ``<folder>/<split>/``) or a
    pairs file (CSV path,caption or JSONL, with a
    ``split`` column naming the splits). format: 'auto' (from what ``source`` holds), 'clotho',
    'audiocaps' or 'pairs'. train_split / valid_split: the splits trained on and used to pick the
    best weights (validation mAP@10). audio_dir: where the audio is, when not in the default place."""

    source: str = ""
    format: str = "auto"
    train_split: str = "development"
    valid_split: str = "validation"
    audio_dir: str = ""

    def __post_init__(self) -> None:
        if self.format not in DATA_FORMATS:
            raise ValueError(f"format must be one of {', '.join(DATA_FORMATS)}, got {self.format!r}")
        if self.train_split == self.valid_split:
            raise ValueError(f"train_split and valid_split are both {self.train_split!r}; validation must be "
                             "held out")


@dataclass
class AugmentationConfig:
    """Dataset-level augmentation (:mod:`audiofm.retrieval.augment`; frozen features stay cached).
    mix_pairs: new training clips made of two clips (mixed or concatenated) with joined captions
    (0 = off). mix_mode: 'mix', 'concat' or 'both'. mix_snr_db: the level range of a mix.
    paraphrases: extra paraphrased captions per training clip (0 = off)."""

    mix_pairs: NonNegativeInt = 0
    mix_mode: str = "both"
    mix_snr_db: tuple[float, float] = (-5.0, 5.0)
    paraphrases: NonNegativeInt = 0

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.mix_mode not in MODES:
            raise ValueError(f"mix_mode must be one of {', '.join(MODES)}, got {self.mix_mode!r}")
        lo, hi = float(self.mix_snr_db[0]), float(self.mix_snr_db[1])
        if lo > hi:
            raise ValueError(f"mix_snr_db must be (low, high), got {self.mix_snr_db}")
        self.mix_snr_db = (lo, hi)


def _projection_training() -> TrainConfig:
    """Defaults for training projections on cached features (cheap steps): a larger lr, short
    warm-up, validation every 100 steps with the best weights kept."""
    return TrainConfig(max_steps=1000, batch_size=64, lr=1e-3, warmup_steps=50, weight_decay=0.01,
                       betas=(0.9, 0.999), log_every=10, ckpt_every=200, evaluate_every=100, patience=0)


@dataclass
class RetrievalConfig:
    """model: the dual encoder (audio tower, text tower, projections, temperature; see
    :class:`~audiofm.retrieval.model.DualEncoderConfig`). data: the caption dataset. train: the
    engine's settings (``train.seed`` is the first seed). seeds: independent runs with seeds
    ``train.seed … train.seed + seeds − 1`` (each in ``<out>/seed-<s>``). epochs: passes over the
    training pairs, sets ``train.max_steps`` (null: use ``train.max_steps``). crop_seconds: the
    random training crop of a trained audio tower (null: the tower's segment length).
    distill_weight: weight of the distillation term (0 = off) against ``teachers`` (dual
    checkpoints or run directories; their averaged similarity matrices are the soft targets),
    at ``teacher_temperature`` (null: the student's). cluster_weight: weight of the
    pseudo-class cross-entropy (0 = off); ``n_clusters`` ('auto' or a count) clusters of the
    training captions by ``cluster_method`` give each clip its class. augmentation: dataset-level
    mixes and paraphrases. eval_batch_size: clips per feature batch. cache_mb: decoded audio kept
    in memory. cache: directory of cached frozen features (null: ``$AUDIOFM_CACHE/retrieval``
    if set, else ``<out>/features``)."""

    model: DualEncoderConfig = field(default_factory=DualEncoderConfig)
    data: RetrievalDataConfig = field(default_factory=RetrievalDataConfig)
    train: TrainConfig = field(default_factory=_projection_training)
    seeds: PositiveInt = 1
    epochs: PositiveFloat | None = None
    crop_seconds: PositiveFloat | None = None
    distill_weight: NonNegativeFloat = 0.0
    teachers: list[str] = field(default_factory=list)
    teacher_temperature: PositiveFloat | None = None
    cluster_weight: NonNegativeFloat = 0.0
    n_clusters: str = "auto"
    cluster_method: str = "agglomerative"
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    eval_batch_size: PositiveInt = 16
    cache_mb: Annotated[float, Range(ge=0)] = 2048.0
    cache: str | None = None

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.distill_weight > 0 and not self.teachers:
            raise ValueError(f"distill_weight={self.distill_weight:g} needs teachers (dual checkpoints or run "
                             "directories)")
        if self.cluster_method not in CLUSTER_METHODS:
            raise ValueError(f"cluster_method must be one of {', '.join(CLUSTER_METHODS)}, got "
                             f"{self.cluster_method!r}")
        n = str(self.n_clusters).strip()
        if n != "auto" and not (n.isdigit() and int(n) >= 2):
            raise ValueError(f"n_clusters must be 'auto' or an integer >= 2, got {self.n_clusters!r}")
        self.n_clusters = n

    @property
    def clusters(self) -> int | str:
        """``n_clusters`` as B's clustering takes it: 'auto' or an int."""
        return "auto" if self.n_clusters == "auto" else int(self.n_clusters)

    @property
    def seed_list(self) -> list[int]:
        return [self.train.seed + i for i in range(self.seeds)]

    def cache_dir(self, out: str | os.PathLike[str]) -> Path:
        if self.cache:
            return Path(self.cache)
        env = os.environ.get("AUDIOFM_CACHE")
        return Path(env) / "retrieval" if env else Path(out) / "features"
