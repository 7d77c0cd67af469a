"""Training dual encoders for language-based audio retrieval: :func:`train`.

``out/`` holds the resolved settings (``run_config.yaml``), the shared frozen-feature cache
(``features/``, unless ``cache`` names another place), ``train.json`` when every seed finished,
and one engine run directory per seed, ``out/seed-<s>/`` (``metrics.jsonl`` with the loss curve
and validation scores, ``loss_curve.png``, ``checkpoints/`` while training), ending with
``model/``: the dual checkpoint (the best validation weights), which :func:`audiofm.load` opens
as a :class:`~audiofm.retrieval.model.TextAudioModel`. An interrupted run continues with
``resume=True`` (exactly: the engine's resume); finished outputs are never overwritten.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import checkpoint as ckpt
from ..config import ConfigError, merge, save_yaml, to_dict
from ..data import Row, fingerprint
from ..data.captions import read_audiocaps, read_caption_pairs, read_clotho
from ..data.manifest import DataError
from ..eval.cache import EmbeddingCache
from ..io import write_json
from ..train.checkpointing import RunDirError
from ..train.engine import FINISHED, Engine, TrainConfig
from .config import RetrievalConfig, RetrievalDataConfig

__all__ = ["FINISHED", "models_of", "read_split", "seed_dirs", "train"]

RUN_FILES = ("retrieval.json",)  # what a seed's run directory holds besides the engine's files
FREE_ON_RESUME = ("cache_mb", "eval_batch_size", "cache", "seeds")  # never change what is computed
SUMMARY = "train.json"


def data_format(data: RetrievalDataConfig) -> str:
    """'clotho', 'audiocaps' or 'pairs' (``data.format``, or guessed from what ``source`` is)."""
    if data.format != "auto":
        return data.format
    src = Path(data.source)
    if src.is_file():
        with src.open(errors="replace") as f:
            header = f.readline()
        return "audiocaps" if "audiocap_id" in header and "youtube_id" in header else "pairs"
    if src.is_dir() and any(src.glob("clotho_captions_*.csv")):
        return "clotho"
    if src.is_dir() and any(src.glob("*.csv")):
        return "audiocaps"
    raise DataError(f"{src}: not a Clotho folder (clotho_captions_<split>.csv), an AudioCaps folder "
                    "(<split>.csv) nor a pairs file (.csv / .jsonl)")


def read_split(data: RetrievalDataConfig, split: str) -> list[Row]:
    """The rows (with captions) of ``split`` of the dataset ``data`` describes."""
    fmt = data_format(data)
    src = Path(data.source)
    if fmt == "clotho":
        return read_clotho(src, split, audio_dir=data.audio_dir or None)
    if fmt == "audiocaps":  # the folder of train.csv / val.csv / test.csv (source may name one of them)
        folder = src if src.is_dir() else src.parent
        return read_audiocaps(folder / f"{split}.csv", data.audio_dir or folder / split, split=split)
    rows = [r for r in read_caption_pairs(src) if r.split == split]
    if not rows:
        raise DataError(f"{src}: no pairs of split {split!r} (give each line a split column)")
    return rows


def seed_dirs(out: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(seed, run directory) of every ``seed-<s>`` folder of a retrieval run, by seed."""
    found = []
    for d in Path(out).glob("seed-*"):
        tail = d.name[len("seed-"):]
        if d.is_dir() and tail.isdigit():
            found.append((int(tail), d))
    return sorted(found)


def models_of(run: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(seed, dual checkpoint) of a training run (``seed-<s>/model``) or of one checkpoint."""
    run = Path(run)
    found = [(s, d / "model") for s, d in seed_dirs(run) if (d / "model" / "config.json").is_file()]
    if found:
        return found
    if (run / "config.json").is_file() or (run / "model" / "config.json").is_file():
        return [(0, run if (run / "config.json").is_file() else run / "model")]
    raise FileNotFoundError(f"{run}: no trained model (neither seed-<s>/model folders of `audiofm retrieval train` "
                            "nor a dual checkpoint)")


def _derived(cfg: RetrievalConfig) -> list[str]:
    return ["train.max_steps"] if cfg.epochs is not None else []


def _schedule(cfg: RetrievalConfig, n_pairs: int, seed: int) -> TrainConfig:
    t = replace(cfg.train, seed=seed)
    if cfg.epochs is not None:
        t.max_steps = max(1, math.ceil(cfg.epochs * n_pairs / t.batch_size))
    return t


def _check_out(out: Path, cfg: RetrievalConfig, resume: bool) -> None:
    """Refuse, before any work, to write over a run (finished, or without ``resume``)."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out} already exists and is a file; choose a new --out")
    if (out / SUMMARY).exists():
        raise FileExistsError(f"{out} already holds a finished retrieval run; choose a new --out (nothing was "
                              "overwritten)")
    if (out / "run_config.yaml").exists() and not resume:
        raise RunDirError(f"{out} already holds a retrieval run; pass --resume to continue it with its saved "
                          "settings, or choose a new --out (nothing was overwritten)")
    if resume and not (out / "run_config.yaml").exists():
        raise RunDirError(f"{out}: nothing to resume (no run_config.yaml)")
    if out.is_dir() and not resume:
        foreign = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
        if foreign:
            raise RunDirError(f"{out} already exists and holds {', '.join(foreign[:4])}; choose a new --out "
                              "(nothing was overwritten)")


def train(cfg: RetrievalConfig, out: str | os.PathLike[str], *, resume: bool = False, progress: bool = True,
          allow_change: Sequence[str] = ()) -> dict[str, Any]:
    """Train ``cfg.seeds`` dual encoders (seeds ``train.seed …``) in ``out/seed-<s>``; returns a
    summary (also ``out/train.json`` once every seed finished). ``resume``: continue an
    interrupted run (finished seeds are kept, the others continue from their checkpoints)."""
    from ..train.distributed import barrier, broadcast_object, setup

    out = Path(out)
    _, d = setup(cfg.train.device, cfg.train.threads)  # under torchrun: the first process checks and writes
    error = None
    if d.main:
        try:
            _check_out(out, cfg, resume)
        except (RunDirError, FileExistsError) as e:
            error = (type(e).__name__, str(e))
    error = broadcast_object(error, d)
    if error is not None:
        raise (FileExistsError if error[0] == "FileExistsError" else RunDirError)(error[1])
    train_rows = read_split(cfg.data, cfg.data.train_split)
    valid_rows = read_split(cfg.data, cfg.data.valid_split)
    if not resume and d.main:  # on resume each seed's engine checks the settings against its saved ones
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(to_dict(cfg), out / "run_config.yaml")
    barrier(d)
    cache = EmbeddingCache(cfg.cache_dir(out))
    results = []
    for seed in cfg.seed_list:
        res = train_seed(cfg, seed, out / f"seed-{seed}", train_rows, valid_rows, cache=cache, resume=resume,
                         progress=progress, allow_change=allow_change)
        results.append(res)
        if res.get("status") not in FINISHED:
            return {"status": res.get("status"), "seeds": results, "out": str(out), "step": res.get("step")}
    summary = {"status": "completed", "out": str(out), "seeds": results,
               "train_pairs": results[0].get("train_pairs"), "train_clips": len(train_rows),
               "valid_clips": len(valid_rows)}
    if d.main:
        write_json(out / SUMMARY, summary)
    return summary


def train_seed(cfg: RetrievalConfig, seed: int, run_dir: Path, train_rows: Sequence[Row], valid_rows: Sequence[Row],
               *, cache: EmbeddingCache | None, resume: bool = False, progress: bool = True,
               allow_change: Sequence[str] = ()) -> dict[str, Any]:
    """One seed's engine run in ``run_dir`` (skipped when it already finished and ``resume``)."""
    from .model import DualEncoder
    from .recipe import RetrievalRecipe

    done = run_dir / "retrieval.json"
    if done.is_file():
        if not resume:
            raise FileExistsError(f"{run_dir} already holds a finished run; choose a new --out")
        import json

        return dict(json.loads(done.read_text()))
    from ..train.distributed import barrier, broadcast_object, setup

    d = setup(cfg.train.device, cfg.train.threads)[1]
    dual = DualEncoder.build(cfg.model, seed=seed)
    if not d.main:
        barrier(d)  # under torchrun the first process computes the frozen features; the others read them
    recipe = RetrievalRecipe(cfg, dual, train_rows, valid_rows, seed=seed, cache=cache, progress=progress)
    if d.main:
        barrier(d)
    train_cfg = _schedule(cfg, recipe.num_examples(), seed)
    resolved = merge(to_dict(cfg), {"train": to_dict(train_cfg), "cluster": recipe.cluster_info})
    data_fp = fingerprint(list(train_rows))
    go_on = broadcast_object(resume and run_dir.exists(), d)
    latest = ckpt.latest_checkpoint(run_dir / "checkpoints") if go_on else None
    if latest is not None and cfg.cluster_weight > 0 and not any(k.startswith(ckpt.TRAINING_PARTS)
                                                                 for k in ckpt.load_state_dict(latest)):
        raise RunDirError(f"{latest}: cannot resume a run with cluster_weight > 0: its checkpoint lacks the "
                          "cluster classifier (aux.* weights; 'dual' checkpoints of this audiofm do not keep them); "
                          "start the run again in a new --out")
    engine = Engine(recipe, train_cfg, run_dir, resume=go_on, resolved_config=resolved,
                    data_fingerprint=data_fp, progress=progress, allow_change=allow_change, free=FREE_ON_RESUME,
                    derived=_derived(cfg), run_files=RUN_FILES)
    with engine.hold():
        result = engine.fit()
        if not engine.dist.main or result["status"] not in FINISHED:
            return {**result, "main": engine.dist.main}
        chosen = "last"
        best = run_dir / "best"
        if (best / "config.json").is_file():
            state = {k: v for k, v in ckpt.load_state_dict(best).items() if not k.startswith(ckpt.TRAINING_PARTS)}
            ckpt.load_weights(dual, state, str(best))  # the training-only aux heads are not part of the model
            chosen = f"best (step {result['best_step']})"
        summary = {
            "seed": seed, "status": result["status"], "steps": result["step"], "max_steps": train_cfg.max_steps,
            "weights": chosen, "best_step": result["best_step"], "best_valid_map_at_10": result["best_score"],
            "start_valid_map_at_10": result.get("start_score"), "final_train_loss": result["loss"],
            "seconds": round(result["seconds"], 1), "train_pairs": recipe.num_examples(),
            "train_clips": len(recipe.clips), "features_computed": recipe.features.computed,
            "features_cached": recipe.features.hits, **recipe.cluster_info,
        }
        meta = {"step": result["step"], "data_fingerprint": data_fp,
                "retrieval": {k: summary[k] for k in ("seed", "weights", "best_valid_map_at_10")}}
        dual.save(run_dir / "model", meta=meta, overwrite=True)
        if best.is_dir():
            shutil.rmtree(best)
        write_json(done, summary)
    return {**result, **summary, "checkpoint": str(run_dir / "model")}


def check_config(cfg: RetrievalConfig) -> None:
    """Problems found without building anything (the data source exists, teachers exist)."""
    problems = []
    if not cfg.data.source:
        problems.append("data.source is required (a Clotho folder, an AudioCaps folder or a pairs file)")
    elif not Path(cfg.data.source).exists():
        problems.append(f"data.source: {cfg.data.source} does not exist")
    problems += [f"teachers: {t} does not exist" for t in cfg.teachers if not Path(t).exists()]
    if problems:
        raise ConfigError.of(problems)
