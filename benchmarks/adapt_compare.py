"""Frozen probe vs supervised fine-tuning vs contrastive-tuning, scored by the dual probe.

For every task (one HEAR round, ``--fold``) and seed, the base checkpoint is adapted with each
method (:func:`audiofm.adapt.finetune`: training splits, validation split for checkpoint
selection, the test split never read), the tuned encoder embeds the round's clips and the eval
package's linear and kNN probes are fitted on train, tuned on valid and scored on test. The
frozen base is probed once per task (its probes are deterministic, so seeds would repeat it).
Reported: test accuracy (mAP for multilabel tasks) as mean ± 95 % t-interval over seeds, the
supervised head's own test score, the test-embedding geometry (intra − inter class cosine gap,
RankMe) and the training wall time. A PNG per task shows the test embeddings (seed 0) of the
three models. Re-running with the same ``--out`` reuses finished runs and resumes interrupted ones.

    python benchmarks/adapt_compare.py --model /work/runs/tasks_vit_tiny \\
        --tasks /work/shared/data/tasks --only emodb-emotion,fsdd-speaker,tonejs-instrument \\
        --seeds 0,1,2 --out runs/adapt_compare
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--model", required=True, help="base checkpoint or run directory")
    p.add_argument("--tasks", required=True, help="directory of HEAR task directories")
    p.add_argument("--only", type=_csv, default=["emodb-emotion", "fsdd-speaker", "tonejs-instrument"])
    p.add_argument("--methods", type=_csv, default=["supervised", "contrastive"])
    p.add_argument("--seeds", type=lambda s: [int(x) for x in _csv(s)], default=[0, 1, 2])
    p.add_argument("--fold", type=int, default=0, help="HEAR round (fold N test, N+1 valid, rest train)")
    p.add_argument("--epochs", type=float, default=4.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr-supervised", type=float, default=1e-4)
    p.add_argument("--lr-contrastive", type=float, default=3e-4)
    p.add_argument("--crop-seconds", type=float, default=None, help="training crop length (default: the model's "
                   "segment_seconds)")
    p.add_argument("--evaluate-every-epochs", type=float, default=1.0, help="validation interval (from step 0)")
    p.add_argument("--layer-decay", type=float, default=0.9)
    p.add_argument("--freeze-blocks", type=int, default=0, help="also freezes the patch embedding when > 0")
    p.add_argument("--keep-start", action="store_true",
                   help="let the starting weights win the validation selection (FinetuneConfig.keep_start)")
    p.add_argument("--no-last", action="store_true",
                   help="do not also probe each run's last weights (when validation kept earlier ones)")
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra FinetuneConfig overrides for both methods")
    p.add_argument("--out", required=True, help="output directory (reused on re-runs)")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    return p.parse_args(argv)


def finetune_config(args: argparse.Namespace, task: Path, method: str, seed: int) -> Any:
    from audiofm.adapt.config import finetune_config_from
    from audiofm.config import merge, parse_overrides

    lr = args.lr_supervised if method == "supervised" else args.lr_contrastive
    d: dict[str, Any] = {"model": args.model, "task": str(task), "method": method, "fold": args.fold,
                         "epochs": args.epochs, "layer_decay": args.layer_decay, "freeze_blocks": args.freeze_blocks,
                         "freeze_patch_embed": args.freeze_blocks > 0, "augment": {"crop_seconds": args.crop_seconds},
                         "evaluate_every_epochs": args.evaluate_every_epochs, "keep_start": args.keep_start,
                         "contrastive": {"temperature": args.temperature},
                         "train": {"batch_size": args.batch_size, "lr": lr, "seed": seed}}
    return finetune_config_from(merge(d, parse_overrides(args.set)))


def head_score(run: Path, z_test: np.ndarray, y_test: np.ndarray, prediction_type: str) -> float:
    """Test score of a supervised run's own classifier head on its test embeddings."""
    import torch

    import audiofm
    from audiofm.eval.metrics import primary_metric, score_predictions

    head = audiofm.load(run).head  # the run's classifier checkpoint carries its head
    with torch.inference_mode():
        logits = head(torch.from_numpy(z_test)).double()
    probs = logits.softmax(1) if prediction_type == "multiclass" else logits.sigmoid()
    return score_predictions(probs.numpy(), y_test, prediction_type)[primary_metric(prediction_type)]


def embed(src: str, rows: list[Any], cache: Path, progress: bool) -> np.ndarray:
    from audiofm.adapt.report import load_embedder
    from audiofm.embed_io import clip_matrix, embed_rows

    if cache.is_file():
        return np.load(cache)["clip"]
    clip = clip_matrix(embed_rows(load_embedder(src), rows, batch_size=16, progress=progress))
    np.savez(cache, clip=clip)
    return clip


def run_task(args: argparse.Namespace, task_dir: Path, out: Path) -> list[dict[str, Any]]:
    from audiofm import checkpoint as ckpt
    from audiofm.adapt.geometry import plot_projections
    from audiofm.adapt.report import probe_embeddings, round_parts
    from audiofm.adapt.tune import finetune
    from audiofm.data import read_hear_task
    from audiofm.data.tasks import check_task, encode_labels, pick_round, round_rows
    from audiofm.eval.probes import standardize

    task = read_hear_task(task_dir)
    check_task(task)
    split = pick_round(task, args.fold)
    rows, parts = round_parts(round_rows(task, split))
    labels = encode_labels(rows, task.vocabulary, task.prediction_type)
    tdir = out / "runs" / task.name
    tdir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    panels: list[tuple[str, np.ndarray]] = []

    def probe(label: str, method: str, seed: int | None, clip: np.ndarray, extra: dict[str, Any]) -> None:
        res = probe_embeddings(clip, labels, parts, task.prediction_type, len(task.vocabulary))
        rec = {"task": task.name, "round": split.name, "method": method, "seed": seed, **res, **extra}
        records.append(rec)
        print(f"  {task.name:18s} {label:16s} linear {res['linear']:.3f}  kNN {res['knn']:.3f}  "
              f"gap {res['gap']:.3f}  RankMe {res['rankme']:.1f}"
              + (f"  head {extra['head']:.3f}" if "head" in extra else "")
              + (f"  train {extra['train_seconds']:.0f} s" if "train_seconds" in extra else ""), flush=True)
        if seed in (None, args.seeds[0]):
            panels.append((f"{label}: linear {res['linear']:.3f} · kNN {res['knn']:.3f}\n"
                           f"cos gap {res['gap']:.3f} · RankMe {res['rankme']:.1f}",
                           standardize(clip[parts["train"]], clip[parts["test"]])[1]))

    base = embed(args.model, rows, tdir / "frozen.npz", args.progress)
    probe("frozen", "frozen", None, base, {})
    for method in args.methods:
        for seed in args.seeds:
            run = tdir / f"{method}-s{seed}"
            if not (run / "finetune.json").is_file():
                cfg = finetune_config(args, task_dir, method, seed)
                finetune(cfg, run, resume=(run / "run_config.yaml").is_file(), progress=args.progress)
            info = json.loads((run / "finetune.json").read_text())
            clip = embed(str(run), rows, run / "embeddings.npz", args.progress)
            extra: dict[str, Any] = {"train_seconds": info["seconds"], "steps": info["steps"],
                                     "best_step": info["best_step"], "best_valid_score": info["best_valid_score"],
                                     "start_valid_score": info.get("start_valid_score")}
            if method == "supervised":
                extra["head"] = head_score(run, clip[parts["test"]], labels[parts["test"]], task.prediction_type)
            probe(f"{method} s{seed}", method, seed, clip, extra)
            if not args.no_last:  # what tuning did, whatever validation preferred
                last = ckpt.latest_checkpoint(run / "checkpoints")
                assert last is not None, f"{run}: no engine checkpoint with the last weights"
                clip_last = clip if info["best_step"] == info["steps"] else \
                    embed(str(last), rows, run / "embeddings_last.npz", args.progress)
                probe(f"{method}-last s{seed}", f"{method} (last)", seed, clip_last,
                      {"train_seconds": info["seconds"], "steps": info["steps"], "best_step": info["steps"]})
    plot_projections(panels, labels[parts["test"]], task.vocabulary, out / f"projection_{task.name}.png",
                     suptitle=f"{task.name}, {split.name} test clips (PCA, z-scored as probed; seed {args.seeds[0]})")
    return records


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from audiofm.eval.stats import mean_ci

    rows = []
    for task in dict.fromkeys(r["task"] for r in records):
        for method in dict.fromkeys(r["method"] for r in records if r["task"] == task):
            rs = [r for r in records if r["task"] == task and r["method"] == method]
            row: dict[str, Any] = {"task": task, "method": method, "metric": rs[0]["metric"], "n": len(rs)}
            if method != "frozen":  # validation picked a tuned step (not the starting weights) in how many seeds
                row["tuned_selected"] = sum(1 for r in rs if (r.get("best_step") or 0) > 0)
            for key in ("linear", "knn", "head", "gap", "intra_cosine", "inter_cosine", "rankme", "train_seconds",
                        "start_valid_score", "best_valid_score"):
                vals = [r[key] for r in rs if r.get(key) is not None]
                if vals:
                    ci = mean_ci(vals)
                    row[key] = {"mean": ci.mean, "ci95": ci.half_width, "n": ci.n}
            rows.append(row)
    return rows


def _fmt(cell: dict[str, Any] | None, digits: int = 3) -> str:
    if cell is None:
        return "–"
    if cell["n"] < 2 or np.isnan(cell["ci95"]):
        return f"{cell['mean']:.{digits}f}"
    return f"{cell['mean']:.{digits}f} ± {cell['ci95']:.{digits}f}"


def markdown(summary: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"Base `{meta['model']}`, HEAR round {meta['fold']} of each task (test = fold{meta['fold']:02d}), seeds "
        f"{meta['seeds']}; {meta['epochs']:g} epochs, batch {meta['batch_size']}, "
        + (f"first {meta['freeze_blocks']} blocks and patch embedding frozen, " if meta["freeze_blocks"] else
           "all blocks trained, ")
        + (f"{meta['crop_seconds']:g} s crops, " if meta["crop_seconds"] else "segment-length crops, ")
        + f"layer decay {meta['layer_decay']}, "
        f"lr {meta['lr_supervised']:g} (supervised) / {meta['lr_contrastive']:g} (contrastive); validation every "
        f"{meta['evaluate_every_epochs']:g} epochs, best "
        + ("(including the starting weights) " if meta.get("keep_start") else "trained weights ")
        + "kept. Test accuracy (mAP for multilabel), "
        "mean ± 95 % t-interval over seeds; the frozen row is deterministic (one value). Gap = mean intra − "
        "inter class cosine of z-scored test embeddings. "
        "'valid start → kept' = validation score of the starting weights (step 0: the base encoder; for "
        "supervised, with the linear-probe head) and of the kept ones; 'tuned ckpt' = seeds in which a "
        "trained step was kept; '(last)' rows probe the weights at the end of training instead of the "
        "validation-selected ones.", "",
        "| task | method | linear | kNN | head | cos gap | RankMe | valid start → kept | tuned ckpt | train s/run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        lines.append(f"| {r['task']} | {r['method']} | {_fmt(r.get('linear'))} | {_fmt(r.get('knn'))} | "
                     f"{_fmt(r.get('head'))} | {_fmt(r.get('gap'))} | {_fmt(r.get('rankme'), 1)} | "
                     + (f"{r['start_valid_score']['mean']:.3f} → {r['best_valid_score']['mean']:.3f} | "
                        if "start_valid_score" in r and "best_valid_score" in r and "(last)" not in r["method"]
                        else "– | ")
                     + f"{'–' if 'tuned_selected' not in r else str(r['tuned_selected']) + '/' + str(r['n'])} | "
                     f"{_fmt(r.get('train_seconds'), 0)} |")
    lines += ["", f"Wall time {meta['wall_seconds'] / 60:.1f} min on {meta['machine']} (shared; timings are noisy)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    records: list[dict[str, Any]] = []
    for name in args.only:
        task_dir = Path(args.tasks) / name
        print(f"== {name}", flush=True)
        records.extend(run_task(args, task_dir, out))
    summary = summarise(records)
    meta = {"model": args.model, "fold": args.fold, "seeds": args.seeds, "epochs": args.epochs,
            "batch_size": args.batch_size, "layer_decay": args.layer_decay, "lr_supervised": args.lr_supervised,
            "lr_contrastive": args.lr_contrastive, "freeze_blocks": args.freeze_blocks,
            "crop_seconds": args.crop_seconds, "evaluate_every_epochs": args.evaluate_every_epochs,
            "temperature": args.temperature, "keep_start": args.keep_start, "overrides": args.set,
            "command": " ".join(sys.argv),
            "wall_seconds": time.time() - t0,
            "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"}
    (out / "results.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": records}, indent=2,
                                                 default=float))
    md = markdown(summary, meta)
    (out / "results.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
