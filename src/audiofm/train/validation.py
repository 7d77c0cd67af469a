"""Validation during training: the recipe's ``evaluate(model)`` on a schedule, the best score
(its weights kept by the checkpointer), and early stopping after ``patience`` evaluations
without a better score. The state round-trips through checkpoints, so resume retraces it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import nn

from .distributed import Dist, broadcast_object

if TYPE_CHECKING:
    from .engine import Recipe, TrainConfig


class Validator:
    """Runs ``recipe.evaluate`` every ``cfg.evaluate_every`` steps (main process; the result is
    broadcast) and calls ``save_best(step, score)`` on improvement."""

    def __init__(self, recipe: Recipe, cfg: TrainConfig, d: Dist, save_best: Callable[[int, float], None]) -> None:
        if cfg.evaluate_every < 0 or cfg.patience < 0:
            raise ValueError("evaluate_every and patience must be ≥ 0")
        self.evaluate: Callable[[nn.Module], dict[str, float]] | None = getattr(recipe, "evaluate", None)
        if cfg.evaluate_every and self.evaluate is None:
            raise ValueError(f"evaluate_every={cfg.evaluate_every} but {type(recipe).__name__} has no "
                             "evaluate(model) method; set evaluate_every: 0")
        self.name = type(recipe).__name__
        self.cfg = cfg
        self.dist = d
        self.save_best = save_best
        # best score so far, its step, evaluations since, the starting weights' score
        self.state: dict[str, Any] = {"score": None, "step": None, "stale": 0, "start_score": None}

    def due_at_start(self, step: int) -> bool:
        """Evaluate the starting weights (a fresh run, not yet evaluated)."""
        return bool(self.cfg.evaluate_every) and step == 0 and self.state["start_score"] is None

    def due(self, step: int) -> bool:
        every = self.cfg.evaluate_every
        return bool(every) and (step % every == 0 or step == self.cfg.max_steps)

    def patience_used(self) -> bool:
        return self.cfg.patience > 0 and self.state["stale"] >= self.cfg.patience

    def run(self, model: nn.Module, step: int, start: bool = False) -> dict[str, Any]:
        """Evaluate, keep the best weights; returns the ``metrics.jsonl`` record. ``start``: the
        starting weights, eligible for "best" only with ``select_start``."""
        res: dict[str, Any] = {}
        if self.dist.main:
            assert self.evaluate is not None
            was_training = model.training
            res = {k: float(v) for k, v in self.evaluate(model).items()}
            model.train(was_training)
            if "score" not in res:
                raise KeyError(f"{self.name}.evaluate() must return a 'score' "
                               f"(higher is better); got {sorted(res)}")
        res = broadcast_object(res, self.dist)
        score, best = res["score"], self.state["score"]
        if start:
            self.state["start_score"] = score
        if start and not self.cfg.select_start:
            pass  # logged, never kept as "best"
        elif not math.isnan(score) and (best is None or score > best):
            self.state.update(score=score, step=step, stale=0)
            self.save_best(step, score)
        else:
            self.state["stale"] += 1
        best = self.state["score"]
        return {"step": step, "eval": {k: round(v, 6) for k, v in res.items()},
                "best_score": round(best, 6) if best is not None else None, "best_step": self.state["step"]}
