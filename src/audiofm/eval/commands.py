"""``audiofm evaluate`` and ``audiofm report``.

``audiofm.cli`` calls :func:`add_parsers` with its sub-parser collection; each sub-command
sets ``func(args) -> exit code``. :func:`main` runs the two commands stand-alone (tests,
``python -m audiofm.eval.commands``). Settings resolve through
:func:`audiofm._commands.resolve_config` (defaults < ``--config`` < flags < ``--set``); errors the
user can fix print one line and exit 2; set ``AUDIOFM_DEBUG=1`` to get the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .._commands import add_config_options, block_count, config_defaults, guarded, resolve_config, standalone_main
from .registry import PROBES

EVAL = "audiofm.eval.suite:EvalConfig"


def _csv_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _int_list(text: str) -> list[int]:
    try:
        return [int(s) for s in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


@dataclass
class ReportConfig:
    """Settings of ``audiofm report``. compare_to: paired comparisons against the 'first' run's
    first model or the 'best' model per task."""

    compare_to: Literal["first", "best"] = "first"

    def __post_init__(self) -> None:
        if self.compare_to not in ("first", "best"):
            raise ValueError(f"compare_to must be 'first' or 'best', got {self.compare_to!r}")


def add_parsers(subparsers: Any) -> None:
    """Register ``evaluate`` and ``report`` on an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser(
        "evaluate", help="probe frozen embeddings of models and baselines on HEAR-format tasks",
        formatter_class=config_defaults(EVAL),
        description="Evaluate models (and baselines) on HEAR-format tasks with linear, MLP and kNN probes "
                    "over folds and seeds; writes results.csv, summary.md and charts to --out. Settings: "
                    "EvalConfig (audiofm.eval.suite; probe grids in its probe section) — defaults < --config "
                    "YAML < flags < --set.")
    p.add_argument("--model", action="append", default=[], metavar="CKPT",
                   help="checkpoint directory, or an .onnx file made by audiofm export (repeatable) (default: none)")
    p.add_argument("--baseline", action="append", default=[], metavar="NAMES",
                   help="comma-separated baselines: logmel, random (first --model, random init) or a "
                        "peer name (aisfx, birdnet, resemblyzer, crepe, ...), with peer settings after colons "
                        "(crepe:hop_ms=50:capacity=tiny); repeatable (default: none)")
    p.add_argument("--tasks", metavar="DIR", help="a HEAR task dir, a dir of task dirs or shards of them "
                   "(made by audiofm shards) (required, or tasks in --config)")
    p.add_argument("--only", action="append", default=[], metavar="TASK",
                   help="evaluate only these task names (repeatable or comma-separated) (default: all)")
    p.add_argument("--probes", type=_csv_list, help=f"comma-separated probes from {', '.join(PROBES)} "
                   "(default: {probes})")
    p.add_argument("--seeds", type=int, help="number of seeds 0..N-1 (default: {seeds})")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory to write (required, or out in --config)")
    p.add_argument("--folds", type=_int_list, metavar="I,J",
                   help="round indices to run (k-fold: fold i is test, i+1 valid) (default: all)")
    p.add_argument("--max-folds", type=int, metavar="N", help="run at most the first N rounds "
                   "(default: {max_folds})")
    p.add_argument("--batch-size", type=int, help="clips per embedding batch (default: {batch_size})")
    p.add_argument("--cache", metavar="DIR",
                   help="embedding cache dir (default: $AUDIOFM_CACHE/embeddings if set, "
                        "else RUN_DIR/embeddings)")
    p.add_argument("--pooling", help="clip pooling of audiofm checkpoints, one of "
                   "{@audiofm.embedding:POOLINGS} (default: {pooling})")
    p.add_argument("--layer", type=int, help="encoder block whose output is embedded, -1 = the last "
                   "(default: {layer})")
    p.add_argument("--layers", type=block_count, help="read this many blocks ending at --layer, each normalised; "
                   "'all' = every block up to it (default: {layers})")
    p.add_argument("--layer-mix", choices=["mean", "concat"], help="combine --layers blocks by their average or "
                   "concatenated (default: {layer_mix})")
    p.add_argument("--freq-mix", choices=["mean", "concat"], help="a frame is the average of its frequency patches "
                   "or their concatenation (more dims, keeps the spectral layout) (default: {freq_mix})")
    p.add_argument("--precision", choices=["fp32", "bf16"], help="precision of audiofm checkpoints' encoders: "
                   "bf16 autocast, close to but not equal to fp32, cached apart (default: {precision})")
    p.add_argument("--compare-to", choices=["first", "best"],
                   help="paired comparisons against the first model or the best per task (default: {compare_to})")
    p.add_argument("--threads", type=int,
                   help="CPU threads for torch/BLAS/faiss during the whole run (default: library defaults)")
    p.add_argument("--probe-threads", type=int,
                   help="threads while fitting probes; 1 is fastest for probe-sized problems "
                        "(default: {probe_threads})")
    p.add_argument("--jobs", type=int, metavar="N",
                   help="worker processes fitting probes while the next tasks are embedded; the results are "
                        "the same for any N (on 2 cores: --jobs 2 --threads 1) (default: {jobs})")
    add_config_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace results in an existing RUN_DIR "
                   "(default: off)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or log lines (default: off)")
    p.set_defaults(func=cmd_evaluate)

    r = subparsers.add_parser(
        "report", help="merge finished evaluation runs into one comparison",
        formatter_class=config_defaults("audiofm.eval.commands:ReportConfig"),
        description="Merge run directories of audiofm evaluate into one results.csv, summary.md "
                    "and charts. Settings: ReportConfig (audiofm.eval.commands) — defaults < --config < flags "
                    "< --set.")
    r.add_argument("runs", nargs="+", metavar="RUN_DIR", help="finished audiofm evaluate run directories (required)")
    r.add_argument("--out", required=True, metavar="DIR", help="new directory to write the merged report, never "
                   "one of the RUN_DIRs (required)")
    r.add_argument("--overwrite", action="store_true", help="write into an existing non-empty --out, replacing "
                   "files of the same name (default: off)")
    r.add_argument("--compare-to", choices=["first", "best"],
                   help="paired comparisons against the first model or the best per task (default: {compare_to})")
    add_config_options(r)
    r.set_defaults(func=cmd_report)


def config_from_args(args: argparse.Namespace) -> Any:
    """EvalConfig from defaults < --config < flags < --set."""
    from .suite import EvalConfig

    def listed(items: list[str]) -> list[str] | None:
        return [x for item in items for x in _csv_list(item)] or None

    flags: dict[str, Any] = {
        "models": args.model or None, "baselines": listed(args.baseline),
        "tasks": args.tasks, "only": listed(args.only),
        "probes": args.probes, "seeds": args.seeds, "out": args.out, "folds": args.folds,
        "max_folds": args.max_folds, "batch_size": args.batch_size, "cache": args.cache,
        "pooling": args.pooling, "layer": args.layer, "layers": args.layers, "layer_mix": args.layer_mix,
        "freq_mix": args.freq_mix, "precision": args.precision,
        "compare_to": args.compare_to, "threads": args.threads,
        "probe_threads": args.probe_threads, "jobs": args.jobs,
        "overwrite": args.overwrite or None, "progress": False if args.no_progress else None,
    }
    return resolve_config(EvalConfig, args, flags, required={"tasks": "--tasks", "out": "--out"})


def _guard(name: str, fn: Callable[[], int]) -> int:
    from .cache import EmbeddingError

    return guarded(name, fn, (EmbeddingError,), " (embeddings finished so far are cached)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    def run() -> int:
        from .suite import run_evaluation

        run_evaluation(config_from_args(args), argv=sys.argv)
        return 0

    return _guard("evaluate", run)


def cmd_report(args: argparse.Namespace) -> int:
    def run() -> int:
        from ..io import check_writable
        from .report import report_runs

        cfg = resolve_config(ReportConfig, args, {"compare_to": args.compare_to})
        check_writable(args.out)
        written = report_runs(args.runs, args.out, compare_to=cfg.compare_to, overwrite=args.overwrite)
        print(f"wrote {len(written)} files to {args.out} (summary: {args.out}/summary.md)", file=sys.stderr)
        return 0

    return _guard("report", run)


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry: ``python -m audiofm.eval.commands evaluate ...``."""
    return standalone_main(add_parsers, argv)


if __name__ == "__main__":
    raise SystemExit(main())
