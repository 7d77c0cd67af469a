"""The training engine shared by every recipe.

AdamW, linear warm-up + cosine decay, gradient clipping and accumulation, optional bf16
autocast, DDP under ``torchrun`` (gloo on CPU, nccl on CUDA), a progress bar, metrics JSONL,
atomic periodic checkpoints and exact resume.

Exactness: every random choice is a pure function of ``(seed, step, global sample index)``:
which clips form a batch, their crops and masks (drawn by the recipe from those seeds), and
the torch RNG (re-seeded at every step). So a resumed run retraces an uninterrupted one, and
N processes each taking 1/N of the global batch match one process taking all of it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from .. import checkpoint as ckpt
from ..config import save_yaml, to_dict
from ..models.msm import ModelConfig
from ..runinfo import write_run_info


@dataclass
class TrainConfig:
    """max_steps: optimizer steps. batch_size: global clips per optimizer step (split over
    processes and ``accum_steps`` micro-batches). lr: peak learning rate. warmup_steps: linear
    warm-up. min_lr_ratio: final lr / peak of the cosine decay. weight_decay, betas: AdamW.
    grad_clip: max gradient norm (0 = off). precision: 'fp32' or 'bf16' (autocast).
    seed: all randomness derives from it. log_every / ckpt_every: in steps. keep_checkpoints:
    periodic checkpoints kept. max_minutes: stop (with a checkpoint) after this wall time.
    device: 'auto', 'cpu' or 'cuda'. threads: torch intra-op threads (0 = torch default).
    evaluate_every: call the recipe's ``evaluate(model)`` before the first step, every this many
    steps and after the last one (0 = never); the best-scoring weights are kept in
    ``run_dir/best``. select_start: the starting weights (step 0) may be chosen as the best too;
    when False they are evaluated and logged (``start_score``) but only trained weights compete.
    patience: stop after this many evaluations in a row without a better score (0 = never stop
    early)."""

    max_steps: int = 1000
    batch_size: int = 32
    accum_steps: int = 1
    lr: float = 5e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    precision: str = "fp32"
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 200
    keep_checkpoints: int = 2
    max_minutes: float | None = None
    device: str = "auto"
    threads: int = 0
    evaluate_every: int = 0
    select_start: bool = True
    patience: int = 0

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))


class Recipe(Protocol):
    """What the engine trains. ``model`` is the module to optimise; ``config`` is saved with
    checkpoints; ``num_examples`` is the dataset size; ``loss(model, ids, seeds, step, part)``
    computes the mean loss over clips ``ids`` (global indices into the dataset, with per-clip
    seeds), ``part = (offset, global_batch)`` locating them in the global batch.

    Optional methods, used when a recipe defines them:

    * ``param_groups(weight_decay) -> list[dict]``: the optimizer's parameter groups (default:
      :func:`param_groups`); a group's ``lr_scale`` multiplies the scheduled learning rate.
    * ``batch_ids(seed, step, batch_size) -> (ids, seeds)``: the global batch at ``step``
      (default: :func:`batch_ids`, epoch-wise shuffles); must be a pure function of its inputs.
    * ``evaluate(model) -> dict[str, float]``: validation metrics with a higher-is-better
      ``"score"``; called before the first step and every ``TrainConfig.evaluate_every`` steps
      (deterministic, main process only; the result is broadcast).
    """

    @property
    def model(self) -> nn.Module: ...

    @property
    def config(self) -> ModelConfig: ...

    def num_examples(self) -> int: ...

    def loss(self, model: nn.Module, ids: list[int], seeds: list[int], step: int,
             part: tuple[int, int]) -> tuple[Tensor, dict[str, float]]: ...


def _mix(*xs: int) -> int:
    """Deterministic 63-bit seed from integers."""
    return int(np.random.SeedSequence(list(xs)).generate_state(1, dtype=np.uint64)[0] >> 1)


def batch_ids(seed: int, step: int, batch_size: int, n: int) -> tuple[list[int], list[int]]:
    """Dataset indices and per-clip seeds of the global batch at ``step`` (epoch-wise shuffles)."""
    ids, seeds = [], []
    for j in range(batch_size):
        g = step * batch_size + j
        epoch, pos = divmod(g, n)
        perm = _perm_cache(seed, epoch, n)
        ids.append(int(perm[pos]))
        seeds.append(_mix(seed, step, j))
    return ids, seeds


_PERM: dict[tuple[int, int, int], np.ndarray] = {}


def _perm_cache(seed: int, epoch: int, n: int) -> np.ndarray:
    key = (seed, epoch, n)
    if key not in _PERM:
        _PERM.clear()
        _PERM[key] = np.random.default_rng([seed, epoch]).permutation(n)
    return _PERM[key]


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate at ``step``: linear warm-up then cosine decay to ``min_lr_ratio``·lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    t = min(1.0, t)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, norms, and learned tokens (ndim < 2)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> Dist:
    """Initialise torch.distributed when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


class RunDirError(ValueError):
    pass


class Engine:
    """Runs a :class:`Recipe` in ``run_dir``; call :meth:`fit`."""

    def __init__(self, recipe: Recipe, cfg: TrainConfig, run_dir: str | os.PathLike[str], *,
                 resume: bool = False, resolved_config: dict[str, Any] | None = None,
                 data_fingerprint: dict[str, Any] | None = None, progress: bool = True,
                 on_checkpoint: Callable[[int, Path], None] | None = None) -> None:
        self.recipe = recipe
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.resolved_config = resolved_config or {}
        self.data_fingerprint = data_fingerprint or {}
        self.progress = progress
        self.on_checkpoint = on_checkpoint
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.dist = setup_distributed(self.device)
        if cfg.batch_size % (self.dist.world * cfg.accum_steps):
            raise ValueError(f"batch_size={cfg.batch_size} must divide by processes×accum_steps="
                             f"{self.dist.world * cfg.accum_steps}")
        self.step = 0
        self._stop_signal: int | None = None
        # validation state (saved with checkpoints): best score so far, its step, evaluations since
        self.best: dict[str, Any] = {"score": None, "step": None, "stale": 0, "start_score": None}

    # -- run directory --------------------------------------------------------------------
    def _prepare_run_dir(self) -> None:
        ckpts = self.run_dir / "checkpoints"
        has_run = (self.run_dir / "run_config.yaml").exists() or ckpt.latest_checkpoint(ckpts) is not None
        if has_run and not self.resume:
            raise RunDirError(f"{self.run_dir} already holds a run; pass --resume to continue it or "
                              "choose a new --out (nothing was overwritten)")
        if self.resume and not has_run:
            raise RunDirError(f"{self.run_dir}: nothing to resume (no run_config.yaml or checkpoints)")
        if self.dist.world > 1:
            dist.barrier()  # every rank has checked before rank 0 writes anything
        if self.dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpts.mkdir(exist_ok=True)
            if not self.resume:
                save_yaml(self.resolved_config, self.run_dir / "run_config.yaml")
            name = "run_info.json" if not self.resume else f"run_info.resume-{time.strftime('%Y%m%d-%H%M%S')}.json"
            write_run_info(self.run_dir, self.data_fingerprint, name, world_size=self.dist.world,
                           device=str(self.device))
        if self.dist.world > 1:
            dist.barrier()

    # -- checkpoints ----------------------------------------------------------------------
    def _raw_model(self) -> nn.Module:
        return self.recipe.model

    def save(self, optimizer: torch.optim.Optimizer, final: bool = False) -> Path | None:
        if not self.dist.main:
            return None
        state = {"step": self.step, "optimizer": optimizer.state_dict(), "train_config": to_dict(self.cfg),
                 "world_size": self.dist.world, "early_stop": dict(self.best)}
        meta = {"step": self.step, "data_fingerprint": self.data_fingerprint}
        path = self.run_dir / "checkpoints" / f"step_{self.step:08d}"
        spec = ckpt.CheckpointSpec.from_model_config(self.recipe.config)
        ckpt.save_checkpoint(path, spec, self._raw_model(), state, meta, overwrite=True)
        steps = sorted(d for d in path.parent.iterdir() if d.name.startswith("step_"))
        for old in steps[: max(0, len(steps) - self.cfg.keep_checkpoints)]:
            import shutil

            shutil.rmtree(old)
        if final:
            ckpt.save_checkpoint(self.run_dir / "model", spec, self._raw_model(), None,
                                 meta, overwrite=True)
        if self.on_checkpoint is not None:
            self.on_checkpoint(self.step, path)
        return path

    def _load_resume(self, optimizer: torch.optim.Optimizer) -> None:
        latest = ckpt.latest_checkpoint(self.run_dir / "checkpoints")
        if latest is None:
            raise RunDirError(f"{self.run_dir}: no complete checkpoint to resume from")
        state = ckpt.load_train_state(latest)
        ckpt.load_weights(self._raw_model(), ckpt.load_state_dict(latest), str(latest))
        optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.best.update(state.get("early_stop") or {})
        self._truncate_metrics(self.step)

    def _truncate_metrics(self, step: int) -> None:
        """Drop metrics logged after ``step`` (they will be logged again)."""
        f = self.run_dir / "metrics.jsonl"
        if not self.dist.main or not f.exists():
            return
        keep = [ln for ln in f.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
        tmp = f.with_suffix(".tmp")
        tmp.write_text("".join(k + "\n" for k in keep))
        os.replace(tmp, f)

    # -- validation -----------------------------------------------------------------------
    def _evaluate(self, model: nn.Module, metrics_f: Any, start: bool = False) -> bool:
        """Run the recipe's evaluation, keep the best weights; True when patience is used up.
        ``start``: the evaluation of the starting weights (eligible only with ``select_start``)."""
        res: dict[str, Any] = {}
        if self.dist.main:
            was_training = model.training
            res = {k: float(v) for k, v in self.recipe.evaluate(model).items()}  # type: ignore[attr-defined]
            model.train(was_training)
            if "score" not in res:
                raise KeyError(f"{type(self.recipe).__name__}.evaluate() must return a 'score' "
                               f"(higher is better); got {sorted(res)}")
        if self.dist.world > 1:
            box = [res]
            dist.broadcast_object_list(box, src=0)
            res = box[0]
        score = res["score"]
        best = self.best["score"]
        if start:
            self.best["start_score"] = score
        if start and not self.cfg.select_start:
            pass  # logged below, never kept as "best"
        elif not math.isnan(score) and (best is None or score > best):
            self.best.update(score=score, step=self.step, stale=0)
            if self.dist.main:
                spec = ckpt.CheckpointSpec.from_model_config(self.recipe.config)
                ckpt.save_checkpoint(self.run_dir / "best", spec, self._raw_model(), None,
                                     {"step": self.step, "score": score, "data_fingerprint": self.data_fingerprint},
                                     overwrite=True)
        else:
            self.best["stale"] += 1
        if metrics_f is not None:
            rec = {"step": self.step, "eval": {k: round(v, 6) for k, v in res.items()},
                   "best_score": round(self.best["score"], 6) if self.best["score"] is not None else None,
                   "best_step": self.best["step"]}
            metrics_f.write(json.dumps(rec) + "\n")
            metrics_f.flush()
        return self._patience_used()

    def _patience_used(self) -> bool:
        return self.cfg.patience > 0 and self.best["stale"] >= self.cfg.patience

    # -- loop -----------------------------------------------------------------------------
    def _handle_signal(self, signum: int, frame: Any) -> None:
        self._stop_signal = signum

    def fit(self) -> dict[str, Any]:
        cfg, recipe = self.cfg, self.recipe
        self._prepare_run_dir()
        model = recipe.model.to(self.device)
        make_groups = getattr(recipe, "param_groups", None)
        groups = make_groups(cfg.weight_decay) if make_groups is not None else param_groups(model, cfg.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
        sample = getattr(recipe, "batch_ids", None)
        if cfg.evaluate_every < 0 or cfg.patience < 0:
            raise ValueError("evaluate_every and patience must be ≥ 0")
        if cfg.evaluate_every and getattr(recipe, "evaluate", None) is None:
            raise ValueError(f"evaluate_every={cfg.evaluate_every} but {type(recipe).__name__} has no "
                             "evaluate(model) method; set evaluate_every: 0")
        if self.resume:
            self._load_resume(optimizer)
        train_model: nn.Module = model
        if self.dist.world > 1:
            train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        n = recipe.num_examples()
        per_rank = cfg.batch_size // self.dist.world
        micro = per_rank // cfg.accum_steps
        old_handlers = {s: signal.signal(s, self._handle_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        bar = None
        if self.progress and self.dist.main:
            from tqdm import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, unit="step", dynamic_ncols=True,
                       file=sys.stderr, desc="train")
        metrics_f = open(self.run_dir / "metrics.jsonl", "a") if self.dist.main else None
        t_start = time.time()
        t_log, clips_since = time.time(), 0
        last_loss = float("nan")
        status = "completed"
        try:
            model.train()
            if cfg.evaluate_every and self.step == 0 and self.best["start_score"] is None:
                self._evaluate(model, metrics_f, start=True)  # competes for "best" if select_start
            while self.step < cfg.max_steps:
                if self._stop_signal is not None:
                    status = "interrupted"
                    break
                if cfg.max_minutes is not None and (time.time() - t_start) / 60 >= cfg.max_minutes:
                    status = "time budget reached"
                    break
                if self._patience_used():  # resumed from an early-stopped run
                    status = "early stopped"
                    break
                lr = lr_at(cfg, self.step)
                for g in optimizer.param_groups:
                    g["lr"] = lr * g.get("lr_scale", 1.0)
                torch.manual_seed(_mix(cfg.seed, self.step, self.dist.rank, 7))
                if sample is not None:
                    ids, seeds = sample(cfg.seed, self.step, cfg.batch_size)
                else:
                    ids, seeds = batch_ids(cfg.seed, self.step, cfg.batch_size, n)
                optimizer.zero_grad(set_to_none=True)
                loss_sum = torch.zeros((), device=self.device)
                extras: dict[str, float] = {}
                for a in range(cfg.accum_steps):
                    off = self.dist.rank * per_rank + a * micro
                    sl = slice(off, off + micro)
                    sync = a == cfg.accum_steps - 1 or self.dist.world == 1
                    ctx: Any = _null()
                    if not sync and isinstance(train_model, nn.parallel.DistributedDataParallel):
                        ctx = train_model.no_sync()
                    with ctx, torch.autocast(self.device.type, dtype=torch.bfloat16,
                                             enabled=cfg.precision == "bf16"):
                        loss, ex = recipe.loss(train_model, ids[sl], seeds[sl], self.step, (off, cfg.batch_size))
                    (loss / cfg.accum_steps).backward()
                    loss_sum += loss.detach().float() / cfg.accum_steps
                    for k, v in ex.items():
                        extras[k] = extras.get(k, 0.0) + v / cfg.accum_steps
                if self.dist.world > 1:
                    dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
                gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                       cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
                if not torch.isfinite(loss_sum):
                    raise FloatingPointError(f"loss became {loss_sum.item()} at step {self.step}; lower the "
                                             "learning rate or use fp32")
                optimizer.step()
                self.step += 1
                clips_since += cfg.batch_size
                last_loss = float(loss_sum)
                if metrics_f is not None and (self.step % cfg.log_every == 0 or self.step == cfg.max_steps):
                    now = time.time()
                    rec = {"step": self.step, "loss": round(last_loss, 6), "lr": lr,
                           "grad_norm": round(float(gnorm), 4),
                           "clips_per_s": round(clips_since / max(now - t_log, 1e-9), 2),
                           "elapsed_s": round(now - t_start, 1), **{k: round(v, 6) for k, v in extras.items()}}
                    metrics_f.write(json.dumps(rec) + "\n")
                    metrics_f.flush()
                    t_log, clips_since = now, 0
                    if bar is not None:
                        bar.set_postfix(loss=f"{last_loss:.4f}", clips_s=rec["clips_per_s"])
                if bar is not None:
                    bar.update(1)
                stop = False
                if cfg.evaluate_every and (self.step % cfg.evaluate_every == 0 or self.step == cfg.max_steps):
                    stop = self._evaluate(model, metrics_f)
                if stop:
                    status = "early stopped"
                    break
                if self.step % cfg.ckpt_every == 0 and self.step < cfg.max_steps:
                    self.save(optimizer)
        finally:
            for s, h in old_handlers.items():
                signal.signal(s, h)
            if bar is not None:
                bar.close()
            if metrics_f is not None:
                metrics_f.close()
        # a run that used up its time budget is finished too: its model is written as final
        path = self.save(optimizer, final=status in ("completed", "time budget reached", "early stopped"))
        if self.dist.world > 1:
            dist.barrier()
        if self.dist.main:
            from .plots import plot_loss

            plot_loss(self.run_dir / "metrics.jsonl", self.run_dir / "loss_curve.png")
        return {"status": status, "step": self.step, "loss": last_loss, "checkpoint": str(path),
                "seconds": time.time() - t_start, "best_step": self.best["step"], "best_score": self.best["score"],
                "start_score": self.best["start_score"]}


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: Any) -> None:
        return None
