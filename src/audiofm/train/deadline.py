"""``--budget-minutes`` as a promise: re-estimate the step time as training goes and
re-fit the rest of the cosine schedule so that its last step — at the final learning rate —
ends within the budget.

The first step count comes from timing the recipe before training (:mod:`.budget`). After
every step the main process estimates the step time — the mean wall time of the last
``window`` steps (everything included: data, logging, checkpoints, validation), or the median of
the last three when that is slower (the machine just got busier) — counts the steps that fit in
the time left (the budget minus the initial timing and the steps so far),
and when that count moves the end by more than 2 % of the steps left (by any step near the
end), moves ``max_steps`` there; every process applies the same decision (an all-reduce). The
schedule continues from where it is: the cosine keeps its current phase and runs on to phase 1
at the new last step (:func:`~.schedule.lr_at` with a knot), so the learning rate changes
smoothly and the last step always uses the final learning rate.

The promise: the training loop — counted from the timing probe on — ends within the budget plus
about one step time (the step under way when time runs out still finishes, at the final
learning rate), two when the budget holds only a handful of steps; the final checkpoint write
follows. When not even the warm-up fits any more, the warm-up is shortened.
Budget runs are not bit-reproducible across machines or loads (the step count depends on the
clock); fixed-step runs never use this module. A resumed budget run keeps its decisions
(``max_steps``, the knot, the time already used) from the checkpoint.

Two clocks (:data:`CLOCKS`): ``wall`` (``time.perf_counter``, the default: the run ends by a
time of day) and ``cpu`` (``time.process_time``: CPU seconds of the training process, all its
threads, user + system). A CPU budget buys the same compute whatever else runs on the machine:
a one-thread run under load takes longer on the wall but does the same number of steps as on an
idle machine (up to the memory-bandwidth contention that makes a busy machine's steps cost more
CPU too). With N threads a step costs up to N CPU-seconds per second; with several processes
(torchrun) each counts its own and rank 0's decides.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .distributed import Dist, all_reduce_max
from .schedule import cosine_phase

if TYPE_CHECKING:
    from .engine import TrainConfig

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def clock(name: str) -> Callable[[], float]:
    """The clock a budget is counted on: ``wall`` or ``cpu`` (see the module docstring)."""
    if name not in CLOCKS:
        raise ValueError(f"unknown budget clock {name!r}; choose from {', '.join(CLOCKS)}")
    return CLOCKS[name]


class Deadline:
    """Keeps ``cfg.max_steps`` (mutated in place) and the schedule's knot within ``minutes``."""

    def __init__(self, minutes: float, cfg: TrainConfig, d: Dist, window: int = 10, min_samples: int = 1,
                 clock_name: str = "wall") -> None:
        self.budget = float(minutes) * 60.0
        self.clock_name, self._now = clock_name, clock(clock_name)
        self.cfg, self.dist = cfg, d
        self.knot: tuple[int, float] = (cfg.warmup_steps, 0.0)
        self.used = 0.0  # seconds of earlier sessions of this run
        self.refits = 0
        self.min_samples = min_samples
        self._times: deque[float] = deque(maxlen=window)
        self._start = self._last = self._now()

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the decisions so far."""
        return {"minutes": self.budget / 60.0, "knot": [self.knot[0], self.knot[1]], "used_seconds": self.elapsed(),
                "refits": self.refits, "clock": self.clock_name}

    def restore(self, state: dict[str, Any] | None) -> None:
        if state:
            self.budget = float(state["minutes"]) * 60.0  # what the run started with
            self.knot = (int(state["knot"][0]), float(state["knot"][1]))
            self.used = float(state["used_seconds"])
            self.refits = int(state.get("refits", 0))

    def start(self) -> None:
        """Start the clock (at the first step of this session)."""
        self._start = self._last = self._now()
        self._times.clear()

    def elapsed(self) -> float:
        return self.used + self._now() - self._start

    def after_step(self, step: int) -> None:
        """``step`` steps are done: re-fit the schedule's end if the clock says so (all ranks)."""
        now = self._now()
        self._times.append(now - self._last)
        self._last = now
        target = self._target(step) if self.dist.main else 0
        target = all_reduce_max(target, self.dist)  # rank 0's decision on every rank
        if target:
            self._refit(step, target)

    def _target(self, step: int) -> int:
        """The step count that ends in time (0 = keep the current one); main process only."""
        if len(self._times) < self.min_samples or step >= self.cfg.max_steps:
            return 0
        last3 = sorted(list(self._times)[-3:])
        # the window's mean, or the median of the last 3 steps when the machine just got slower
        # (a median: one slow step, e.g. a checkpoint write, does not move the end)
        per_step = max(sum(self._times) / len(self._times), last3[len(last3) // 2])
        left = self.budget - self.elapsed()
        target = step + max(1, int(left / per_step))  # out of time: one last step at the final lr
        tolerance = (self.cfg.max_steps - step) // 50  # none near the end: every step counts there
        return target if abs(target - self.cfg.max_steps) > tolerance else 0

    def _refit(self, step: int, target: int) -> None:
        cfg = self.cfg
        if step < cfg.warmup_steps:
            if target <= cfg.warmup_steps:  # not even the warm-up fits: shorten it
                cfg.warmup_steps = max(1, step, target // 10)
                self.knot = (cfg.warmup_steps, 0.0)
        else:
            self.knot = (step, cosine_phase(cfg, step, self.knot))
        cfg.max_steps = max(target, step + 1)
        self.refits += 1
