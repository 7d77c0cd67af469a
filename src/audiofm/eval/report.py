"""Reports of one or more run directories: ``results.csv``, ``summary.md``, ``comparisons.csv``
and PNG charts (``plots/scores_by_task.png``, ``plots/dual_probe.png``).

Merging runs: rows are concatenated in the order the runs are given. A model name that already
has results for some (task, probe) in an earlier run is renamed ``name@<run dir name>`` in the
later run, so two evaluations of the same model are kept apart instead of being pooled; runs
that cover different tasks of one model merge under its plain name.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import MULTICLASS
from .registry import PROBES
from .stats import CI, mean_ci, paired_compare, units

_FLOAT = {"score", "top1_acc", "mAP", "d_prime", "valid_score", "fit_seconds", "predict_seconds", "rankme",
          "rankme_ratio", "dead_dim_frac", "mean_cosine", "norm_mean", "norm_std", "embed_seconds"}
_INT = {"seed", "n_train", "n_valid", "n_test", "n", "dim"}
_BOOL = {"deterministic", "cache_hit"}


def _parse(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k in _FLOAT:
            out[k] = float(v) if v not in ("", None) else float("nan")
        elif k in _INT:
            out[k] = int(v) if v not in ("", None) else -1
        elif k in _BOOL:
            out[k] = str(v).strip().lower() in ("true", "1", "yes")
        else:
            out[k] = v
    return out


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as f:
        return [_parse(r) for r in csv.DictReader(f)]


@dataclass
class RunData:
    """Results (one dict per model × task × probe × round × seed), diagnostics and run info."""

    results: list[dict[str, Any]]
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)  # name, path, timings, config

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(r["model"] for r in self.results))

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(r["task"] for r in self.results))

    @property
    def probes(self) -> list[str]:
        have = {r["probe"] for r in self.results}
        return [p for p in PROBES if p in have] + sorted(have - set(PROBES))


def read_run(run_dir: str | Path) -> RunData:
    """Load a finished run directory."""
    from .suite import EvalError

    d = Path(run_dir)
    res = d / "results.csv"
    if not res.is_file():
        raise EvalError(f"{d}: no results.csv — not a finished `audiofm evaluate` run directory")
    results = _read_csv(res)
    for r in results:
        r.setdefault("run", d.name)
    diag = _read_csv(d / "diagnostics.csv") if (d / "diagnostics.csv").is_file() else []
    info: dict[str, Any] = {"name": d.name, "path": str(d)}
    for key, fname in (("timings", "timings.json"), ("config", "config.json"),
                       ("environment", "run_info.json")):
        p = d / fname
        if p.is_file():
            try:
                info[key] = json.loads(p.read_text())
            except json.JSONDecodeError:
                info[key] = None
    return RunData(results, diag, [info])


def merge_runs(runs: Sequence[RunData]) -> RunData:
    """Concatenate runs; rename clashing models (see module docstring)."""
    seen: set[tuple[str, str, str]] = set()
    results: list[dict[str, Any]] = []
    diagnostics: list[dict[str, Any]] = []
    infos: list[dict[str, Any]] = []
    for run in runs:
        name = run.runs[0]["name"] if run.runs else f"run{len(infos)}"
        clash = {r["model"] for r in run.results if (r["model"], r["task"], r["probe"]) in seen}
        rename = {m: f"{m}@{name}" for m in clash}
        for r in run.results:
            r = {**r, "model": rename.get(r["model"], r["model"])}
            results.append(r)
        for r in run.diagnostics:
            diagnostics.append({**r, "model": rename.get(r["model"], r["model"])})
        seen |= {(r["model"], r["task"], r["probe"]) for r in results}
        infos.extend(run.runs)
    return RunData(results, diagnostics, infos)


# ----------------------------------------------------------------------------------- tables


@dataclass
class Cell:
    """Aggregate of one (model, task, probe)."""

    metric: str
    ci: CI
    deterministic: bool
    units: dict[Any, float]
    n_rounds: int
    n_seeds: int


def aggregate(data: RunData, confidence: float = 0.95, metric: str | None = None
              ) -> dict[tuple[str, str, str], Cell]:
    """Mean ± CI per (model, task, probe) over units (see :mod:`audiofm.eval.stats`).

    ``metric``: a column such as "d_prime"; default each row's primary metric ("score").
    """
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in data.results:
        groups.setdefault((r["model"], r["task"], r["probe"]), []).append(r)
    out = {}
    for key, rows in groups.items():
        det = all(r["deterministic"] for r in rows)
        col = metric or "score"
        vals = [(r["round"], r["seed"], float(r.get(col, float("nan")))) for r in rows]
        if all(math.isnan(v[2]) for v in vals):
            continue
        u = units(vals, det)
        out[key] = Cell(metric or rows[0]["metric"], mean_ci(u.values(), confidence), det, u,
                        len({r["round"] for r in rows}), len({r["seed"] for r in rows}))
    return out


def compare(data: RunData, cells: dict[tuple[str, str, str], Cell], compare_to: str = "first",
            confidence: float = 0.95) -> list[dict[str, Any]]:
    """Paired comparisons of every model against the reference, per task and probe.

    ``compare_to``: "first" — the first model of the run(s); "best" — the model with the best
    mean in that task/probe.
    """
    out = []
    models = data.models
    for task in data.tasks:
        for probe in data.probes:
            present = [m for m in models if (m, task, probe) in cells]
            if len(present) < 2:
                continue
            if compare_to == "best":
                ref = max(present, key=lambda m: cells[(m, task, probe)].ci.mean)
            else:
                ref = models[0]
                if ref not in present:
                    continue
            for m in present:
                if m == ref:
                    continue
                pc = paired_compare(cells[(m, task, probe)].units, cells[(ref, task, probe)].units,
                                    name_a=m, name_b=ref, confidence=confidence)
                out.append({"task": task, "probe": probe, "model": m, "reference": ref, **pc.as_dict()})
    return out


def _is_pct(metric: str) -> bool:
    return metric in ("top1_acc", "mAP")


def _fmt_score(ci: CI, metric: str, bold: bool = False) -> str:
    scale, nd = (100.0, 1) if _is_pct(metric) else (1.0, 2)
    if math.isnan(ci.mean):
        return "–"
    mean = f"{ci.mean * scale:.{nd}f}"
    mean = f"**{mean}**" if bold else mean
    hw = "n/a" if math.isnan(ci.half_width) else f"{ci.half_width * scale:.{nd}f}"
    return f"{mean} ± {hw}"


def _md_table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _score_table(data: RunData, cells: dict[tuple[str, str, str], Cell], probe: str) -> str:
    tasks = data.tasks
    header = ["model", *tasks, "task mean"]
    best: dict[str, float] = {}
    for t in tasks:
        vals = [cells[(m, t, probe)].ci.mean for m in data.models if (m, t, probe) in cells]
        vals = [v for v in vals if not math.isnan(v)]
        if vals:
            best[t] = max(vals)
    means = {}
    for m in data.models:
        vs = [cells[(m, t, probe)].ci.mean for t in tasks if (m, t, probe) in cells]
        if len(vs) == len(tasks) and vs:
            means[m] = float(np.mean(vs))
    best_mean = max(means.values()) if means else float("nan")
    rows = []
    for m in data.models:
        row = [m]
        for t in tasks:
            c = cells.get((m, t, probe))
            row.append("–" if c is None else _fmt_score(c.ci, c.metric, bold=c.ci.mean == best.get(t)))
        if m in means:
            scale = 100.0 if all(_is_pct(cells[(m, t, probe)].metric) for t in tasks) else 1.0
            txt = f"{means[m] * scale:.1f}" if scale == 100.0 else f"{means[m]:.3f}"
            row.append(f"**{txt}**" if means[m] == best_mean else txt)
        else:
            row.append("–")
        rows.append(row)
    return _md_table(header, rows)


def _units_note(cells: dict[tuple[str, str, str], Cell], probe: str) -> str:
    cs = [c for (_, _, p), c in cells.items() if p == probe]
    if not cs:
        return ""
    det = all(c.deterministic for c in cs)
    ns = sorted({c.ci.n for c in cs})
    what = "rounds (deterministic probe: one unit per round)" if det else "round × seed units"
    return f"CI over {what}; units per cell: {', '.join(map(str, ns))}."


def summary_markdown(data: RunData, cells: dict[tuple[str, str, str], Cell],
                     comparisons: list[dict[str, Any]], compare_to: str, confidence: float,
                     plots: list[str]) -> str:
    tasks = data.tasks
    metric_by_task: dict[str, str] = {}
    for r in data.results:
        metric_by_task.setdefault(r["task"], r["metric"])
    seeds = sorted({r["seed"] for r in data.results})
    lines = ["# Evaluation summary", ""]
    run_desc = ", ".join(f"`{i['path']}`" for i in data.runs) or "(in memory)"
    lines.append(f"Run{'s' if len(data.runs) > 1 else ''}: {run_desc}  ")
    lines.append(f"Models: {len(data.models)} · tasks: {len(tasks)} · probes: {', '.join(data.probes)} · "
                 f"seeds: {len(seeds)}  ")
    for i in data.runs:
        t = i.get("timings") or {}
        if t:
            lines.append(f"Wall time of `{i['name']}`: {t.get('total_seconds', float('nan')):.1f} s "
                         f"(embedding {t.get('embed_seconds', 0.0):.1f} s, probing "
                         f"{t.get('probe_seconds', 0.0):.1f} s)  ")
    pct = round(confidence * 100)
    metric_desc = ", ".join(sorted({f"{t}: {m}" for t, m in metric_by_task.items()}))
    lines += ["", f"Scores are mean ± {pct} % CI half-width (t-distribution) over evaluation units: "
              "rounds (folds) for the deterministic linear and kNN probes, round × seed for the MLP. "
              "top1_acc and mAP in %; d' raw. **Bold**: best mean in the column. "
              f"Metric per task — {metric_desc}.", ""]
    for probe in data.probes:
        lines += [f"## {probe} probe", "", _score_table(data, cells, probe), "",
                  _units_note(cells, probe), ""]
    dcells = aggregate(data, confidence, metric="d_prime") if any(
        r.get("prediction_type") not in (MULTICLASS, None) for r in data.results) else {}
    if dcells:
        lines += ["## d' (multilabel tasks)", ""]
        for probe in data.probes:
            sub = RunData([r for r in data.results
                           if r["probe"] == probe and r.get("prediction_type") != MULTICLASS], [], data.runs)
            if sub.results:
                lines += [f"### {probe}", "", _score_table(sub, dcells, probe), ""]
    if comparisons:
        ref_desc = "the first model" if compare_to == "first" else "the best model of each column"
        lines += [f"## Paired comparisons (vs {ref_desc})", "",
                  "Difference of means (score points; % for accuracy/mAP) over paired units; ▲/▼ = beyond "
                  f"noise (paired t-test p < {1 - confidence:.2f} *and* bootstrap {pct} % CI excludes 0), "
                  "≈ = within noise, n/a = fewer than 2 paired units. Full numbers in `comparisons.csv`.", ""]
        for probe in data.probes:
            comps = [c for c in comparisons if c["probe"] == probe]
            if not comps:
                continue
            models = list(dict.fromkeys(c["model"] for c in comps))
            rows = []
            for m in models:
                row = [m]
                for t in tasks:
                    c = next((c for c in comps if c["model"] == m and c["task"] == t), None)
                    row.append("–" if c is None else _fmt_diff(c, metric_by_task[t], compare_to))
                rows.append(row)
            lines += [f"### {probe}", "", _md_table(["model", *tasks], rows), ""]
    if data.diagnostics:
        lines += _diagnostics_md(data)
    if plots:
        lines += ["## Charts", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    timing_rows = _timing_rows(data)
    if timing_rows:
        header = ["model", "embedding s", *[f"{p} s" for p in data.probes]]
        lines += ["## Time per model", "", _md_table(header, timing_rows), ""]
    return "\n".join(lines).rstrip() + "\n"


def _fmt_diff(c: dict[str, Any], metric: str, compare_to: str) -> str:
    if c["n"] == 0 or math.isnan(c["mean_diff"]):
        return "n/a"
    scale, nd = (100.0, 1) if _is_pct(metric) else (1.0, 2)
    mark = {"better": " ▲", "worse": " ▼", "≈": " ≈", "n/a": " n/a"}[c["verdict"]]
    p = "" if math.isnan(c["p_value"]) else f" (p={c['p_value']:.2g})"
    ref = f" vs {c['reference']}" if compare_to == "best" else ""
    return f"{c['mean_diff'] * scale:+.{nd}f}{mark}{p}{ref}"


def _diagnostics_md(data: RunData) -> list[str]:
    tasks = list(dict.fromkeys(d["task"] for d in data.diagnostics))
    models = list(dict.fromkeys(d["model"] for d in data.diagnostics))
    by = {(d["model"], d["task"]): d for d in data.diagnostics}
    rank_rows, cos_rows, flags = [], [], []
    for m in models:
        dims = {by[(m, t)]["dim"] for t in tasks if (m, t) in by}
        rank_rows.append([f"{m} (D={'/'.join(map(str, sorted(dims)))})"] +
                         [f"{by[(m, t)]['rankme']:.1f}" if (m, t) in by else "–" for t in tasks])
        cos_rows.append([m] + [f"{by[(m, t)]['mean_cosine']:.2f} / {100 * by[(m, t)]['dead_dim_frac']:.0f}%"
                               if (m, t) in by else "–" for t in tasks])
        for t in tasks:
            d = by.get((m, t))
            if d and (d["rankme"] < 2.0 or d["dead_dim_frac"] > 0.5):
                flags.append(f"- ⚠ `{m}` on {t}: RankMe {d['rankme']:.2f}, "
                             f"{100 * d['dead_dim_frac']:.0f}% dead dims — the embedding looks collapsed.")
    out = ["## Label-free diagnostics", "",
           "RankMe (Garrido et al. 2023): effective rank of the clip embeddings of all clips of the task "
           "(≤ min(clips, D); comparable at equal clip count).", "",
           _md_table(["model", *tasks], rank_rows), "",
           "Collapse check: mean pairwise cosine similarity / share of dims with ~zero variance. High cosine "
           "alone is expected for features with a large common offset (e.g. raw log-mel); compare like "
           "with like.", "", _md_table(["model", *tasks], cos_rows), ""]
    return out + ([*flags, ""] if flags else [])


def _timing_rows(data: RunData) -> list[list[str]]:
    rows = []
    for m in data.models:
        emb = sum(d.get("embed_seconds", 0.0) for d in data.diagnostics if d["model"] == m)
        seen: set[tuple[str, str, str, str, int]] = set()
        per = dict.fromkeys(data.probes, 0.0)
        for r in data.results:
            if r["model"] != m:
                continue
            key = (r["task"], r["probe"], r["round"], r.get("run", ""),
                   -1 if r["deterministic"] else r["seed"])
            if key in seen:
                continue  # deterministic rows repeated per seed were computed once
            seen.add(key)
            per[r["probe"]] += r["fit_seconds"] + r["predict_seconds"]
        rows.append([m, f"{emb:.1f}", *[f"{per[p]:.1f}" for p in data.probes]])
    return rows


# ----------------------------------------------------------------------------------- charts


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_scores_by_task(data: RunData, cells: dict[tuple[str, str, str], Cell], path: Path) -> None:
    """One panel per task: grouped bars (probe groups, one bar per model) with CI error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks, models, probes = data.tasks, data.models, data.probes
    ncols = min(3, len(tasks))
    nrows = math.ceil(len(tasks) / ncols)
    fig = Figure(figsize=(4.2 * ncols + 0.5, 3.2 * nrows + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    colors = _colors(len(models))
    width = 0.8 / max(1, len(models))
    for ax, task in zip(axes.flat, tasks):
        metric = "score"
        for j, m in enumerate(models):
            xs, ys, es = [], [], []
            for i, p in enumerate(probes):
                c = cells.get((m, task, p))
                if c is None:
                    continue
                metric = c.metric
                scale = 100.0 if _is_pct(c.metric) else 1.0
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(c.ci.mean * scale)
                es.append(0.0 if math.isnan(c.ci.half_width) else c.ci.half_width * scale)
            ax.bar(xs, ys, width, yerr=es, capsize=2, color=colors[j], label=m, edgecolor="none")
        ax.set_title(task, fontsize=10)
        if _is_pct(metric):
            ax.set_ylim(0, 100)
        ax.set_xticks(range(len(probes)), probes)
        ax.set_ylabel(f"{metric}{' (%)' if _is_pct(metric) else ''}", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=min(len(models), 4), fontsize=8)
    fig.savefig(path, dpi=110)


def plot_dual_probe(data: RunData, cells: dict[tuple[str, str, str], Cell], path: Path) -> bool:
    """Linear (x) vs kNN (y) score per task, one panel per model, with CI error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not {"linear", "knn"} <= set(data.probes):
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
            a, b = cells.get((m, t, "linear")), cells.get((m, t, "knn"))
            if a is None or b is None:
                continue
            scale = 100.0 if _is_pct(a.metric) else 1.0
            all_pct = all_pct and _is_pct(a.metric)
            x, y = a.ci.mean * scale, b.ci.mean * scale
            xe = 0.0 if math.isnan(a.ci.half_width) else a.ci.half_width * scale
            ye = 0.0 if math.isnan(b.ci.half_width) else b.ci.half_width * scale
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
    fig.savefig(path, dpi=110)
    return True


# ------------------------------------------------------------------------------------ write


COMPARISON_FIELDS = ["task", "probe", "model", "reference", "n", "mean_diff", "t_low", "t_high", "p_value",
                     "boot_low", "boot_high", "significant", "verdict"]


def write_report(data: RunData, out_dir: str | Path, *, compare_to: str = "first", confidence: float = 0.95,
                 write_results: bool = False) -> list[Path]:
    """Write summary.md, comparisons.csv and plots/ (and results/diagnostics CSVs when merging)."""
    from .suite import DIAGNOSTIC_FIELDS, RESULT_FIELDS, write_csv

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if write_results:
        write_csv(out / "results.csv", data.results, ["run", *RESULT_FIELDS])
        write_csv(out / "diagnostics.csv", data.diagnostics, DIAGNOSTIC_FIELDS)
        written += [out / "results.csv", out / "diagnostics.csv"]
    cells = aggregate(data, confidence)
    comps = compare(data, cells, compare_to, confidence)
    write_csv(out / "comparisons.csv", comps, COMPARISON_FIELDS)
    plots_dir = out / "plots"
    plots_dir.mkdir(exist_ok=True)
    plots = []
    if cells:
        plot_scores_by_task(data, cells, plots_dir / "scores_by_task.png")
        plots.append("plots/scores_by_task.png")
        if plot_dual_probe(data, cells, plots_dir / "dual_probe.png"):
            plots.append("plots/dual_probe.png")
    md = summary_markdown(data, cells, comps, compare_to, confidence, plots)
    tmp = out / "summary.md.tmp"
    tmp.write_text(md)
    tmp.replace(out / "summary.md")
    written += [out / "comparisons.csv", *(out / p for p in plots), out / "summary.md"]
    return written


def report_runs(run_dirs: Sequence[str | Path], out_dir: str | Path, *, compare_to: str = "first",
                confidence: float = 0.95) -> list[Path]:
    """Merge finished runs into one comparison in ``out_dir`` (``audiofm report``)."""
    from .suite import EvalError

    if not run_dirs:
        raise EvalError("give at least one RUN_DIR")
    data = merge_runs([read_run(d) for d in run_dirs])
    return write_report(data, out_dir, compare_to=compare_to, confidence=confidence, write_results=True)
