"""Names the evaluation code shares, in a module light enough for the command line: the probes
and the metric registry.

Every metric a results file may hold is described here once (:class:`Metric`); the report,
its confidence intervals, paired comparisons and charts read these descriptions instead of
knowing metric names, so a new task type only registers its metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PROBES = ("linear", "mlp", "knn")
DETERMINISTIC_PROBES = frozenset({"linear", "knn"})
AGGREGATIONS = ("mean", "hmean")


@dataclass(frozen=True)
class Metric:
    """How a metric is read and shown.

    higher_is_better: direction (best-of-column, "best" reference, ▲/▼ verdicts). percent: values
    are fractions shown ×100 with one decimal (else raw with two). across_tasks: how one model's
    per-task means combine into the task-aggregate column — arithmetic "mean" or harmonic "hmean"
    (DCASE Task 2's official score). label: short name in tables, headings and axes. noun: how
    prose refers to it ("% for accuracy/mAP")."""

    higher_is_better: bool = True
    percent: bool = False
    across_tasks: Literal["mean", "hmean"] = "mean"
    label: str = ""
    noun: str = ""


METRICS: dict[str, Metric] = {
    # scene classification (HEAR)
    "top1_acc": Metric(True, True, "mean", "top1_acc", "accuracy"),
    "mAP": Metric(True, True, "mean", "mAP", "mAP"),
    "d_prime": Metric(True, False, "mean", "d'", "d'"),
    # anomalous sound detection (DCASE Task 2): per machine type (task); across: harmonic mean
    "auc": Metric(True, True, "hmean", "AUC", "AUC"),
    "auc_source": Metric(True, True, "hmean", "AUC-s", "source-domain AUC"),
    "auc_target": Metric(True, True, "hmean", "AUC-t", "target-domain AUC"),
    "pauc": Metric(True, True, "hmean", "pAUC", "pAUC"),
    "official_score": Metric(True, True, "hmean", "official score", "official score"),
    # language-based audio retrieval (DCASE Task 6)
    "map_at_10": Metric(True, True, "mean", "mAP@10", "mAP@10"),
    "map_at_16": Metric(True, True, "mean", "mAP@16", "mAP@16"),
    "r_at_1": Metric(True, True, "mean", "R@1", "R@1"),
    "r_at_5": Metric(True, True, "mean", "R@5", "R@5"),
    "r_at_10": Metric(True, True, "mean", "R@10", "R@10"),
}


def metric_info(name: str) -> Metric:
    """The registered description of ``name``; an unregistered metric is shown raw, higher is
    better, averaged across tasks, under its own name."""
    m = METRICS.get(name)
    if m is None:
        return Metric(True, False, "mean", name, name)
    return Metric(m.higher_is_better, m.percent, m.across_tasks, m.label or name, m.noun or m.label or name)


def metric_order(names: set[str] | list[str]) -> list[str]:
    """``names`` in registry order, unregistered ones after them (sorted)."""
    have = set(names)
    return [m for m in METRICS if m in have] + sorted(have - set(METRICS))
