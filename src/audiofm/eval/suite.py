"""The evaluation suite: models × HEAR tasks × probes × rounds × seeds → a run directory.

For every task (a HEAR task directory) and every embedder, clip embeddings of all rows come
from the :mod:`~audiofm.eval.cache` (computed once), label-free diagnostics are taken on
them, and every selected round (train/valid/test, or the HEAR k-fold rotation) is scored by
each probe — once for deterministic probes (linear, kNN; the row is repeated for every seed
so each seed has a complete set of rows), once per seed for the MLP.

The run directory gets ``config.json`` (resolved config), ``run_info.json`` (package
versions, git commit, command), ``tasks.json`` (task fingerprints and rounds),
``results.csv``, ``diagnostics.csv``, ``timings.json`` and the report (``summary.md``,
``comparisons.csv``, ``plots/*.png``). ``results.csv`` is written only when every job has
finished, so a run directory with one is complete.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data import DataError, HearTask, Row, Split, fingerprint, is_hear_task, read_hear_task
from ..embedding import AudioEmbedder
from ..models.encoder import POOLINGS
from ..runinfo import write_run_info
from .cache import EmbeddingCache, get_embeddings
from .metrics import MULTICLASS, PREDICTION_TYPES, metric_names, primary_metric
from .probes import ProbeConfig, ProbeData, run_probe
from .rankme import embedding_health
from .registry import DETERMINISTIC_PROBES, PROBES
from .threads import limit_threads, warm_imports

RESULT_FIELDS = ["model", "task", "probe", "round", "seed", "prediction_type", "metric", "score",
                 "top1_acc", "mAP", "d_prime", "valid_score", "hparams", "n_train", "n_valid", "n_test",
                 "fit_seconds", "predict_seconds", "deterministic"]
DIAGNOSTIC_FIELDS = ["model", "task", "n", "dim", "rankme", "rankme_ratio", "dead_dim_frac", "mean_cosine",
                     "norm_mean", "norm_std", "embed_seconds", "cache_hit"]


class EvalError(ValueError):
    """The evaluation cannot run as asked; the message says what to change."""


@dataclass
class EvalConfig:
    """What ``audiofm evaluate`` runs.

    models: checkpoint directories (``audiofm.load``). baselines: "logmel", "random" (the
    first model, randomly initialised) or peer names (``audiofm.peers``). tasks: a HEAR task
    dir or a dir of task dirs; only: task names to keep. probes: subset of linear/mlp/knn.
    seeds: seeds 0..seeds-1. out: run directory. folds: round indices to run (k-fold: fold i
    is test) or None for all; max_folds: keep the first N rounds. batch_size: clips per
    ``embed_batch`` call. cache: embedding cache dir (None → ``$AUDIOFM_CACHE`` if set, else
    ``<out>/embeddings``). pooling / layer: passed to ``audiofm.load`` and ``random_like``.
    probe: probe hyper-parameter grids. confidence: CI level. compare_to: paired comparisons
    against the "first" model or the "best" per task. random_seed: init seed of the "random"
    baseline. threads: CPU threads for torch, BLAS and faiss during the whole run (None: the
    libraries' defaults). probe_threads: threads while fitting probes (default 1: probes work on
    small matrices, and oversubscribed BLAS/OpenMP threads made them 3-20× slower on a shared
    machine; None: inherit). overwrite: allow an out dir that already holds results.
    progress: show bars.
    """

    models: list[str] = field(default_factory=list)
    baselines: list[str] = field(default_factory=list)
    tasks: str = ""
    only: list[str] = field(default_factory=list)
    probes: list[str] = field(default_factory=lambda: list(PROBES))
    seeds: int = 5
    out: str = ""
    folds: list[int] | None = None
    max_folds: int | None = None
    batch_size: int = 16
    cache: str | None = None
    pooling: str = "mean"
    layer: int = -1
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    confidence: float = 0.95
    compare_to: str = "first"
    random_seed: int = 0
    threads: int | None = None
    probe_threads: int | None = 1
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        bad = [p for p in self.probes if p not in PROBES]
        if bad or not self.probes:
            raise EvalError(f"unknown probe(s) {bad or '(none)'}; choose from {', '.join(PROBES)}")
        if self.seeds < 1:
            raise EvalError(f"--seeds must be ≥ 1, got {self.seeds}")
        if self.pooling not in POOLINGS:
            raise EvalError(f"--pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.compare_to not in ("first", "best"):
            raise EvalError(f"--compare-to must be 'first' or 'best', got {self.compare_to!r}")
        if self.max_folds is not None and self.max_folds < 1:
            raise EvalError(f"--max-folds must be ≥ 1, got {self.max_folds}")
        for name in ("threads", "probe_threads"):
            n = getattr(self, name)
            if n is not None and n < 1:
                raise EvalError(f"{name} must be ≥ 1, got {n}")
        if not 0 < self.confidence < 1:
            raise EvalError(f"confidence must be in (0, 1), got {self.confidence}")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds))

    def cache_dir(self) -> Path:
        if self.cache:
            return Path(self.cache)
        env = os.environ.get("AUDIOFM_CACHE")
        return Path(env) / "embeddings" if env else Path(self.out) / "embeddings"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalConfig:
        """Build from a (YAML/JSON) mapping, typed and checked by :func:`audiofm.config.from_dict`;
        nested ``probe`` sections may be partial."""
        from ..config import ConfigError, from_dict

        try:
            return from_dict(cls, d, "config")
        except ConfigError as e:
            raise EvalError(str(e)) from None


# ------------------------------------------------------------------------------------ tasks


def discover_tasks(path: str | os.PathLike[str], only: list[str] | None = None) -> list[Path]:
    """Task dirs under ``path`` (itself a task, or a dir of tasks), sorted, filtered by ``only``."""
    p = Path(path)
    if not p.is_dir():
        raise EvalError(f"{p}: --tasks must be a HEAR task directory or a directory of them")
    found = [p] if is_hear_task(p) else sorted(c for c in p.iterdir() if c.is_dir() and is_hear_task(c))
    if not found:
        raise EvalError(f"{p}: no HEAR task found (a task dir holds task_metadata.json)")
    if only:
        names = {c.name: c for c in found}
        missing = [o for o in only if o not in names]
        if missing:
            raise EvalError(f"--only: task(s) {missing} not in {p}; available: {sorted(names)}")
        found = [names[o] for o in only]
    return found


def select_rounds(rounds: list[Split], folds: list[int] | None = None, max_folds: int | None = None,
                  where: str = "task") -> list[Split]:
    """Rounds to run: indices in ``folds`` (in the task's order; indices a task does not have are
    skipped, so one ``--folds`` works across tasks with different fold counts), then the first
    ``max_folds``. Raises EvalError when nothing is left."""
    out = rounds
    if folds is not None:
        if any(i < 0 for i in folds):
            raise EvalError(f"--folds must be non-negative round indices, got {folds}")
        out = [r for i, r in enumerate(rounds) if i in set(folds)]
        if not out:
            raise EvalError(f"{where}: --folds {folds} selects none of its {len(rounds)} round(s) "
                            f"({', '.join(r.name for r in rounds)})")
    if max_folds is not None:
        out = out[:max_folds]
    return out


def check_task(task: HearTask) -> None:
    """Raise EvalError unless the task is a scene task of a supported prediction type."""
    where = task.root / "task_metadata.json"
    if task.metadata.get("embedding_type", "scene") != "scene":
        raise EvalError(f"{where}: embedding_type {task.metadata.get('embedding_type')!r} (timestamp/event "
                        "tasks) is not supported; exclude the task with --only")
    if task.prediction_type not in PREDICTION_TYPES:
        raise EvalError(f"{where}: prediction_type {task.prediction_type!r} is not supported "
                        f"(use {' or '.join(PREDICTION_TYPES)})")
    if task.prediction_type == MULTICLASS:
        bad = [r for r in task.rows if len(r.labels) != 1]
        if bad:
            raise DataError(f"{task.root}: multiclass task but {bad[0].id} has {len(bad[0].labels)} labels "
                            f"({len(bad)} such clips); fix the split JSON or set prediction_type multilabel")


def encode_labels(rows: list[Row], vocabulary: list[str], prediction_type: str) -> np.ndarray:
    """(N,) class indices (multiclass) or (N, C) multi-hot float32 (multilabel)."""
    index = {lab: i for i, lab in enumerate(vocabulary)}
    if prediction_type == MULTICLASS:
        return np.asarray([index[r.labels[0]] for r in rows], dtype=np.int64)
    y = np.zeros((len(rows), len(vocabulary)), dtype=np.float32)
    for n, r in enumerate(rows):
        for lab in r.labels:
            y[n, index[lab]] = 1.0
    return y


def round_data(task: HearTask, clip: np.ndarray, labels: np.ndarray, split: Split) -> ProbeData:
    """Train/valid/test arrays of one round (rows aligned with ``task.rows``)."""
    parts = []
    for names in (split.train, split.valid, split.test):
        want = set(names)
        idx = np.asarray([i for i, r in enumerate(task.rows) if r.split in want], dtype=np.int64)
        if len(idx) == 0:
            raise DataError(f"{task.root}: round {split.name} has no clips in split(s) {names}")
        parts.append((clip[idx], labels[idx]))
    (xtr, ytr), (xva, yva), (xte, yte) = parts
    return ProbeData(xtr, ytr, xva, yva, xte, yte, task.prediction_type, len(task.vocabulary))


# -------------------------------------------------------------------------------- embedders


@dataclass
class EmbedderSpec:
    """An embedder with the label it gets in results and the cache settings it adds."""

    label: str
    embedder: AudioEmbedder
    settings: dict[str, Any]
    source: str


def model_label(path: str, layer: int, pooling: str) -> str:
    name = Path(path.rstrip("/\\")).name or path
    extras = []
    if layer != -1:
        extras.append(f"layer={layer}")
    if pooling != "mean":
        extras.append(pooling)
    return f"{name}[{','.join(extras)}]" if extras else name


def load_embedders(cfg: EvalConfig) -> list[EmbedderSpec]:
    """Models first (in order), then baselines; labels made unique."""
    from .baselines import make_baseline

    specs: list[EmbedderSpec] = []
    settings = {"layer": cfg.layer, "pooling": cfg.pooling}
    for path in cfg.models:
        if not Path(path).exists():
            raise EvalError(f"{path}: no such checkpoint directory (--model expects a directory with "
                            "config.json and model.safetensors)")
        import audiofm

        emb: AudioEmbedder = audiofm.load(path, layer=cfg.layer, pooling=cfg.pooling)
        specs.append(EmbedderSpec(model_label(path, cfg.layer, cfg.pooling), emb, settings, path))
    for name in cfg.baselines:
        emb = make_baseline(name, cfg.models, layer=cfg.layer, pooling=cfg.pooling, seed=cfg.random_seed)
        if name == "random":
            label = f"random-init({specs[0].label})"
            specs.append(EmbedderSpec(label, emb, {**settings, "init_seed": cfg.random_seed}, "random"))
        else:
            specs.append(EmbedderSpec(name, emb, {}, name))
    if not specs:
        raise EvalError("nothing to evaluate: give --model CKPT and/or --baseline NAME[,NAME]")
    seen: dict[str, int] = {}
    for s in specs:
        if s.label in seen:
            seen[s.label] += 1
            s.label = f"{s.label}-{seen[s.label]}"
        else:
            seen[s.label] = 1
    return specs


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def write_csv(path: Path, rows: list[dict[str, Any]], fieldnames: list[str]) -> None:
    """Write ``rows`` atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fieldnames, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(v) for k, v in r.items()})
    os.replace(tmp, path)


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if np.isnan(v) else repr(v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return v


# -------------------------------------------------------------------------------------- run


@dataclass
class RunResult:
    """What a finished run produced (also on disk in ``out``)."""

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
        return _run(cfg, argv, embedders)


def _run(cfg: EvalConfig, argv: list[str] | None, embedders: list[EmbedderSpec] | None) -> RunResult:
    from tqdm.auto import tqdm

    from .report import read_run, write_report

    t_start = time.perf_counter()
    if not cfg.out:
        raise EvalError("--out RUN_DIR is required")
    out = Path(cfg.out)
    if (out / "results.csv").exists() and not cfg.overwrite:
        raise EvalError(f"{out}: already holds a finished run (results.csv); pass --overwrite to replace it "
                        "(cached embeddings are kept) or choose another --out")
    task_dirs = discover_tasks(cfg.tasks, cfg.only)
    tasks = [read_hear_task(d) for d in task_dirs]
    for t in tasks:
        check_task(t)
    rounds = {t.root: select_rounds(t.rounds(), cfg.folds, cfg.max_folds, where=str(t.root)) for t in tasks}
    specs = embedders if embedders is not None else load_embedders(cfg)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("results.csv", "summary.md", "comparisons.csv"):
        (out / stale).unlink(missing_ok=True)
    cache = EmbeddingCache(cfg.cache_dir())
    _write_json(out / "config.json", {**cfg.to_dict(), "cache_resolved": str(cache.root),
                                      "embedders": [{"label": s.label, "source": s.source,
                                                     "fingerprint": s.embedder.fingerprint(),
                                                     "sample_rate": s.embedder.sample_rate,
                                                     "embed_dim": s.embedder.embed_dim} for s in specs]})
    write_run_info(out, None, argv=argv)
    _write_json(out / "tasks.json", {t.name: {
        "path": str(t.root), "prediction_type": t.prediction_type,
        "split_mode": t.metadata.get("split_mode", "trainvaltest"), "n_classes": len(t.vocabulary),
        "fingerprint": fingerprint(t.rows), "rounds": [asdict(r) for r in rounds[t.root]],
        "metric": primary_metric(t.prediction_type)} for t in tasks})

    warm_imports()
    results: list[dict[str, Any]] = []
    diagnostics: list[dict[str, Any]] = []
    jobs: list[dict[str, Any]] = []
    seeds = cfg.seed_list
    for task in tasks:
        labels = encode_labels(task.rows, task.vocabulary, task.prediction_type)
        for spec in specs:
            emb = spec.embedder
            t_rows = task if int(emb.sample_rate) == task.sample_rate else read_hear_task(
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
            n_jobs = len(rounds[task.root]) * sum(1 if p in DETERMINISTIC_PROBES else len(seeds)
                                                  for p in cfg.probes)
            with tqdm(total=n_jobs, desc=f"probe {spec.label} · {task.name}", unit="fit",
                      disable=not cfg.progress, dynamic_ncols=True) as bar:
                for split in rounds[task.root]:
                    data = round_data(task, got.clip, labels, split)
                    for probe in cfg.probes:
                        run_seeds = [seeds[0]] if probe in DETERMINISTIC_PROBES else seeds
                        for seed in run_seeds:
                            res = run_probe(probe, data, cfg.probe, seed=seed, threads=cfg.probe_threads)
                            probe_time[probe] += res.fit_seconds + res.predict_seconds
                            for s in (seeds if res.deterministic else [seed]):
                                results.append(_result_row(spec.label, task, split, s, data, res))
                            bar.update(1)
            jobs.append({"model": spec.label, "task": task.name, "cache_hit": got.cache_hit,
                         "embed_seconds": 0.0 if got.cache_hit else got.seconds,
                         "cache_file": str(got.path) if got.path else None,
                         "probe_seconds": probe_time})
    total = time.perf_counter() - t_start
    timings = {"total_seconds": total, "jobs": jobs,
               "embed_seconds": sum(j["embed_seconds"] for j in jobs),
               "probe_seconds": sum(sum(j["probe_seconds"].values()) for j in jobs)}
    write_csv(out / "diagnostics.csv", diagnostics, DIAGNOSTIC_FIELDS)
    _write_json(out / "timings.json", timings)
    write_csv(out / "results.csv", results, RESULT_FIELDS)
    write_report(read_run(out), out, compare_to=cfg.compare_to, confidence=cfg.confidence)
    _log(f"done in {total:.1f}s: {out / 'summary.md'}", cfg.progress)
    return RunResult(out, results, diagnostics, timings)


def _result_row(model: str, task: HearTask, split: Split, seed: int, data: ProbeData, res: Any
                ) -> dict[str, Any]:
    pt = task.prediction_type
    metric = primary_metric(pt)
    row: dict[str, Any] = {
        "model": model, "task": task.name, "probe": res.probe, "round": split.name, "seed": seed,
        "prediction_type": pt, "metric": metric, "score": res.metrics[metric],
        "valid_score": res.valid_metrics.get(metric, float("nan")), "hparams": res.hparams,
        "n_train": len(data.x_train), "n_valid": len(data.x_valid), "n_test": len(data.x_test),
        "fit_seconds": res.fit_seconds, "predict_seconds": res.predict_seconds,
        "deterministic": res.deterministic,
    }
    for m in metric_names(pt):
        row[m] = res.metrics[m]
    return row
