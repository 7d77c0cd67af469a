"""``audiofm finetune`` and ``audiofm adapt-report``.

``audiofm.cli`` calls :func:`add_parsers` with its sub-parser collection; each sub-command sets
``func(args) -> exit code``. :func:`main` runs them stand-alone (tests, ``python -m
audiofm.adapt.commands``). Settings resolve through :func:`audiofm._commands.resolve_config`
(defaults < ``--config`` < flags < ``--set``); errors the user can fix print one line and exit 2;
set ``AUDIOFM_DEBUG=1`` to get the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .._commands import (
    add_config_options,
    add_resume_options,
    allowed_changes,
    command,
    config_defaults,
    resolve_config,
    resume_base,
    standalone_main,
)
from ..config import NonNegativeInt, PositiveInt, check_ranges

FINETUNE = "audiofm.adapt.config:FinetuneConfig"


@dataclass
class AdaptReportConfig:
    """Settings of ``audiofm adapt-report``. task: HEAR task directory. fold: the HEAR round
    (fold N is test, N+1 validation, the rest train). labels: one name per model (null: base,
    tuned for two models, else the directory names). projection: 2-D projection of the test
    clips, 'pca' or 'tsne'. batch_size: clips per embedding batch."""

    task: str = ""
    fold: NonNegativeInt = 0
    labels: list[str] | None = None
    projection: Literal["pca", "tsne"] = "pca"
    batch_size: PositiveInt = 16

    def __post_init__(self) -> None:
        if self.projection not in ("pca", "tsne"):
            raise ValueError(f"projection must be 'pca' or 'tsne', got {self.projection!r}")
        check_ranges(self)


def add_parsers(subparsers: Any) -> None:
    """Register ``finetune`` and ``adapt-report`` on an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser(
        "finetune", help="adapt an encoder to a labelled HEAR task (supervised or contrastive)",
        formatter_class=config_defaults(FINETUNE),
        description="Fine-tune a checkpoint on the train splits of one HEAR round (validation split for "
                    "checkpoint selection / early stopping; the test split is never read) and write a new "
                    "checkpoint directory --out that audiofm.load embeds like any other. Settings: "
                    "FinetuneConfig (audiofm.adapt.config; sections train, augment, supervised, contrastive) "
                    "— defaults < --config YAML < flags < --set key.sub=value (see docs/adaptation.md).")
    p.add_argument("--model", metavar="CKPT", help="base checkpoint or run directory (required, or model in "
                   "--config)")
    p.add_argument("--task", metavar="TASK_DIR", help="HEAR task directory (required, or task in --config)")
    p.add_argument("--method", choices=["supervised", "contrastive"], help="adaptation method (default: {method})")
    p.add_argument("--fold", type=int, help="HEAR round: fold N is test, N+1 validation, the rest train "
                   "(default: {fold})")
    p.add_argument("--out", required=True, metavar="CKPT_DIR", help="new checkpoint/run directory, never "
                   "overwritten (required)")
    add_resume_options(p)
    p.add_argument("--epochs", type=float, help="passes over the training split (default: {epochs})")
    p.add_argument("--max-steps", type=int, help="optimizer steps, instead of --epochs (default: from --epochs)")
    p.add_argument("--max-minutes", type=float, help="stop after this wall time and keep the best weights so far "
                   "(default: {train.max_minutes})")
    p.add_argument("--batch-size", type=int, help="clips per step (default: {train.batch_size})")
    p.add_argument("--lr", type=float, help="peak learning rate (default: {train.lr})")
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], help="autocast precision; auto = bf16 only "
                   "where the device multiplies bf16 natively (CUDA, AVX512_BF16/AMX CPUs), else fp32 "
                   "(default: {train.precision})")
    p.add_argument("--seed", type=int, help="seed of all randomness (default: {train.seed})")
    p.add_argument("--freeze-blocks", type=int, metavar="N", help="freeze the first N backbone blocks "
                   "(default: {freeze_blocks})")
    p.add_argument("--freeze-patch-embed", action="store_true", help="also freeze the patch embedding "
                   "(default: {freeze_patch_embed})")
    p.add_argument("--layer-decay", type=float, help="layer-wise lr decay factor in (0, 1], 1 = off "
                   "(default: {layer_decay})")
    p.add_argument("--patience", type=int, help="stop after N validations without improvement, 0 = never "
                   "(default: {patience})")
    p.add_argument("--keep-start", action="store_true",
                   help="let the starting weights win the validation selection (a run that only hurts "
                        "then returns the base encoder) (default: {keep_start})")
    p.add_argument("--label-smoothing", type=float, help="supervised: label smoothing ε "
                   "(default: {supervised.label_smoothing})")
    p.add_argument("--mixup", type=float, metavar="ALPHA", help="supervised: mixup Beta(α, α), 0 = off "
                   "(default: {supervised.mixup_alpha})")
    p.add_argument("--mixup-level", choices=["waveform", "embedding"], help="supervised: where to mix "
                   "(default: {supervised.mixup_level})")
    p.add_argument("--temperature", type=float, help="contrastive: SupCon temperature "
                   "(default: {contrastive.temperature})")
    p.add_argument("--report", action="store_true",
                   help="afterwards, write a dual-probe report (base vs tuned) to CKPT_DIR/report (default: off)")
    p.add_argument("--projection", choices=["pca", "tsne"], default="pca",
                   help="2-D projection of --report (default: pca)")
    add_config_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar or log lines (default: off)")
    p.set_defaults(func=command("finetune", cmd_finetune))

    r = subparsers.add_parser(
        "adapt-report", help="dual-probe report (linear + kNN, geometry, 2-D plot): base vs tuned",
        formatter_class=config_defaults("audiofm.adapt.commands:AdaptReportConfig"),
        description="Embed one HEAR round with each model, fit linear and kNN probes (train → valid → test) and "
                    "write report.md, report.json and projection.png (test clips, coloured by class) to --out. "
                    "Settings: AdaptReportConfig (audiofm.adapt.commands) — defaults < --config < flags < --set.")
    r.add_argument("models", nargs="+", metavar="CKPT", help="checkpoints to compare, e.g. BASE TUNED (required)")
    r.add_argument("--task", metavar="TASK_DIR", help="HEAR task directory (required, or task in --config)")
    r.add_argument("--fold", type=int, help="HEAR round to report on (default: {fold})")
    r.add_argument("--out", required=True, metavar="DIR", help="new report directory (required)")
    r.add_argument("--labels", help="comma-separated model labels (default: base,tuned for two models, else "
                                    "directory names)")
    r.add_argument("--projection", choices=["pca", "tsne"], help="2-D projection (default: {projection})")
    r.add_argument("--batch-size", type=int, help="clips per embedding batch (default: {batch_size})")
    r.add_argument("--overwrite", action="store_true", help="write into an existing --out, replacing its report "
                   "(default: off)")
    add_config_options(r)
    r.add_argument("--no-progress", action="store_true", help="no progress bar (default: off)")
    r.set_defaults(func=command("adapt-report", cmd_adapt_report))


def config_from_args(args: argparse.Namespace) -> Any:
    """FinetuneConfig from defaults < --config < flags < --set."""
    from ..config import ConfigError
    from .config import FinetuneConfig

    if args.max_steps is not None and args.epochs is not None:
        raise ConfigError("give --epochs or --max-steps, not both")
    flags: dict[str, Any] = {
        "model": args.model, "task": args.task, "method": args.method, "fold": args.fold, "epochs": args.epochs,
        "freeze_blocks": args.freeze_blocks, "freeze_patch_embed": True if args.freeze_patch_embed else None,
        "layer_decay": args.layer_decay, "patience": args.patience,
        "keep_start": True if args.keep_start else None,
        "supervised": {"label_smoothing": args.label_smoothing, "mixup_alpha": args.mixup,
                       "mixup_level": args.mixup_level},
        "contrastive": {"temperature": args.temperature},
        "train": {"max_steps": args.max_steps, "batch_size": args.batch_size, "lr": args.lr,
                  "precision": args.precision, "seed": args.seed, "max_minutes": args.max_minutes},
    }
    return resolve_config(FinetuneConfig, args, flags, required={"model": "--model", "task": "--task"},
                          nulls=("epochs",) if args.max_steps is not None else (),
                          base=resume_base(args, FinetuneConfig))


def cmd_finetune(args: argparse.Namespace) -> int:
    from ..io import check_writable
    from .report import adapt_report
    from .tune import FINISHED, finetune

    cfg = config_from_args(args)
    check_writable(args.out)
    res = finetune(cfg, args.out, resume=args.resume, progress=not args.no_progress,
                   allow_change=allowed_changes(args))
    if res["status"] not in FINISHED:  # interrupted: nothing final written
        print(f"{res['status']} at step {res['step']}; resume with: audiofm finetune --out {args.out} --resume",
              file=sys.stderr)
        return 130
    if "method" not in res:  # another process of a torchrun group; the first one wrote the result
        return 0
    best = "" if res["best_valid_score"] is None else \
        f"; best validation score {res['best_valid_score']:.4f} at step {res['best_step']}"
    print(f"{res['method']} fine-tuning of {res['task']} ({res['round']}) {res['status']} after {res['steps']} "
          f"steps in {res['seconds']:.0f} s{best}; checkpoint {args.out}")
    if args.report:
        rep = adapt_report([("base", cfg.model), ("tuned", str(Path(args.out) / "model"))], cfg.task,
                           Path(args.out) / "report",
                           fold=cfg.fold, projection=args.projection, progress=not args.no_progress)
        for r in rep["results"]:
            print(f"  {r['model']:>5}: linear {r['linear']:.3f}  kNN {r['knn']:.3f}  intra/inter cos "
                  f"{r['intra_cosine']:.3f}/{r['inter_cosine']:.3f}  RankMe {r['rankme']:.1f}")
        print(f"report: {Path(args.out) / 'report' / 'report.md'}")
    return 0


def cmd_adapt_report(args: argparse.Namespace) -> int:
    from ..config import ConfigError
    from ..io import check_writable
    from .report import adapt_report

    labels_flag = [s.strip() for s in args.labels.split(",")] if args.labels else None
    cfg = resolve_config(AdaptReportConfig, args, {"task": args.task, "fold": args.fold, "labels": labels_flag,
                                                   "projection": args.projection, "batch_size": args.batch_size},
                         required={"task": "--task"})
    check_writable(args.out)
    if cfg.labels is not None:
        labels = cfg.labels
        if len(labels) != len(args.models):
            raise ConfigError(f"--labels has {len(labels)} names for {len(args.models)} models")
    elif len(args.models) == 2:
        labels = ["base", "tuned"]
    else:
        labels = [Path(m.rstrip("/")).name or m for m in args.models]
    rep = adapt_report(list(zip(labels, args.models)), cfg.task, args.out, fold=cfg.fold,
                       projection=cfg.projection, batch_size=cfg.batch_size, progress=not args.no_progress,
                       overwrite=args.overwrite)
    print((Path(args.out) / "report.md").read_text())
    return 0 if rep["results"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry: ``python -m audiofm.adapt.commands finetune ...``."""
    return standalone_main(add_parsers, argv)


if __name__ == "__main__":
    raise SystemExit(main())
