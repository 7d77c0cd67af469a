"""``audiofm retrieval train`` and ``audiofm retrieval evaluate``.

``audiofm.cli`` calls :func:`add_parsers` with its sub-parser collection; :func:`main` runs the
commands stand-alone (tests, ``python -m audiofm.retrieval.commands``). Settings resolve through
:func:`audiofm._commands.resolve_config` (defaults < ``--config`` < flags < ``--set``); errors the
user can fix print one line and exit 2 (``AUDIOFM_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

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

CONFIG = "audiofm.retrieval.config:RetrievalConfig"


def add_parsers(subparsers: Any) -> None:
    """Register ``retrieval`` (with ``train`` and ``evaluate``) on a sub-parser collection."""
    r = subparsers.add_parser(
        "retrieval", help="language-based audio retrieval: train and evaluate audio-text dual encoders",
        description="Train dual encoders (an audio tower, a text tower, projections into one space) on "
                    "captioned audio and evaluate them with DCASE Task 6 metrics (see docs/retrieval.md).")
    sub = r.add_subparsers(dest="retrieval_command", metavar="ACTION", required=True,
                           help="train or evaluate (required)")

    t = sub.add_parser(
        "train", help="train dual encoders (one run per seed)", formatter_class=config_defaults(CONFIG),
        description="Train the projections (and any unfrozen tower layers) of a dual encoder on the training "
                    "split with multi-positive InfoNCE (plus optional distillation and pseudo-class terms), pick "
                    "the weights by validation mAP@10 and write RUN/seed-S/model, a dual checkpoint that "
                    "audiofm.load opens. Settings: RetrievalConfig (audiofm.retrieval.config; sections model, "
                    "data, train, augmentation) - defaults < --config YAML < flags < --set key.sub=value.")
    t.add_argument("--audio-model", metavar="CKPT", help="audio tower: a checkpoint or run directory, a preset, "
                   "logmel or a peer name (default: {model.audio_model})")
    t.add_argument("--text-model", metavar="DIR", help="a local sentence-transformers model directory "
                   "(default: the bundled all-MiniLM-L6-v2)")
    t.add_argument("--data", metavar="DIR", help="a Clotho folder, an AudioCaps folder or a pairs CSV/JSONL "
                   "(required, or data.source in --config)")
    t.add_argument("--out", required=True, metavar="RUN", help="new run directory, never overwritten (required)")
    t.add_argument("--seeds", type=int, metavar="N", help="independent runs with seeds train.seed .. "
                   "train.seed+N-1 (default: {seeds})")
    t.add_argument("--epochs", type=float, help="passes over the training pairs, instead of train.max_steps "
                   "(default: {epochs})")
    t.add_argument("--max-steps", type=int, help="optimizer steps (default: {train.max_steps})")
    t.add_argument("--batch-size", type=int, help="pairs per step, the InfoNCE batch (default: "
                   "{train.batch_size})")
    t.add_argument("--lr", type=float, help="peak learning rate (default: {train.lr})")
    t.add_argument("--seed", type=int, help="the first seed (default: {train.seed})")
    t.add_argument("--teacher", action="append", metavar="CKPT", help="a dual checkpoint or run directory to "
                   "distil from; repeatable, the ensemble (default: none)")
    t.add_argument("--distill-weight", type=float, help="weight of the distillation term, 0 = off "
                   "(default: {distill_weight})")
    t.add_argument("--cluster-weight", type=float, help="weight of the caption pseudo-class term, 0 = off "
                   "(default: {cluster_weight})")
    t.add_argument("--cache", metavar="DIR", help="cache of frozen tower features (default: "
                   "$AUDIOFM_CACHE/retrieval if set, else RUN/features)")
    add_resume_options(t)
    add_config_options(t)
    t.add_argument("--no-progress", action="store_true", help="no progress bar or log lines (default: off)")
    t.set_defaults(func=command("retrieval train", cmd_train))

    e = sub.add_parser(
        "evaluate", help="evaluate a trained run on a split (results.csv, summary.md, examples.md)",
        description="Embed every clip and caption of a split with each seed's model of RUN and write results.csv "
                    "(long format: text-to-audio R@1/5/10, mAP@10 and mAP@16, audio-to-text R@1/5/10 and "
                    "mAP@10, plus a random-ranking baseline), queries.jsonl (per-query ranks), summary.md "
                    "(mean and 95 % CI over seeds) and examples.md (queries with their top-5 clips).")
    e.add_argument("run", metavar="RUN", help="a run directory of audiofm retrieval train, or one dual checkpoint "
                   "(required)")
    e.add_argument("--data", required=True, metavar="DIR", help="a Clotho folder, an AudioCaps folder or a pairs "
                   "CSV/JSONL (required)")
    e.add_argument("--split", default="evaluation", help="the split to evaluate (default: evaluation)")
    e.add_argument("--relevance", metavar="CSV", help="several-relevant annotations for mAP@16 (default: "
                   "relevance_SPLIT.csv beside the captions if present, else the original pairs)")
    e.add_argument("--out", metavar="DIR", help="output directory (default: RUN/eval-SPLIT)")
    e.add_argument("--baseline", action="append", choices=["random", "none"], help="reference rankings to add; "
                   "none for no baseline (default: random)")
    e.add_argument("--name", help="model name in the tables (default: the run directory name)")
    e.add_argument("--batch-size", type=int, default=16, help="clips per embedding batch (default: 16)")
    e.add_argument("--overwrite", action="store_true", help="write into an existing --out, replacing its files "
                   "(default: off)")
    e.set_defaults(func=command("retrieval evaluate", cmd_evaluate))


def config_from_args(args: argparse.Namespace) -> Any:
    """RetrievalConfig from defaults < --config < flags < --set (on --resume: the saved settings)."""
    from ..config import ConfigError
    from .config import RetrievalConfig

    if args.max_steps is not None and args.epochs is not None:
        raise ConfigError("give --epochs or --max-steps, not both")
    flags: dict[str, Any] = {
        "model": {"audio_model": args.audio_model, "text_model": args.text_model},
        "data": {"source": args.data}, "seeds": args.seeds, "epochs": args.epochs,
        "teachers": args.teacher, "distill_weight": args.distill_weight, "cluster_weight": args.cluster_weight,
        "cache": args.cache,
        "train": {"max_steps": args.max_steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed},
    }
    return resolve_config(RetrievalConfig, args, flags, required={"data.source": "--data"},
                          nulls=("epochs",) if args.max_steps is not None else (),
                          base=resume_base(args, RetrievalConfig))


def cmd_train(args: argparse.Namespace) -> int:
    from ..io import check_writable
    from .train import FINISHED, check_config, train

    cfg = config_from_args(args)
    check_config(cfg)
    check_writable(args.out)
    res = train(cfg, args.out, resume=args.resume, progress=not args.no_progress,
                allow_change=allowed_changes(args))
    if res["status"] not in FINISHED:
        print(f"{res['status']} at step {res.get('step')}; resume with: audiofm retrieval train --out {args.out} "
              "--resume", file=sys.stderr)
        return 130
    if not all(s.get("main", True) for s in res["seeds"]):  # another process of a torchrun group
        return 0
    for s in res["seeds"]:
        start, best = (float("nan") if s[k] is None else s[k] for k in ("start_valid_map_at_10",
                                                                        "best_valid_map_at_10"))
        print(f"seed {s['seed']}: {s['status']} after {s['steps']} steps in {s['seconds']:.0f} s; validation "
              f"mAP@10 {start:.4f} -> {best:.4f} ({s['weights']})")
    print(f"models: {args.out}/seed-<s>/model; evaluate with: audiofm retrieval evaluate {args.out} --data DIR")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    chosen = args.baseline or ["random"]
    baselines = [] if "none" in chosen else chosen
    res = evaluate(args.run, args.data, split=args.split, relevance=args.relevance, out=args.out,
                   baselines=baselines, overwrite=args.overwrite, batch_size=args.batch_size, name=args.name)
    primary = res["primary"]
    for key, m in res["means"].items():
        if key.endswith("/text_to_audio"):
            print(f"{key.split('/')[0]}: text->audio {primary} {m[primary]:.4f}, R@1 {m['r_at_1']:.4f}, "
                  f"R@10 {m['r_at_10']:.4f} (mean over seeds)")
    print(f"results: {res['out']}/results.csv, {res['out']}/summary.md, {res['out']}/examples.md")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry: ``python -m audiofm.retrieval.commands retrieval train ...``."""
    return standalone_main(add_parsers, argv)


if __name__ == "__main__":
    raise SystemExit(main())
