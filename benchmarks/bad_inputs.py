"""Bad inputs through the real CLI: each must print exactly one line on stderr, exit 2, show no
traceback and write nothing (the workspace is compared before and after every case).

    python benchmarks/bad_inputs.py              # every case; prints the table (case, message)
    python benchmarks/bad_inputs.py --spawn      # each case as its own `python -m audiofm.cli`
    python benchmarks/bad_inputs.py --markdown   # the table for docs/reliability.md

By default each case runs in its own process forked from one interpreter that has already
imported audiofm and torch (starting ``python -m audiofm.cli`` costs 2-20 s on a loaded
machine, nearly all of it importing torch); the child runs ``audiofm.cli.main`` exactly as
``python -m audiofm.cli`` does, with its own stdout/stderr, working directory and exit code.
``--spawn`` starts a fresh ``python -m audiofm.cli`` per case. Disk-full and read-only cases
inject the failure in the child (the machine's disk is neither); the fault is named in the case.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Case:
    """One bad input. argv: the command line (``{ws}`` = the workspace); expect: a part of the
    one-line message; setup(ws): files the case needs (created before the snapshot); fault: a
    failure injected in the child (see :data:`FAULTS`)."""

    section: str
    name: str
    argv: list[str]
    expect: str
    setup: Callable[[Path], None] | None = None
    fault: str | None = None


@dataclass
class Outcome:
    case: Case
    code: int
    stderr: str
    stdout: str
    changed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    ws: Path = Path()

    @property
    def message(self) -> str:
        return self.stderr.strip()

    def problems(self) -> list[str]:
        out = []
        if self.code != 2:
            out.append(f"exit code {self.code}, expected 2")
        if self.stderr.count("\n") != 1 or not self.stderr.endswith("\n"):
            out.append(f"{self.stderr.count(chr(10))} lines on stderr, expected 1")
        if "Traceback" in self.stderr + self.stdout:
            out.append("traceback")
        prefix = f"audiofm {self.case.argv[0]}: error: "
        if not self.stderr.startswith(prefix):
            out.append(f"stderr does not start with {prefix!r}")
        if self.case.expect not in self.stderr:
            out.append(f"message lacks {self.case.expect!r}")
        if self.changed:
            out.append(f"wrote {', '.join(self.changed[:3])}")
        return out


# ----------------------------------------------------------------------------- the workspace


def _tone(seconds: float, freq: float, seed: int, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    noise = 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    return (0.5 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def _hear_task(root: Path, name: str, task_name: str) -> None:
    import soundfile as sf

    task = root / name
    splits = ["fold00", "fold01", "fold02"]
    meta = {"task_name": task_name, "version": "1", "embedding_type": "scene", "prediction_type": "multiclass",
            "split_mode": "new_split_kfold", "nfolds": 3, "splits": splits, "evaluation": ["top1_acc"]}
    (task / "16000").mkdir(parents=True)
    (task / "task_metadata.json").write_text(json.dumps(meta))
    (task / "labelvocabulary.csv").write_text("idx,label\n0,a\n1,b\n")
    for k, split in enumerate(splits):
        (task / "16000" / split).mkdir()
        entries = {}
        for j, label in enumerate("ab"):
            f = f"{label}{k}.wav"
            sf.write(task / "16000" / split / f, _tone(0.3, 300.0 * (j + 1), k), 16000)
            entries[f] = [label]
        (task / f"{split}.json").write_text(json.dumps(entries))


def make_workspace(ws: Path) -> None:
    """Audio, manifests, a debug checkpoint (and damaged copies), HEAR tasks."""
    import soundfile as sf
    import torch
    from safetensors.torch import save_file

    from audiofm.checkpoint import CheckpointSpec, save_checkpoint
    from audiofm.models.registry import build_model, model_config

    (ws / "audio").mkdir(parents=True)
    for i in range(3):
        sf.write(ws / "audio" / f"t{i}.wav", _tone(0.5, 300.0 + 100 * i, i), 16000)
    cfg = model_config("msm_vit_debug")
    ckpt = save_checkpoint(ws / "ckpt", CheckpointSpec.from_model_config(cfg), build_model(cfg))
    for name in ("ckpt_rnn", "ckpt_noweights", "ckpt_truncated", "ckpt_foreign"):
        shutil.copytree(ckpt, ws / name)
    info = json.loads((ckpt / "config.json").read_text())
    info["model"]["encoder"]["backbone"] = "rnn"
    (ws / "ckpt_rnn" / "config.json").write_text(json.dumps(info))
    (ws / "ckpt_noweights" / "model.safetensors").unlink()
    weights = (ckpt / "model.safetensors").read_bytes()
    (ws / "ckpt_truncated" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    save_file({"x": torch.zeros(3)}, str(ws / "ckpt_foreign" / "model.safetensors"))
    (ws / "empty.csv").write_text("")
    (ws / "header.csv").write_text("path,labels\n")
    (ws / "array.json").write_text('[{"path": "audio/t0.wav"}]\n')
    (ws / "stats.json").write_text('{"mean": -3.1, "std": ')
    (ws / "tasks").mkdir()
    _hear_task(ws / "tasks", "toy", "toy")
    _hear_task(ws / "tasks", "toy_copy", "toy")  # the same task_name
    (ws / "ro").mkdir()  # made read-only by the fault of the cases that write there
    (ws / "old.npz").write_bytes(b"an earlier embeddings file")


def _snapshot(ws: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(ws)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (-1, 0)
            for p in ws.rglob("*")}


# ------------------------------------------------------------------------------------ faults


def _fault_read_only(ws: Path) -> None:
    """Everything under ws/ro is on a read-only file system."""
    import errno
    import tempfile as tf

    ro = (ws / "ro").resolve()

    def blocked(p: object) -> bool:
        return p is not None and Path(str(p)).resolve().is_relative_to(ro)

    real_mkstemp, real_mkdtemp, real_mkdir = tf.mkstemp, tf.mkdtemp, os.mkdir

    def erofs(p: object) -> OSError:
        return OSError(errno.EROFS, os.strerror(errno.EROFS), str(p))

    def mkstemp(*a, dir=None, **k):  # type: ignore[no-untyped-def]
        if blocked(dir):
            raise erofs(dir)
        return real_mkstemp(*a, dir=dir, **k)

    def mkdtemp(*a, dir=None, **k):  # type: ignore[no-untyped-def]
        if blocked(dir):
            raise erofs(dir)
        return real_mkdtemp(*a, dir=dir, **k)

    def mkdir(p, *a, **k):  # type: ignore[no-untyped-def]
        if blocked(p):
            raise erofs(p)
        return real_mkdir(p, *a, **k)

    tf.mkstemp, tf.mkdtemp, os.mkdir = mkstemp, mkdtemp, mkdir  # type: ignore[assignment]


def _fault_nearly_full(ws: Path) -> None:
    """The disk has 1 KB free."""
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    shutil.disk_usage = lambda p: usage(1 << 30, (1 << 30) - 1024, 1024)  # type: ignore[assignment]


def _fault_full_while_writing(ws: Path) -> None:
    """The disk fills up while the output is written (after part of it)."""
    import errno

    def savez(f, **arrays):  # type: ignore[no-untyped-def]
        f.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    np.savez = savez


FAULTS: dict[str, Callable[[Path], None]] = {"read-only": _fault_read_only, "nearly full": _fault_nearly_full,
                                             "full while writing": _fault_full_while_writing}


# ------------------------------------------------------------------------------------- cases

P = ["pretrain", "--model", "msm_vit_debug", "--data", "{ws}/audio", "--out", "{ws}/run", "--no-progress"]
E = ["embed", "{ws}/ckpt", "{ws}/audio", "--no-progress"]
EVAL = ["evaluate", "--baseline", "logmel", "--tasks", "{ws}/tasks", "--only", "toy", "--probes", "knn",
        "--seeds", "1", "--no-progress"]

CASES: list[Case] = [
    Case("Configuration values", "negative learning rate", [*P, "--lr", "-1"], "train.lr: got -1.0, expected"),
    Case("Configuration values", "mask ratio above 1", [*P, "--set", "model_overrides.mask_ratio=1.5"],
         "model_overrides.mask_ratio: got 1.5, expected a number in (0, 1)"),
    Case("Configuration values", "zero-frame patches", [*P, "--set", "model_overrides.encoder.patch_t=0"],
         "patch_t: got 0, expected an integer ≥ 1"),
    Case("Configuration values", "batch size 0", [*P, "--batch-size", "0"], "train.batch_size: got 0"),
    Case("Configuration values", "zero training steps", [*P, "--max-steps", "0"], "train.max_steps: got 0"),
    Case("Configuration values", "negative warm-up", [*P, "--set", "train.warmup_steps=-1"],
         "train.warmup_steps: got -1, expected an integer ≥ 0"),
    Case("Configuration values", "several bad values at once", [*P, "--lr", "-1", "--set", "train.betas=[0.9, 1]",
         "--set", "model_overrides.encoder.backbone_cfg.dropout=1"], "3 problems"),
    Case("Configuration values", "embedding batch size 0", [*E, "--out", "{ws}/e.npz", "--batch-size", "0"],
         "batch_size: got 0, expected an integer ≥ 1"),
    Case("Configuration values", "zero seeds", [*EVAL, "--out", "{ws}/ev", "--seeds", "0"],
         "seeds: got 0, expected an integer ≥ 1"),
    Case("Configuration values", "layer decay 0", ["finetune", "--model", "{ws}/ckpt", "--task", "{ws}/tasks/toy",
         "--out", "{ws}/ft", "--layer-decay", "0"], "layer_decay: got 0.0, expected a number in (0, 1]"),
    Case("Configuration values", "stats over 0 clips", ["stats", "{ws}/audio", "--max-clips", "0"],
         "max_clips: got 0, expected an integer ≥ 1"),
    Case("Input files", "missing data folder", [*P[:4], "{ws}/nowhere", *P[5:]], "no such file or directory"),
    Case("Input files", "empty CSV manifest", [*P[:4], "{ws}/empty.csv", *P[5:]], "the file is empty"),
    Case("Input files", "header-only CSV manifest", ["embed", "{ws}/ckpt", "{ws}/header.csv", "--out", "{ws}/e.npz"],
         "the manifest has no rows (only a header)"),
    Case("Input files", "JSON array manifest", ["embed", "{ws}/ckpt", "{ws}/array.json", "--out", "{ws}/e.npz"],
         "holds a JSON array; a manifest is JSON Lines"),
    Case("Input files", "unknown backbone in config.json", ["info", "{ws}/ckpt_rnn"], "unknown backbone 'rnn'"),
    Case("Input files", "weights missing", ["info", "{ws}/ckpt_noweights"], "model.safetensors is missing"),
    Case("Input files", "weights truncated", ["info", "{ws}/ckpt_truncated"], "corrupt or truncated weights"),
    Case("Input files", "weights of another model", ["info", "{ws}/ckpt_foreign"],
         "the weights do not belong to this config.json"),
    Case("Input files", "broken --stats file", [*P, "--stats", "{ws}/stats.json"],
         "expected the JSON written by 'audiofm stats'"),
    Case("Input files", "embed --layer out of range", [*E, "--out", "{ws}/e.npz", "--layer", "5"],
         "layer 5 out of range for a 2-block encoder"),
    Case("Input files", "two tasks with one task_name", [*EVAL[:5], "--probes", "knn", "--out", "{ws}/ev"],
         "have the same task_name 'toy'"),
    Case("Input files", "output would overwrite", [*E, "--out", "{ws}/old.npz"], "already exists; pass --overwrite"),
    Case("Disk and permissions", "embed into a read-only folder", [*E, "--out", "{ws}/ro/e.npz"],
         "ro/e.npz: cannot write: read-only file system", fault="read-only"),
    Case("Disk and permissions", "pretrain into a read-only folder", [*P[:6], "{ws}/ro/run", "--no-progress"],
         "ro/run: cannot write: read-only file system", fault="read-only"),
    Case("Disk and permissions", "evaluate into a read-only folder", [*EVAL, "--out", "{ws}/ro/ev"],
         "ro/ev: cannot write: read-only file system", fault="read-only"),
    Case("Disk and permissions", "embeddings larger than the free space", [*E, "--out", "{ws}/e.npz", "--set",
         "batch_size=2"], "e.npz: cannot write: no space left on device (needs about", fault="nearly full"),
    Case("Disk and permissions", "disk full while writing (old file kept)", [*E, "--out", "{ws}/old.npz",
         "--overwrite"], "old.npz: cannot write: no space left on device (nothing was changed there)",
         fault="full while writing"),
]


# ------------------------------------------------------------------------------------ running


def _argv(case: Case, ws: Path) -> list[str]:
    return [a.replace("{ws}", str(ws)) for a in case.argv]


def _run_forked(case: Case, ws: Path) -> tuple[int, str, str]:
    out_f, err_f = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: audiofm.cli as `python -m audiofm.cli` runs it
        code = 70
        try:
            os.dup2(out_f.fileno(), 1)
            os.dup2(err_f.fileno(), 2)
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            os.chdir(ws)
            if case.fault:
                FAULTS[case.fault](ws)
            from audiofm.cli import main

            code = main(_argv(case, ws))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    out_f.seek(0)
    err_f.seek(0)
    return os.waitstatus_to_exitcode(status), out_f.read(), err_f.read()


def _run_spawned(case: Case, ws: Path) -> tuple[int, str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("AUDIOFM_DEBUG", None)
    if case.fault:  # the same fault, then the CLI's own entry point
        here = Path(__file__).resolve()
        code = (f"import sys, runpy; sys.path.insert(0, {str(here.parent)!r}); import bad_inputs as b; "
                f"from pathlib import Path; b.FAULTS[{case.fault!r}](Path({str(ws)!r})); "
                f"sys.argv = ['audiofm', *{_argv(case, ws)!r}]; runpy.run_module('audiofm.cli', run_name='__main__')")
        cmd = [sys.executable, "-c", code]
    else:
        cmd = [sys.executable, "-m", "audiofm.cli", *_argv(case, ws)]
    p = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    return p.returncode, p.stdout, p.stderr


def run_cases(cases: list[Case] | None = None, spawn: bool = False, ws: Path | None = None) -> list[Outcome]:
    """Run ``cases`` (default: all) in a fresh workspace (``ws``, default a temporary folder)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.pop("AUDIOFM_DEBUG", None)
    import torch

    torch.set_num_threads(1)
    if not spawn:
        import audiofm.adapt.commands
        import audiofm.api
        import audiofm.cli
        import audiofm.eval.suite
        import audiofm.train.pretrain  # noqa: F401
    own = ws is None
    root = Path(tempfile.mkdtemp(prefix="audiofm-bad-inputs-")) if ws is None else ws
    try:
        make_workspace(root)
        outcomes = []
        for case in cases if cases is not None else CASES:
            if case.setup:
                case.setup(root)
            before = _snapshot(root)
            t0 = time.perf_counter()
            code, out, err = (_run_spawned if spawn else _run_forked)(case, root)
            after = _snapshot(root)
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            outcomes.append(Outcome(case, code, err, out, changed, time.perf_counter() - t0, root))
        return outcomes
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)


def table(outcomes: list[Outcome], markdown: bool = False) -> str:
    """``case → message`` rows grouped by class of mistake (the workspace folder shown as ``WS``)."""
    lines = ["| class | case | message (exit 2) |", "|---|---|---|"] if markdown else []
    section = None
    for o in outcomes:
        msg = o.message.replace(str(o.ws), "WS")
        name = o.case.name + (f" (simulated: {o.case.fault})" if o.case.fault else "")
        flag = "" if not o.problems() else "  <-- " + "; ".join(o.problems())
        if markdown:
            cell = msg.replace("|", "\\|")
            lines.append(f"| {o.case.section if o.case.section != section else ''} | {name} | `{cell}` |")
        else:
            if o.case.section != section:
                lines += ["", f"== {o.case.section}"]
            lines.append(f"{name:50s} {msg}{flag}")
        section = o.case.section
    return "\n".join(lines).lstrip("\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--spawn", action="store_true", help="run each case as its own python -m audiofm.cli")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = ap.parse_args(argv)
    ws = Path(tempfile.mkdtemp(prefix="audiofm-bad-inputs-"))
    try:
        t0 = time.perf_counter()
        outcomes = run_cases(spawn=args.spawn, ws=ws)
        print(table(outcomes, markdown=args.markdown))
        bad = [o for o in outcomes if o.problems()]
        print(f"\n{len(outcomes) - len(bad)} of {len(outcomes)} cases: one line, exit 2, no traceback, nothing "
              f"written ({time.perf_counter() - t0:.0f} s)")
        return 1 if bad else 0
    finally:
        shutil.rmtree(ws, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
