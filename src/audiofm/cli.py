"""audiofm: pretrain, evaluate and adapt self-supervised audio encoders.

Every command takes ``--help``. Settings: the command's config class defaults < ``--config FILE``
(YAML) < flags < ``--set key.sub=value`` overrides, all typed and checked the same way
(:func:`audiofm._commands.resolve_config`). Errors print one line ``audiofm COMMAND: error: ...``
and exit 2 (``AUDIOFM_DEBUG=1`` shows the traceback); Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from . import __version__
from ._commands import (
    add_config_options,
    add_resume_options,
    allowed_changes,
    block_count,
    command,
    config_defaults,
    resolve_config,
    resume_base,
)
from .config import ConfigError, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Range, check_ranges

PRETRAIN = "audiofm.train.pretrain:PretrainConfig"


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="masked spectrogram pretraining on unlabelled audio",
                       formatter_class=config_defaults(PRETRAIN),
                       description="Pretrain an encoder by masked spectrogram modelling. DATA may be an audio "
                       "folder (recursive), a manifest (.csv/.jsonl), a HEAR task directory or a folder of "
                       "HEAR tasks. Settings: PretrainConfig (audiofm.train.pretrain; sections data, train "
                       "and model_overrides, nested ModelConfig fields) — defaults < --config < flags < --set.")
    p.add_argument("--model", help="registry name, e.g. msm_vit_tiny, msm_mamba_tiny, msm_xlstm_tiny "
                   "(list them: audiofm info --list) (default: {model})")
    p.add_argument("--data", help="audio folder, manifest, HEAR task dir, dir of HEAR tasks or shard dir "
                   "(made by audiofm shards) (required unless data.source is in --config)")
    p.add_argument("--out", required=True, help="run directory: new, or one a start left without a checkpoint "
                   "(reused), or a run to continue with --resume (required)")
    add_resume_options(p)
    p.add_argument("--splits", help="comma-separated splits to keep, e.g. HEAR folds fold02,fold03,fold04 "
                   "(default: all)")
    p.add_argument("--max-steps", type=int, help="optimizer steps of the whole schedule (default: {train.max_steps})")
    p.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this wall time "
                   "(default: {train.max_minutes})")
    p.add_argument("--budget-minutes", type=float,
                   help="finish training within this time (plus about one step), the schedule "
                        "completed: the step count is estimated on this machine and re-fitted as training "
                        "goes; replaces --max-steps; not bit-reproducible (default: {budget_minutes})")
    p.add_argument("--budget-clock", choices=["wall", "cpu"],
                   help="what --budget-minutes counts: wall time, or CPU time of the training process (all "
                        "threads; the same compute whatever else runs on the machine) (default: {budget_clock})")
    p.add_argument("--batch-size", type=int, help="global clips per optimizer step (default: {train.batch_size})")
    p.add_argument("--lr", type=float, help="peak learning rate (default: {train.lr})")
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], help="autocast precision; auto = bf16 only "
                   "where the device multiplies bf16 natively (CUDA, AVX512_BF16/AMX CPUs), else fp32 "
                   "(default: {train.precision})")
    p.add_argument("--stats", help="JSON written by audiofm stats, with the log-mel mean/std (default: computed "
                   "from {stats_clips} clips before training)")
    p.add_argument("--seed", type=int, help="seed of all randomness (default: {train.seed})")
    p.add_argument("--objective", choices=["reconstruct", "latent"],
                   help="what the decoder predicts at the masked patches: the patches (reconstruct) or an EMA "
                   "teacher's representations of them (latent; settings model_overrides.latent.*, "
                   "docs/pretraining.md) (default: reconstruct)")
    p.add_argument("--init", metavar="CKPT", help="continue pretraining from this checkpoint's weights with a "
                   "fresh schedule (domain-adaptive pretraining; its model config replaces --model, and --objective / "
                   "model_overrides apply on top, except to its encoder) "
                   "(default: none)")
    p.add_argument("--recompute-stats", action="store_true", help="with --init: recompute the log-mel "
                   "statistics from DATA instead of keeping the checkpoint's (default: keep)")
    add_config_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar or log lines (default: off)")
    p.set_defaults(func=command("pretrain", cmd_pretrain))


def _read_stats(path: str) -> dict[str, float]:
    """mean/std from an `audiofm stats` JSON file (ConfigError naming the file otherwise)."""
    import math

    try:
        st = json.loads(Path(path).read_text())
        mean, std = float(st["mean"]), float(st["std"])
    except OSError as e:
        raise ConfigError(f"--stats {path}: cannot read ({e.strerror or e})") from None
    except (ValueError, TypeError, KeyError):
        raise ConfigError(f"--stats {path}: expected the JSON written by 'audiofm stats' "
                          "(with numeric mean and std)") from None
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise ConfigError(f"--stats {path}: needs a finite mean and a std > 0, got mean {mean}, std {std}")
    return {"mean": mean, "std": std}


def pretrain_config_from_args(args: argparse.Namespace) -> Any:
    """PretrainConfig from defaults < --config < flags < --set; the model config it names is
    resolved (and checked) too, so every problem is reported before anything is written."""
    from .train.pretrain import PretrainConfig

    flags: dict[str, Any] = {"model": args.model, "data": {"source": args.data},
                             "budget_minutes": args.budget_minutes, "budget_clock": args.budget_clock,
                             "init": args.init,
                             "keep_stats": False if args.recompute_stats else None,
                             "train": {"max_steps": args.max_steps, "batch_size": args.batch_size,
                                       "lr": args.lr, "precision": args.precision, "seed": args.seed,
                                       "max_minutes": args.max_minutes}}
    if args.splits:
        flags["data"]["splits"] = [s for s in args.splits.split(",") if s]
    if args.stats:
        flags["model_overrides"] = {"encoder": {"frontend": _read_stats(args.stats)}}
    if args.objective:
        flags["model_overrides"] = {**flags.get("model_overrides", {}), "objective": args.objective}
    return resolve_config(PretrainConfig, args, flags, required={"data.source": "--data"}, check=_check_model,
                          base=resume_base(args, PretrainConfig))


def _check_model(data: dict[str, Any]) -> list[str]:
    """Problems of the model config that pretraining settings ``data`` name (preset + overrides)."""
    from .models.registry import model_config
    from .train.pretrain import PretrainConfig

    name = data.get("model", PretrainConfig.model)
    overrides = data.get("model_overrides") or {}
    if not isinstance(name, str) or not isinstance(overrides, dict):
        return []  # reported by from_dict as a wrong type
    try:
        model_config(name, **overrides)
    except ConfigError as e:
        return [_rename(p, name, "model_overrides") for p in e.problems]
    except KeyError as e:
        return [f"model: {e.args[0]}"]
    return []


def _rename(problem: str, where: str, key: str) -> str:
    """A problem located at ``where`` (``where.sub: ...`` or ``where: ...``) relocated to ``key``."""
    for sep in (".", ": "):
        if problem.startswith(where + sep):
            return key + sep + problem[len(where) + len(sep):]
    return f"{key}: {problem}"


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .train.pretrain import pretrain

    cfg = pretrain_config_from_args(args)
    result = pretrain(cfg, args.out, resume=args.resume, progress=not args.no_progress,
                      allow_change=allowed_changes(args))
    if result["checkpoint"] is None:  # another process of a torchrun group: the first one reports
        return 0 if result["status"] in ("completed", "time budget reached") else 130
    loss = "no step left to train" if math.isnan(result["loss"]) else f"loss {result['loss']:.4f}"
    print(f"{result['status']} at step {result['step']}: {loss}; "
          f"{result['seconds']:.0f} s; checkpoint {result['checkpoint']}")
    if result["status"] != "completed":
        print(f"resume with: audiofm pretrain --out {args.out} --resume")
    return 0 if result["status"] in ("completed", "time budget reached") else 130


@dataclass
class EmbedConfig:
    """Settings of ``audiofm embed``. layer: encoder block whose output is embedded (-1 = the last,
    after the final norm). layers / layer_mix: read the ``layers`` blocks ending at ``layer``
    (0 = all of them), each normalised, averaged ('mean') or concatenated ('concat'). freq_mix: a
    frame is the mean of its time patch's frequency patches ('mean') or their concatenation
    ('concat', freq_patches times the dims). pooling: clip pooling over
    frames, 'mean', 'max', 'meanmax' or 'meanstd'. chunk_seconds: chunk length for long audio
    (null = the model's training segment, 0 = the whole input at once). batch_size: clips per
    forward pass. frames: also store frame embeddings and their timestamps. precision: 'fp32' or
    'bf16' (the encoder under bf16 autocast; close to, not equal to, fp32)."""

    layer: int = -1
    layers: NonNegativeInt = 1
    layer_mix: Literal["mean", "concat"] = "mean"
    freq_mix: Literal["mean", "concat"] = "mean"
    pooling: Literal["mean", "max", "meanmax", "meanstd"] = "mean"
    chunk_seconds: NonNegativeFloat | None = None
    batch_size: PositiveInt = 16
    frames: bool = False
    precision: Literal["fp32", "bf16"] = "fp32"

    def __post_init__(self) -> None:
        check_ranges(self)


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="write embeddings of a folder or manifest",
                       formatter_class=config_defaults("audiofm.cli:EmbedConfig"),
                       description="Embed every clip of INPUT (audio file, folder, manifest or HEAR task) "
                       "with CKPT and write clip embeddings (and frames with --frames) to --out "
                       "(.npz or .parquet). Settings: EmbedConfig (audiofm.cli) — defaults < --config < "
                       "flags < --set.")
    p.add_argument("ckpt", help="checkpoint or run directory (required)")
    p.add_argument("input", help="audio file, folder, manifest (.csv/.tsv/.jsonl) or HEAR task directory (required)")
    p.add_argument("--out", required=True, help="output .npz or .parquet, must not exist unless --overwrite "
                   "(required)")
    p.add_argument("--frames", action="store_true", default=None,
                   help="also store frame embeddings and timestamps (default: {frames})")
    p.add_argument("--layer", type=int, help="encoder block to embed, -1 = the last (default: {layer})")
    p.add_argument("--layers", type=block_count, help="read this many blocks ending at --layer, each normalised; "
                   "'all' = every block up to it (default: {layers})")
    p.add_argument("--layer-mix", choices=["mean", "concat"], help="combine --layers blocks by their average or "
                   "concatenated (default: {layer_mix})")
    p.add_argument("--freq-mix", choices=["mean", "concat"], help="a frame is the average of its frequency patches "
                   "or their concatenation (more dims, keeps the spectral layout) (default: {freq_mix})")
    p.add_argument("--pooling", choices=["mean", "max", "meanmax", "meanstd"], help="clip pooling (default: {pooling})")
    p.add_argument("--chunk-seconds", type=float, help="chunk length for long audio, 0 = whole input "
                   "(default: the model's training segment)")
    p.add_argument("--batch-size", type=int, help="clips per forward pass (default: {batch_size})")
    p.add_argument("--precision", choices=["fp32", "bf16"], help="encoder precision: bf16 autocast, close to "
                   "but not equal to fp32, is faster only where the device multiplies bf16 natively (CUDA, "
                   "AVX512_BF16/AMX CPUs) (default: {precision})")
    add_config_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (default: off)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: off)")
    p.set_defaults(func=command("embed", cmd_embed))


def cmd_embed(args: argparse.Namespace) -> int:
    from .outputs import check_output

    cfg = resolve_config(EmbedConfig, args, {"layer": args.layer, "layers": args.layers,
                                             "layer_mix": args.layer_mix, "freq_mix": args.freq_mix,
                                             "pooling": args.pooling,
                                             "chunk_seconds": args.chunk_seconds, "batch_size": args.batch_size,
                                             "frames": args.frames, "precision": args.precision})
    out = check_output(args.out, overwrite=args.overwrite, inputs=(args.ckpt, args.input))
    if out.suffix not in (".npz", ".parquet"):
        raise ConfigError(f"--out must end in .npz or .parquet, got {out.name}")
    from .api import load  # after the settings are checked: a mistake is reported at once
    from .audio import AUDIO_EXTENSIONS
    from .data import Row, read_rows
    from .embed_io import embed_rows, write_embeddings
    from .io import check_writable

    kw: dict[str, Any] = {"layer": cfg.layer, "pooling": cfg.pooling, "batch_size": cfg.batch_size,
                          "precision": cfg.precision}
    if cfg.layers != 1:
        kw.update(layers=cfg.layers, layer_mix=cfg.layer_mix)
    if cfg.freq_mix != "mean":
        kw["freq_mix"] = cfg.freq_mix
    if cfg.chunk_seconds is not None:
        kw["chunk_seconds"] = cfg.chunk_seconds or None
    model = load(args.ckpt, **kw)
    src = Path(args.input)
    rows = ([Row(path=str(src), id=src.name)] if src.is_file() and src.suffix.lower() in AUDIO_EXTENSIONS
            else read_rows(src))
    check_writable(out, need_bytes=len(rows) * (4 * model.embed_dim + 512))  # before the long part
    result = embed_rows(model, rows, progress=not args.no_progress)
    write_embeddings(result, rows, out, frames=cfg.frames, meta={"model": str(args.ckpt),
                     "fingerprint": model.fingerprint(), "dim": model.embed_dim})
    print(f"wrote {len(rows)} embeddings ({model.embed_dim}-d) to {out}")
    return 0


@dataclass
class StatsConfig:
    """Settings of ``audiofm stats``. model: registry preset whose front end (sample rate, window,
    hop, mel bins) computes the log-mel. max_clips: clips sampled (a fixed random subset) when
    the dataset is larger. seed: seed of that subset."""

    model: str = "msm_vit_tiny"
    max_clips: PositiveInt = 500
    seed: NonNegativeInt = 0

    def __post_init__(self) -> None:
        check_ranges(self)


def _add_stats(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="log-mel normalisation statistics of a dataset",
                       formatter_class=config_defaults("audiofm.cli:StatsConfig"),
                       description="Compute the mean and std of the log-mel over DATA, for pretrain --stats. "
                       "Settings: StatsConfig (audiofm.cli) — defaults < --config < flags < --set.")
    p.add_argument("data", help="audio folder, manifest, HEAR task dir or dir of HEAR tasks (required)")
    p.add_argument("--model", help="preset whose front end to use (default: {model})")
    p.add_argument("--max-clips", type=int, help="clips to use at most (default: {max_clips})")
    p.add_argument("--out", help="write JSON here, must not exist unless --overwrite (default: print only)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (default: off)")
    add_config_options(p)
    p.set_defaults(func=command("stats", cmd_stats))


def cmd_stats(args: argparse.Namespace) -> int:
    from .io import check_writable, write_json
    from .outputs import check_output

    cfg = resolve_config(StatsConfig, args, {"model": args.model, "max_clips": args.max_clips})
    if args.out:
        check_output(args.out, overwrite=args.overwrite, inputs=(args.data,))
        check_writable(args.out)
    from .config import to_dict
    from .data import fingerprint, read_rows
    from .data.dataset import ClipStore
    from .frontend import LogMel
    from .models.registry import model_config
    from .train.pretrain import compute_stats

    fe = model_config(cfg.model).encoder.frontend
    rows = read_rows(args.data)
    store = ClipStore(rows, fe.sample_rate)
    mean, std = compute_stats(store, LogMel(fe), cfg.max_clips, seed=cfg.seed, progress=True)
    res = {"mean": round(mean, 6), "std": round(std, 6), "clips_used": min(len(rows), cfg.max_clips),
           "data_fingerprint": fingerprint(rows), "frontend": to_dict(fe)}
    if args.out:
        write_json(args.out, res)
    print(f"mean {res['mean']} std {res['std']} over {res['clips_used']} clips")
    return 0


def _add_shards(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shards", help="write a dataset as indexed webdataset shards",
                       description="Write every clip of INPUT (audio folder, manifest, HEAR task dir or dir of "
                       "HEAR tasks) as tar shards (<key>.flac + <key>.json) with an index.json, for pretraining, "
                       "embedding and evaluation from shared storage (--data DIR). See docs/export.md.")
    p.add_argument("input", help="audio folder, manifest, HEAR task dir or dir of HEAR tasks (required)")
    p.add_argument("--out", required=True, help="shard directory to create (required)")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default: 1000)")
    p.add_argument("--splits", help="comma-separated splits to keep (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (default: off)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: off)")
    p.set_defaults(func=command("shards", cmd_shards))


def cmd_shards(args: argparse.Namespace) -> int:
    from .data import read_rows, write_shards
    from .data.shards import hear_tasks_of

    splits = [s for s in args.splits.split(",") if s] if args.splits else None
    rows = read_rows(args.input, splits)
    index = write_shards(rows, args.out, args.shard_size, source=str(Path(args.input).resolve()),
                         tasks=hear_tasks_of(args.input), overwrite=args.overwrite, progress=not args.no_progress)
    meta = index["audiofm"]
    print(f"wrote {meta['clips']} clips in {len(index['shardlist'])} shards to {args.out} "
          f"(fingerprint {meta['fingerprint']['ids_sha256']})")
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a checkpoint (or list the model presets)",
                       description="Describe checkpoint CKPT (architecture, front end, training data) after verifying "
                       "its weights (present, complete, matching config.json and unchanged since saving), or list "
                       "the registered model presets.")
    p.add_argument("ckpt", nargs="?", help="checkpoint or run directory (default: list the presets)")
    p.add_argument("--list", action="store_true", help="list registered model presets (default: off)")
    p.add_argument("--json", action="store_true", help="print the description as JSON (default: off)")
    p.set_defaults(func=command("info", cmd_info))


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
    if s["kind"] == "dual":
        a, t = comps["audio"], comps["text"]
        tower = a.get("embedder") or f"{a['backbone']} encoder {a['encoder_dim']}-d, {a['frontend']['sample_rate']} Hz"
        print(f"  audio      {a['source']}: {tower}; {a['dim']}-d features (layer {a['layer']}, {a['pooling']} "
              f"pooling), top {a['trainable_blocks']} blocks trained (-1 = all)")
        print(f"  text       {t['model']} (fingerprint {t['fingerprint']}), {t['dim']}-d, {t['max_tokens']} tokens, "
              f"top {t['trainable_layers']} of {t['layers']} layers trained (-1 = all)")
        p, tau = comps["audio_proj"], comps["temperature"]
        print(f"  shared     {s['embed_dim']}-d, {p['type']} projections; temperature {tau['value']:.4g} "
              f"({'learned' if tau['learned'] else 'fixed'})")
        print(f"  trained    step {s['step']}, data {s['data_fingerprint']}, {s['created']}; "
              f"format {s['format_version']}")
        return 0
    enc, fe = comps["encoder"], comps["encoder"]["frontend"]
    print(f"  encoder    {enc['backbone']} {enc['backbone_cfg']}; patches {enc['patch'][0]}x{enc['patch'][1]}; "
          f"embedding {enc['dim']}-d")
    print(f"  front end  {fe['sample_rate']} Hz, {fe['win_ms']} ms window, {fe['hop_ms']} ms hop, "
          f"{fe['n_mels']} mels, mean {fe['mean']} std {fe['std']}")
    if "decoder" in comps:
        dec = comps["decoder"]
        print(f"  decoder    {dec['dim']}-d x {dec['depth']}; mask {dec['mask_mode']} {dec['mask_ratio']}; "
              f"encoder input {dec['encoder_input']}; objective {dec.get('objective', 'reconstruct')}")
    if "head" in comps:
        h = comps["head"]
        print(f"  head       {h['type']} {h['config']}; {h['classes']} {h['prediction_type']} classes "
              f"(layer {h['layer']}, {h['pooling']} pooling)")
    print(f"  trained    step {s['step']}, data {s['data_fingerprint']}, {s['created']}; "
          f"format {s['format_version']}")
    return 0


@dataclass
class DemoConfig:
    """Settings of ``audiofm demo``. model: registry preset to pretrain. minutes: pretraining
    time budget (the step count is fitted to it on this machine). steps: a fixed step count
    instead of ``minutes`` (null = use minutes). per_family: generated clips per sound family.
    batch_size: clips per step. precision: 'bf16' or 'fp32' autocast, or 'auto': bf16 only where
    the device multiplies bf16 natively (on other CPUs bf16 trains 2-4× slower)."""

    model: str = "msm_vit_tiny"
    minutes: PositiveFloat = 5.0
    steps: PositiveInt | None = None
    per_family: Annotated[int, Range(ge=2)] = 120
    batch_size: PositiveInt = 32
    precision: Literal["fp32", "bf16", "auto"] = "auto"

    def __post_init__(self) -> None:
        check_ranges(self)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="pretrain a tiny model on the built-in generated set and check it",
                       formatter_class=config_defaults("audiofm.cli:DemoConfig"),
                       description="Generate the built-in sound set, pretrain a tiny encoder on it, embed it, "
                       "and compare kNN accuracy against a log-mel baseline and a random encoder. Settings: "
                       "DemoConfig (audiofm.cli) — defaults < --config < flags < --set.")
    p.add_argument("--out", default="demo_run", help="working directory (default: ./demo_run)")
    p.add_argument("--model", help="preset to pretrain (default: {model})")
    p.add_argument("--minutes", type=float, help="pretraining time budget (default: {minutes})")
    p.add_argument("--per-family", type=int, help="clips per sound family (default: {per_family})")
    p.add_argument("--steps", type=int, help="fixed number of pretraining steps instead of --minutes "
                   "(default: {steps})")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo in --out (default: off)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier demo in --out "
                   "(default: off)")
    add_config_options(p)
    p.set_defaults(func=command("demo", cmd_demo))


def cmd_demo(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .demo import run_demo

    cfg = resolve_config(DemoConfig, args, {"model": args.model, "minutes": args.minutes,
                                            "per_family": args.per_family, "steps": args.steps})
    run_demo(Path(args.out), resume=args.resume, overwrite=args.overwrite, **asdict(cfg))
    return 0


# ---- search your collection: index, search, serve ----------------------------------------------

def _add_collection(subparsers: argparse._SubParsersAction) -> None:
    """``index``, ``search``, ``serve``: search your own sound collection by text (issue 12;
    audiofm.retrieval.collection and .serve, imported only when a command runs)."""
    p = subparsers.add_parser(
        "index", help="index an audio folder for text search with a text-audio model",
        description="Embed every audio file below AUDIO_DIR (recursive: wav, flac, ogg, aiff, au, and mp3/opus "
                    "when this libsndfile decodes them) with the text-audio (dual) checkpoint CKPT into the index "
                    "directory INDEX. Re-running on an existing INDEX embeds only new and changed files (by size "
                    "and modification time) and drops deleted ones; unreadable files are listed and skipped. An "
                    "INDEX built with another model is refused. Search it with audiofm search or audiofm serve.")
    p.add_argument("checkpoint", metavar="CKPT", help="text-audio (dual) checkpoint or run directory (required)")
    p.add_argument("audio_dir", metavar="AUDIO_DIR", help="folder of audio files, searched recursively (required)")
    p.add_argument("--out", required=True, metavar="INDEX",
                   help="index directory: new, or an index of the same folder and model to update (required)")
    p.add_argument("--batch-size", type=int, default=16, help="files embedded at once (default: 16)")
    p.add_argument("--backend", choices=["auto", "exact", "faiss"],
                   help="search backend stored in the index; both give the same results, faiss is faster on "
                        "large collections; auto = faiss when installed (default: the index's, else auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: off)")
    p.set_defaults(func=command("index", cmd_index, on_interrupt=" (files embedded before the interrupt are saved in "
                                "the index; run the same command again to embed the rest)"))

    s = subparsers.add_parser(
        "search", help="search an indexed audio collection by text",
        description="Rank the files of INDEX (made by audiofm index) for a text query with the model the index was "
                    "built with; prints rank, score, duration and path per file, or JSON with --json.")
    s.add_argument("index", metavar="INDEX", help="index directory made by audiofm index (required)")
    s.add_argument("query", metavar="QUERY", help="what the sound is, e.g. 'a dog barks twice' (required)")
    s.add_argument("--top", type=int, default=10, help="number of results (default: 10)")
    s.add_argument("--json", action="store_true", help="print the results as a JSON list (default: off)")
    s.add_argument("--model", metavar="CKPT", help="the checkpoint to load, when the index's one has moved; "
                   "must be the same model (default: the checkpoint recorded in the index)")
    s.set_defaults(func=command("search", cmd_search))

    v = subparsers.add_parser(
        "serve", help="a local web page to search an indexed audio collection and listen to the results",
        description="Serve a small web page (query box, results with audio players) and a JSON endpoint "
                    "/api/search?q=TEXT&k=N for INDEX (made by audiofm index). Only the files of the index are "
                    "served. The model is loaded once at start. Stop with Ctrl-C.")
    v.add_argument("index", metavar="INDEX", help="index directory made by audiofm index (required)")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on; anything but a loopback address "
                   "lets other machines search and play your files (default: 127.0.0.1)")
    v.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks a free one (default: 8000)")
    v.add_argument("--model", metavar="CKPT", help="the checkpoint to load, when the index's one has moved; "
                   "must be the same model (default: the checkpoint recorded in the index)")
    v.set_defaults(func=command("serve", cmd_serve))


def cmd_index(args: argparse.Namespace) -> int:
    from .retrieval.collection import Collection

    def log(line: str) -> None:
        print(f"skipped: {line}", file=sys.stderr)

    coll, report = Collection.build(args.out, args.audio_dir, args.checkpoint, batch_size=args.batch_size,
                                    backend=args.backend, progress=not args.no_progress, log=log)
    print(f"{coll.index_dir}: {report.summary()}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .retrieval.collection import Collection, duration_text

    if args.top < 1:
        raise ValueError(f"--top must be ≥ 1, got {args.top}")
    hits = Collection.open(args.index, args.model).search(args.query, args.top)
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], indent=2))
    else:
        for h in hits:
            print(f"{h.rank:>3}  {h.score:+.4f}  {duration_text(h.duration):>7}  {h.path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .retrieval.collection import Collection
    from .retrieval.serve import make_server

    coll = Collection.open(args.index, args.model)
    server = make_server(coll, args.host, args.port)
    host, port = str(server.server_address[0]), int(server.server_address[1])
    print(f"serving {len(coll)} files of {coll.index_dir} at http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audiofm", description=__doc__.splitlines()[0] if __doc__ else None,
        epilog="Run 'audiofm COMMAND --help' for what a command does and every option with its default. "
               "Settings: the command's defaults < --config YAML < flags < --set key.sub=value. A mistake prints "
               "one line 'audiofm COMMAND: error: ...' and exits 2 (AUDIOFM_DEBUG=1 shows the traceback).")
    parser.add_argument("--version", action="version", version=f"audiofm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for add in (_add_pretrain, _add_embed, _add_stats, _add_shards, _add_info, _add_demo, _add_collection):
        add(sub)
    _add_plugins(sub)
    return parser


def _add_plugins(sub: argparse._SubParsersAction) -> None:
    from .adapt.commands import add_parsers as add_adapt
    from .asd.commands import add_parsers as add_asd
    from .eval.commands import add_parsers as add_eval
    from .export.commands import add_parsers as add_export
    from .retrieval.commands import add_parsers as add_retrieval

    add_eval(sub)
    add_adapt(sub)
    add_export(sub)
    add_asd(sub)
    add_retrieval(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``audiofm`` with ``argv`` (default: the process's arguments); returns the exit code.
    Every sub-command runs inside :func:`audiofm._commands.guarded` (set by ``command``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
