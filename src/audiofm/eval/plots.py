"""Charts of a report: scores per task (bars with CIs) and the dual probe (linear vs kNN). Axes,
scales and limits come from the metric registry."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..io import atomic_path
from .registry import metric_info
from .results import RunData
from .tables import Cell, Key


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _scale(metric: str) -> float:
    return 100.0 if metric_info(metric).percent else 1.0


def _hw(c: Cell, scale: float) -> float:
    return 0.0 if math.isnan(c.ci.half_width) else c.ci.half_width * scale


def plot_scores_by_task(data: RunData, cells: dict[Key, Cell], path: Path) -> None:
    """One panel per task: grouped bars (method groups, one bar per model) of the task's primary
    metric with CI error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks, models, methods = data.tasks, data.models, data.methods
    ncols = min(3, len(tasks))
    nrows = math.ceil(len(tasks) / ncols)
    fig = Figure(figsize=(4.2 * ncols + 0.5, 3.2 * nrows + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    colors = _colors(len(models))
    width = 0.8 / max(1, len(models))
    for ax, task in zip(axes.flat, tasks):
        metric = data.primary_metric(task)
        info, scale = metric_info(metric), _scale(metric)
        for j, m in enumerate(models):
            xs, ys, es = [], [], []
            for i, p in enumerate(methods):
                c = cells.get((m, task, p, metric))
                if c is None:
                    continue
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(c.ci.mean * scale)
                es.append(_hw(c, scale))
            ax.bar(xs, ys, width, yerr=es, capsize=2, color=colors[j], label=m, edgecolor="none")
        ax.set_title(task, fontsize=10)
        if info.percent:
            ax.set_ylim(0, 100)
        ax.set_xticks(range(len(methods)), methods)
        ax.set_ylabel(f"{info.label}{' (%)' if info.percent else ''}", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=min(len(models), 4), fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def plot_dual_probe(data: RunData, cells: dict[Key, Cell], path: Path) -> bool:
    """Linear (x) vs kNN (y) primary score per task, one panel per model, with CI error bars;
    False (nothing drawn) unless both probes ran."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not {"linear", "knn"} <= set(data.methods):
        return False
    models, tasks = data.models, data.tasks
    ncols = min(3, len(models))
    nrows = math.ceil(len(models) / ncols)
    fig = Figure(figsize=(4.0 * ncols + 2.2, 3.8 * nrows + 0.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    all_pct = True
    task_colors = _colors(len(tasks))
    lo, hi = math.inf, -math.inf
    for ax, m in zip(axes.flat, models):
        for k, t in enumerate(tasks):
            metric = data.primary_metric(t)
            a, b = cells.get((m, t, "linear", metric)), cells.get((m, t, "knn", metric))
            if a is None or b is None:
                continue
            scale = _scale(metric)
            all_pct = all_pct and metric_info(metric).percent
            x, y = a.ci.mean * scale, b.ci.mean * scale
            xe, ye = _hw(a, scale), _hw(b, scale)
            ax.errorbar(x, y, xerr=xe, yerr=ye, fmt="o", ms=5, color=task_colors[k], capsize=2, label=t)
            lo, hi = min(lo, x - xe, y - ye), max(hi, x + xe, y + ye)
        ax.set_title(m, fontsize=10)
        ax.set_xlabel("linear probe score", fontsize=8)
        ax.set_ylabel("kNN probe score", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    if all_pct:
        lo, hi = 0.0, 100.0
    if math.isfinite(lo):
        pad = 0.03 * (hi - lo + 1e-9)
        for ax in axes.flat:
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.6", lw=0.8, ls="--")
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=7)
    fig.suptitle("Dual probe: linear (global separability) vs kNN (local structure)"
                 + (", % " if all_pct else ""), fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return True
