"""Evaluation of frozen audio embeddings: cache, probes, statistics, diagnostics, reports.

>>> from audiofm.eval import EvalConfig, run_evaluation
>>> run_evaluation(EvalConfig(baselines=["logmel"], tasks="data/tasks", out="runs/eval_logmel"))

See ``docs/evaluation.md`` for the protocol (splits, probes, grids, CI units).
"""

from __future__ import annotations

import importlib
from typing import Any

# name → submodule; imported on first use so `import audiofm.eval.commands` (the CLI) stays light
_EXPORTS = {
    "CI": "stats",
    "CacheWarning": "cache",
    "EmbedderSpec": "suite",
    "EmbeddingCache": "cache",
    "EmbeddingError": "cache",
    "EmbeddingHealth": "rankme",
    "EvalConfig": "suite",
    "EvalError": "suite",
    "KNNProbeConfig": "probes",
    "LinearProbeConfig": "probes",
    "LogMelEmbedder": "baselines",
    "MLPProbeConfig": "probes",
    "PairedComparison": "stats",
    "ProbeConfig": "probes",
    "ProbeData": "probes",
    "ProbeResult": "probes",
    "RunResult": "suite",
    "d_prime": "metrics",
    "embed_rows": "cache",
    "embedding_health": "rankme",
    "get_embeddings": "cache",
    "knn_probe": "probes",
    "knn_search": "probes",
    "limit_threads": "threads",
    "linear_probe": "probes",
    "make_baseline": "baselines",
    "mean_average_precision": "metrics",
    "mean_ci": "stats",
    "mlp_probe": "probes",
    "paired_compare": "stats",
    "primary_metric": "metrics",
    "rankme": "rankme",
    "read_run": "report",
    "report_runs": "report",
    "run_evaluation": "suite",
    "run_probe": "probes",
    "score_predictions": "metrics",
    "top1_accuracy": "metrics",
    "write_report": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
