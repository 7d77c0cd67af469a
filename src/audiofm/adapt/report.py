"""Dual-probe report: linear and kNN probes plus embedding geometry, before vs after adaptation.

For one HEAR task and round, every model embeds the round's train/valid/test clips (mean
pooling, deterministic); the eval package's linear probe (global linear separability) and kNN
probe (local cluster structure) are fitted on train, tuned on valid and scored on test; the test
embeddings' geometry (mean intra-/inter-class cosine and their gap, after z-scoring with the
training statistics; RankMe of the raw embeddings) says *why* one model probes better; a PNG
shows a 2-D projection of the test embeddings per model, coloured by class.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Row, read_hear_task
from ..data.tasks import LabelledRows, check_task, encode_labels, pick_round, round_rows
from ..embedding import AudioEmbedder
from ..io import write_json, write_text
from ..outputs import check_output
from .geometry import geometry, plot_projections


def load_embedder(path_or_preset: str, batch_size: int = 16) -> AudioEmbedder:
    """``audiofm.load(path)`` (mean pooling) or, for a registry preset name, a random init."""
    from ..api import load, random_like
    from ..models.registry import list_models

    if not Path(path_or_preset).exists() and path_or_preset in list_models():
        return random_like(path_or_preset, batch_size=batch_size)
    return load(path_or_preset, pooling="mean", batch_size=batch_size)


def round_parts(data: LabelledRows) -> tuple[list[Row], dict[str, np.ndarray]]:
    """The train, valid and test rows of a round in one list, and each part's row indices."""
    rows = [*data.train, *data.valid, *data.test]
    bounds = np.cumsum([0, len(data.train), len(data.valid), len(data.test)])
    return rows, {p: np.arange(bounds[i], bounds[i + 1]) for i, p in enumerate(("train", "valid", "test"))}


def probe_embeddings(clip: np.ndarray, labels: np.ndarray, parts: dict[str, np.ndarray], prediction_type: str,
                     n_classes: int) -> dict[str, Any]:
    """Linear and kNN test metrics and test-set geometry of embeddings ``clip`` of one round."""
    from ..eval.metrics import primary_metric
    from ..eval.probes import ProbeData, knn_probe, linear_probe

    tr, va, te = parts["train"], parts["valid"], parts["test"]
    data = ProbeData(clip[tr], labels[tr], clip[va], labels[va], clip[te], labels[te], prediction_type, n_classes)
    metric = primary_metric(prediction_type)
    lin, knn = linear_probe(data), knn_probe(data)
    geo = geometry(clip[te], labels[te], reference=clip[tr])
    return {"metric": metric, "linear": lin.metrics[metric], "knn": knn.metrics[metric],
            "linear_valid": lin.valid_metrics[metric], "knn_valid": knn.valid_metrics[metric],
            "linear_C": lin.hparams["C"], "knn_k": knn.hparams["k"], **geo.as_dict()}


def adapt_report(models: list[tuple[str, str]], task_dir: str | os.PathLike[str], out: str | os.PathLike[str],
                 fold: int = 0, projection: str = "pca", batch_size: int = 16, progress: bool = True,
                 overwrite: bool = False) -> dict[str, Any]:
    """Probe and plot ``models`` (``(label, checkpoint dir or preset)``, e.g. base then tuned)
    on one round of a HEAR task; writes ``report.md``, ``report.json`` and ``projection.png``
    to the new directory ``out`` (an existing one only with ``overwrite``; never into an
    input). Returns the JSON content."""
    from ..embed_io import clip_matrix, embed_rows
    from ..eval.probes import standardize

    out = check_output(out, overwrite=overwrite, folder=True,
                       inputs=[task_dir, *(src for _, src in models if Path(src).exists())])
    task = read_hear_task(task_dir)
    check_task(task)
    split = pick_round(task, fold)
    rows, parts = round_parts(round_rows(task, split))
    labels = encode_labels(rows, task.vocabulary, task.prediction_type)
    embedders = [(label, src, load_embedder(src, batch_size)) for label, src in models]  # fail early
    results, panels = [], []
    for label, src, emb in embedders:
        clip = clip_matrix(embed_rows(emb, rows, batch_size=batch_size, progress=progress, desc=f"embed {label}"))
        res = probe_embeddings(clip, labels, parts, task.prediction_type, len(task.vocabulary))
        results.append({"model": label, "source": src, **res})
        panels.append((f"{label}: linear {res['linear']:.3f} · kNN {res['knn']:.3f}\n"
                       f"cos intra {res['intra_cosine']:.2f} / inter {res['inter_cosine']:.2f} · "
                       f"RankMe {res['rankme']:.1f}", standardize(clip[parts["train"]], clip[parts["test"]])[1]))
    out.mkdir(parents=True, exist_ok=True)
    png = plot_projections(panels, labels[parts["test"]], task.vocabulary, out / "projection.png", projection,
                           suptitle=f"{task.name}, {split.name} test clips, z-scored as probed ({projection})")
    report = {"task": task.name, "round": split.name, "fold": fold, "train_splits": split.train,
              "valid_splits": split.valid, "test_splits": split.test,
              "clips": {k: len(v) for k, v in parts.items()}, "metric": results[0]["metric"],
              "results": results, "projection": png.name}
    write_json(out / "report.json", report)
    write_text(out / "report.md", report_markdown(report))
    return report


def report_markdown(report: dict[str, Any]) -> str:
    m = report["metric"]
    lines = [f"# Dual-probe report: {report['task']} ({report['round']})", "",
             f"Train {report['train_splits']} ({report['clips']['train']} clips), valid {report['valid_splits']} "
             f"({report['clips']['valid']}), test {report['test_splits']} ({report['clips']['test']}). "
             f"Scores: test {m}. Cosines on test embeddings z-scored with training statistics; RankMe on raw "
             "test embeddings.", "",
             f"| model | linear {m} | kNN {m} | intra cos | inter cos | gap | RankMe |",
             "|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['model']} | {r['linear']:.3f} | {r['knn']:.3f} | {r['intra_cosine']:.3f} | "
                     f"{r['inter_cosine']:.3f} | {r['gap']:.3f} | {r['rankme']:.1f} |")
    lines += ["", f"![projection]({report['projection']})", ""]
    return "\n".join(lines)
