"""The evaluation suite: models × HEAR tasks × probes × rounds × seeds → a run directory.

For every task (a HEAR task directory) and every embedder, clip embeddings of all rows come
from the :mod:`~audiofm.eval.cache` (computed once), label-free diagnostics are taken on
them, and every selected round (train/valid/test, or the HEAR k-fold rotation) is scored by
each probe — once for deterministic probes (linear, kNN; their rows are repeated for every seed
so each seed has a complete set of rows), once per seed for the MLP.

The run directory gets ``config.json`` (resolved config), ``run_info.json`` (package
versions, git commit, command), ``tasks.json`` (task fingerprints and rounds),
``results.csv`` (long format: one row per metric value, see :mod:`~audiofm.eval.results`),
``diagnostics.csv``, ``timings.json`` and the report (``summary.md``, ``comparisons.csv``,
``plots/*.png``). ``results.csv`` is written only when every job has finished, so a run
directory with one is complete.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data import DataError, HearTask, Split, fingerprint, is_hear_task, read_hear_task
from ..data.hear import check_unique_names
from ..data.tasks import check_task, encode_labels, round_rows, select_rounds
from ..io import check_writable, write_json
from ..outputs import RunLock, check_output
from ..runinfo import write_run_info
from .cache import EmbeddingCache, get_embeddings
from .metrics import metric_names, primary_metric
from .pool import ProbePool
from .probes import ProbeData, ProbeResult
from .rankme import embedding_health
from .registry import DETERMINISTIC_PROBES
from .report import write_report
from .results import DIAGNOSTIC_FIELDS, RESULT_FIELDS, EvalError, read_run, write_csv
from .runconfig import EmbedderSpec, EvalConfig, discover_tasks, load_embedders, load_tasks, model_label
from .threads import limit_threads, warm_imports

__all__ = ["DIAGNOSTIC_FIELDS", "RESULT_FIELDS", "EmbedderSpec", "EvalConfig", "EvalError", "RunResult",
           "check_task", "discover_tasks", "encode_labels", "limit_threads", "load_embedders", "model_label",
           "result_rows", "round_data", "run_evaluation", "select_rounds"]


def round_data(task: HearTask, clip: np.ndarray, labels: np.ndarray, split: Split) -> ProbeData:
    """Train/valid/test arrays of one round (``clip`` and ``labels`` aligned with ``task.rows``)."""
    rows = round_rows(task, split)
    pos = {r.id: i for i, r in enumerate(task.rows)}
    parts = []
    for part in ("train", "valid", "test"):
        idx = np.asarray([pos[r.id] for r in rows.rows(part)], dtype=np.int64)
        parts.append((clip[idx], labels[idx]))
    (xtr, ytr), (xva, yva), (xte, yte) = parts
    return ProbeData(xtr, ytr, xva, yva, xte, yte, task.prediction_type, len(task.vocabulary))


def result_rows(model: str, task: str, fold: str, seed: int, data: ProbeData, res: ProbeResult
                ) -> list[dict[str, Any]]:
    """Long-format rows of one fit: one per metric of the task's prediction type."""
    pt = data.prediction_type
    primary = primary_metric(pt)
    meta = {"model": model, "task": task, "method": res.probe, "fold": fold, "seed": seed, "prediction_type": pt,
            "hparams": res.hparams, "n_train": len(data.x_train), "n_valid": len(data.x_valid),
            "n_test": len(data.x_test), "fit_seconds": res.fit_seconds, "predict_seconds": res.predict_seconds,
            "deterministic": res.deterministic}
    return [{**meta, "metric": m, "value": res.metrics[m], "primary": m == primary,
             "valid_value": res.valid_metrics.get(m, float("nan"))} for m in metric_names(pt)]


@dataclass
class RunResult:
    """What a finished run produced (also on disk in ``out``); ``results`` in long format."""

    out: Path
    results: list[dict[str, Any]]
    diagnostics: list[dict[str, Any]]
    timings: dict[str, Any]


def _log(msg: str, progress: bool) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def run_evaluation(cfg: EvalConfig, argv: list[str] | None = None,
                   embedders: list[EmbedderSpec] | None = None) -> RunResult:
    """Run the suite described by ``cfg`` and write the run directory (see module docstring).

    ``embedders`` replaces model/baseline loading (for tests and library use).
    """
    with limit_threads(cfg.threads):
        out = _check_out(cfg)  # before taking the lock: it creates the folder
        created = not out.exists()
        try:
            with RunLock(out):
                return _run(cfg, argv, embedders)
        finally:
            if created:  # a run refused before it wrote anything leaves no folder
                with contextlib.suppress(OSError):
                    out.rmdir()


# what an unfinished evaluation leaves in its run directory; a rerun reuses it (cached embeddings)
UNFINISHED = ("embeddings", "config.json", "run_info.json", "tasks.json", "diagnostics.csv", "timings.json", "plots")


def _check_out(cfg: EvalConfig) -> Path:
    if not cfg.out:
        raise EvalError("--out RUN_DIR is required")
    return check_output(cfg.out, overwrite=cfg.overwrite, folder=True, unfinished=UNFINISHED,
                        inputs=[cfg.tasks, *cfg.models])


def _prepare(cfg: EvalConfig, argv: list[str] | None, embedders: list[EmbedderSpec] | None
             ) -> tuple[Path, list[HearTask], dict[Path, list[Split]], list[EmbedderSpec], EmbeddingCache]:
    out = _check_out(cfg)
    check_writable(out)  # the cache is not checked: a read-only shared cache serves every hit
    tasks = load_tasks(cfg.tasks, cfg.only)
    check_unique_names(tasks)
    for t in tasks:
        check_task(t)
    rounds = {t.root: select_rounds(t.rounds(), cfg.folds, cfg.max_folds, where=str(t.root)) for t in tasks}
    specs = embedders if embedders is not None else load_embedders(cfg)
    _check_out(cfg)  # again, under the lock the caller now holds
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("results.csv", "summary.md", "comparisons.csv"):
        (out / stale).unlink(missing_ok=True)
    cache = EmbeddingCache(cfg.cache_dir())
    write_json(out / "config.json", {**cfg.to_dict(), "cache_resolved": str(cache.root),
                                     "embedders": [{"label": s.label, "source": s.source,
                                                    "fingerprint": s.embedder.fingerprint(),
                                                    "sample_rate": s.embedder.sample_rate,
                                                    "embed_dim": s.embedder.embed_dim} for s in specs]})
    write_run_info(out, None, argv=argv)
    write_json(out / "tasks.json", {t.name: {
        "path": str(t.root), "prediction_type": t.prediction_type,
        "split_mode": t.metadata.get("split_mode", "trainvaltest"), "n_classes": len(t.vocabulary),
        "fingerprint": fingerprint(t.rows), "rounds": [asdict(r) for r in rounds[t.root]],
        "metric": primary_metric(t.prediction_type)} for t in tasks})
    return out, tasks, rounds, specs, cache


def _run(cfg: EvalConfig, argv: list[str] | None, embedders: list[EmbedderSpec] | None) -> RunResult:
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    out, tasks, rounds, specs, cache = _prepare(cfg, argv, embedders)
    warm_imports()
    results: list[dict[str, Any]] = []
    diagnostics: list[dict[str, Any]] = []
    jobs: list[dict[str, Any]] = []
    seeds = cfg.seed_list
    with ProbePool(cfg.jobs, cfg.probe, cfg.probe_threads) as pool:
        for task in tasks:
            labels = encode_labels(task.rows, task.vocabulary, task.prediction_type)
            for spec in specs:
                emb = spec.embedder
                same = int(emb.sample_rate) == task.sample_rate or not is_hear_task(task.root)  # shards: any rate
                t_rows = task if same else read_hear_task(
                    task.root, sample_rate=int(emb.sample_rate))
                if [r.id for r in t_rows.rows] != [r.id for r in task.rows]:
                    raise DataError(f"{task.root}: clip ids differ between sample-rate folders")
                got = get_embeddings(emb, task.name, t_rows.rows, cache=cache, settings=spec.settings,
                                     batch_size=cfg.batch_size, progress=cfg.progress, label=spec.label)
                _log(f"[{spec.label} · {task.name}] embeddings {got.clip.shape} "
                     f"{'from cache' if got.cache_hit else f'computed in {got.seconds:.1f}s'}", cfg.progress)
                health = embedding_health(got.clip)
                diagnostics.append({"model": spec.label, "task": task.name, **health.as_dict(),
                                    "embed_seconds": 0.0 if got.cache_hit else got.seconds,
                                    "cache_hit": got.cache_hit})
                probe_time = dict.fromkeys(cfg.probes, 0.0)
                jobs.append({"model": spec.label, "task": task.name, "cache_hit": got.cache_hit,
                             "embed_seconds": 0.0 if got.cache_hit else got.seconds,
                             "cache_file": str(got.path) if got.path else None,
                             "probe_seconds": probe_time})
                n_fits = len(rounds[task.root]) * sum(1 if p in DETERMINISTIC_PROBES else len(seeds)
                                                      for p in cfg.probes)
                with tqdm(total=n_fits, desc=f"probe {spec.label} · {task.name}", unit="fit",
                          disable=not cfg.progress or cfg.jobs > 1, dynamic_ncols=True) as bar:
                    pool.on_done = (lambda: bar.update()) if cfg.jobs == 1 else None
                    for split in rounds[task.root]:
                        data = round_data(task, got.clip, labels, split)
                        for probe in cfg.probes:
                            for seed in ([seeds[0]] if probe in DETERMINISTIC_PROBES else seeds):
                                pool.submit((spec.label, task.name, split.name, seed, data, probe_time),
                                            probe, data, seed)
        for (model, task_name, fold, seed, data, probe_time), res in pool.results(
                progress=cfg.progress and cfg.jobs > 1):
            probe_time[res.probe] += res.fit_seconds + res.predict_seconds
            for s in (seeds if res.deterministic else [seed]):
                results.extend(result_rows(model, task_name, fold, s, data, res))
    total = time.perf_counter() - t_start
    timings = {"total_seconds": total, "jobs": jobs,
               "embed_seconds": sum(j["embed_seconds"] for j in jobs),
               "probe_seconds": sum(sum(j["probe_seconds"].values()) for j in jobs)}
    write_csv(out / "diagnostics.csv", diagnostics, DIAGNOSTIC_FIELDS)
    write_json(out / "timings.json", timings)
    write_csv(out / "results.csv", results, RESULT_FIELDS)
    write_report(read_run(out), out, compare_to=cfg.compare_to, confidence=cfg.confidence)
    _log(f"done in {total:.1f}s: {out / 'summary.md'}", cfg.progress)
    return RunResult(out, results, diagnostics, timings)
