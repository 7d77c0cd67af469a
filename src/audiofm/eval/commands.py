"""``audiofm evaluate`` and ``audiofm report``.

``audiofm.cli`` calls :func:`add_parsers` with its sub-parser collection; each sub-command
sets ``func(args) -> exit code``. :func:`main` runs the two commands stand-alone (tests,
``python -m audiofm.eval.commands``). Errors the user can fix print one line and exit 2;
set ``AUDIOFM_DEBUG=1`` to get the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .._commands import guarded, standalone_main


def _csv_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _int_list(text: str) -> list[int]:
    try:
        return [int(s) for s in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_parsers(subparsers: Any) -> None:
    """Register ``evaluate`` and ``report`` on an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser(
        "evaluate", help="probe frozen embeddings of models and baselines on HEAR-format tasks",
        description="Evaluate models (and baselines) on HEAR-format tasks with linear, MLP and kNN probes "
                    "over folds and seeds; writes results.csv, summary.md and charts to --out. Settings: "
                    "defaults < --config YAML < flags.")
    p.add_argument("--model", action="append", default=[], metavar="CKPT",
                   help="checkpoint directory (repeatable)")
    p.add_argument("--baseline", action="append", default=[], metavar="NAMES",
                   help="comma-separated baselines: logmel, random (first --model, random init) or a "
                        "peer name (aisfx, birdnet, resemblyzer, crepe, ...), with peer settings after colons "
                        "(crepe:hop_ms=50:capacity=tiny); repeatable")
    p.add_argument("--tasks", metavar="DIR", help="a HEAR task dir or a dir of task dirs (required)")
    p.add_argument("--only", action="append", default=[], metavar="TASK",
                   help="evaluate only these task names (repeatable or comma-separated)")
    p.add_argument("--probes", type=_csv_list, help="comma-separated probes (default: linear,mlp,knn)")
    p.add_argument("--seeds", type=int, help="number of seeds 0..N-1 (default: 5)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory to write (required)")
    p.add_argument("--folds", type=_int_list, metavar="I,J",
                   help="round indices to run (k-fold: fold i is test, i+1 valid; default: all)")
    p.add_argument("--max-folds", type=int, metavar="N", help="run at most the first N rounds")
    p.add_argument("--batch-size", type=int, help="clips per embedding batch (default: 16)")
    p.add_argument("--cache", metavar="DIR",
                   help="embedding cache dir (default: $AUDIOFM_CACHE/embeddings if set, "
                        "else RUN_DIR/embeddings)")
    p.add_argument("--pooling", choices=["mean", "max", "meanmax"],
                   help="clip pooling of audiofm checkpoints (default: mean)")
    p.add_argument("--layer", type=int, help="encoder block whose output is embedded (default: -1, the last)")
    p.add_argument("--compare-to", choices=["first", "best"],
                   help="paired comparisons against the first model or the best per task (default: first)")
    p.add_argument("--threads", type=int,
                   help="CPU threads for torch/BLAS/faiss during the whole run (default: library defaults)")
    p.add_argument("--probe-threads", type=int,
                   help="threads while fitting probes (default: 1, fastest for probe-sized problems)")
    p.add_argument("--config", metavar="YAML", help="YAML with EvalConfig fields (e.g. probe grids)")
    p.add_argument("--overwrite", action="store_true", help="replace results in an existing RUN_DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or log lines")
    p.set_defaults(func=cmd_evaluate)

    r = subparsers.add_parser(
        "report", help="merge finished evaluation runs into one comparison",
        description="Merge run directories of `audiofm evaluate` into one results.csv, summary.md "
                    "and charts.")
    r.add_argument("runs", nargs="+", metavar="RUN_DIR")
    r.add_argument("--out", required=True, metavar="DIR")
    r.add_argument("--compare-to", default="first", choices=["first", "best"],
                   help="paired comparisons against the first model or the best per task")
    r.set_defaults(func=cmd_report)


def _config_from_args(args: argparse.Namespace) -> Any:
    from .suite import EvalConfig, EvalError

    base: dict[str, Any] = {}
    if args.config:
        import yaml

        try:
            with open(args.config) as f:
                base = yaml.safe_load(f) or {}
        except OSError as e:
            raise EvalError(f"{args.config}: cannot read config ({e.strerror})") from None
        except yaml.YAMLError as e:
            raise EvalError(f"{args.config}: invalid YAML ({e})") from None
        if not isinstance(base, dict):
            raise EvalError(f"{args.config}: expected a mapping of EvalConfig fields")
    flags: dict[str, Any] = {
        "models": args.model, "baselines": [b for item in args.baseline for b in _csv_list(item)],
        "tasks": args.tasks, "only": [t for item in args.only for t in _csv_list(item)],
        "probes": args.probes, "seeds": args.seeds, "out": args.out, "folds": args.folds,
        "max_folds": args.max_folds, "batch_size": args.batch_size, "cache": args.cache,
        "pooling": args.pooling, "layer": args.layer, "compare_to": args.compare_to, "threads": args.threads,
        "probe_threads": args.probe_threads,
        "overwrite": args.overwrite or None, "progress": False if args.no_progress else None,
    }
    merged = {**base, **{k: v for k, v in flags.items() if v is not None and v != []}}
    for key, flag in (("tasks", "--tasks"), ("out", "--out")):
        if not merged.get(key):
            raise EvalError(f"{flag} is required (or '{key}' in --config)")
    return EvalConfig.from_dict(merged)


def _guard(name: str, fn: Callable[[], int]) -> int:
    from .cache import EmbeddingError

    return guarded(name, fn, (EmbeddingError,), " (embeddings finished so far are cached)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    def run() -> int:
        from .suite import run_evaluation

        run_evaluation(_config_from_args(args), argv=sys.argv)
        return 0

    return _guard("evaluate", run)


def cmd_report(args: argparse.Namespace) -> int:
    def run() -> int:
        from .report import report_runs

        written = report_runs(args.runs, args.out, compare_to=args.compare_to)
        print(f"wrote {len(written)} files to {args.out} (summary: {args.out}/summary.md)", file=sys.stderr)
        return 0

    return _guard("report", run)


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry: ``python -m audiofm.eval.commands evaluate ...``."""
    return standalone_main(add_parsers, argv)


if __name__ == "__main__":
    raise SystemExit(main())
