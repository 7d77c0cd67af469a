"""``audiofm finetune`` and ``audiofm adapt-report``.

``audiofm.cli`` calls :func:`add_parsers` with its sub-parser collection; each sub-command sets
``func(args) -> exit code``. :func:`main` runs them stand-alone (tests, ``python -m
audiofm.adapt.commands``). Errors the user can fix print one line and exit 2; set
``AUDIOFM_DEBUG=1`` to get the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._commands import guarded, standalone_main


def add_parsers(subparsers: Any) -> None:
    """Register ``finetune`` and ``adapt-report`` on an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser(
        "finetune", help="adapt an encoder to a labelled HEAR task (supervised or contrastive)",
        description="Fine-tune a checkpoint on the train splits of one HEAR round (validation split for "
                    "checkpoint selection / early stopping; the test split is never read) and write a new "
                    "checkpoint directory --out that `audiofm.load` embeds like any other. Settings: defaults "
                    "< --config YAML < flags < --set key.sub=value (see docs/adaptation.md).")
    p.add_argument("--model", metavar="CKPT", help="base checkpoint or run directory")
    p.add_argument("--task", metavar="TASK_DIR", help="HEAR task directory")
    p.add_argument("--method", choices=["supervised", "contrastive"], help="default: supervised")
    p.add_argument("--fold", type=int, help="HEAR round: fold N is test, N+1 validation, the rest train (default 0)")
    p.add_argument("--out", required=True, metavar="CKPT_DIR", help="new checkpoint/run directory (never overwritten)")
    p.add_argument("--config", metavar="YAML", help="YAML with FinetuneConfig fields")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out (same options)")
    p.add_argument("--epochs", type=float, help="passes over the training split (default 10)")
    p.add_argument("--max-steps", type=int, help="optimizer steps (instead of --epochs)")
    p.add_argument("--max-minutes", type=float, help="stop after this wall time and keep the best weights so far")
    p.add_argument("--batch-size", type=int, help="clips per step (default 16)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 1e-4)")
    p.add_argument("--precision", choices=["fp32", "bf16"])
    p.add_argument("--seed", type=int)
    p.add_argument("--freeze-blocks", type=int, metavar="N", help="freeze the first N backbone blocks")
    p.add_argument("--freeze-patch-embed", action="store_true", help="also freeze the patch embedding")
    p.add_argument("--layer-decay", type=float, help="layer-wise lr decay factor in (0, 1] (1 = off)")
    p.add_argument("--patience", type=int, help="stop after N validations without improvement (0 = never)")
    p.add_argument("--keep-start", action="store_true",
                   help="let the starting weights win the validation selection (a run that only hurts "
                        "then returns the base encoder)")
    p.add_argument("--label-smoothing", type=float, help="supervised: label smoothing ε")
    p.add_argument("--mixup", type=float, metavar="ALPHA", help="supervised: mixup Beta(α, α) (0 = off)")
    p.add_argument("--mixup-level", choices=["waveform", "embedding"], help="supervised: where to mix")
    p.add_argument("--temperature", type=float, help="contrastive: SupCon temperature (default 0.1)")
    p.add_argument("--report", action="store_true",
                   help="afterwards, write a dual-probe report (base vs tuned) to CKPT_DIR/report")
    p.add_argument("--projection", choices=["pca", "tsne"], default="pca", help="2-D projection of --report")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set augment.noise_prob=0.3 --set train.weight_decay=0.1")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_finetune)

    r = subparsers.add_parser(
        "adapt-report", help="dual-probe report (linear + kNN, geometry, 2-D plot): base vs tuned",
        description="Embed one HEAR round with each model, fit linear and kNN probes (train → valid → test) and "
                    "write report.md, report.json and projection.png (test clips, coloured by class) to --out.")
    r.add_argument("models", nargs="+", metavar="CKPT", help="checkpoints to compare, e.g. BASE TUNED")
    r.add_argument("--task", required=True, metavar="TASK_DIR")
    r.add_argument("--fold", type=int, default=0)
    r.add_argument("--out", required=True, metavar="DIR", help="new report directory")
    r.add_argument("--labels", help="comma-separated model labels (default: base,tuned for two models, else "
                                    "directory names)")
    r.add_argument("--projection", choices=["pca", "tsne"], default="pca")
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=cmd_adapt_report)


def config_from_args(args: argparse.Namespace) -> Any:
    """FinetuneConfig from defaults < --config < flags < --set."""
    from ..config import ConfigError, drop_none, load_yaml, merge, parse_overrides
    from .finetune import finetune_config_from

    data: dict[str, Any] = load_yaml(args.config) if args.config else {}
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
    data = merge(data, drop_none(flags))
    if args.max_steps is not None:
        if args.epochs is not None:
            raise ConfigError("give --epochs or --max-steps, not both")
        data["epochs"] = None
    data = merge(data, parse_overrides(args.set))
    cfg = finetune_config_from(data)
    for key, flag in (("model", "--model"), ("task", "--task")):
        if not getattr(cfg, key):
            raise ConfigError(f"{flag} is required (or '{key}' in --config)")
    return cfg


def cmd_finetune(args: argparse.Namespace) -> int:
    def run() -> int:
        from .finetune import finetune
        from .report import adapt_report

        cfg = config_from_args(args)
        res = finetune(cfg, args.out, resume=args.resume, progress=not args.no_progress)
        if "method" not in res:  # interrupted: nothing final written
            print(f"{res['status']} at step {res['step']}; resume with: audiofm finetune --out {args.out} --resume "
                  "[same options]", file=sys.stderr)
            return 130
        best = "" if res["best_valid_score"] is None else \
            f"; best validation score {res['best_valid_score']:.4f} at step {res['best_step']}"
        print(f"{res['method']} fine-tuning of {res['task']} ({res['round']}) {res['status']} after {res['steps']} "
              f"steps in {res['seconds']:.0f} s{best}; checkpoint {args.out}")
        if args.report:
            rep = adapt_report([("base", cfg.model), ("tuned", args.out)], cfg.task, Path(args.out) / "report",
                               fold=cfg.fold, projection=args.projection, progress=not args.no_progress)
            for r in rep["results"]:
                print(f"  {r['model']:>5}: linear {r['linear']:.3f}  kNN {r['knn']:.3f}  intra/inter cos "
                      f"{r['intra_cosine']:.3f}/{r['inter_cosine']:.3f}  RankMe {r['rankme']:.1f}")
            print(f"report: {Path(args.out) / 'report' / 'report.md'}")
        return 0

    return guarded("finetune", run)


def cmd_adapt_report(args: argparse.Namespace) -> int:
    def run() -> int:
        from .report import adapt_report

        if args.labels:
            labels = [s.strip() for s in args.labels.split(",")]
            if len(labels) != len(args.models):
                raise ValueError(f"--labels has {len(labels)} names for {len(args.models)} models")
        elif len(args.models) == 2:
            labels = ["base", "tuned"]
        else:
            labels = [Path(m.rstrip("/")).name or m for m in args.models]
        rep = adapt_report(list(zip(labels, args.models)), args.task, args.out, fold=args.fold,
                           projection=args.projection, batch_size=args.batch_size, progress=not args.no_progress)
        print((Path(args.out) / "report.md").read_text())
        return 0 if rep["results"] else 1

    return guarded("adapt-report", run)


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry: ``python -m audiofm.adapt.commands finetune ...``."""
    return standalone_main(add_parsers, argv)


if __name__ == "__main__":
    raise SystemExit(main())
