"""Evaluation results on disk: the long format, reading (with conversion of the format-1 wide
files written before it), writing, and merging runs.

``results.csv`` holds one row per (model, task, method, fold, seed, metric) with its ``value``
and the metadata of the fit that produced it:

=================  ==========================================================================
model, task        embedder label; task name
method             probe ("linear", "mlp", "knn") or an application's scoring method
fold               evaluation round ("fold00", …; "test" for a train/valid/test task)
seed               seed of the unit; deterministic methods repeat their row for every seed
metric, value      metric name (see :data:`audiofm.eval.registry.METRICS`) and its test value
primary            the task's ranking metric (tables, comparisons, hyper-parameter choice)
prediction_type    "multiclass" / "multilabel" (or the application's task type)
valid_value        the same metric on the validation split for the chosen hyper-parameters
hparams            JSON: chosen hyper-parameters and what was tried
n_train, n_valid,  clips in each part of the round
n_test
fit_seconds,       wall time of fitting (selection included) and of scoring
predict_seconds
deterministic      the method does not depend on the seed
=================  ==========================================================================

Merged runs (``audiofm report``) add a leading ``run`` column. Format 1 (one row per fit with
``probe``, ``round``, ``score`` and wide ``top1_acc``/``mAP``/``d_prime`` columns) is converted on
reading, so older run directories still report.
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

from ..io import atomic_path
from .registry import PROBES


class EvalError(ValueError):
    """The evaluation cannot run as asked; the message says what to change."""


RESULT_FIELDS = ["model", "task", "method", "fold", "seed", "metric", "value", "primary", "prediction_type",
                 "valid_value", "hparams", "n_train", "n_valid", "n_test", "fit_seconds", "predict_seconds",
                 "deterministic"]
DIAGNOSTIC_FIELDS = ["model", "task", "n", "dim", "rankme", "rankme_ratio", "dead_dim_frac", "mean_cosine",
                     "norm_mean", "norm_std", "embed_seconds", "cache_hit"]
V1_METRICS = ("top1_acc", "mAP", "d_prime")  # the wide metric columns of format 1

_FLOAT = {"value", "valid_value", "fit_seconds", "predict_seconds", "rankme", "rankme_ratio", "dead_dim_frac",
          "mean_cosine", "norm_mean", "norm_std", "embed_seconds",
          "score", "valid_score", *V1_METRICS}
_INT = {"seed", "n_train", "n_valid", "n_test", "n", "dim"}
_BOOL = {"deterministic", "cache_hit", "primary"}


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


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a results/diagnostics/comparisons CSV with numbers and flags parsed."""
    with Path(path).open(newline="") as f:
        return [_parse(r) for r in csv.DictReader(f)]


def _fmt(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return "" if math.isnan(v) else repr(float(v))  # plain repr: never "np.float64(...)"
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return v


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], fieldnames: list[str]) -> Path:
    """Write ``rows`` (keys outside ``fieldnames`` ignored) atomically."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fieldnames, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(v) for k, v in r.items()})
    return Path(path)


def from_wide(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Format-1 rows (one per fit, wide metric columns) → long rows (one per metric value)."""
    out = []
    for r in rows:
        base = {k: v for k, v in r.items() if k not in ("probe", "round", "metric", "score", "valid_score",
                                                        *V1_METRICS)}
        for m in V1_METRICS:
            v = r.get(m, float("nan"))
            if isinstance(v, float) and math.isnan(v):
                continue
            primary = m == r["metric"]
            out.append({**base, "method": r["probe"], "fold": r["round"], "metric": m, "value": v,
                        "primary": primary, "valid_value": r.get("valid_score", float("nan")) if primary
                        else float("nan")})
    return [{k: row.get(k) for k in (["run"] if "run" in row else []) + RESULT_FIELDS} for row in out]


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Long-format rows of a ``results.csv`` (format 1 converted)."""
    rows = read_csv(path)
    with Path(path).open(newline="") as f:
        header = next(csv.reader(f), [])
    if "value" not in header and {"probe", "score"} <= set(header):
        return from_wide(rows)
    missing = {"model", "task", "method", "fold", "seed", "metric", "value"} - set(header)
    if missing:
        raise EvalError(f"{path}: not an evaluation results file (missing column(s) {sorted(missing)})")
    for r in rows:
        r.setdefault("primary", False)
        r.setdefault("deterministic", False)
    return rows


@dataclass
class RunData:
    """Long-format results, diagnostics and run info of one or more runs."""

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
    def methods(self) -> list[str]:
        """Probes in their usual order, then other methods in order of appearance."""
        have = list(dict.fromkeys(r["method"] for r in self.results))
        return [p for p in PROBES if p in have] + [m for m in have if m not in PROBES]

    def primary_metric(self, task: str) -> str:
        """The task's primary metric (flagged rows; else its first metric)."""
        first = None
        for r in self.results:
            if r["task"] == task:
                if r.get("primary"):
                    return str(r["metric"])
                first = first or str(r["metric"])
        if first is None:
            raise KeyError(task)
        return first


def read_run(run_dir: str | Path) -> RunData:
    """Load a finished run directory."""
    d = Path(run_dir)
    res = d / "results.csv"
    if not res.is_file():
        raise EvalError(f"{d}: no results.csv — not a finished `audiofm evaluate` run directory")
    results = read_results(res)
    for r in results:
        r.setdefault("run", d.name)
    diag = read_csv(d / "diagnostics.csv") if (d / "diagnostics.csv").is_file() else []
    info: dict[str, Any] = {"name": d.name, "path": str(d)}
    for key, fname in (("timings", "timings.json"), ("config", "config.json"), ("environment", "run_info.json")):
        p = d / fname
        if p.is_file():
            try:
                info[key] = json.loads(p.read_text())
            except json.JSONDecodeError:
                info[key] = None
    return RunData(results, diag, [info])


def merge_runs(runs: Sequence[RunData]) -> RunData:
    """Concatenate runs in order. A model that already has results for some (task, method) in an
    earlier run is renamed ``name@<run dir name>`` in the later run, so two evaluations of one
    model are kept apart instead of pooled; runs covering different tasks of a model merge."""
    seen: set[tuple[str, str, str]] = set()
    results: list[dict[str, Any]] = []
    diagnostics: list[dict[str, Any]] = []
    infos: list[dict[str, Any]] = []
    for run in runs:
        name = run.runs[0]["name"] if run.runs else f"run{len(infos)}"
        clash = {r["model"] for r in run.results if (r["model"], r["task"], r["method"]) in seen}
        rename = {m: f"{m}@{name}" for m in clash}
        results.extend({**r, "model": rename.get(r["model"], r["model"])} for r in run.results)
        diagnostics.extend({**r, "model": rename.get(r["model"], r["model"])} for r in run.diagnostics)
        seen |= {(r["model"], r["task"], r["method"]) for r in results}
        infos.extend(run.runs)
    return RunData(results, diagnostics, infos)
