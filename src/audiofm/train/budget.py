"""Fitting a run to a time budget (wall or CPU clock, :mod:`.deadline`): time the real recipe's
optimiser step on the training device and turn minutes into a step count that every process
agrees on."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from .data_order import global_batch
from .deadline import clock
from .distributed import Dist, autocast, broadcast_object, setup, synchronize
from .engine import Recipe, TrainConfig, micro_batches


def time_step(recipe: Recipe, cfg: TrainConfig, device: torch.device, world: int = 1, probe_steps: int = 3,
              max_seconds: float | None = None, clock_name: str = "wall") -> float:
    """Median seconds (on the ``clock_name`` clock) of one optimiser step of one process's share of the batch
    (``batch_size / world`` clips in ``accum_steps`` micro-batches: forward, backward, AdamW) on
    ``device``, over ``probe_steps`` steps after a warm-up step, on a throw-away copy of the model.
    Timed alone: :meth:`Batch.gather` is the identity here, so no other process takes part.
    Probing stops early once it has taken ``max_seconds`` (at least one step is timed)."""
    model = copy.deepcopy(recipe.model).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    times: list[float] = []
    now = clock(clock_name)
    start = now()
    for s in range(probe_steps + 1):
        ids, seeds = global_batch(recipe, cfg.seed, s, cfg.batch_size)
        batches = [dataclasses.replace(b, world=1) for b in micro_batches(ids, seeds, s, 0, world, cfg.accum_steps)]
        synchronize(device)
        t = now()
        for b in batches:
            with autocast(device, cfg.precision):
                loss, _ = recipe.loss(model, b)
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        synchronize(device)
        if s:
            times.append(now() - t)
            if max_seconds is not None and now() - start > max_seconds:
                break
    return float(np.median(times))


def calibrate_steps(recipe: Recipe, cfg: TrainConfig, minutes: float, *, device: torch.device | None = None,
                    d: Dist | None = None, probe_steps: int = 3, clock_name: str = "wall") -> int:
    """Optimizer steps that fit in ``minutes``: :func:`time_step` on the main process (on the
    training ``device``, default ``cfg.device``), the count broadcast so every process trains
    the same number of steps."""
    if device is None or d is None:
        dev, dd = setup(cfg.device, cfg.threads)
        device, d = device or dev, d or dd
    steps = 0
    if d.main:
        # on a slow or busy machine probing stops at a quarter of the budget (the run re-fits anyway)
        per_step = time_step(recipe, cfg, device, d.world, probe_steps, max_seconds=0.25 * minutes * 60,
                             clock_name=clock_name)
        steps = max(1, int(minutes * 60 / per_step))
    return broadcast_object(steps, d)
