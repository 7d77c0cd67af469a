"""audiofm mLSTM vs the xlstm package's mLSTM stack (chunkwise--native_autograd), CPU, one process.

    OMP_NUM_THREADS=1 python benchmarks/bench_xlstm.py                     # everything below
    OMP_NUM_THREADS=1 python benchmarks/bench_xlstm.py --baseline-rev f023daa --repeats 7

Every model is timed in the same process with repeats interleaved round-robin (A, B, C, A, B, C,
...) so that a change of machine load hits all of them alike; the tables show the median and
the best of ``--repeats`` and the ratios between them (compare ratios, not seconds):

1. **Layer stacks** at equal width, depth and heads (default 192 × 4, 4 heads, forward
   direction, since the peer is causal): audiofm ``xlstm`` (pre-up-projection mLSTM blocks,
   chunkwise form) and ``xlstm.xlstm_large.model.xLSTMLargeBlockStack`` with the
   ``chunkwise--native_autograd`` kernel (its pure-PyTorch chunkwise kernel, chunk 64, float32;
   mode ``inference``, its path for lengths that are not a multiple of the chunk: chunks of 64,
   then 32 and 16). ``pip install --no-deps xlstm mlstm_kernels einops`` — benchmark-only
   dependencies (see requirements-peers.txt), skipped with a note when missing. With
   ``--baseline-rev REV`` audiofm's ``xlstm.py`` as of git revision REV is loaded as a second
   audiofm stack with the same weights (the before/after of the kernel; its output is checked
   against the current one). Inference: one pass over ``--tokens`` tokens, batch 1, inference
   mode. Training step: batch ``--train-batch`` × ``--train-tokens``, forward, mean-square loss,
   backward, AdamW step; audiofm with its default ``recompute=True`` and with
   ``recompute=False`` (activations stored, as the peer does).
2. **Whole tiny encoders** (``msm_xlstm_tiny`` vs ``msm_vit_tiny``, parameter-matched): the
   embedding path (log-mel -> patches -> backbone -> norm -> frames) on ``--seconds`` of random
   audio, one pass, batch 1, inference mode.

Writes ``xlstm.json`` and ``xlstm.md`` to ``--out``. The load average at start and end is
printed with the tables: the machine is shared, so only the same-run ratios are meaningful.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _timing import bench_encoders, interleaved, n_params

ROOT = Path(__file__).resolve().parents[1]
XLSTM_FILE = "src/audiofm/models/backbones/xlstm.py"


def load_baseline(rev: str) -> Any:
    """audiofm's xlstm module as of git revision ``rev``, imported under another name; the
    backbone registry keeps pointing at the current module."""
    from audiofm.models import backbones

    src = subprocess.run(["git", "show", f"{rev}:{XLSTM_FILE}"], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    path = Path(tempfile.mkdtemp()) / "xlstm_baseline.py"
    path.write_text(src)
    name = "audiofm.models.backbones._xlstm_baseline"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    backbones.build_backbone("xlstm", dim=8, depth=1, heads=1)  # the current module registered first
    saved = dict(backbones._REGISTRY)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    backbones._REGISTRY.clear()
    backbones._REGISTRY.update(saved)
    return module


def peer_stack(dim: int, depth: int, heads: int, chunk: int) -> Any:
    from xlstm.xlstm_large.model import xLSTMLargeBlockStack, xLSTMLargeConfig

    cfg = xLSTMLargeConfig(
        embedding_dim=dim, num_heads=heads, num_blocks=depth, vocab_size=1,
        chunkwise_kernel="chunkwise--native_autograd", sequence_kernel="native_sequence__native",
        step_kernel="native", mode="inference", chunk_size=chunk, return_last_states=True,
        autocast_kernel_dtype="float32", inference_state_dtype="float32",
    )
    return xLSTMLargeBlockStack(cfg)


class PeerOut:
    """The peer stack returns (x, state); keep x."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, x: Any) -> Any:
        return self.model(x)[0]


def bench_stacks(args: argparse.Namespace, with_peer: bool, baseline: Any) -> dict[str, Any]:
    import torch

    from audiofm.models.backbones import build_backbone

    fields = dict(dim=args.dim, depth=args.depth, heads=args.heads, direction="forward", chunk_size=args.chunk)
    torch.manual_seed(0)
    ours = build_backbone("xlstm", **fields)
    models: dict[str, Any] = {"audiofm": ours}
    if baseline is not None:
        old = baseline.build_xlstm(baseline.XLSTMConfig(**fields))
        old.load_state_dict(ours.state_dict())  # same parameter layout: the same weights
        models["audiofm (baseline)"] = old
    if with_peer:
        torch.manual_seed(0)
        models["xlstm peer"] = peer_stack(args.dim, args.depth, args.heads, args.peer_chunk)
    calls = {k: (PeerOut(m) if k == "xlstm peer" else m) for k, m in models.items()}
    x_inf = torch.randn(1, args.tokens, args.dim)
    x_train = torch.randn(args.train_batch, args.train_tokens, args.dim)
    check = {}
    if baseline is not None:
        with torch.inference_mode():
            ours.eval()
            check["baseline max |Δ| (inference)"] = float((ours(x_inf) - models["audiofm (baseline)"].eval()(x_inf))
                                                          .abs().max())
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}

    def infer(label: str) -> Callable[[], None]:
        def run() -> None:
            models[label].eval()
            with torch.inference_mode():
                calls[label](x_inf)
        return run

    def train(label: str, recompute: bool | None = None) -> Callable[[], None]:
        def run() -> None:
            m, opt = models[label].train(), opts[label]
            if recompute is not None:
                for blk in m.blocks:
                    blk.mixer.cfg.recompute = recompute
            opt.zero_grad(set_to_none=True)
            calls[label](x_train).square().mean().backward()
            opt.step()
        return run

    train_fns: dict[str, Callable[[], None]] = {}
    for k in models:
        if k == "xlstm peer":
            train_fns[k] = train(k)
        else:
            train_fns[f"{k}, recompute"] = train(k, True)
            train_fns[f"{k}, no recompute"] = train(k, False)
    infer_fns = {k: infer(k) for k in models}
    for fn in [*infer_fns.values(), *train_fns.values()]:  # warm-up
        fn()
    inference = interleaved(infer_fns, args.repeats, rotate=True)
    print("  inference: " + ", ".join(f"{k} {v['median']:.3f} s" for k, v in inference.items()), flush=True)
    training = interleaved(train_fns, args.repeats, rotate=True)
    print("  training: " + ", ".join(f"{k} {v['median']:.3f} s" for k, v in training.items()), flush=True)
    for k, m in models.items():  # leave the configs as built
        if k != "xlstm peer":
            for blk in m.blocks:
                blk.mixer.cfg.recompute = True
    return {"params": {k: n_params(m) for k, m in models.items()}, "inference": inference, "training": training,
            "check": check}


def _ratio_cells(res: dict[str, Any], ref: str, k: str) -> str:
    a, b = res[ref], res[k]
    return f"{a['median'] / b['median']:.2f}× | {a['best'] / b['best']:.2f}× | {a['cpu_median'] / b['cpu_median']:.2f}×"


def markdown(res: dict[str, Any], args: argparse.Namespace) -> str:
    st, enc = res["stacks"], res["encoders"]
    lines = [
        f"audiofm mLSTM vs xlstm's xLSTMLargeBlockStack, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{res['threads']} thread(s), load average {res['load_start']:.2f} at start / {res['load_end']:.2f} at end; "
        f"{args.repeats} repeats interleaved",
    ]
    if st:
        inf, tr = st["inference"], st["training"]
        ref = "xlstm peer" if "xlstm peer" in inf else None
        lines += [
            "",
            f"Layer stacks, width {args.dim}, depth {args.depth}, {args.heads} heads, forward direction "
            f"(audiofm chunk {args.chunk}, peer chunk {args.peer_chunk}; inference: 1 × {args.tokens} tokens; "
            f"training step: {args.train_batch} × {args.train_tokens} tokens, forward + backward + AdamW). "
            "Parameters: " + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in st["params"].items()) + ".",
            "",
            "| stack | median (s) | best (s) | vs peer: median | best | CPU time |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for title, table in (("inference", inf), ("training step", tr)):
            for k, v in table.items():
                vs = _ratio_cells(table, ref, k) if ref else "– | – | –"
                lines.append(f"| {title}: {k} | {v['median']:.3f} | {v['best']:.3f} | {vs} |")
        lines += ["", "(× = how many times faster than the peer; > 1 is faster.)"]
        if "audiofm (baseline)" in inf:
            lines += [
                "",
                f"audiofm now vs its kernel at {args.baseline_rev} (same weights; "
                + ", ".join(f"{k} {v:.1e}" for k, v in st["check"].items()) + "):",
                "",
                "| | speed-up median | best | CPU time |",
                "|---|---:|---:|---:|",
                f"| inference | {_ratio_cells(inf, 'audiofm (baseline)', 'audiofm')} |",
            ]
            for mode in ("recompute", "no recompute"):
                lines.append(f"| training step, {mode} | "
                             f"{_ratio_cells(tr, f'audiofm (baseline), {mode}', f'audiofm, {mode}')} |")
    if enc:
        lines += [
            "",
            "Whole tiny encoders ("
            + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in enc["params"].items())
            + "), one-pass embedding, batch 1:",
            "",
            "| clip (s) | tokens | msm_xlstm_tiny (s) | msm_vit_tiny (s) | xLSTM / Transformer time, median |"
            " best | CPU time |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s, r in enc["lengths"].items():
            x, v = r["msm_xlstm_tiny"], r["msm_vit_tiny"]
            lines.append(f"| {s} | {r['tokens']} | {x['median']:.3f} | {v['median']:.3f} | "
                         f"{x['median'] / v['median']:.2f} | {x['best'] / v['best']:.2f} | "
                         f"{x['cpu_median'] / v['cpu_median']:.2f} |")
    if res.get("note"):
        lines += ["", res["note"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--chunk", type=int, default=None, help="audiofm chunk length (default: the config's)")
    ap.add_argument("--peer-chunk", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=6000, help="inference length of the stacks")
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--train-tokens", type=int, default=496)
    ap.add_argument("--seconds", type=float, nargs="*", default=[120], help="encoder clip lengths (none: skip)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--repeat-budget", type=float, default=60.0,
                    help="no further encoder round once one round took this many seconds")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--baseline-rev", default=None, help="also time audiofm's xlstm.py at this git revision")
    ap.add_argument("--no-peer", action="store_true", help="leave the xlstm package out")
    ap.add_argument("--no-stacks", action="store_true", help="time only the encoders")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "xlstm")
    args = ap.parse_args(argv)

    import torch

    from audiofm.models.backbones.xlstm import XLSTMConfig

    if args.chunk is None:
        args.chunk = XLSTMConfig.chunk_size
    torch.set_num_threads(args.threads)
    note = ""
    with_peer = not args.no_peer
    if with_peer:
        try:
            import xlstm.xlstm_large.model  # noqa: F401
        except ImportError as err:
            with_peer = False
            note = (f"the xlstm package is not importable ({err}; pip install --no-deps xlstm mlstm_kernels "
                    "einops): its rows are missing.")
    baseline = load_baseline(args.baseline_rev) if args.baseline_rev and not args.no_stacks else None
    load_start = os.getloadavg()[0]
    print(f"load average at start {load_start:.2f}", flush=True)
    res: dict[str, Any] = {"threads": torch.get_num_threads(), "load_start": load_start, "note": note,
                           "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    res["stacks"] = {} if args.no_stacks else bench_stacks(args, with_peer, baseline)
    res["encoders"] = (bench_encoders(("msm_xlstm_tiny", "msm_vit_tiny"), args.seconds, args.repeats,
                                      args.repeat_budget, stat="median", rotate=True) if args.seconds else {})
    res["load_end"] = os.getloadavg()[0]
    table = markdown(res, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "xlstm.md").write_text(table + "\n")
    (args.out / "xlstm.json").write_text(json.dumps(res, indent=2) + "\n")
    print("\n" + table)
    print(f"\nwrote {args.out}/xlstm.{{md,json}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
