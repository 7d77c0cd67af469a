"""The masked-spectrogram pretraining recipe: data → crops → masks → MSM loss (reconstruction,
or latent prediction with an EMA teacher moved after every optimiser step)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from ..checkpoint import CheckpointSpec
from ..config import NonNegativeFloat, PositiveFloat, PositiveInt, from_dict, merge, to_dict
from ..data import Row, fingerprint, read_rows
from ..data.augment import WaveAugmentConfig, augment_crop
from ..data.dataset import ClipStore
from ..frontend import LogMel
from ..io import check_writable
from ..models.msm import ModelConfig, MSMModel
from ..models.registry import build_model, model_config, with_overrides
from .budget import calibrate_steps
from .checkpointing import check_run_dir
from .data_order import mix
from .deadline import clock
from .distributed import broadcast_object, setup
from .engine import Batch, Engine, TrainConfig

__all__ = ["DataConfig", "PretrainConfig", "PretrainRecipe", "calibrate_steps", "compute_stats", "pretrain",
           "pretrain_config_from"]


@dataclass
class DataConfig:
    """source: a manifest (CSV/JSONL), an audio folder, a HEAR task dir or a dir of HEAR tasks.
    splits: keep only rows of these splits (e.g. HEAR training folds). max_clips: use at most
    this many (a fixed random subset). cache_mb: decoded-audio memory cache. check: decode every
    file before training and report all bad ones."""

    source: str = ""
    splits: list[str] = field(default_factory=list)
    max_clips: PositiveInt | None = None
    cache_mb: NonNegativeFloat = 4096
    check: bool = True


@dataclass
class PretrainConfig:
    """model: registry name. model_overrides: nested ModelConfig fields. stats_clips: clips used
    to compute the front end's normalisation statistics when the model has none (mean 0, std 1).
    budget_minutes: if set, the run finishes within this time (a promise, not a first
    estimate) on the ``budget_clock``: ``wall`` (time of day) or ``cpu`` (CPU time of the training
    process, all threads; the same compute whatever else runs on the machine).
    ``train.max_steps`` starts as the steps that fit (the real recipe timed on the
    training device by the main process before training, shared by all processes; warm-up 10 %)
    and is re-fitted as training goes, the cosine schedule ending at the last step
    (:mod:`audiofm.train.deadline`). Not bit-reproducible across machines or loads; fixed-step
    runs are. init: continue from this checkpoint or run directory (any kind and backbone; domain-adaptive
    pretraining): its model config replaces ``model``/``model_overrides``, an MSM checkpoint
    gives every weight, another kind its encoder (the decoder starts fresh); the schedule and
    optimizer start fresh. keep_stats: keep the init checkpoint's front-end normalisation
    statistics (false: recompute them from this data). augment: waveform augmentation of the
    training crops (:class:`~audiofm.data.augment.WaveAugmentConfig`: mixing another clip in,
    gain, noise; off by default, and recorded in the run's settings only when on)."""

    model: str = "msm_vit_tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stats_clips: PositiveInt = 500
    budget_minutes: PositiveFloat | None = None
    budget_clock: Literal["wall", "cpu"] = "wall"
    init: str = ""
    keep_stats: bool = True
    augment: WaveAugmentConfig = field(default_factory=WaveAugmentConfig)


def compute_stats(store: ClipStore, logmel: LogMel, max_clips: int = 500, seed: int = 0,
                  progress: bool = False) -> tuple[float, float]:
    """Mean and std of the log-mel over up to ``max_clips`` clips (every frame counts)."""
    n = len(store)
    idx = np.random.default_rng(seed).permutation(n)[: min(n, max_clips)]
    s = s2 = cnt = 0.0
    it: Any = idx
    if progress:
        from tqdm import tqdm

        it = tqdm(idx, desc="stats", unit="clip")
    with torch.inference_mode():
        for i in it:
            lm = logmel.log_mel(torch.from_numpy(store.wave(int(i)))[None]).double()
            s += float(lm.sum())
            s2 += float(lm.square().sum())
            cnt += lm.numel()
    mean = s / cnt
    return mean, float(np.sqrt(max(s2 / cnt - mean * mean, 1e-12)))


class PretrainRecipe:
    """Masked spectrogram modelling on random crops of ``segment_seconds``. With the latent
    objective the model holds an EMA teacher (``aux.teacher``): moved after every optimiser
    step (:meth:`after_step`), saved in the periodic checkpoints, left out of the final weights
    (:meth:`export_state`: the student encoder, or the teacher with ``latent.keep: teacher``)."""

    def __init__(self, config: ModelConfig, store: ClipStore, seed: int,
                 augment: WaveAugmentConfig | None = None) -> None:
        self.config = config
        self.augment = augment or WaveAugmentConfig()
        self.model: MSMModel = build_model(config)
        self.store = store
        self.seed = seed
        self.segment = config.segment_samples

    @property
    def spec(self) -> CheckpointSpec:
        """Checkpoints of this recipe are whole MSM models (encoder + decoder)."""
        return CheckpointSpec.from_model_config(self.config, kind="msm")

    def num_examples(self) -> int:
        return len(self.store)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        device = next(model.parameters()).device
        wave = torch.from_numpy(np.stack([self.crop(i, s) for i, s in zip(batch.ids, batch.seeds)]))
        # the masks of the whole global batch come from one generator; take our clips' slice
        # of each of the M masks per clip
        g = torch.Generator().manual_seed(mix(self.seed, batch.step, 11))
        masks = self.model.sample_mask(batch.global_size, self.segment, g)  # (M·global, N)
        masks = masks.view(self.config.num_masks, batch.global_size, -1)
        masks = masks[:, batch.offset : batch.offset + len(batch.ids)]
        out = model(wave.to(device), masks.reshape(-1, masks.shape[-1]).to(device))
        extras = {k: float(out[k]) for k in ("frame_loss", "clip_loss", "pixel_loss") if k in out}
        return out["loss"], extras

    def crop(self, i: int, seed: int) -> np.ndarray:
        """The training crop of clip ``i`` for per-clip ``seed``, augmented (a pure function of both)."""
        crop = self.store.crop(i, self.segment, seed)
        if not self.augment.active:
            return crop
        return augment_crop(crop, self.augment, mix(seed, 17), lambda j, s: self.store.crop(j, self.segment, s),
                            len(self.store))

    def after_step(self, step: int, max_steps: int) -> None:
        """After optimiser step ``step`` (1-based): θ_teacher ← τ·θ_teacher + (1 − τ)·θ_student
        with τ of update ``step − 1`` of ``max_steps`` (:func:`~audiofm.models.latent.ema_decay`)."""
        self.model.ema_step(step - 1, max_steps)

    def export_state(self) -> dict[str, Tensor]:
        return self.model.export_state()


def resolve_config(cfg: PretrainConfig) -> ModelConfig:
    return model_config(cfg.model, **cfg.model_overrides)


def load_rows(data: DataConfig) -> list[Row]:
    left: list[Row] = []
    rows = read_rows(data.source, data.splits or None, left_out=left)
    if left:
        print(f"data: left out {len(left)} clips of {', '.join(data.splits)} whose audio is also in another "
              f"split of the tasks (another task's test or validation clips); {len(rows)} kept")
    if data.max_clips is not None and len(rows) > data.max_clips:
        keep = np.sort(np.random.default_rng(0).permutation(len(rows))[: data.max_clips])
        rows = [rows[int(i)] for i in keep]
    return rows


def init_weights(path: str, overrides: Mapping[str, Any] | None = None) -> tuple[ModelConfig, dict[str, Tensor], bool]:
    """The model config and weights of checkpoint ``path`` for ``--init``, and whether the
    weights are a whole MSM model (else the encoder only). ``overrides`` (``model_overrides``)
    apply on top of the checkpoint's config, e.g. ``objective: latent`` to continue a
    reconstruction run by latent prediction; the encoder is fixed by the weights, so an override
    that changes it is refused. When the result no longer fits the checkpoint's decoder (another
    objective or decoder shape), only the encoder is loaded and the decoder starts fresh."""
    from .. import checkpoint as ckpt
    from ..config import ConfigError

    d = ckpt.resolve(path)
    spec = ckpt.load_spec(d)
    state = ckpt.load_state_dict(d)
    base = spec.model_config()
    cfg = with_overrides(base, overrides or {})
    if cfg.encoder != base.encoder:
        raise ConfigError(f"model_overrides.encoder: --init {path} fixes the encoder (its weights); "
                          f"drop the encoder overrides or start without --init")
    if spec.kind == "msm":
        fresh = MSMModel(cfg).state_dict()
        own = {k: v for k, v in state.items() if not k.startswith(ckpt.TRAINING_PARTS)}
        fits = {k for k in fresh if not k.startswith(ckpt.TRAINING_PARTS)} == set(own) and all(
            fresh[k].shape == v.shape for k, v in own.items())
        if fits:
            return cfg, state, True
    return cfg, ckpt.component(state, "encoder", str(d)), False


# pretraining settings that never change what is computed (free to change on resume)
FREE_ON_RESUME = ("data.cache_mb", "data.check", "stats_clips")


def pretrain(cfg: PretrainConfig, out: str | Path, *, resume: bool = False, progress: bool = True,
             rows: Sequence[Row] | None = None, allow_change: Sequence[str] = ()) -> dict[str, Any]:
    """Pretrain and return the engine's summary. Everything is checked (run directory, model,
    data) before the run directory is written. ``resume`` continues the run in ``out`` from its
    checkpoint with its saved model; ``cfg`` must then equal the saved settings except for the
    dotted keys of ``allow_change`` (recorded in ``run_config.yaml``)."""
    from .. import checkpoint as ckpt

    out = Path(out)
    from_checkpoint = check_run_dir(out, resume)
    model_cfg = resolve_config(cfg)  # fail on a bad model name before touching the data
    check_writable(out)  # a read-only or full --out fails now, not at the first checkpoint
    init = None
    if cfg.init and not from_checkpoint:  # a resumed run continues its own weights
        model_cfg, init_state, whole = init_weights(cfg.init, cfg.model_overrides)
        init = (init_state, whole)
        if not cfg.keep_stats:
            fe0 = dataclasses.replace(model_cfg.encoder.frontend, mean=0.0, std=1.0)
            model_cfg = dataclasses.replace(model_cfg, encoder=dataclasses.replace(model_cfg.encoder, frontend=fe0))
    if rows is None:
        rows = load_rows(cfg.data)
    latest = ckpt.latest_checkpoint(out / "checkpoints") if from_checkpoint else None
    if latest is not None:
        model_cfg = ckpt.load_config(latest)
    store = ClipStore(rows, model_cfg.encoder.frontend.sample_rate, cfg.data.cache_mb)
    if cfg.data.check and latest is None:
        store.check()
    fe = model_cfg.encoder.frontend
    if latest is None and fe.mean == 0.0 and fe.std == 1.0:
        mean, std = compute_stats(store, LogMel(fe), cfg.stats_clips, cfg.train.seed, progress)
        fe = dataclasses.replace(fe, mean=round(mean, 6), std=round(std, 6))
        model_cfg = dataclasses.replace(model_cfg, encoder=dataclasses.replace(model_cfg.encoder, frontend=fe))
    torch.manual_seed(cfg.train.seed)
    recipe = PretrainRecipe(model_cfg, store, cfg.train.seed, cfg.augment)
    if init is not None:
        state, whole = init
        target: nn.Module = recipe.model if whole else recipe.model.encoder
        if whole:  # a teacher is never continued: it restarts as a copy of the loaded encoder
            own = {k: v for k, v in recipe.model.state_dict().items() if k.startswith(ckpt.TRAINING_PARTS)}
            state = {**{k: v for k, v in state.items() if not k.startswith(ckpt.TRAINING_PARTS)}, **own}
        ckpt.load_weights(target, state, cfg.init, strict=True)
        recipe.model.reset_teacher()
    # room for a periodic checkpoint (weights + AdamW moments) and the final weights, before training
    check_writable(out, need_bytes=4 * sum(p.numel() * p.element_size() for p in recipe.model.parameters()))
    if latest is not None:
        if cfg.budget_minutes is not None:  # keep the calibrated schedule
            tc = ckpt.load_train_state(latest)["train_config"]
            cfg.train.max_steps, cfg.train.warmup_steps = tc["max_steps"], tc["warmup_steps"]
    budget = cfg.budget_minutes
    if budget is not None and latest is None:  # a fresh start (also a --resume that found no checkpoint)
        device, d = setup(cfg.train.device, cfg.train.threads)
        now = clock(cfg.budget_clock)
        t0 = now()
        steps = calibrate_steps(recipe, cfg.train, budget, device=device, d=d, clock_name=cfg.budget_clock)
        budget = max(0.0, budget - broadcast_object(now() - t0, d) / 60)  # timing counts too
        cfg.train.max_steps = steps
        cfg.train.warmup_steps = max(1, steps // 10)
        if progress and d.main:
            print(f"budget {cfg.budget_minutes:g} {cfg.budget_clock} min → {steps} steps of "
                  f"{cfg.train.batch_size} clips (first estimate, re-fitted as training goes)")
    settings = to_dict(cfg)
    if not cfg.augment.active:  # runs without augmentation keep the settings of earlier versions
        settings.pop("augment")
    resolved = merge(settings, {"resolved_model": to_dict(model_cfg)})
    engine = Engine(recipe, cfg.train, out, resume=resume, resolved_config=resolved,
                    data_fingerprint=fingerprint(rows), progress=progress, budget_minutes=budget,
                    budget_clock=cfg.budget_clock,
                    allow_change=allow_change, free=FREE_ON_RESUME,
                    # a budget run's schedule length follows from the budget (re-fitted as it trains)
                    derived=("resolved_model", *(("train.max_steps", "train.warmup_steps") if budget is not None
                                                 else ())))
    return engine.fit()


def pretrain_config_from(data: dict[str, Any]) -> PretrainConfig:
    return from_dict(PretrainConfig, data, where="pretrain config")
