"""Evaluation of frozen audio embeddings: cache, probes, statistics, diagnostics, reports.

>>> from audiofm.eval import EvalConfig, run_evaluation
>>> run_evaluation(EvalConfig(baselines=["logmel"], tasks="data/tasks", out="runs/eval_logmel"))

See ``docs/evaluation.md`` for the protocol (splits, probes, grids, CI units) and the long
results format with its metric registry. Tasks, the embedding loop and nearest-neighbour search
live outside this package (:mod:`audiofm.data.tasks`, :mod:`audiofm.embed_io`,
:mod:`audiofm.search`): adaptation and the applications use them too.
"""

from __future__ import annotations

import importlib
from typing import Any

# name → submodule; imported on first use so `import audiofm.eval.commands` (the CLI) stays light
_EXPORTS = {
    "CI": "stats",
    "CacheWarning": "cache",
    "Cell": "tables",
    "EmbedderSpec": "runconfig",
    "EmbeddingCache": "cache",
    "EmbeddingError": "cache",
    "EmbeddingHealth": "rankme",
    "EvalConfig": "runconfig",
    "EvalError": "results",
    "KNNProbeConfig": "probe_base",
    "LinearProbeConfig": "probe_base",
    "LogMelEmbedder": "baselines",
    "LogisticFit": "linear",
    "METRICS": "registry",
    "MLPProbeConfig": "probe_base",
    "Metric": "registry",
    "PairedComparison": "stats",
    "ProbeConfig": "probe_base",
    "ProbeData": "probe_base",
    "ProbeResult": "probe_base",
    "RESULT_FIELDS": "results",
    "RunData": "results",
    "RunResult": "suite",
    "aggregate": "tables",
    "compare": "tables",
    "d_prime": "metrics",
    "embedding_health": "rankme",
    "fit_logistic": "linear",
    "get_embeddings": "cache",
    "knn_probe": "knn",
    "limit_threads": "threads",
    "linear_probe": "linear",
    "make_baseline": "baselines",
    "mean_average_precision": "metrics",
    "mean_ci": "stats",
    "merge_runs": "results",
    "metric_info": "registry",
    "mlp_probe": "mlp",
    "paired_compare": "stats",
    "primary_metric": "metrics",
    "rankme": "rankme",
    "read_results": "results",
    "read_run": "results",
    "report_runs": "report",
    "run_evaluation": "suite",
    "run_probe": "probes",
    "score_predictions": "metrics",
    "top1_accuracy": "metrics",
    "write_csv": "results",
    "write_report": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
