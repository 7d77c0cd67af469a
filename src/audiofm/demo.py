"""``audiofm demo``: the whole loop on the built-in generated sound set, in a few minutes.

1. generate labelled families of sounds (see :mod:`audiofm.data.synth`);
2. pretrain a tiny MSM encoder on the training split (labels unused) for a time budget;
3. embed every clip with it and with the same architecture randomly initialised, each read two
   ways (last block, frequency patches averaged, mean pooling — the API's default; and
   frequency patches concatenated, mean+max pooling — the reading docs/results.md §21 measured
   best on the nine dev tasks), and with the pooled log-mel baseline;
4. score each with a kNN and a linear probe (hyper-parameters chosen on the validation split),
   print a table, and say plainly where the pretrained encoder is above or below random init and
   log-mel (:func:`verdict`).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from .data import read_manifest
from .data.synth import FAMILIES, make_demo_dataset
from .embed_io import embed_rows
from .embedding import AudioEmbedder
from .io import write_json, write_text
from .outputs import check_output

DEMO_FILES = ("data", "run", "summary.json", "summary.md")  # what the demo writes in ``out``
FREQ_CONCAT = "freq patches concatenated, mean+max"  # the second reading of each encoder in the table
FREQ_CONCAT_SETTINGS: dict[str, Any] = {"freq_mix": "concat", "pooling": "meanmax"}


def verdict(table: list[tuple[str, int, float, int, float]]) -> list[str]:
    """One plain sentence per encoder reading of the demo table (rows ``(name, dim, knn_acc, k,
    linear_acc)``, pretrained rows first, then random init, log-mel last): where the pretrained
    encoder is above or below its random init read the same way and the log-mel baseline."""
    rows = {name: (knn, lin) for name, _, knn, _, lin in table}
    logmel = rows.pop("log-mel mean+std")
    said = []
    for name, (knn, lin) in rows.items():
        if " pretrained" not in name:
            continue
        rand = rows[name.replace(" pretrained", " random init")]
        parts = []
        for probe, i, own in (("kNN", 0, knn), ("linear", 1, lin)):
            cmp = [f"{'above' if own > ref[i] else 'level with' if own == ref[i] else 'below'} {what} "
                   f"({own:.3f} vs {ref[i]:.3f})" for what, ref in (("random init", rand), ("log-mel", logmel))]
            parts.append(f"{probe} {' and '.join(cmp)}")
        said.append(f"{name}: " + "; ".join(parts) + ".")
    return said


def run_demo(out: Path, model: str = "msm_vit_tiny", minutes: float = 5.0, per_family: int = 120,
             resume: bool = False, batch_size: int = 32, precision: str = "auto",
             steps: int | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Run the demo in ``out``; ``steps`` fixes the step count instead of fitting ``minutes``.
    An existing ``out`` is continued with ``resume``, replaced (the demo's own files) with
    ``overwrite``, refused otherwise."""
    from .api import load, random_like
    from .eval.baselines import LogMelEmbedder
    from .eval.probes import ProbeData, knn_probe, linear_probe
    from .train.engine import TrainConfig
    from .train.pretrain import DataConfig, PretrainConfig, pretrain

    out = Path(out)
    if not resume:
        check_output(out, overwrite=overwrite, folder=True)
        for name in DEMO_FILES if overwrite else ():
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    t0 = time.time()
    print(f"[1/4] generating {per_family} clips for each of {len(FAMILIES)} sound families in {out / 'data'}")
    make_demo_dataset(out / "data", per_family=per_family)
    rows = read_manifest(out / "data" / "manifest.csv")
    train_rows = [r for r in rows if r.split == "train"]

    run = out / "run"
    print(f"[2/4] pretraining {model} for ~{minutes:g} min on {len(train_rows)} unlabelled clips")
    cfg = PretrainConfig(
        model=model, model_overrides={"segment_seconds": 2.0},
        data=DataConfig(source=str(out / "data" / "manifest.csv")),
        budget_minutes=None if steps else minutes,
        train=TrainConfig(batch_size=batch_size, lr=1e-3, precision=precision, log_every=1, ckpt_every=50,
                          max_steps=steps or 1, warmup_steps=max(1, (steps or 0) // 10),
                          max_minutes=None if steps else minutes * 3 + 1),
    )
    result = pretrain(cfg, run, resume=resume and (run / "run_config.yaml").exists(), rows=train_rows)
    steps = result["step"]
    losses = [json.loads(ln)["loss"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    print(f"      loss {losses[0]:.3f} -> {losses[-1]:.3f} in {result['seconds']:.0f} s")

    print("[3/4] embedding all clips: pretrained, random init (each two ways), log-mel")
    models: dict[str, AudioEmbedder] = {
        f"{model} pretrained": load(run),
        f"{model} pretrained, {FREQ_CONCAT}": load(run, **FREQ_CONCAT_SETTINGS),
        f"{model} random init": random_like(run),
        f"{model} random init, {FREQ_CONCAT}": random_like(run, **FREQ_CONCAT_SETTINGS),
        "log-mel mean+std": LogMelEmbedder(),
    }
    labels = sorted(FAMILIES)
    y = {s: np.array([labels.index(r.labels[0]) for r in rows if r.split == s]) for s in ("train", "valid", "test")}
    table = []
    for name, emb in models.items():
        x = {s: np.stack([e.clip for e in embed_rows(emb, [r for r in rows if r.split == s], progress=False)])
             for s in ("train", "valid", "test")}
        data = ProbeData(x["train"], y["train"], x["valid"], y["valid"], x["test"], y["test"], "multiclass",
                         len(labels))
        knn, lin = knn_probe(data), linear_probe(data)
        table.append((name, emb.embed_dim, knn.metrics["top1_acc"], knn.hparams["k"], lin.metrics["top1_acc"]))

    print("[4/4] test accuracy over", len(y["test"]), "clips,", len(labels), "classes (chance",
          f"{1 / len(labels):.3f})")
    lines = ["| embedding | dim | kNN acc | k | linear acc |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {n} | {d} | {a:.3f} | {k} | {b:.3f} |" for n, d, a, k, b in table]
    print("\n".join(lines))
    said = verdict(table)
    print("\n".join(said))
    summary = {"model": model, "steps": steps, "loss_first": losses[0], "loss_last": losses[-1],
               "train_seconds": result["seconds"], "total_seconds": time.time() - t0,
               "results": [dict(zip(("embedding", "dim", "knn_acc", "k", "linear_acc"), r)) for r in table],
               "verdict": said}
    write_json(out / "summary.json", summary)
    write_text(out / "summary.md", "\n".join([*lines, "", *said]) + "\n")
    print(f"done in {time.time() - t0:.0f} s. Loss curve: {run / 'loss_curve.png'}; summary: {out / 'summary.md'}")
    print("Next: pretrain on your own audio with\n  audiofm pretrain --model msm_vit_tiny --data YOUR_AUDIO_DIR "
          "--out runs/mine --max-steps 2000")
    return summary
