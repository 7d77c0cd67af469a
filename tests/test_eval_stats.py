"""Confidence intervals and paired comparisons against textbook formulas (scipy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from audiofm.eval.stats import mean_ci, paired_compare, task_mean_compare, units


def test_mean_ci_matches_t_interval() -> None:
    x = np.asarray([0.71, 0.74, 0.69, 0.80, 0.77, 0.73])
    ci = mean_ci(x)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert ci.mean == pytest.approx(x.mean())
    assert (ci.low, ci.high) == pytest.approx((lo, hi))
    # textbook: t_{0.975, n-1} · s / sqrt(n)
    assert ci.half_width == pytest.approx(stats.t.ppf(0.975, 5) * x.std(ddof=1) / math.sqrt(6))
    assert mean_ci(x, 0.9).half_width < ci.half_width


def test_mean_ci_edge_cases() -> None:
    one = mean_ci([0.5])
    assert one.mean == 0.5 and math.isnan(one.half_width) and one.n == 1
    assert mean_ci([]).n == 0 and math.isnan(mean_ci([]).mean)
    assert mean_ci([0.3, float("nan"), 0.5]).n == 2
    assert mean_ci([0.4, 0.4, 0.4]).half_width == pytest.approx(0.0, abs=1e-12)


def test_units_deterministic_vs_seeded() -> None:
    recs = [("f0", 0, 0.5), ("f0", 1, 0.5), ("f1", 0, 0.7), ("f1", 1, 0.7)]
    assert units(recs, deterministic=True) == {("f0", None): 0.5, ("f1", None): 0.7}
    assert len(units(recs, deterministic=False)) == 4
    with pytest.raises(ValueError, match="different scores"):
        units([("f0", 0, 0.5), ("f0", 1, 0.6)], deterministic=True)


def test_paired_t_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    keys = [(f"fold{i}", s) for i in range(5) for s in range(3)]
    b = {k: 0.7 + 0.05 * rng.standard_normal() for k in keys}
    a = {k: v + 0.02 + 0.01 * rng.standard_normal() for k, v in b.items()}
    pc = paired_compare(a, b, name_a="A", name_b="B")
    ref = stats.ttest_rel([a[k] for k in keys], [b[k] for k in keys])
    assert pc.n == 15 and pc.p_value == pytest.approx(ref.pvalue)
    assert pc.mean_diff == pytest.approx(np.mean([a[k] - b[k] for k in keys]))
    assert pc.significant and pc.verdict == "better" and pc.boot_low > 0
    assert pc.t_low < pc.mean_diff < pc.t_high
    # swapped: worse
    assert paired_compare(b, a).verdict == "worse"


def test_paired_noise_and_unpaired_units() -> None:
    rng = np.random.default_rng(1)
    keys = [(f"fold{i}", None) for i in range(5)]
    a = {k: 0.7 + 0.05 * rng.standard_normal() for k in keys}
    b = {k: 0.7 + 0.05 * rng.standard_normal() for k in keys}
    pc = paired_compare(a, b)
    assert pc.verdict == "≈" and not pc.significant
    # only shared units are paired
    b2 = {("fold0", None): 0.1, ("fold9", None): 0.2}
    assert paired_compare(a, b2).n == 1 and paired_compare(a, b2).verdict == "n/a"
    # identical scores: no difference, p = 1
    same = paired_compare(a, dict(a))
    assert same.mean_diff == 0 and same.p_value == 1.0 and same.verdict == "≈"
    # a constant non-zero shift is beyond noise
    shifted = paired_compare({k: v + 0.01 for k, v in a.items()}, a)
    assert shifted.p_value == 0.0 and shifted.verdict == "better"


def _u(values):
    return {(f"fold{i:02d}", None): float(v) for i, v in enumerate(values)}


def test_task_mean_compare_against_hand_computed_cases() -> None:
    # one task: exactly the paired comparison (t-test and bootstrap)
    a, b = _u([0.7, 0.8, 0.75, 0.9]), _u([0.6, 0.7, 0.8, 0.7])
    one, ref = task_mean_compare([(a, b)]), paired_compare(a, b)
    assert one.n == 1 and ref.n == 4  # tasks vs units
    for k in ("mean_diff", "t_low", "t_high", "p_value", "boot_low", "boot_high", "significant"):
        assert getattr(one, k) == pytest.approx(getattr(ref, k), rel=1e-12), k
    # two tasks: A's differences 0 and 2 (mean 1, s² = 2, n 2), B's 1, 1, 1 (s² = 0): task mean 1
    pairs = [(_u([2.0, 4.0]), _u([2.0, 2.0])), (_u([1.0, 1.0, 1.0]), _u([0.0, 0.0, 0.0]))]
    c = task_mean_compare(pairs)
    assert c.n == 2 and c.mean_diff == pytest.approx(1.0)
    se = math.sqrt(2.0 / 2) / 2  # sqrt(Σ s_t²/n_t) / K
    df = 1.0  # Welch–Satterthwaite: (1)² / (1² / 1 + 0)
    assert c.p_value == pytest.approx(2 * stats.t.sf(1.0 / se, df))
    assert c.t_high - c.mean_diff == pytest.approx(stats.t.ppf(0.975, df) * se)
    # bootstrap: A's replicate means are 0, 1, 2 (p 1/4, 1/2, 1/4), B's always 1 → task mean 0.5, 1, 1.5
    assert (c.boot_low, c.boot_high) == (0.5, 1.5)
    assert c.verdict == "≈"  # the bootstrap excludes 0, the t-test (p ≈ 0.30, 1 df) does not
    # constant differences: exact, beyond noise
    same = task_mean_compare([(_u([1, 2, 3]), _u([0, 1, 2])), (_u([5, 5]), _u([2, 2]))])
    assert same.mean_diff == pytest.approx(2.0) and same.p_value == 0.0 and same.verdict == "better"
    assert (same.boot_low, same.boot_high) == pytest.approx((2.0, 2.0))
    # a task with one paired unit leaves only the mean; none at all leaves nothing
    few = task_mean_compare([(_u([1, 2]), _u([0, 0])), (_u([3]), _u([1]))])
    assert few.mean_diff == pytest.approx(1.75) and few.verdict == "n/a"
    assert math.isnan(task_mean_compare([(_u([1]), {})]).mean_diff)
