"""The anomalous-sound-detection pipeline: DCASE data → embeddings → (pseudo-)attributes →
attribute-classification fine-tuning → scoring backend → official scores, per seed.

Methods (``AsdConfig.method``):

* ``frozen`` — embed with ``model`` as it is: a checkpoint / run directory, a registry preset
  (random initialisation with the seed), ``logmel`` (the pooled log-mel baseline) or a peer
  (``aisfx``, ``birdnet``, ...; settings as ``name:key=value``) — the last two resolved by
  :func:`audiofm.eval.baselines.make_baseline`, frozen only;
* ``dapt`` — domain-adaptive pretraining first (``audiofm pretrain --init model`` on the
  training audio, :class:`DaptConfig`), then frozen embeddings of the result;
* ``pseudo-ft`` — cluster the training embeddings into pseudo-attributes
  (:func:`~audiofm.asd.pseudo.pseudo_attributes`, real attributes ignored), fine-tune the encoder
  to classify machine type × pseudo-attribute with a margin head
  (:func:`audiofm.adapt.finetune_rows`), score in the tuned embedding space;
* ``attr-ft`` — the same with the real attributes where every clip of a machine type has them;
* ``ae`` — the official autoencoder baseline (:mod:`~audiofm.asd.autoencoder`; no ``model``).

``pseudo-ft`` and ``attr-ft`` run DAPT first only with ``dapt.enabled`` (else ``model`` is used
as it is — e.g. a checkpoint that already is domain-adapted). Scores come from the backend
(:mod:`~audiofm.asd.scoring`) fitted per machine type on its training embeddings.

The run directory: ``results.csv`` (long format: task = machine type, metrics ``auc_source``,
``auc_target``, ``pauc``, ``official_score``, one row per seed — ``audiofm report`` reads it),
``table.md`` / ``table.csv`` (per machine and overall, mean ± 95 % CI over seeds),
``scores/seed<N>.csv``, ``submission/seed<N>/`` (official CSVs, gamma-fit threshold),
``plots/roc_<machine>.png`` and ``plots/hist_<machine>.png`` (first seed), ``clusters.json``,
``config.json`` (resolved) and per-seed stage folders (``seed<N>/dapt``, ``seed<N>/finetune``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..adapt.config import FinetuneConfig, SupervisedConfig
from ..config import from_dict, to_dict
from ..data.dcase import dcase_clip, read_dcase
from ..data.manifest import Row
from ..data.tasks import MULTICLASS, LabelledRows
from ..io import write_json, write_text
from ..peers import list_peers
from .autoencoder import AEConfig
from .scoring import BACKENDS

METHODS = ("frozen", "dapt", "pseudo-ft", "attr-ft", "ae")
ASD_METRICS = ("auc_source", "auc_target", "pauc", "official_score")
PEERS = tuple(list_peers())  # frozen baselines by name, besides 'logmel' (audiofm.eval.baselines.make_baseline)


@dataclass
class DaptConfig:
    """Domain-adaptive pretraining (``audiofm pretrain --init``). enabled: run it for
    pseudo-ft / attr-ft too (always for method 'dapt'). budget_minutes: wall time of the schedule
    (null: ``max_steps``). batch_size, lr: the MSM schedule. keep_stats: keep the checkpoint's
    log-mel statistics."""

    enabled: bool = False
    budget_minutes: float | None = 5.0
    max_steps: int = 200
    batch_size: int = 16
    lr: float = 2e-4
    keep_stats: bool = True


@dataclass
class PseudoConfig:
    """Pseudo-attributes (:func:`~audiofm.asd.pseudo.pseudo_attributes`): linkage, per_domain,
    max_clusters; with method 'attr-ft' real attributes are used where present."""

    linkage: str = "ward"
    per_domain: bool = False
    max_clusters: int = 16


def _default_finetune() -> FinetuneConfig:
    cfg = FinetuneConfig(epochs=5.0, evaluate_every_epochs=0.0, warmup_fraction=0.1,
                         supervised=SupervisedConfig(head="arcface"))
    cfg.train.batch_size = 16
    cfg.train.lr = 5e-5
    return cfg


@dataclass
class AsdConfig:
    """data: DCASE root (one machine-type folder or a folder of them). year: force the layout
    (null: detected). model: checkpoint / run directory, registry preset (random init),
    'logmel' or a peer name (these two frozen only). method: see the module. backend: scoring
    backend (``knn``, ``knn-domain``, ``knn-kmeans``, ``mahalanobis``); k: neighbours of the kNN
    backends; n_centers: source k-means centres of ``knn-kmeans``. seeds: how many seeds, run as
    first_seed .. first_seed + seeds - 1 (first_seed: to add seeds to a finished run in a new run
    directory; DAPT, clustering-free parts, fine-tuning, AE and random init vary with the seed).
    out: run directory. batch_size: clips per embedding batch. threads: torch threads (0 =
    default). finetune: the attribute classification fine-tuning (its model and task are filled
    in; no validation-based selection: the last weights are kept, since ASD training data has no
    anomalies to select on; a tenth of the training clips serves the recipe's required validation
    split)."""

    data: str = ""
    year: int | None = None
    model: str = ""
    method: str = "frozen"
    backend: str = "knn"
    k: int = 1
    n_centers: int = 16
    seeds: int = 1
    first_seed: int = 0
    out: str = ""
    label: str = ""
    batch_size: int = 16
    threads: int = 0
    progress: bool = True
    dapt: DaptConfig = field(default_factory=DaptConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    finetune: FinetuneConfig = field(default_factory=_default_finetune)
    ae: AEConfig = field(default_factory=AEConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {self.backend!r}")
        if self.seeds < 1 or self.k < 1:
            raise ValueError("seeds and k must be ≥ 1")
        if self.first_seed < 0:
            raise ValueError(f"first_seed must be ≥ 0, got {self.first_seed}")

    def check(self) -> None:
        """Problems only a run can have (a model for every method but 'ae')."""
        from ..config import ConfigError

        if self.method != "ae" and not self.model:
            raise ConfigError(f"method {self.method!r} needs --model (a checkpoint, a preset name, 'logmel' or a "
                              f"peer: {', '.join(PEERS)})")
        base = baseline_name(self.model) if self.method != "ae" else None
        if base is not None and self.method != "frozen":
            what = ("the log-mel baseline has no weights" if base == "logmel" else
                    f"peer {base!r} is not an audiofm model")
            raise ConfigError(f"{what} to adapt (--method {self.method}); use --method frozen")
        if not self.data or not self.out:
            raise ConfigError("--data and --out are required")


def asd_config_from(data: dict[str, Any]) -> AsdConfig:
    return from_dict(AsdConfig, data, where="asd config")


# ----------------------------------------------------------------------------- stages


def split_rows(rows: Sequence[Row]) -> tuple[list[Row], list[Row]]:
    """(normal training rows, test rows) of a DCASE read."""
    train = [r for r in rows if r.split == "train"]
    test = [r for r in rows if r.split == "test"]
    if not train or not test:
        raise ValueError(f"need train and test clips, got {len(train)} train and {len(test)} test")
    return train, test


def baseline_name(model: str) -> str | None:
    """The baseline ``model`` names — 'logmel' or a peer, with optional settings
    (``aisfx``, ``birdnet:min_conf=0.1``; :func:`audiofm.eval.baselines.parse_baseline`) — or
    None for a checkpoint / run directory (an existing path wins) or anything else."""
    from ..eval.baselines import parse_baseline

    if not model or Path(model).exists():
        return None
    name = model.split(":", 1)[0]
    if name != "logmel" and name not in PEERS:
        return None
    return parse_baseline(model)[0]


def make_embedder(model: str, seed: int = 0) -> Any:
    """An :class:`~audiofm.embedding.AudioEmbedder` for ``model``: a checkpoint / run directory,
    a preset name (random init with ``seed``), or a frozen baseline resolved by
    :func:`audiofm.eval.baselines.make_baseline` — 'logmel' or a peer (``aisfx``, ``birdnet``,
    ... with optional ``:key=value`` settings)."""
    from ..api import load, random_like
    from ..eval.baselines import make_baseline
    from ..models.registry import list_models

    if Path(model).exists():
        return load(model)
    if model in list_models():
        return random_like(model, seed=seed)
    if baseline_name(model) is not None:
        return make_baseline(model, [], seed=seed)
    raise FileNotFoundError(f"{model}: no such checkpoint or run directory, nor a preset name (random init), "
                            f"'logmel' or a peer ({', '.join(PEERS)})")


def embed(model: Any, rows: Sequence[Row], batch_size: int = 16, progress: bool = False) -> np.ndarray:
    """Clip embeddings ``(N, D)`` of ``rows`` with an embedder or a model name/path."""
    from ..embed_io import clip_matrix, embed_rows

    emb = make_embedder(model) if isinstance(model, str) else model
    return clip_matrix(embed_rows(emb, rows, batch_size=batch_size, progress=progress))


def save_embeddings(path: str | os.PathLike[str], rows: Sequence[Row], x: np.ndarray) -> Path:
    """``ids``, ``clip`` npz (the layout of :func:`audiofm.embed_io.write_embeddings`)."""
    from ..embed_io import write_embeddings
    from ..embedding import Embeddings

    embs = [Embeddings(clip=v, frames=np.zeros((0, x.shape[1]), np.float32), timestamps=np.zeros(0)) for v in x]
    return write_embeddings(embs, rows, path)


def load_embeddings(path: str | os.PathLike[str], rows: Sequence[Row]) -> np.ndarray:
    """The clip embeddings of ``rows`` (by id) from an npz of :func:`save_embeddings`."""
    with np.load(path) as z:
        pos = {str(i): j for j, i in enumerate(z["ids"])}
        missing = [r.id for r in rows if r.id not in pos]
        if missing:
            raise KeyError(f"{path}: no embeddings for {len(missing)} clip(s), e.g. {missing[:3]}")
        return np.asarray(z["clip"][[pos[r.id] for r in rows]], dtype=np.float32)


def run_dapt(model: str, rows: Sequence[Row], cfg: DaptConfig, out: Path, seed: int, threads: int = 0,
             progress: bool = False) -> str:
    """``audiofm pretrain --init model`` on ``rows``; returns the final checkpoint's path."""
    from ..train.pretrain import PretrainConfig, pretrain

    pc = PretrainConfig(init=model if Path(model).exists() else "", keep_stats=cfg.keep_stats,
                        budget_minutes=cfg.budget_minutes)
    if not pc.init:
        pc.model = model  # a preset: plain pretraining from random init on the machine audio
    pc.train.max_steps, pc.train.batch_size, pc.train.lr = cfg.max_steps, cfg.batch_size, cfg.lr
    pc.train.warmup_steps = max(1, cfg.max_steps // 10)
    pc.train.seed, pc.train.threads = seed, threads
    pc.train.ckpt_every, pc.train.log_every = 10**9, 10
    result = pretrain(pc, out, progress=progress, rows=list(rows))
    return str(result["checkpoint"])


@dataclass
class AttributeLabels:
    """Per training row its class label ``<machine>/<attribute or cluster>`` and diagnostics."""

    labels: list[str]
    diagnostics: dict[str, Any]


def attribute_labels(rows: Sequence[Row], x: np.ndarray, cfg: PseudoConfig, use_attributes: bool
                     ) -> AttributeLabels:
    """Labels for attribute-classification fine-tuning, with cluster diagnostics per machine."""
    from .pseudo import pseudo_attributes

    p = pseudo_attributes(rows, x, linkage=cfg.linkage, per_domain=cfg.per_domain, use_attributes=use_attributes,
                          max_clusters=cfg.max_clusters)
    diag: dict[str, Any] = {}
    for machine, src in p.source.items():
        labs = [lab for lab, r in zip(p.labels, rows) if dcase_clip(r).machine == machine]
        d: dict[str, Any] = {"source": src, "n_labels": len(set(labs)), "n_clips": len(labs)}
        for key, cl in p.clusterings.items():
            if key == machine or key.startswith(machine + "/"):
                d.setdefault("clusterings", {})[key] = {
                    "n_clusters": cl.n_clusters, "criterion": cl.criterion,
                    "silhouettes": {str(k): round(v, 4) for k, v in cl.silhouettes.items()}}
        if machine in p.agreement:
            d["agreement_with_attributes"] = p.agreement[machine]
        diag[machine] = d
    return AttributeLabels(p.labels, diag)


def finetune_attributes(model: str, rows: Sequence[Row], labels: Sequence[str], cfg: FinetuneConfig, out: Path,
                        seed: int, threads: int = 0, progress: bool = False) -> str:
    """Fine-tune ``model`` to classify ``labels`` (machine × attribute) through
    :func:`audiofm.adapt.finetune_rows`; returns the classifier checkpoint's path."""
    from ..adapt.tune import finetune_rows

    if len(set(labels)) < 2:
        raise ValueError(f"attribute classification needs at least 2 classes, got {sorted(set(labels))} (one "
                         "machine type whose clips form one cluster or share one attribute value)")
    train = [dataclasses.replace(r, labels=[lab]) for r, lab in zip(rows, labels)]
    valid = train[::10]
    data = LabelledRows(name="asd-attributes", round="train", vocabulary=sorted(set(labels)),
                        prediction_type=MULTICLASS, train=train, valid=valid, test=[])
    fc = dataclasses.replace(cfg, model=model, train=dataclasses.replace(cfg.train, seed=seed, threads=threads))
    result = finetune_rows(fc, data, out, progress=progress)
    if "checkpoint" not in result:
        raise RuntimeError(f"fine-tuning stopped ({result.get('status')}); see {out}")
    return str(result["checkpoint"])


def score_machines(train_rows: Sequence[Row], x_train: np.ndarray, test_rows: Sequence[Row], x_test: np.ndarray,
                   backend: str, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """(test scores, training scores) from ``backend`` fitted per machine type."""
    from .scoring import make_backend

    mt = np.array([dcase_clip(r).machine for r in train_rows])
    ms = np.array([dcase_clip(r).machine for r in test_rows])
    s_test, s_train = np.zeros(len(test_rows)), np.zeros(len(train_rows))
    for machine in sorted(set(ms)):
        itr, its = np.flatnonzero(mt == machine), np.flatnonzero(ms == machine)
        if not len(itr):
            raise ValueError(f"{machine}: test clips but no training clips")
        b = make_backend(backend, **kwargs).fit(x_train[itr], [train_rows[int(i)].domain for i in itr])
        s_test[its] = b.score(x_test[its])
        s_train[itr] = b.train_scores()
    return s_test, s_train


def score_autoencoder(train_rows: Sequence[Row], test_rows: Sequence[Row], cfg: AEConfig
                      ) -> tuple[np.ndarray, np.ndarray, dict[str, list[float]]]:
    """(test scores, training scores, loss history per machine) of the AE baseline per machine type."""
    from ..embed_io import load_row
    from .autoencoder import AEDetector

    sr = cfg.frontend.sample_rate
    mt = np.array([dcase_clip(r).machine for r in train_rows])
    ms = np.array([dcase_clip(r).machine for r in test_rows])
    s_test, s_train = np.zeros(len(test_rows)), np.zeros(len(train_rows))
    history: dict[str, list[float]] = {}
    for machine in sorted(set(ms)):
        itr, its = np.flatnonzero(mt == machine), np.flatnonzero(ms == machine)
        det = AEDetector(cfg)
        history[machine] = det.fit([load_row(train_rows[int(i)], sr) for i in itr],
                                   [train_rows[int(i)].domain for i in itr])
        s_test[its] = det.score([load_row(test_rows[int(i)], sr) for i in its])
        s_train[itr] = det.train_scores()
    return s_test, s_train, history


def task_name(machine: str, section: str, sections: set[str]) -> str:
    return machine if sections <= {"00"} else f"{machine}/section_{section}"


def long_rows(test_rows: Sequence[Row], scores: np.ndarray, *, model: str, method: str, seed: int,
              n_train: dict[str, int]) -> list[dict[str, Any]]:
    """``results.csv`` rows (long format) of one seed: per machine-section auc_source,
    auc_target, pauc and its official score (harmonic mean of those)."""
    from scipy.stats import hmean

    from .metrics import EPS, score_rows

    sc = score_rows(test_rows, scores)
    sections = {str(r["section"]) for r in sc.table if r["machine"] != "all"}
    per: dict[tuple[str, str], dict[str, float]] = {}
    for r in sc.table:
        if r["machine"] == "all" or r["section"] == "mean":
            continue
        name = {("auc", "source"): "auc_source", ("auc", "target"): "auc_target", ("pauc", "all"): "pauc"}.get(
            (r["metric"], r["domain"]))
        if name is None and sc.year == 2021 and r["metric"] == "pauc":
            name = f"pauc_{r['domain']}"
        if name:
            per.setdefault((str(r["machine"]), str(r["section"])), {})[name] = float(r["value"])
    out = []
    counts: dict[tuple[str, str], int] = {}
    for row in test_rows:
        c = dcase_clip(row)
        counts[(c.machine, c.section)] = counts.get((c.machine, c.section), 0) + 1
    for (machine, section), vals in sorted(per.items()):
        vals["official_score"] = float(hmean(np.maximum(list(vals.values()), EPS)))
        for metric, v in vals.items():
            out.append({"model": model, "task": task_name(machine, section, sections), "method": method,
                        "fold": "test", "seed": seed, "metric": metric, "value": v,
                        "primary": metric == "official_score", "prediction_type": "anomaly",
                        "n_train": n_train.get(machine, 0), "n_test": counts.get((machine, section), 0),
                        "deterministic": False})
    return out


# ----------------------------------------------------------------------------- outputs


def summary_table(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task (and 'all') × metric: mean, 95 % CI half-width over seeds and n. 'all' is the
    harmonic mean over tasks per seed (= the official score over every value for equal counts)."""
    from scipy.stats import hmean

    from ..eval.stats import mean_ci

    tasks = list(dict.fromkeys(r["task"] for r in results))
    seeds = sorted({int(r["seed"]) for r in results})
    metrics = [m for m in ASD_METRICS if any(r["metric"] == m for r in results)]
    val = {(r["task"], int(r["seed"]), r["metric"]): float(r["value"]) for r in results}
    rows = []
    for task in [*tasks, "all"]:
        for m in metrics:
            if task == "all":
                per_seed = [float(hmean([max(val[(t, s, m)], 1e-12) for t in tasks if (t, s, m) in val]))
                            for s in seeds if any((t, s, m) in val for t in tasks)]
            else:
                per_seed = [val[(task, s, m)] for s in seeds if (task, s, m) in val]
            ci = mean_ci(per_seed)
            rows.append({"task": task, "metric": m, "mean": ci.mean, "ci95": ci.half_width, "n_seeds": ci.n})
    return rows


def markdown_table(summary: Sequence[dict[str, Any]], title: str) -> str:
    metrics = list(dict.fromkeys(r["metric"] for r in summary))
    tasks = list(dict.fromkeys(r["task"] for r in summary))
    cell = {(r["task"], r["metric"]): r for r in summary}

    def fmt(r: dict[str, Any] | None) -> str:
        if r is None or math.isnan(r["mean"]):
            return "—"
        hw = "" if math.isnan(r["ci95"]) else f" ± {100 * r['ci95']:.1f}"
        return f"{100 * r['mean']:.1f}{hw}"

    n = max((int(r["n_seeds"]) for r in summary), default=0)
    lines = [f"# {title}", "", f"Mean ± 95 % CI (t) over {n} seed(s), in %.", "",
             "| machine | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for t in tasks:
        lines.append(f"| {t} | " + " | ".join(fmt(cell.get((t, m))) for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def write_plots(folder: Path, test_rows: Sequence[Row], scores: np.ndarray) -> list[Path]:
    """ROC curve per machine (one line per domain, that domain's normals + all anomalies) and
    per-domain score histograms (normal vs anomalous)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    folder.mkdir(parents=True, exist_ok=True)
    clips = [dcase_clip(r) for r in test_rows]
    written = []
    for machine in sorted({c.machine for c in clips}):
        idx = [i for i, c in enumerate(clips) if c.machine == machine]
        y = np.array([clips[i].label == "anomaly" for i in idx])
        s = scores[idx]
        d = np.array([clips[i].domain for i in idx])
        doms = [x for x in ("source", "target") if np.any(d == x)]
        fig, ax = plt.subplots(figsize=(4, 4))
        for dom in doms:
            keep = (d == dom) | y
            if y[keep].all() or not y[keep].any():
                continue
            fpr, tpr, _ = roc_curve(y[keep], s[keep])
            ax.plot(fpr, tpr, label=dom)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{machine} ROC")
        ax.legend(loc="lower right")
        fig.tight_layout()
        p = folder / f"roc_{machine}.png"
        fig.savefig(p, dpi=100)
        plt.close(fig)
        written.append(p)
        fig, axes = plt.subplots(1, max(1, len(doms)), figsize=(4 * max(1, len(doms)), 3), squeeze=False)
        for ax, dom in zip(axes[0], doms):
            for lab, name in ((False, "normal"), (True, "anomaly")):
                v = s[(d == dom) & (y == lab)]
                if len(v):
                    ax.hist(v, bins=20, alpha=0.6, label=name)
            ax.set(title=f"{machine} {dom}", xlabel="anomaly score")
            ax.legend()
        fig.tight_layout()
        p = folder / f"hist_{machine}.png"
        fig.savefig(p, dpi=100)
        plt.close(fig)
        written.append(p)
    return written


def _scores_csv(path: Path, rows: Sequence[Row], scores: np.ndarray) -> None:
    lines = ["id,machine,section,domain,label,score"]
    for r, v in zip(rows, scores):
        c = dcase_clip(r)
        lines.append(f"{r.id},{c.machine},{c.section},{c.domain},{c.label},{v:.8g}")
    write_text(path, "\n".join(lines) + "\n")


def default_label(cfg: AsdConfig) -> str:
    if cfg.label:
        return cfg.label
    if cfg.method == "ae":
        return f"ae-{cfg.ae.mode}"
    return f"{Path(cfg.model).name or cfg.model}"


def finish_seed(out: Path, seed: int, train_rows: Sequence[Row], s_train: np.ndarray, test_rows: Sequence[Row],
                s_test: np.ndarray, *, model: str, method: str, n_train: dict[str, int],
                plots: bool | None = None) -> list[dict[str, Any]]:
    """Write one seed's scores, submission (gamma-fit threshold per machine) and, with
    ``plots`` (default: seed 0), the plots; returns its long-format result rows."""
    from .metrics import gamma_threshold, write_submission

    _scores_csv(out / "scores" / f"seed{seed}.csv", test_rows, s_test)
    mt = np.array([dcase_clip(r).machine for r in train_rows])
    thr = {m: gamma_threshold(s_train[mt == m]) for m in sorted(set(mt))}
    write_submission(out / "submission" / f"seed{seed}", test_rows, s_test, threshold=thr)
    if seed == 0 if plots is None else plots:
        write_plots(out / "plots", test_rows, s_test)
    return long_rows(test_rows, s_test, model=model, method=method, seed=seed, n_train=n_train)


def write_tables(out: Path, results: Sequence[dict[str, Any]], title: str) -> list[dict[str, Any]]:
    """``results.csv`` (long format) and the per-machine + overall ``table.md`` / ``table.csv``."""
    from ..eval.results import RESULT_FIELDS, write_csv

    write_csv(out / "results.csv", results, RESULT_FIELDS)
    summary = summary_table(results)
    write_csv(out / "table.csv", summary, ["task", "metric", "mean", "ci95", "n_seeds"])
    write_text(out / "table.md", markdown_table(summary, title))
    return summary


def machine_counts(rows: Sequence[Row]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        m = dcase_clip(r).machine
        out[m] = out.get(m, 0) + 1
    return out


# ----------------------------------------------------------------------------- the run


def run_asd(cfg: AsdConfig) -> dict[str, Any]:
    """Run the configured method over ``cfg.seeds`` seeds and write the run directory ``cfg.out``."""
    import torch

    cfg.check()
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} already exists and is not empty; choose a new --out (nothing was overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.time()
    rows = read_dcase(cfg.data, year=cfg.year)
    train_rows, test_rows = split_rows(rows)
    n_train = machine_counts(train_rows)
    label = default_label(cfg)
    method_name = "ae" if cfg.method == "ae" else f"{cfg.method}+{cfg.backend}"
    write_json(out / "config.json", {**to_dict(cfg), "resolved": {"model_label": label, "method": method_name,
                                                                 "train_clips": len(train_rows),
                                                                 "test_clips": len(test_rows)}})
    results: list[dict[str, Any]] = []
    clusters: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    kwargs: dict[str, Any] = ({"k": cfg.k} if cfg.backend in ("knn", "knn-domain") else
                              {"n_centers": cfg.n_centers} if cfg.backend == "knn-kmeans" else {})
    for seed in range(cfg.first_seed, cfg.first_seed + cfg.seeds):
        ts = time.time()
        sd = out / f"seed{seed}"
        info: dict[str, Any] = {}
        if cfg.method == "ae":
            ae_cfg = dataclasses.replace(cfg.ae, seed=seed)
            s_test, s_train, history = score_autoencoder(train_rows, test_rows, ae_cfg)
            info["ae_loss"] = history
        else:
            model = cfg.model
            if cfg.method == "dapt" or (cfg.method in ("pseudo-ft", "attr-ft") and cfg.dapt.enabled):
                t = time.time()
                model = run_dapt(model, train_rows, cfg.dapt, sd / "dapt", seed, cfg.threads, cfg.progress)
                info["dapt_seconds"] = round(time.time() - t, 1)
                info["dapt_checkpoint"] = model
            embedder = make_embedder(model, seed)
            x_train = embed(embedder, train_rows, cfg.batch_size, cfg.progress)
            if cfg.method in ("pseudo-ft", "attr-ft"):
                labs = attribute_labels(train_rows, x_train, cfg.pseudo, use_attributes=cfg.method == "attr-ft")
                clusters[f"seed{seed}"] = labs.diagnostics
                t = time.time()
                model = finetune_attributes(model, train_rows, labs.labels, cfg.finetune, sd / "finetune", seed,
                                            cfg.threads, cfg.progress)
                info["finetune_seconds"] = round(time.time() - t, 1)
                embedder = make_embedder(model, seed)
                x_train = embed(embedder, train_rows, cfg.batch_size, cfg.progress)
            x_test = embed(embedder, test_rows, cfg.batch_size, cfg.progress)
            s_test, s_train = score_machines(train_rows, x_train, test_rows, x_test, cfg.backend, **kwargs)
        results += finish_seed(out, seed, train_rows, s_train, test_rows, s_test, model=label,
                               method=method_name, n_train=n_train, plots=seed == cfg.first_seed)
        info["seconds"] = round(time.time() - ts, 1)
        timings[f"seed{seed}"] = info
    summary = write_tables(out, results, f"{label} · {method_name}")
    if clusters:
        write_json(out / "clusters.json", clusters)
    timings["total_seconds"] = round(time.time() - t0, 1)
    write_json(out / "timings.json", timings)
    overall = {r["metric"]: r for r in summary if r["task"] == "all"}
    return {"out": str(out), "label": label, "method": method_name, "summary": summary,
            "official_score": overall.get("official_score", {}).get("mean"), "seconds": timings["total_seconds"]}
