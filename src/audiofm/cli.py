"""``audiofm <command>``: pretrain, embed, stats, info, evaluate, report, demo.

Every command takes ``--help``. Configuration: defaults < ``--config FILE`` (YAML) < flags <
``--set key.sub=value`` overrides. Errors print one line ``audiofm: error: ...`` and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="masked spectrogram pretraining on unlabelled audio",
                       description="Pretrain an encoder by masked spectrogram modelling. DATA may be an audio "
                       "folder (recursive), a manifest (.csv/.jsonl), a HEAR task directory or a folder of "
                       "HEAR tasks.")
    p.add_argument("--model", help="registry name, e.g. msm_vit_tiny, msm_mamba_tiny, msm_xlstm_tiny "
                   "(see `audiofm info --list`)")
    p.add_argument("--data", help="audio folder, manifest, HEAR task dir or dir of HEAR tasks")
    p.add_argument("--out", required=True, help="run directory (must be new unless --resume)")
    p.add_argument("--config", help="YAML file with model/model_overrides/data/train sections")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--splits", help="comma-separated splits to keep (e.g. HEAR folds fold02,fold03,fold04)")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this wall time")
    p.add_argument("--budget-minutes", type=float,
                   help="choose --max-steps so the whole schedule fits this wall time (timed on this machine)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--precision", choices=["fp32", "bf16"])
    p.add_argument("--stats", help="JSON from `audiofm stats` (otherwise computed before training)")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set model_overrides.mask_mode=time")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_pretrain)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .config import drop_none, load_yaml, merge, parse_overrides, to_dict
    from .train.pretrain import PretrainConfig, pretrain, pretrain_config_from

    data: dict[str, Any] = to_dict(PretrainConfig())
    if args.config:
        data = merge(data, load_yaml(args.config))
    flags: dict[str, Any] = {"model": args.model, "data": {"source": args.data},
                             "budget_minutes": args.budget_minutes,
                             "train": {"max_steps": args.max_steps, "batch_size": args.batch_size,
                                       "lr": args.lr, "precision": args.precision, "seed": args.seed,
                                       "max_minutes": args.max_minutes}}
    if args.splits:
        flags["data"]["splits"] = [s for s in args.splits.split(",") if s]
    if args.stats:
        st = json.loads(Path(args.stats).read_text())
        flags["model_overrides"] = {"encoder": {"frontend": {"mean": st["mean"], "std": st["std"]}}}
    data = merge(data, drop_none(flags))
    data = merge(data, parse_overrides(args.set))
    cfg: PretrainConfig = pretrain_config_from(data)
    if not cfg.data.source:
        raise _UsageError("--data is required (or data.source in --config)")
    result = pretrain(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    print(f"{result['status']} at step {result['step']}: loss {result['loss']:.4f}; "
          f"{result['seconds']:.0f} s; checkpoint {result['checkpoint']}")
    if result["status"] != "completed":
        print(f"resume with: audiofm pretrain --out {args.out} --resume [same data options]")
    return 0 if result["status"] in ("completed", "time budget reached") else 130


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="write embeddings of a folder or manifest",
                       description="Embed every clip of INPUT (audio file, folder, manifest or HEAR task) "
                       "with CKPT and write clip embeddings (and frames with --frames) to --out "
                       "(.npz or .parquet).")
    p.add_argument("ckpt", help="checkpoint or run directory")
    p.add_argument("input", help="audio file, folder, manifest or HEAR task directory")
    p.add_argument("--out", required=True, help="output .npz or .parquet (must not exist unless --overwrite)")
    p.add_argument("--frames", action="store_true", help="also store frame embeddings and timestamps")
    p.add_argument("--layer", type=int, default=-1)
    p.add_argument("--pooling", default="mean", choices=["mean", "max", "meanmax"])
    p.add_argument("--chunk-seconds", type=float, help="chunk length for long audio (0 = whole input)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_embed)


def cmd_embed(args: argparse.Namespace) -> int:
    from .api import load
    from .audio import AUDIO_EXTENSIONS
    from .data import Row, read_rows
    from .embed_io import embed_rows, write_embeddings

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite or choose another --out")
    if out.suffix not in (".npz", ".parquet"):
        raise _UsageError(f"--out must end in .npz or .parquet, got {out.name}")
    kw: dict[str, Any] = {"layer": args.layer, "pooling": args.pooling, "batch_size": args.batch_size}
    if args.chunk_seconds is not None:
        kw["chunk_seconds"] = args.chunk_seconds or None
    model = load(args.ckpt, **kw)
    src = Path(args.input)
    rows = ([Row(path=str(src), id=src.name)] if src.is_file() and src.suffix.lower() in AUDIO_EXTENSIONS
            else read_rows(src))
    result = embed_rows(model, rows, progress=not args.no_progress)
    write_embeddings(result, rows, out, frames=args.frames, meta={"model": str(args.ckpt),
                     "fingerprint": model.fingerprint(), "dim": model.embed_dim})
    print(f"wrote {len(rows)} embeddings ({model.embed_dim}-d) to {out}")
    return 0


def _add_stats(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="log-mel normalisation statistics of a dataset",
                       description="Compute the mean and std of the log-mel over DATA, for `pretrain --stats`.")
    p.add_argument("data", help="audio folder, manifest, HEAR task dir or dir of HEAR tasks")
    p.add_argument("--model", default="msm_vit_tiny", help="preset whose front end to use")
    p.add_argument("--max-clips", type=int, default=500)
    p.add_argument("--out", help="write JSON here (default: print only)")
    p.set_defaults(func=cmd_stats)


def cmd_stats(args: argparse.Namespace) -> int:
    from .config import to_dict
    from .data import fingerprint, read_rows
    from .data.dataset import ClipStore
    from .frontend import LogMel
    from .models.registry import model_config
    from .train.pretrain import compute_stats

    fe = model_config(args.model).encoder.frontend
    rows = read_rows(args.data)
    store = ClipStore(rows, fe.sample_rate)
    mean, std = compute_stats(store, LogMel(fe), args.max_clips, progress=True)
    res = {"mean": round(mean, 6), "std": round(std, 6), "clips_used": min(len(rows), args.max_clips),
           "data_fingerprint": fingerprint(rows), "frontend": to_dict(fe)}
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"mean {res['mean']} std {res['std']} over {res['clips_used']} clips")
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a checkpoint (or list the model presets)")
    p.add_argument("ckpt", nargs="?", help="checkpoint or run directory")
    p.add_argument("--list", action="store_true", help="list registered model presets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    from . import checkpoint as ckpt
    from .models import list_models

    if args.list or not args.ckpt:
        print("\n".join(list_models()))
        return 0
    s = ckpt.describe(args.ckpt)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    comps, n = s["components"], s["parameters"]
    print(f"{s['checkpoint']}\n  kind       {s['kind']} ({', '.join(comps)}), model {s['model']}; "
          + ", ".join(f"{n[k] / 1e6:.2f} M {k}" for k in comps) + f" / {n['total'] / 1e6:.2f} M total")
    enc, fe = comps["encoder"], comps["encoder"]["frontend"]
    print(f"  encoder    {enc['backbone']} {enc['backbone_cfg']}; patches {enc['patch'][0]}x{enc['patch'][1]}; "
          f"embedding {enc['dim']}-d")
    print(f"  front end  {fe['sample_rate']} Hz, {fe['win_ms']} ms window, {fe['hop_ms']} ms hop, "
          f"{fe['n_mels']} mels, mean {fe['mean']} std {fe['std']}")
    if "decoder" in comps:
        dec = comps["decoder"]
        print(f"  decoder    {dec['dim']}-d x {dec['depth']}; mask {dec['mask_mode']} {dec['mask_ratio']}; "
              f"encoder input {dec['encoder_input']}")
    if "head" in comps:
        h = comps["head"]
        print(f"  head       {h['type']} {h['config']}; {h['classes']} {h['prediction_type']} classes "
              f"(layer {h['layer']}, {h['pooling']} pooling)")
    print(f"  trained    step {s['step']}, data {s['data_fingerprint']}, {s['created']}; "
          f"format {s['format_version']}")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="pretrain a tiny model on the built-in generated set and check it",
                       description="Generate the built-in sound set, pretrain a tiny encoder on it, embed it, "
                       "and compare kNN accuracy against a log-mel baseline and a random encoder.")
    p.add_argument("--out", default="demo_run", help="working directory (default ./demo_run)")
    p.add_argument("--model", default="msm_vit_tiny")
    p.add_argument("--minutes", type=float, default=5.0, help="pretraining time budget")
    p.add_argument("--per-family", type=int, default=120, help="clips per sound family")
    p.add_argument("--steps", type=int, help="fixed number of pretraining steps instead of --minutes")
    p.add_argument("--resume", action="store_true")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), model=args.model, minutes=args.minutes, per_family=args.per_family,
             resume=args.resume, steps=args.steps)
    return 0


class _UsageError(ValueError):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audiofm", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"audiofm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_pretrain, _add_embed, _add_stats, _add_info, _add_demo):
        add(sub)
    _add_plugins(sub)
    return parser


def _add_plugins(sub: argparse._SubParsersAction) -> None:
    from .adapt.commands import add_parsers as add_adapt
    from .eval.commands import add_parsers as add_eval

    add_eval(sub)
    add_adapt(sub)


def main(argv: Sequence[str] | None = None) -> int:
    from .audio import AudioError
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data import DataError
    from .train.engine import RunDirError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except (AudioError, DataError, ConfigError, CheckpointError, RunDirError, FileExistsError,
            FileNotFoundError, _UsageError, ImportError) as e:
        print(f"audiofm: error: {e}", file=sys.stderr)
        return 2
    except KeyError as e:
        print(f"audiofm: error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("audiofm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
