"""Confidence intervals and paired comparisons over evaluation *units*.

A unit is one independent-ish repetition of an evaluation:

* non-deterministic probes (MLP): one unit per (round, seed) — a k-fold task with 5 folds and
  5 seeds gives 25 units; a train/valid/test task with 5 seeds gives 5;
* deterministic probes (linear, kNN): one unit per round — their score does not change with
  the seed, so repeating it per seed would shrink the interval without adding information.

The 95 % CI of a score is ``mean ± t_{0.975, n-1} · s / √n`` over its units (``s``: sample
standard deviation, ``n`` units); with one unit the half-width is NaN ("n/a"). Units that
share a round share their test data, so for the MLP the interval is somewhat optimistic;
with a single split it reflects seed noise only, not data sampling.

Two models are compared on the same task and probe by pairing their units (same round, and
the same seed for the MLP): the per-unit differences get a paired t-test and a percentile
bootstrap CI of the mean difference. A difference is called *beyond noise* only when both
agree: p < 1 − confidence and the bootstrap interval excludes 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Unit = tuple[str, int | None]  # (round name, seed or None for deterministic probes)


@dataclass
class CI:
    """Mean with a t-distribution confidence interval over ``n`` units."""

    mean: float
    half_width: float
    n: int
    std: float
    confidence: float = 0.95

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> CI:
    """Mean and t-based CI half-width of the finite ``values`` (NaN half-width if n < 2)."""
    from scipy.stats import t

    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    n = len(v)
    if n == 0:
        return CI(float("nan"), float("nan"), 0, float("nan"), confidence)
    mean = float(v.mean())
    if n < 2:
        return CI(mean, float("nan"), 1, float("nan"), confidence)
    std = float(v.std(ddof=1))
    hw = float(t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n))
    return CI(mean, hw, n, std, confidence)


def units(records: Iterable[tuple[str, int, float]], deterministic: bool) -> dict[Unit, float]:
    """Map (round, seed, score) records to units (see module docstring).

    For deterministic probes the seeds of a round collapse into one unit; their scores must
    agree (they are copies), else ValueError.
    """
    out: dict[Unit, float] = {}
    for rnd, seed, score in records:
        key: Unit = (rnd, None) if deterministic else (rnd, int(seed))
        if key in out and deterministic:
            prev = out[key]
            if not (prev == score or (math.isnan(prev) and math.isnan(score))) and abs(prev - score) > 1e-9:
                raise ValueError(f"deterministic probe has different scores across seeds in round {rnd}: "
                                 f"{prev} vs {score}")
            continue
        out[key] = score
    return out


@dataclass
class PairedComparison:
    """``a`` minus ``b`` over ``n`` paired units."""

    a: str
    b: str
    n: int
    mean_diff: float
    t_low: float
    t_high: float
    p_value: float
    boot_low: float
    boot_high: float
    significant: bool
    confidence: float = 0.95

    @property
    def verdict(self) -> str:
        """"better", "worse", "≈" (within noise) or "n/a" (fewer than 2 units)."""
        if self.n < 2 or math.isnan(self.p_value):
            return "n/a"
        if not self.significant:
            return "≈"
        return "better" if self.mean_diff > 0 else "worse"

    def as_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "n": self.n, "mean_diff": self.mean_diff, "t_low": self.t_low,
                "t_high": self.t_high, "p_value": self.p_value, "boot_low": self.boot_low,
                "boot_high": self.boot_high, "significant": self.significant, "verdict": self.verdict}


def paired_diffs(a: Mapping[Unit, float], b: Mapping[Unit, float]) -> np.ndarray:
    """``a − b`` over the units both have with finite scores, in unit order (round, then seed)."""
    keys = sorted((k for k in a.keys() & b.keys() if math.isfinite(a[k]) and math.isfinite(b[k])),
                  key=lambda k: (k[0], -1 if k[1] is None else k[1]))
    return np.asarray([a[k] - b[k] for k in keys], dtype=np.float64)


def paired_compare(a: Mapping[Unit, float], b: Mapping[Unit, float], *, name_a: str = "a", name_b: str = "b",
                   confidence: float = 0.95, n_boot: int = 10000, seed: int = 0) -> PairedComparison:
    """Paired t-test and bootstrap of ``a − b`` over the units both have (finite scores)."""
    from scipy.stats import t

    d = paired_diffs(a, b)
    n = len(d)
    nan = float("nan")
    if n == 0:
        return PairedComparison(name_a, name_b, 0, nan, nan, nan, nan, nan, nan, False, confidence)
    mean = float(d.mean())
    if n < 2:
        return PairedComparison(name_a, name_b, 1, mean, nan, nan, nan, nan, nan, False, confidence)
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
        hw = 0.0
    else:
        tstat = mean / (sd / math.sqrt(n))
        p = float(2 * t.sf(abs(tstat), n - 1))
        hw = float(t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n))
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    alpha = 1 - confidence
    lo, hi = (float(x) for x in np.quantile(boots, [alpha / 2, 1 - alpha / 2]))
    significant = bool(p < alpha and (lo > 0 or hi < 0))
    return PairedComparison(name_a, name_b, n, mean, mean - hw, mean + hw, p, lo, hi, significant, confidence)


def task_mean_compare(pairs: Sequence[tuple[Mapping[Unit, float], Mapping[Unit, float]]], *, name_a: str = "a",
                      name_b: str = "b", confidence: float = 0.95, n_boot: int = 10000,
                      seed: int = 0) -> PairedComparison:
    """``a − b`` in the task mean (the plain mean over tasks of each task's mean score), from one
    ``(a_units, b_units)`` pair per task, paired within a task as :func:`paired_compare` pairs
    them; ``n`` is the number of tasks. The tasks are fixed and their units are the sample:

    * t: the difference's variance is Σ_t s_t²/n_t / K² over the K tasks (s_t: the sample
      standard deviation of task t's paired differences), with Welch–Satterthwaite degrees of
      freedom (Σ v_t)² / Σ v_t²/(n_t − 1), v_t = s_t²/n_t;
    * bootstrap: every replicate resamples each task's paired differences on its own and averages
      the tasks' means (stratified percentile bootstrap);
    * beyond noise, as for one task: p < 1 − confidence *and* the bootstrap interval excludes 0.

    With one task it is :func:`paired_compare` exactly. A task with fewer than 2 paired units
    leaves only the mean (n/a)."""
    from scipy.stats import t

    diffs = [paired_diffs(a, b) for a, b in pairs]
    nan = float("nan")
    k = len(diffs)
    if k == 0 or any(len(d) == 0 for d in diffs):
        return PairedComparison(name_a, name_b, k, nan, nan, nan, nan, nan, nan, False, confidence)
    mean = float(np.mean([d.mean() for d in diffs]))
    if any(len(d) < 2 for d in diffs):
        return PairedComparison(name_a, name_b, k, mean, nan, nan, nan, nan, nan, False, confidence)
    v = np.asarray([d.var(ddof=1) / len(d) for d in diffs])
    se = float(math.sqrt(v.sum()) / k)
    alpha = 1 - confidence
    if se == 0.0:
        p, hw = (1.0 if mean == 0.0 else 0.0), 0.0
    else:
        df = float(v.sum() ** 2 / sum(vi ** 2 / (len(d) - 1) for vi, d in zip(v, diffs)))
        p = float(2 * t.sf(abs(mean / se), df))
        hw = float(t.ppf(1 - alpha / 2, df) * se)
    rng = np.random.default_rng(seed)
    boots = np.mean([d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1) for d in diffs], axis=0)
    lo, hi = (float(x) for x in np.quantile(boots, [alpha / 2, 1 - alpha / 2]))
    significant = bool(p < alpha and (lo > 0 or hi < 0))
    return PairedComparison(name_a, name_b, k, mean, mean - hw, mean + hw, p, lo, hi, significant, confidence)
