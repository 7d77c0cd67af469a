"""The training engine shared by every recipe.

AdamW with linear warm-up + cosine decay (:mod:`.schedule`), gradient clipping and
accumulation, optional bf16 autocast, DDP under ``torchrun`` (:mod:`.distributed`), metrics
JSONL and a progress bar (:mod:`.metric_logging`), validation with best-weights selection and
early stopping (:mod:`.validation`), atomic periodic checkpoints and exact resume
(:mod:`.checkpointing`).

Exactness: every random choice is a pure function of ``(seed, step, global sample index)``
(:mod:`.data_order`): which clips form a batch, their crops and masks (drawn by the recipe from
those seeds), and the torch RNG (re-seeded at every step). So a resumed run retraces an
uninterrupted one, and N processes each taking 1/N of the global batch match one process taking
all of it — for batch-coupled losses too, when they compute over :meth:`Batch.gather`.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

import torch
from torch import Tensor, nn

from ..checkpoint import CheckpointSpec
from ..config import (
    ConfigError,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    Range,
    Rate,
    check_ranges,
    to_dict,
)
from .checkpointing import Checkpointer, RunDirError, check_run_dir
from .data_order import batch_ids, global_batch, mix, seed_step
from .deadline import Deadline
from .distributed import (
    Dist,
    all_reduce_max,
    all_reduce_mean,
    autocast,
    barrier,
    gather_features,
    no_sync,
    resolve_device,
    resolve_precision,
    setup,
    setup_distributed,
    wrap_ddp,
)
from .metric_logging import MetricsLog, ProgressBar, Throughput, train_record
from .schedule import build_optimizer, lr_at, param_groups, set_lr
from .validation import Validator

__all__ = ["Batch", "Dist", "Engine", "Recipe", "RunDirError", "TrainConfig", "batch_ids", "check_recipe",
           "check_run_dir", "lr_at", "micro_batches", "mix", "param_groups", "resolve_device", "setup_distributed"]

FINISHED = ("completed", "time budget reached", "early stopped")  # runs whose last weights are final
_STOPS = (None, "interrupted", "time budget reached", "early stopped")


@dataclass
class TrainConfig:
    """max_steps: optimizer steps. batch_size: global clips per optimizer step (split over
    processes and ``accum_steps`` micro-batches). lr: peak learning rate. warmup_steps: linear
    warm-up. min_lr_ratio: final lr / peak of the cosine decay. weight_decay, betas: AdamW.
    grad_clip: max gradient norm (0 = off). precision: 'fp32', 'bf16' (autocast), or 'auto' (bf16
    only where the device multiplies bf16 natively: train.distributed.resolve_precision).
    seed: all randomness derives from it. log_every / ckpt_every: in steps. keep_checkpoints:
    periodic checkpoints kept. max_minutes: stop (with a checkpoint) after this wall time.
    device: 'auto', 'cpu' or 'cuda'. threads: torch intra-op threads (0 = torch default).
    evaluate_every: call the recipe's ``evaluate(model)`` before the first step, every this many
    steps and after the last one (0 = never); the best-scoring weights are kept in
    ``run_dir/best``. select_start: the starting weights (step 0) may be chosen as the best too;
    when False they are evaluated and logged (``start_score``) but only trained weights compete.
    patience: stop after this many evaluations in a row without a better score (0 = never stop
    early)."""

    max_steps: PositiveInt = 1000
    batch_size: PositiveInt = 32
    accum_steps: PositiveInt = 1
    lr: NonNegativeFloat = 5e-4
    warmup_steps: NonNegativeInt = 100
    min_lr_ratio: Annotated[float, Range(ge=0, le=1)] = 0.05
    weight_decay: NonNegativeFloat = 0.05
    betas: tuple[Rate, Rate] = (0.9, 0.95)
    grad_clip: NonNegativeFloat = 1.0
    precision: str = "fp32"
    seed: NonNegativeInt = 0
    log_every: PositiveInt = 10
    ckpt_every: PositiveInt = 200
    keep_checkpoints: PositiveInt = 2
    max_minutes: NonNegativeFloat | None = None
    device: str = "auto"
    threads: NonNegativeInt = 0
    evaluate_every: NonNegativeInt = 0
    select_start: bool = True
    patience: NonNegativeInt = 0

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.precision not in ("fp32", "bf16", "auto"):
            raise ValueError(f"precision must be 'fp32', 'bf16' or 'auto', got {self.precision!r}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))


@dataclass
class Batch:
    """What one loss call trains on: this process's micro-batch ``ids`` (dataset indices) with
    per-clip ``seeds``, at ``step``; ``offset`` is the position of ``ids[0]`` in the global batch
    ``global_ids`` / ``global_seeds``; ``rank`` of ``world`` processes."""

    ids: list[int]
    seeds: list[int]
    step: int
    offset: int
    global_ids: list[int]
    global_seeds: list[int]
    rank: int = 0
    world: int = 1

    @property
    def global_size(self) -> int:
        return len(self.global_ids)

    def gather(self, x: Tensor) -> Tensor:
        """``x (n, ...)`` of every process concatenated along dim 0 in rank order, with exact
        gradients (:func:`~.distributed.gather_features`); ``x`` itself in one process."""
        return x if self.world == 1 else gather_features(x)


def micro_batches(ids: list[int], seeds: list[int], step: int, rank: int, world: int, accum: int) -> list[Batch]:
    """The ``accum`` micro-batches of process ``rank`` (its 1/world share of the global batch)."""
    micro = len(ids) // world // accum
    out = []
    for a in range(accum):
        off = (rank * accum + a) * micro
        out.append(Batch(ids[off : off + micro], seeds[off : off + micro], step, off, ids, seeds, rank, world))
    return out


class Recipe(Protocol):
    """What the engine trains. ``model`` is the module to optimise; ``spec`` (a
    :class:`~audiofm.checkpoint.CheckpointSpec`) describes the checkpoints it is saved in;
    ``num_examples`` is the dataset size; ``loss(model, batch)`` computes the mean loss over the
    clips of ``batch`` (a :class:`Batch`) and extra metrics to log.

    Optional members, used when a recipe defines them:

    * ``param_groups(weight_decay) -> list[dict]``: the optimizer's parameter groups (default:
      :func:`param_groups`); a group's ``lr_scale`` multiplies the scheduled learning rate.
    * ``batch_ids(seed, step, batch_size) -> (ids, seeds)``: the global batch at ``step``
      (default: :func:`batch_ids`, epoch-wise shuffles); must be a pure function of its inputs.
    * ``evaluate(model) -> dict[str, float]``: validation metrics with a higher-is-better
      ``"score"``; called before the first step and every ``TrainConfig.evaluate_every`` steps
      (deterministic, main process only; the result is broadcast).
    * ``batch_coupled: bool``: the loss couples the clips of a batch (SupCon, InfoNCE, batch
      statistics) and computes it over ``batch.gather(z)`` (called inside the model's forward,
      e.g. passed as a keyword argument, so DDP sees it). ``train.accum_steps > 1`` is refused.
    * ``after_step(step, max_steps)``: called on every process right after optimiser step
      ``step`` (1-based) of ``max_steps``, e.g. to move an EMA teacher (a training-only part
      under ``aux.``, kept in the periodic checkpoints so a resume restores it).
    * ``export_state() -> dict[str, Tensor]``: the weights of the final and best checkpoints
      (default: the whole model), e.g. without the training-only parts.
    """

    @property
    def model(self) -> nn.Module: ...

    @property
    def spec(self) -> CheckpointSpec: ...

    def num_examples(self) -> int: ...

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]: ...


def check_recipe(recipe: Any, cfg: TrainConfig, world: int = 1) -> None:
    """Refuse configurations the engine cannot train exactly (before anything is written)."""
    if getattr(recipe, "batch_coupled", False) and cfg.accum_steps > 1:
        raise ConfigError(f"train.accum_steps={cfg.accum_steps}: the loss of {type(recipe).__name__} couples the "
                          "clips of a batch, which accumulation would split; set train.accum_steps: 1 and reach "
                          "the batch with more processes (torchrun) or lower train.batch_size")
    if cfg.batch_size % (world * cfg.accum_steps):
        raise ValueError(f"batch_size={cfg.batch_size} must divide by processes×accum_steps="
                         f"{world * cfg.accum_steps}")


class StopSignals:
    """While active, SIGINT/SIGTERM only set ``received``: the loop stops with a checkpoint."""

    received: int | None = None

    def __enter__(self) -> StopSignals:
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class Engine:
    """Runs a :class:`Recipe` in ``run_dir``; call :meth:`fit` (inside :meth:`hold` when the
    caller writes more into the run directory afterwards).

    ``resume``: continue from the newest checkpoint (a folder a start left without one starts
    afresh). ``resolved_config``: the run's settings, saved in ``run_config.yaml``; on resume
    they are compared with the saved ones — ``allow_change`` (dotted keys or sections) may
    differ and is recorded, ``free`` keys never change what is computed, ``derived`` keys follow
    from others (see :func:`~.checkpointing.resume_changes`). ``run_files``: further names the
    recipe writes in ``run_dir``."""

    def __init__(self, recipe: Recipe, cfg: TrainConfig, run_dir: str | os.PathLike[str], *,
                 resume: bool = False, resolved_config: dict[str, Any] | None = None,
                 data_fingerprint: dict[str, Any] | None = None, progress: bool = True,
                 on_checkpoint: Callable[[int, Path], None] | None = None, allow_change: Sequence[str] = (),
                 free: Sequence[str] = (), derived: Sequence[str] = (), run_files: Sequence[str] = (),
                 budget_minutes: float | None = None, budget_clock: str = "wall") -> None:
        self.recipe, self.cfg, self.run_dir = recipe, cfg, Path(run_dir)
        self.resume, self.progress = resume, progress
        self.resolved_config = resolved_config or {}
        self.device, self.dist = setup(cfg.device, cfg.threads)
        if cfg.precision == "auto":  # resolved once for this device; the run records what it chose
            cfg.precision = resolve_precision("auto", self.device)
            if isinstance(self.resolved_config.get("train"), dict):
                self.resolved_config["train"]["precision"] = cfg.precision
            if progress and self.dist.main:
                print(f"precision: auto → {cfg.precision}")
        check_recipe(recipe, cfg, self.dist.world)
        self.step = 0
        self.checkpoints = Checkpointer(recipe, run_dir, self.dist, keep=cfg.keep_checkpoints,
                                        data_fingerprint=data_fingerprint, on_checkpoint=on_checkpoint,
                                        run_files=run_files, allow_change=allow_change, free=free, derived=derived)
        self.validator = Validator(recipe, cfg, self.dist, self.checkpoints.save_best)
        # a time budget (wall or CPU clock) re-fits max_steps as training goes; fixed-step runs have none
        self.deadline = (Deadline(budget_minutes, cfg, self.dist, clock_name=budget_clock)
                         if budget_minutes is not None else None)

    @property
    def best(self) -> dict[str, Any]:
        """Validation state: best ``score``, its ``step``, ``stale`` evaluations, ``start_score``."""
        return self.validator.state

    def save(self, optimizer: torch.optim.Optimizer, final: bool = False) -> Path | None:
        """A periodic checkpoint with the training state (and the final weights with ``final``)."""
        if not self.dist.main:
            return None
        state = {"step": self.step, "optimizer": optimizer.state_dict(), "train_config": to_dict(self.cfg),
                 "world_size": self.dist.world, "early_stop": dict(self.best)}
        if self.deadline is not None:
            state["budget"] = self.deadline.state()
        return self.checkpoints.save(self.step, state, final)

    def hold(self) -> contextlib.AbstractContextManager[bool]:
        """Hold the run directory (its lock and a check of what it holds) for a block; yields
        whether a checkpoint is resumed from. :meth:`fit` holds it too (re-entrant)."""
        return self.checkpoints.hold(self.resume)

    def fit(self) -> dict[str, Any]:
        with self.hold():
            return self._fit()

    def _fit(self) -> dict[str, Any]:
        cfg, val = self.cfg, self.validator
        model = self.recipe.model.to(self.device)
        optimizer = build_optimizer(self.recipe, model, cfg)
        if self.checkpoints.from_checkpoint:
            state = self.checkpoints.restore(model, optimizer)
            self.step = int(state["step"])
            val.state.update(state.get("early_stop") or {})
            if self.deadline is not None:
                self.deadline.restore(state.get("budget"))
        self.checkpoints.prepare(self.resolved_config, self.step, world_size=self.dist.world,
                                 device=str(self.device))
        train_model = wrap_ddp(model, self.device, self.dist)
        after_step = getattr(self.recipe, "after_step", None)
        speed, last_loss, status = Throughput(), float("nan"), "completed"
        with (StopSignals() as signals, MetricsLog(self.run_dir / "metrics.jsonl", self.dist.main) as log,
              ProgressBar(cfg.max_steps, self.step, self.progress and self.dist.main) as bar):
            model.train()
            if val.due_at_start(self.step):
                log.write(val.run(model, self.step, start=True))  # competes for "best" if select_start
            if self.deadline is not None:
                self.deadline.start()
            while self.step < cfg.max_steps:
                stop = self._stop_reason(signals, speed)
                if stop is not None:
                    status = stop
                    break
                lr = lr_at(cfg, self.step, self.deadline.knot if self.deadline is not None else None)
                set_lr(optimizer, lr)
                last_loss, extras, gnorm = self._train_step(train_model, model, optimizer)
                self.step += 1
                if after_step is not None:
                    after_step(self.step, cfg.max_steps)
                speed.add(cfg.batch_size)
                if self.deadline is not None:
                    self.deadline.after_step(self.step)  # may move cfg.max_steps (every rank alike)
                    extras = {**extras, "max_steps": cfg.max_steps}
                record = None
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    record = train_record(self.step, last_loss, lr, gnorm, extras, speed.record())
                    log.write(record)
                bar.update(record)
                if val.due(self.step):
                    log.write(val.run(model, self.step))
                    if val.patience_used():
                        status = "early stopped"
                        break
                if self.step % cfg.ckpt_every == 0 and self.step < cfg.max_steps:
                    self.save(optimizer)
        # a run that used up its time budget is finished too: its model is written as final
        path = self.save(optimizer, final=status in FINISHED)
        barrier(self.dist)
        if self.dist.main:
            from .plots import plot_loss

            plot_loss(self.run_dir / "metrics.jsonl", self.run_dir / "loss_curve.png")
        return {"status": status, "step": self.step, "loss": last_loss, "checkpoint": str(path),
                "seconds": speed.elapsed(), "best_step": self.best["step"], "best_score": self.best["score"],
                "start_score": self.best["start_score"]}

    def _stop_reason(self, signals: StopSignals, speed: Throughput) -> str | None:
        """Why to stop before the next step (a signal, the time budget, used-up patience), agreed
        by every process: the first reason any of them sees."""
        code = 0
        if signals.received is not None:
            code = 1
        elif self.cfg.max_minutes is not None and speed.elapsed() / 60 >= self.cfg.max_minutes:
            code = 2
        elif self.validator.patience_used():  # resumed from an early-stopped run
            code = 3
        return _STOPS[all_reduce_max(code, self.dist)]

    def _train_step(self, train_model: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer
                    ) -> tuple[float, dict[str, float], float]:
        """One optimiser step on the global batch at ``self.step``: (loss averaged over the global
        batch, the recipe's extras averaged over this process's micro-batches, gradient norm)."""
        cfg, d = self.cfg, self.dist
        seed_step(cfg.seed, self.step, d.rank)
        ids, seeds = global_batch(self.recipe, cfg.seed, self.step, cfg.batch_size)
        optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.device)
        extras: dict[str, float] = {}
        for a, batch in enumerate(micro_batches(ids, seeds, self.step, d.rank, d.world, cfg.accum_steps)):
            with no_sync(train_model, a == cfg.accum_steps - 1), autocast(self.device, cfg.precision):
                loss, ex = self.recipe.loss(train_model, batch)
            (loss / cfg.accum_steps).backward()
            loss_sum += loss.detach().float() / cfg.accum_steps
            for k, v in ex.items():
                extras[k] = extras.get(k, 0.0) + v / cfg.accum_steps
        all_reduce_mean(loss_sum, d)
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        if not torch.isfinite(loss_sum):
            raise FloatingPointError(f"loss became {loss_sum.item()} at step {self.step}; lower the learning rate "
                                     "or use fp32")
        optimizer.step()
        return float(loss_sum), extras, float(gnorm)
