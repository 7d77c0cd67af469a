"""Reports of one or more run directories: ``summary.md``, ``comparisons.csv`` and PNG charts
(``plots/scores_by_task.png``, ``plots/dual_probe.png``), from long-format results.

Everything metric-specific — which values are shown in %, which direction is better, how tasks
combine (task mean or harmonic mean) and the labels — comes from the metric registry
(:data:`audiofm.eval.registry.METRICS`), so classification, anomaly-detection and retrieval
runs render through the same code. Per method, the main table shows every task's primary
metric; every other metric gets its own section.

Merging runs: rows are concatenated in the order the runs are given (see
:func:`~audiofm.eval.results.merge_runs` for how clashing model names are kept apart).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io import write_text
from ..outputs import check_output
from .plots import plot_dual_probe, plot_scores_by_task
from .registry import PROBES, metric_info, metric_order
from .results import DIAGNOSTIC_FIELDS, RESULT_FIELDS, EvalError, RunData, merge_runs, read_run, write_csv
from .tables import (
    COMPARISON_FIELDS,
    Cell,
    Key,
    aggregate,
    aggregate_label,
    compare,
    compare_task_means,
    fmt_diff,
    fmt_task_mean_diff,
    md_table,
    score_table,
    units_note,
)

__all__ = ["COMPARISON_FIELDS", "RunData", "aggregate", "compare", "merge_runs", "read_run", "report_runs",
           "summary_markdown", "write_report"]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _heading(method: str) -> str:
    return f"{method} probe" if method in PROBES else method


def _units_phrase(data: RunData) -> str:
    methods = data.methods
    if set(methods) <= set(PROBES):
        return "rounds (folds) for the deterministic linear and kNN probes, round × seed for the MLP"
    det = [m for m in methods if all(r["deterministic"] for r in data.results if r["method"] == m)]
    rest = [m for m in methods if m not in det]
    parts = [f"rounds (folds) for deterministic methods ({', '.join(det)})"] if det else []
    if rest:
        parts.append(f"round × seed for {', '.join(rest)}")
    return ", ".join(parts)


def _metrics_phrase(metrics: list[str]) -> str:
    pct = [metric_info(m).label for m in metrics if metric_info(m).percent]
    raw = [metric_info(m).label for m in metrics if not metric_info(m).percent]
    parts = ([f"{_join(pct)} in %"] if pct else []) + ([f"{_join(raw)} raw"] if raw else [])
    return "; ".join(parts) + "."


def summary_markdown(data: RunData, cells: dict[Key, Cell], comparisons: list[dict[str, Any]], compare_to: str,
                     confidence: float, plots: list[str]) -> str:
    tasks, methods = data.tasks, data.methods
    primary = {t: data.primary_metric(t) for t in tasks}
    metrics = metric_order({r["metric"] for r in data.results})
    seeds = sorted({r["seed"] for r in data.results})
    lines = ["# Evaluation summary", ""]
    run_desc = ", ".join(f"`{i['path']}`" for i in data.runs) or "(in memory)"
    lines.append(f"Run{'s' if len(data.runs) > 1 else ''}: {run_desc}  ")
    kind = "probes" if set(methods) <= set(PROBES) else "methods"
    lines.append(f"Models: {len(data.models)} · tasks: {len(tasks)} · {kind}: {', '.join(methods)} · "
                 f"seeds: {len(seeds)}  ")
    for i in data.runs:
        t = i.get("timings") or {}
        if t:
            lines.append(f"Wall time of `{i['name']}`: {t.get('total_seconds', float('nan')):.1f} s "
                         f"(embedding {t.get('embed_seconds', 0.0):.1f} s, probing "
                         f"{t.get('probe_seconds', 0.0):.1f} s)  ")
    pct = round(confidence * 100)
    metric_desc = ", ".join(sorted({f"{t}: {metric_info(m).label}" for t, m in primary.items()}))
    lines += ["", f"Scores are mean ± {pct} % CI half-width (t-distribution) over evaluation units: "
              f"{_units_phrase(data)}. {_metrics_phrase(metrics)} **Bold**: best mean in the column. "
              f"Metric per task — {metric_desc}.", ""]
    for method in methods:
        lines += [f"## {_heading(method)}", "", score_table(data, cells, method, primary), "",
                  units_note([c for (_, t, p, m), c in cells.items() if p == method and m == primary[t]],
                             "probe" if method in PROBES else "method"), ""]
    lines += _secondary_sections(data, cells, primary, metrics)
    comps = [c for c in comparisons if c["primary"]]
    if comps:
        ref_desc = "the first model" if compare_to == "first" else "the best model of each column"
        nouns = [metric_info(m).noun for m in metric_order(set(primary.values())) if metric_info(m).percent]
        unit = f"score points; % for {'/'.join(nouns)}" if nouns else "score points"
        lines += [f"## Paired comparisons (vs {ref_desc})", "",
                  f"Difference of means ({unit}) over paired units; ▲/▼ = beyond "
                  f"noise (paired t-test p < {1 - confidence:.2f} *and* bootstrap {pct} % CI excludes 0), "
                  "≈ = within noise, n/a = fewer than 2 paired units. Full numbers in `comparisons.csv`."]
        infos = [metric_info(primary[t]) for t in tasks]
        agg_how, agg_header = aggregate_label(infos)
        if compare_to == "first" and agg_how == "mean":
            lines.append(f"Column *{agg_header}*: the difference of task means over the tasks' paired units "
                         "(Welch–Satterthwaite t-test; stratified bootstrap, each task resampled on its own, "
                         f"{pct} % interval in brackets); ▲/▼ on the same rule.")
        lines.append("")
        for method in methods:
            mc = [c for c in comps if c["method"] == method]
            if not mc:
                continue
            means = compare_task_means(data, cells, method, primary, confidence) if compare_to == "first" else {}
            rows = []
            for m in dict.fromkeys(c["model"] for c in mc):
                row = [m]
                for t in tasks:
                    c = next((c for c in mc if c["model"] == m and c["task"] == t), None)
                    row.append("–" if c is None else fmt_diff(c, primary[t], compare_to))
                if means:
                    tm = means.get(m)
                    row.append("–" if tm is None else fmt_task_mean_diff(tm, all(i.percent for i in infos),
                                                                          bool(infos[0].higher_is_better)))
                rows.append(row)
            header = ["model", *tasks, *([agg_header] if means else [])]
            lines += [f"### {method}", "", md_table(header, rows), ""]
    if data.diagnostics:
        lines += _diagnostics_md(data)
    if plots:
        lines += ["## Charts", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    timing_rows = _timing_rows(data)
    if timing_rows:
        header = ["model", "embedding s", *[f"{p} s" for p in methods]]
        lines += ["## Time per model", "", md_table(header, timing_rows), ""]
    return "\n".join(lines).rstrip() + "\n"


def _secondary_sections(data: RunData, cells: dict[Key, Cell], primary: dict[str, str], metrics: list[str]
                        ) -> list[str]:
    """One section per metric that is not the primary one of some task: a table per method over
    those tasks."""
    lines: list[str] = []
    for metric in metrics:
        tasks = [t for t in data.tasks if primary[t] != metric
                 and any(k[1] == t and k[3] == metric for k in cells)]
        if not tasks:
            continue
        kinds = {r.get("prediction_type") for r in data.results if r["task"] in tasks and r["metric"] == metric}
        kinds.discard(None)
        kinds.discard("")
        scope = f" ({kinds.pop()} tasks)" if len(kinds) == 1 else ""
        lines += [f"## {metric_info(metric).label}{scope}", ""]
        for method in data.methods:
            have = [t for t in tasks if any((m, t, method, metric) in cells for m in data.models)]
            if not have:
                continue
            models = [m for m in data.models if any((m, t, method, metric) in cells for t in have)]
            lines += [f"### {method}", "", score_table(data, cells, method, dict.fromkeys(have, metric), models), ""]
    return lines


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
           md_table(["model", *tasks], rank_rows), "",
           "Collapse check: mean pairwise cosine similarity / share of dims with ~zero variance. High cosine "
           "alone is expected for features with a large common offset (e.g. raw log-mel); compare like "
           "with like.", "", md_table(["model", *tasks], cos_rows), ""]
    return out + ([*flags, ""] if flags else [])


def _timing_rows(data: RunData) -> list[list[str]]:
    rows = []
    for m in data.models:
        emb = sum(d.get("embed_seconds", 0.0) for d in data.diagnostics if d["model"] == m)
        seen: set[tuple[str, str, str, str, int]] = set()
        per = dict.fromkeys(data.methods, 0.0)
        for r in data.results:
            if r["model"] != m:
                continue
            key = (r["task"], r["method"], r["fold"], r.get("run", ""), -1 if r["deterministic"] else r["seed"])
            if key in seen:
                continue  # one fit: its metric rows, and deterministic rows repeated per seed
            seen.add(key)
            per[r["method"]] += r["fit_seconds"] + r["predict_seconds"]
        rows.append([m, f"{emb:.1f}", *[f"{per[p]:.1f}" for p in data.methods]])
    return rows


def write_report(data: RunData, out_dir: str | Path, *, compare_to: str = "first", confidence: float = 0.95,
                 write_results: bool = False) -> list[Path]:
    """Write summary.md, comparisons.csv and plots/ (and the results/diagnostics CSVs when merging)."""
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
    write_text(out / "summary.md", summary_markdown(data, cells, comps, compare_to, confidence, plots))
    written += [out / "comparisons.csv", *(out / p for p in plots), out / "summary.md"]
    return written


def report_runs(run_dirs: Sequence[str | Path], out_dir: str | Path, *, compare_to: str = "first",
                confidence: float = 0.95, overwrite: bool = False) -> list[Path]:
    """Merge finished runs into one comparison in ``out_dir`` (``audiofm report``): a new or
    empty folder, an existing one only with ``overwrite``, never one of the runs or inside one."""
    if not run_dirs:
        raise EvalError("give at least one RUN_DIR")
    data = merge_runs([read_run(d) for d in run_dirs])
    check_output(out_dir, overwrite=overwrite, folder=True, inputs=run_dirs)
    return write_report(data, out_dir, compare_to=compare_to, confidence=confidence, write_results=True)
