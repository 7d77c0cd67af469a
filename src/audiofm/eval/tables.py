"""Aggregation of long-format results into cells with confidence intervals, paired comparisons,
and their markdown tables — all driven by the metric registry (:data:`~.registry.METRICS`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .registry import Metric, metric_info, metric_order
from .results import RunData
from .stats import CI, PairedComparison, mean_ci, paired_compare, task_mean_compare, units

Key = tuple[str, str, str, str]  # (model, task, method, metric)


@dataclass
class Cell:
    """Aggregate of one (model, task, method, metric) over its evaluation units."""

    metric: str
    ci: CI
    deterministic: bool
    units: dict[Any, float]
    n_rounds: int
    n_seeds: int


def aggregate(data: RunData, confidence: float = 0.95) -> dict[Key, Cell]:
    """Mean ± CI per (model, task, method, metric) over units (see :mod:`audiofm.eval.stats`);
    cells whose values are all NaN are left out."""
    groups: dict[Key, list[dict[str, Any]]] = {}
    for r in data.results:
        groups.setdefault((r["model"], r["task"], r["method"], r["metric"]), []).append(r)
    out = {}
    for key, rows in groups.items():
        det = all(r["deterministic"] for r in rows)
        vals = [(r["fold"], r["seed"], float(r["value"])) for r in rows]
        if all(math.isnan(v[2]) for v in vals):
            continue
        u = units(vals, det)
        out[key] = Cell(key[3], mean_ci(u.values(), confidence), det, u, len({r["fold"] for r in rows}),
                        len({r["seed"] for r in rows}))
    return out


def _best(values: Sequence[float], higher: bool | None) -> float:
    vals = [v for v in values if not math.isnan(v)]
    if not vals or higher is None:
        return float("nan")
    return max(vals) if higher else min(vals)


def _direction(metrics: Sequence[Metric]) -> bool | None:
    """Common direction of ``metrics`` (None when they disagree)."""
    dirs = {m.higher_is_better for m in metrics}
    return dirs.pop() if len(dirs) == 1 else None


def compare(data: RunData, cells: dict[Key, Cell], compare_to: str = "first", confidence: float = 0.95
            ) -> list[dict[str, Any]]:
    """Paired comparisons of every model against the reference, per task, method and metric (the
    task's primary metric first). ``compare_to``: "first" — the first model of the run(s);
    "best" — the model with the best mean in that task/method/metric."""
    out = []
    models = data.models
    present_metrics: dict[str, list[str]] = {}
    for r in data.results:
        present_metrics.setdefault(r["task"], []).append(r["metric"])
    for task in data.tasks:
        primary = data.primary_metric(task)
        metrics = [primary] + [m for m in metric_order(present_metrics[task]) if m != primary]
        for method in data.methods:
            for metric in metrics:
                info = metric_info(metric)
                present = [m for m in models if (m, task, method, metric) in cells]
                if len(present) < 2:
                    continue
                if compare_to == "best":
                    sign = 1.0 if info.higher_is_better else -1.0
                    ref = max(present, key=lambda m: sign * cells[(m, task, method, metric)].ci.mean)
                else:
                    ref = models[0]
                    if ref not in present:
                        continue
                for m in present:
                    if m == ref:
                        continue
                    pc = paired_compare(cells[(m, task, method, metric)].units,
                                        cells[(ref, task, method, metric)].units, name_a=m, name_b=ref,
                                        confidence=confidence).as_dict()
                    if not info.higher_is_better and pc["verdict"] in ("better", "worse"):
                        pc["verdict"] = "worse" if pc["verdict"] == "better" else "better"
                    out.append({"task": task, "method": method, "metric": metric, "primary": metric == primary,
                                "model": m, "reference": ref, **pc})
    return out


def compare_task_means(data: RunData, cells: dict[Key, Cell], method: str, metric_of: dict[str, str],
                       confidence: float = 0.95) -> dict[str, PairedComparison]:
    """Each model against the first one in the task mean of ``method`` (every task in its
    ``metric_of`` metric; :func:`~.stats.task_mean_compare`), for the models that have every task;
    empty when the across-task column is not a plain mean or the metrics' directions disagree."""
    infos = [metric_info(metric_of[t]) for t in metric_of]
    how, _ = aggregate_label(infos)
    if how != "mean" or _direction(infos) is None or not data.models:
        return {}
    ref = data.models[0]
    keys = {m: [(m, t, method, metric_of[t]) for t in metric_of] for m in data.models}
    if not all(k in cells for k in keys[ref]):
        return {}
    return {m: task_mean_compare([(cells[k].units, cells[r].units) for k, r in zip(keys[m], keys[ref])],
                                 name_a=m, name_b=ref, confidence=confidence)
            for m in data.models[1:] if all(k in cells for k in keys[m])}


COMPARISON_FIELDS = ["task", "method", "metric", "primary", "model", "reference", "n", "mean_diff", "t_low",
                     "t_high", "p_value", "boot_low", "boot_high", "significant", "verdict"]


# -------------------------------------------------------------------------------- formatting


def scale_of(metric: str) -> tuple[float, int]:
    """(multiplier, decimals) a value of ``metric`` is shown with."""
    return (100.0, 1) if metric_info(metric).percent else (1.0, 2)


def fmt_score(ci: CI, metric: str, bold: bool = False) -> str:
    scale, nd = scale_of(metric)
    if math.isnan(ci.mean):
        return "–"
    mean = f"{ci.mean * scale:.{nd}f}"
    mean = f"**{mean}**" if bold else mean
    hw = "n/a" if math.isnan(ci.half_width) else f"{ci.half_width * scale:.{nd}f}"
    return f"{mean} ± {hw}"


MARKS = {"better": " ▲", "worse": " ▼", "≈": " ≈", "n/a": " n/a"}  # verdict → its mark in a table


def fmt_diff(c: dict[str, Any], metric: str, compare_to: str) -> str:
    if c["n"] == 0 or math.isnan(c["mean_diff"]):
        return "n/a"
    scale, nd = scale_of(metric)
    mark = MARKS[c["verdict"]]
    p = "" if math.isnan(c["p_value"]) else f" (p={c['p_value']:.2g})"
    ref = f" vs {c['reference']}" if compare_to == "best" else ""
    return f"{c['mean_diff'] * scale:+.{nd}f}{mark}{p}{ref}"


def fmt_task_mean_diff(c: PairedComparison, percent: bool, higher_is_better: bool = True) -> str:
    """``+1.2 ▲ (p=0.01) [+0.4, +2.0]``: a task-mean difference (:func:`compare_task_means`), its
    verdict, p-value and bootstrap interval."""
    if c.n == 0 or math.isnan(c.mean_diff):
        return "n/a"
    scale, nd = (100.0, 1) if percent else (1.0, 3)
    verdict = c.verdict
    if not higher_is_better and verdict in ("better", "worse"):
        verdict = "worse" if verdict == "better" else "better"
    mark = MARKS[verdict]
    if math.isnan(c.p_value):
        return f"{c.mean_diff * scale:+.{nd}f}{mark}"
    return (f"{c.mean_diff * scale:+.{nd}f}{mark} (p={c.p_value:.2g}) "
            f"[{c.boot_low * scale:+.{nd}f}, {c.boot_high * scale:+.{nd}f}]")


def md_table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def across_tasks(values: Sequence[float], how: str) -> float:
    """Arithmetic ("mean") or harmonic ("hmean") mean; hmean is 0 with a 0 value, NaN with a negative."""
    if how == "hmean":
        if any(v < 0 for v in values):
            return float("nan")
        if any(v == 0 for v in values):
            return 0.0
        return len(values) / sum(1.0 / v for v in values)
    return float(np.mean(values))


def aggregate_label(metrics: Sequence[Metric]) -> tuple[str, str]:
    """(how, column header) of the across-task column for a row of ``metrics``."""
    hows = {m.across_tasks for m in metrics}
    how = hows.pop() if len(hows) == 1 else "mean"
    return how, "harmonic mean" if how == "hmean" else "task mean"


def score_table(data: RunData, cells: dict[Key, Cell], method: str, metric_of: dict[str, str],
                models: list[str] | None = None) -> str:
    """``models`` (default: all) × tasks, each task shown in ``metric_of[task]``, plus the
    across-task column (the registry's ``across_tasks``: task mean or harmonic mean)."""
    tasks = list(metric_of)
    infos = [metric_info(metric_of[t]) for t in tasks]
    how, agg_header = aggregate_label(infos)
    models = data.models if models is None else models
    best = {t: _best([cells[(m, t, method, metric_of[t])].ci.mean for m in models
                      if (m, t, method, metric_of[t]) in cells], metric_info(metric_of[t]).higher_is_better)
            for t in tasks}
    aggs: dict[str, float] = {}
    for m in models:
        vs = [cells[(m, t, method, metric_of[t])].ci.mean for t in tasks if (m, t, method, metric_of[t]) in cells]
        if len(vs) == len(tasks) and vs:
            aggs[m] = across_tasks(vs, how)
    best_agg = _best(list(aggs.values()), _direction(infos))
    pct = all(i.percent for i in infos)
    rows = []
    for m in models:
        row = [m]
        for t in tasks:
            c = cells.get((m, t, method, metric_of[t]))
            row.append("–" if c is None else fmt_score(c.ci, c.metric, bold=c.ci.mean == best[t]))
        if m in aggs and not math.isnan(aggs[m]):
            txt = f"{aggs[m] * 100.0:.1f}" if pct else f"{aggs[m]:.3f}"
            row.append(f"**{txt}**" if aggs[m] == best_agg else txt)
        else:
            row.append("–")
        rows.append(row)
    return md_table(["model", *tasks, agg_header], rows)


def units_note(cells: Sequence[Cell], kind: str = "probe") -> str:
    """What the CIs of ``cells`` (one method's) are computed over; ``kind``: "probe" or "method"."""
    if not cells:
        return ""
    det = all(c.deterministic for c in cells)
    ns = sorted({c.ci.n for c in cells})
    what = f"rounds (deterministic {kind}: one unit per round)" if det else "round × seed units"
    return f"CI over {what}; units per cell: {', '.join(map(str, ns))}."
