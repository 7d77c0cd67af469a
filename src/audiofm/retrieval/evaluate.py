"""Evaluating trained dual encoders: :func:`evaluate` → ``results.csv`` (long format),
``queries.jsonl`` (per-query ranks and values), ``summary.md`` (mean ± 95 % CI over seeds, by the
evaluation report of :mod:`audiofm.eval.report`) and ``examples.md`` (a few queries with their
top-5 clips).

Text→audio: every caption of the split is a query; R@1/5/10 and mAP@10 on the original pairs,
mAP@16 on the several-relevant annotations (``relevance_<split>.csv`` beside the captions when
present, or ``relevance=``; the original pairs otherwise). Audio→text: every clip queries the
captions; R@1/5/10 and mAP@10. ``baseline="random"`` adds seeded random scores for reference.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Row
from ..data.captions import check_relevance, pair_relevance, read_relevance
from ..data.dataset import ClipStore
from ..eval.results import RESULT_FIELDS, RunData, write_csv
from ..io import atomic_path, write_text
from ..outputs import check_output
from .config import RetrievalDataConfig
from .metrics import RetrievalResult, audio_to_text, relevance_matrix, text_to_audio
from .train import data_format, models_of, read_split

__all__ = ["BASELINES", "evaluate", "models_of"]

BASELINES = ("random",)
OUTPUTS = ("results.csv", "queries.jsonl", "summary.md", "examples.md", "comparisons.csv", "plots")
N_EXAMPLES = 5
TOP = 5


def default_relevance(data: RetrievalDataConfig, split: str) -> Path | None:
    """``relevance_<split>.csv`` beside the captions, when present."""
    src = Path(data.source)
    folder = src if src.is_dir() else src.parent
    p = folder / f"relevance_{split}.csv"
    return p if p.is_file() else None


def _rows_for(result: RetrievalResult, *, model: str, task: str, seed: int, primary: str, n: int,
              seconds: float) -> list[dict[str, Any]]:
    """Long-format rows of one direction (method = the direction); ``primary``: its ranking metric."""
    return [{"model": model, "task": task, "method": result.direction, "fold": "test", "seed": seed,
             "metric": m, "value": v, "primary": m == primary, "prediction_type": "retrieval",
             "valid_value": float("nan"), "hparams": {}, "n_train": 0, "n_valid": 0, "n_test": n,
             "fit_seconds": 0.0, "predict_seconds": seconds, "deterministic": False}
            for m, v in result.metrics.items()
            if not (result.direction == "audio_to_text" and m == "map_at_16")]


def _audio_matrix(embed: Any, store: ClipStore, chunk: int = 64) -> np.ndarray:
    parts = [embed([store.wave(i) for i in range(s, min(len(store), s + chunk))], store.sample_rate)
             for s in range(0, len(store), chunk)]
    return np.concatenate(parts).astype(np.float32)


def evaluate(run: str | os.PathLike[str], data: RetrievalDataConfig | str | os.PathLike[str], *,
             split: str = "evaluation",
             relevance: str | os.PathLike[str] | None = None, out: str | os.PathLike[str] | None = None,
             baselines: Sequence[str] = ("random",), overwrite: bool = False, batch_size: int = 16,
             name: str | None = None) -> dict[str, Any]:
    """Evaluate every seed's model of training run ``run`` on ``split`` of ``data`` and write the
    outputs to ``out`` (default ``<run>/eval-<split>``); returns the metric means per model and
    direction and the paths written. An existing ``out`` is refused unless ``overwrite``."""
    from .model import load_dual

    data = data if isinstance(data, RetrievalDataConfig) else RetrievalDataConfig(source=str(data))
    bad = [b for b in baselines if b not in BASELINES]
    if bad:
        raise ValueError(f"unknown baseline(s) {bad}; choose from {', '.join(BASELINES)}")
    models = models_of(run)
    out = Path(out) if out is not None else Path(run) / f"eval-{split}"
    check_output(out, overwrite=overwrite, folder=True, inputs=[m for _, m in models], flag="--out")
    rows: list[Row] = read_split(data, split)
    ids = [r.id for r in rows]
    queries = [c for r in rows for c in r.captions]
    pairs = relevance_matrix(queries, ids, pair_relevance(rows), "pairs")
    rel_path = Path(relevance) if relevance is not None else default_relevance(data, split)
    multi = None
    if rel_path is not None:
        rel = read_relevance(rel_path)
        check_relevance(rel, rows, str(rel_path))
        multi = relevance_matrix(queries, ids, rel, str(rel_path))
    primary = "map_at_16" if multi is not None else "map_at_10"
    task = f"{data_format(data)}-{split}"
    label = name or Path(run).resolve().name
    results: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    first: tuple[np.ndarray, str] | None = None
    store: ClipStore | None = None
    for seed, path in models:
        t0 = time.perf_counter()
        model = load_dual(path, batch_size=batch_size)
        if store is None or store.sample_rate != model.sample_rate:
            store = ClipStore(rows, model.sample_rate, cache_mb=1024)
        a = _audio_matrix(model.embed_audio_batch, store)  # (A, E)
        t = model.embed_text(queries)  # (T, E)
        scores = t @ a.T
        seconds = time.perf_counter() - t0
        for res in (text_to_audio(scores, pairs, multi), audio_to_text(scores, pairs)):
            results += _rows_for(res, model=label, task=task, seed=seed, n=len(rows), seconds=seconds,
                                 primary=primary if res.direction == "text_to_audio" else "map_at_10")
            q_ids = queries if res.direction == "text_to_audio" else ids
            i_ids = ids if res.direction == "text_to_audio" else queries
            records += [{"model": label, "seed": seed, "direction": res.direction, **r}
                        for r in res.records(q_ids, i_ids)]
        if first is None:
            first = (scores, f"{label} seed {seed}")
    for b in baselines:  # "random": seeded random scores, one draw per seed of the run
        for seed, _ in models:
            scores = np.random.default_rng(seed).random((len(queries), len(ids)))
            for res in (text_to_audio(scores, pairs, multi), audio_to_text(scores, pairs)):
                results += _rows_for(res, model=b, task=task, seed=seed, n=len(rows), seconds=0.0,
                                     primary=primary if res.direction == "text_to_audio" else "map_at_10")
    out.mkdir(parents=True, exist_ok=True)
    written = [write_csv(out / "results.csv", results, RESULT_FIELDS)]
    with atomic_path(out / "queries.jsonl") as tmp, tmp.open("w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    written.append(out / "queries.jsonl")
    written += write_summary(results, {"name": Path(run).name, "path": str(run)}, out)
    assert first is not None
    write_text(out / "examples.md", examples_markdown(first[0], queries, ids, multi if multi is not None else pairs,
                                                      first[1], rel_path))
    written.append(out / "examples.md")
    means: dict[str, dict[str, float]] = {}
    for r in results:
        key = f"{r['model']}/{r['method']}"
        means.setdefault(key, {}).setdefault(r["metric"], 0.0)
    for key in means:
        model_name, method = key.split("/")
        for m in means[key]:
            vals = [r["value"] for r in results if r["model"] == model_name and r["method"] == method
                    and r["metric"] == m]
            means[key][m] = float(np.mean(vals))
    return {"out": str(out), "task": task, "primary": primary, "models": len(models), "means": means,
            "relevance": str(rel_path) if rel_path is not None else None, "written": [str(p) for p in written]}


DIRECTIONS = {"text_to_audio": "Text → audio", "audio_to_text": "Audio → text"}


def write_summary(results: list[dict[str, Any]], info: dict[str, Any], out: Path) -> list[Path]:
    """``summary.md`` (one part per direction, each ranked by its own primary metric: mAP@16 or
    mAP@10 text→audio, mAP@10 audio→text), ``comparisons.csv`` and ``plots/`` — the evaluation
    report's tables, confidence intervals and paired comparisons (:mod:`audiofm.eval.report`)."""
    from ..eval.plots import plot_scores_by_task
    from ..eval.report import summary_markdown
    from ..eval.tables import COMPARISON_FIELDS, aggregate, compare

    (out / "plots").mkdir(exist_ok=True)
    parts, comparisons, written = [], [], []
    for direction, title in DIRECTIONS.items():
        data = RunData([r for r in results if r["method"] == direction], [], [info])
        if not data.results:
            continue
        cells = aggregate(data, 0.95)
        comps = compare(data, cells, "first", 0.95)
        comparisons += comps
        plot = f"plots/{direction}.png"
        plot_scores_by_task(data, cells, out / plot)
        written.append(out / plot)
        md = summary_markdown(data, cells, comps, "first", 0.95, [plot])
        body = md.split("\n", 1)[1]  # below its "# Evaluation summary" title
        parts.append(f"## {title}\n" + "\n".join("#" + x if x.startswith("#") else x for x in body.splitlines()))
    write_csv(out / "comparisons.csv", comparisons, COMPARISON_FIELDS)
    write_text(out / "summary.md", "# Retrieval evaluation summary\n\n" + "\n\n".join(parts).rstrip() + "\n")
    return [*written, out / "comparisons.csv", out / "summary.md"]


def examples_markdown(scores: np.ndarray, queries: Sequence[str], ids: Sequence[str], relevant: np.ndarray,
                      model: str, relevance: Path | None, n: int = N_EXAMPLES, top: int = TOP) -> str:
    """A few text→audio queries (evenly spread over the split) with their top clips; ✓ marks a
    relevant clip."""
    where = f"the relevance annotations ({relevance.name})" if relevance is not None else "the original pairs"
    lines = ["# Retrieval examples", "", f"Model: {model}. Top {top} clips of {n} text queries; ✓ = relevant "
             f"according to {where}.", ""]
    picks = np.linspace(0, len(queries) - 1, num=min(n, len(queries))).round().astype(int)
    for qi in dict.fromkeys(int(i) for i in picks):
        order = np.argsort(-scores[qi], kind="stable")[:top]
        lines += [f"## “{queries[qi]}”", "", "| rank | clip | score | relevant |", "| ---: | --- | ---: | :---: |"]
        for rank, j in enumerate(order, 1):
            mark = "✓" if relevant[qi, j] else ""
            lines.append(f"| {rank} | {ids[j]} | {scores[qi, j]:.3f} | {mark} |")
        n_rel = int(relevant[qi].sum())
        lines += ["", f"{n_rel} relevant clip(s) in all.", ""]
    return "\n".join(lines).rstrip() + "\n"
