"""The run directory and its checkpoints.

``run_dir/`` holds ``run_config.yaml`` (the resolved configuration, with a ``history`` of the
changes allowed on resume), ``run_info.json`` (one per start or resume), ``metrics.jsonl``,
``checkpoints/step_XXXXXXXX/`` (periodic, with the training state; the newest ``keep`` kept),
``best/`` (the best-scoring weights under validation), ``model/`` (the final weights) and, while
a process trains in it, the lock ``.audiofm.lock`` (:class:`audiofm.outputs.RunLock`). Every
checkpoint directory is written atomically by :func:`audiofm.checkpoint.save_checkpoint`, which
:meth:`Checkpointer._write` alone calls.

A run directory is either a run (it holds a checkpoint or the final model: continued only with
``resume``) or nothing: a folder holding only the files of a start that never reached its first
checkpoint is reused by the next start (:func:`check_run_dir`). Resuming continues the saved
settings; a setting that would change the run's meaning is refused with the difference shown
unless allowed, and an allowed change is recorded (:func:`resume_changes`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from torch import nn

from .. import checkpoint as ckpt
from ..config import ConfigError, load_yaml, save_yaml, to_dict
from ..outputs import LOCK, OutputError, RunLock
from ..runinfo import write_run_info
from .distributed import Dist, barrier, broadcast_object
from .metric_logging import truncate_metrics

if TYPE_CHECKING:
    from .engine import Recipe

RUN_CONFIG = "run_config.yaml"
# what a start writes before its first checkpoint (and a new start may replace)
RUN_FILES = (RUN_CONFIG, "run_info.json", "run_info.resume-*.json", "metrics.jsonl", "loss_curve.png",
             "checkpoints", "best", LOCK, ".*")
# settings that never change what a run computes: free to change on resume (recorded)
FREE_ON_RESUME = ("train.max_minutes", "train.log_every", "train.ckpt_every", "train.keep_checkpoints",
                  "train.device", "train.threads")


class RunDirError(ValueError):
    """The run directory holds a run when starting, none when resuming, another process, or
    resuming would change the run's settings."""


def _matches(key: str, patterns: Collection[str]) -> bool:
    """``key`` is one of ``patterns`` or inside one of them (``train`` covers ``train.lr``)."""
    return any(key == p or key.startswith(p + ".") for p in patterns)


def check_run_dir(run_dir: str | os.PathLike[str], resume: bool, run_files: Collection[str] = ()) -> bool:
    """Whether starting (``resume=False``) or resuming in ``run_dir`` is possible, before any
    work: RunDirError otherwise. Returns True when a checkpoint will be resumed from, False for
    a fresh start (no folder, an empty one, or one a start left without a checkpoint — reused).
    ``run_files``: further names the recipe writes in its run directory (e.g. ``finetune.json``)."""
    d = Path(run_dir)
    if d.exists() and not d.is_dir():
        raise RunDirError(f"{d} already exists and is a file; choose a new --out")
    latest = ckpt.latest_checkpoint(d / "checkpoints")
    has_run = latest is not None or (d / "model" / "config.json").is_file()
    if d.is_dir():
        names = (*RUN_FILES, "model", *run_files)
        foreign = sorted(p.name for p in d.iterdir() if not any(fnmatch.fnmatch(p.name, n) for n in names))
        if foreign:
            raise RunDirError(f"{d} already exists and holds files that are not part of an audiofm run "
                              f"({', '.join(foreign[:4])}{', ...' if len(foreign) > 4 else ''}); choose a new --out "
                              "(nothing was overwritten)")
    if has_run and not resume:
        step = f" (step {int(latest.name.split('_')[-1])})" if latest is not None else ""
        raise RunDirError(f"{d} already holds a run{step}; pass --resume to continue it with its saved settings, "
                          "or choose a new --out (nothing was overwritten)")
    if resume and latest is None:
        if has_run:
            raise RunDirError(f"{d}: no complete checkpoint to resume from")
        if not (d / RUN_CONFIG).is_file():
            raise RunDirError(f"{d}: nothing to resume (no {RUN_CONFIG} or checkpoints)")
    return latest is not None


def saved_settings(run_dir: str | os.PathLike[str], cls: type) -> dict[str, Any]:
    """The settings a run in ``run_dir`` was started with, as a mapping of the fields of config
    class ``cls`` (the base a ``--resume`` builds on); RunDirError when there is none."""
    f = Path(run_dir) / RUN_CONFIG
    if not f.is_file():
        raise RunDirError(f"{run_dir}: nothing to resume (no {RUN_CONFIG})")
    saved = load_yaml(f)
    names = {fl.name for fl in fields(cls)}
    return {k: v for k, v in saved.items() if k in names}


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, Mapping) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d} if prefix else {}


def _plain(d: Any) -> Any:
    """``d`` as YAML would give it back (tuples → lists, ...), so saved and new values compare."""
    return yaml.safe_load(yaml.safe_dump(to_dict(d), sort_keys=False))


def _show(v: Any) -> str:
    return "unset" if v is _UNSET else json.dumps(v, default=str)


_UNSET = object()


def resume_changes(saved: Mapping[str, Any], given: Mapping[str, Any], *, allow: Collection[str] = (),
                   free: Collection[str] = FREE_ON_RESUME, derived: Collection[str] = (), where: str = ""
                   ) -> dict[str, dict[str, Any]]:
    """The settings that differ between the ``saved`` run and the ``given`` one (dotted key →
    ``{"saved", "given"}``). A difference outside ``free`` (never changes what is computed) and
    ``derived`` (follows from other settings) changes the run's meaning: RunDirError listing
    them all (``key: saved → given``) unless ``allow`` names the key or its section."""
    a, b = _flat(_plain(saved)), _flat(_plain(given))
    unknown = [k for k in allow if not any(_matches(x, [k]) for x in (*a, *b))]
    if unknown:
        raise ConfigError(f"--allow-change {','.join(unknown)}: no such setting (settings look like train.lr, "
                          "data.source, model_overrides.mask_ratio)")
    changes: dict[str, dict[str, Any]] = {}
    refused = []
    for k in dict.fromkeys([*a, *b]):
        va, vb = a.get(k, _UNSET), b.get(k, _UNSET)
        if va == vb:
            continue
        changes[k] = {"saved": None if va is _UNSET else va, "given": None if vb is _UNSET else vb}
        if not (_matches(k, free) or _matches(k, derived) or _matches(k, allow)):
            refused.append(f"{k}: {_show(va)} → {_show(vb)}")
    if refused:
        keys = ",".join(r.split(":")[0] for r in refused)
        raise RunDirError(f"{where}: resuming would change the run ({'; '.join(refused)}); resume with the saved "
                          f"settings (drop these options), or pass --allow-change {keys} to change them "
                          f"(recorded in {RUN_CONFIG})")
    return changes


class Checkpointer:
    """Saves and restores the checkpoints of ``recipe`` in ``run_dir`` (writes on the main
    process only). ``on_checkpoint(step, path)`` is called after each periodic save.
    ``run_files``: further names the recipe writes in the run directory; ``allow_change``,
    ``free`` and ``derived``: dotted settings a resume may change (see :func:`resume_changes`)."""

    def __init__(self, recipe: Recipe, run_dir: str | os.PathLike[str], d: Dist, *, keep: int = 2,
                 data_fingerprint: dict[str, Any] | None = None,
                 on_checkpoint: Callable[[int, Path], None] | None = None, run_files: Collection[str] = (),
                 allow_change: Collection[str] = (), free: Collection[str] = (), derived: Collection[str] = ()
                 ) -> None:
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.dist = d
        self.keep = keep
        self.data_fingerprint = data_fingerprint or {}
        self.on_checkpoint = on_checkpoint
        self.run_files = tuple(run_files)
        self.allow_change, self.derived = tuple(allow_change), tuple(derived)
        self.free = (*FREE_ON_RESUME, *free)
        self.lock = RunLock(self.run_dir)
        self._held = 0
        self.from_checkpoint = False

    @property
    def folder(self) -> Path:
        return self.run_dir / "checkpoints"

    @contextlib.contextmanager
    def hold(self, resume: bool) -> Iterator[bool]:
        """Hold the run directory for the block: its lock (taken by the main process, the outcome
        shared by all) and a check of what it holds (:func:`check_run_dir`). Yields whether a
        checkpoint is resumed from. Re-entrant. A folder this call created is removed again when
        the block fails before anything was written in it."""
        if self._held:
            self._held += 1
            try:
                yield self.from_checkpoint
            finally:
                self._held -= 1
            return
        created = not self.run_dir.exists()
        outcome: tuple[str | None, bool, str] = (None, False, "")
        if self.dist.main:
            try:
                self.lock.acquire()
                try:
                    outcome = (None, check_run_dir(self.run_dir, resume, self.run_files), self.lock.note)
                except RunDirError:
                    self.lock.release()
                    raise
            except (OutputError, RunDirError) as e:
                outcome = (str(e), False, "")
        error, self.from_checkpoint, note = broadcast_object(outcome, self.dist)
        if error is not None:
            if created and self.dist.main:
                _remove_if_empty(self.run_dir)
            raise RunDirError(error)
        if note and self.dist.main:
            print(f"note: {self.run_dir}: {note}", file=sys.stderr)
        self._held = 1
        try:
            yield self.from_checkpoint
        finally:
            self._held = 0
            if self.dist.main:
                self.lock.release()
                if created:
                    _remove_if_empty(self.run_dir)

    def prepare(self, resolved_config: dict[str, Any], step: int = 0, **run_info: Any) -> None:
        """Record the start (inside :meth:`hold`, main process writes): a fresh start replaces
        what an earlier start left without a checkpoint and writes ``run_config.yaml``; a resume
        checks the settings against the saved ones (:func:`resume_changes`), records the allowed
        changes in its ``history`` and drops the metrics logged after checkpoint ``step``. Then
        a ``run_info`` record."""
        error: str | None = None
        if self.dist.main:
            try:
                self._record(resolved_config, step)
            except (RunDirError, ConfigError) as e:
                error = str(e)
        error = broadcast_object(error, self.dist)
        if error is not None:
            raise RunDirError(error)
        if self.dist.main:
            resume = self.from_checkpoint
            name = "run_info.json" if not resume else f"run_info.resume-{time.strftime('%Y%m%d-%H%M%S')}.json"
            write_run_info(self.run_dir, self.data_fingerprint, name, **run_info)
        barrier(self.dist)

    def _record(self, resolved_config: dict[str, Any], step: int) -> None:
        if not self.from_checkpoint:
            stale = [p for p in self.run_dir.iterdir() if p.name != LOCK
                     and any(fnmatch.fnmatch(p.name, n) for n in RUN_FILES)]
            for p in stale:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            if any(p.name not in ("checkpoints",) and not p.name.startswith(".") for p in stale):
                print(f"note: {self.run_dir}: reusing the folder of an earlier start that stopped before its first "
                      "checkpoint (its files were replaced)", file=sys.stderr)
            self.folder.mkdir(parents=True, exist_ok=True)
            save_yaml(resolved_config, self.run_dir / RUN_CONFIG)
            return
        saved = load_yaml(self.run_dir / RUN_CONFIG)
        history = list(saved.pop("history", None) or [])
        given = dict(resolved_config)
        latest = ckpt.latest_checkpoint(self.folder)
        saved_fp = json.loads((latest / "config.json").read_text()).get("data_fingerprint") if latest else None
        if saved_fp and self.data_fingerprint:
            saved, given = {**saved, "data_fingerprint": saved_fp}, {**given, "data_fingerprint": self.data_fingerprint}
        changes = resume_changes(saved, given, allow=self.allow_change, free=self.free, derived=self.derived,
                                 where=str(self.run_dir))
        if changes:
            history.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "step": step,
                            "command": " ".join(sys.argv), "changes": changes})
            save_yaml({**resolved_config, "history": history}, self.run_dir / RUN_CONFIG)
        truncate_metrics(self.run_dir / "metrics.jsonl", step)

    def _write(self, path: Path, train_state: dict[str, Any] | None, meta: dict[str, Any]) -> Path:
        """The one call that writes a checkpoint directory: the whole model in a periodic
        checkpoint (``train_state``), the recipe's ``export_state()`` (when it has one) in the
        final and best ones."""
        export = getattr(self.recipe, "export_state", None)
        state = self.recipe.model if train_state is not None or export is None else export()
        return ckpt.save_checkpoint(path, self.recipe.spec, state, train_state,
                                    {**meta, "data_fingerprint": self.data_fingerprint}, overwrite=True)

    def save(self, step: int, train_state: dict[str, Any], final: bool = False) -> Path | None:
        """A periodic checkpoint at ``step`` (older ones beyond ``keep`` removed); with ``final``
        also the final weights in ``run_dir/model``. Returns the periodic checkpoint's path."""
        if not self.dist.main:
            return None
        path = self._write(self.folder / f"step_{step:08d}", train_state, {"step": step})
        steps = sorted(d for d in self.folder.iterdir() if d.name.startswith("step_"))
        for old in steps[: max(0, len(steps) - self.keep)]:
            shutil.rmtree(old)
        if final:
            self._write(self.run_dir / "model", None, {"step": step})
        if self.on_checkpoint is not None:
            self.on_checkpoint(step, path)
        return path

    def save_best(self, step: int, score: float) -> None:
        """The weights that scored best so far, in ``run_dir/best``."""
        if self.dist.main:
            self._write(self.run_dir / "best", None, {"step": step, "score": score})

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Load the newest periodic checkpoint into ``model`` and ``optimizer`` (reads only);
        returns its training state (``step``, ``early_stop``, ...)."""
        latest = ckpt.latest_checkpoint(self.folder)
        if latest is None:
            raise RunDirError(f"{self.run_dir}: no complete checkpoint to resume from")
        state = ckpt.load_train_state(latest)
        ckpt.load_weights(model, ckpt.load_state_dict(latest), str(latest))
        optimizer.load_state_dict(state["optimizer"])
        return state


def _remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` when nothing is left in it."""
    with contextlib.suppress(OSError):
        folder.rmdir()
