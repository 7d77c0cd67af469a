"""Mamba-1 (S6, audiofm) vs Mamba-2 (SSD, audiofm) vs mambapy, CPU, in one process.

    OMP_NUM_THREADS=1 python benchmarks/bench_mamba2.py                       # everything below
    OMP_NUM_THREADS=1 python benchmarks/bench_mamba2.py --seconds 10 60 --repeats 2 --out /tmp/m2

Three measurements, every model timed in the same process, repeats interleaved round-robin
(model A, B, C, A, B, C, ...) so that a change of machine load hits all of them alike; the table
shows the best of ``--repeats`` and the ratios between them (compare ratios, not seconds):

1. **Layer stacks** at equal width and depth (default 192 × 4, forward direction, since mambapy
   is causal only): audiofm ``mamba`` (d_state 16, expand 2, chunked S6 scan), audiofm
   ``mamba2`` (d_state 64, headdim 64, expand 2, SSD chunked matmul scan; every
   ``--chunk-sizes``) and ``mambapy.mamba.Mamba`` (d_state 16, expand 2, parallel scan; pip
   install mambapy — a benchmark-only dependency, skipped with a note when missing).
   Inference: one pass over ``--tokens`` tokens, batch 1, inference mode. Training step: batch
   ``--train-batch`` × ``--train-tokens``, forward, mean-square loss, backward, AdamW step.
2. **Whole tiny encoders** (``msm_mamba_tiny`` vs ``msm_mamba2_tiny``, both bidirectional and
   parameter-matched): the embedding path (log-mel → patches → backbone → norm → frames) on
   ``--seconds`` of random audio, one pass, batch 1, inference mode.

Writes ``mamba2.json`` and ``mamba2.md`` to ``--out``. The load average at start and end is
printed with the table: the machine is shared, so only the same-run ratios are meaningful.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _timing import bench_encoders, interleaved, n_params

SECONDS = [10, 60, 120, 300]


def stacks(dim: int, depth: int, chunk_sizes: list[int], with_mambapy: bool) -> dict[str, Any]:
    """The layer stacks to compare, by label."""
    import torch

    from audiofm.models.backbones import build_backbone

    out: dict[str, Any] = {}
    torch.manual_seed(0)
    out["mamba1"] = build_backbone("mamba", dim=dim, depth=depth, direction="forward")
    for q in chunk_sizes:
        torch.manual_seed(0)
        out[f"mamba2 (chunk {q})"] = build_backbone("mamba2", dim=dim, depth=depth, direction="forward", chunk_size=q)
    if with_mambapy:
        from mambapy.mamba import Mamba, MambaConfig

        torch.manual_seed(0)
        out["mambapy"] = Mamba(MambaConfig(d_model=dim, n_layers=depth))
    return out


def bench_stacks(args: argparse.Namespace, with_mambapy: bool) -> dict[str, Any]:
    import torch

    models = stacks(args.dim, args.depth, args.chunk_sizes, with_mambapy)
    x_inf = torch.randn(1, args.tokens, args.dim)
    x_train = torch.randn(args.train_batch, args.train_tokens, args.dim)
    opts = {label: torch.optim.AdamW(m.parameters(), lr=1e-4) for label, m in models.items()}

    def infer(label: str) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                models[label].eval()(x_inf)
        return run

    def train(label: str) -> Callable[[], None]:
        def run() -> None:
            m, opt = models[label].train(), opts[label]
            opt.zero_grad(set_to_none=True)
            m(x_train).square().mean().backward()
            opt.step()
        return run

    def warm(label: str) -> None:
        with torch.inference_mode():
            models[label].eval()(x_inf[:, :512])
        train(label)()

    inference = interleaved({k: infer(k) for k in models}, args.repeats, warm)
    training = interleaved({k: train(k) for k in models}, args.repeats)
    return {
        "params": {k: n_params(m) for k, m in models.items()},
        "inference": inference,
        "training": training,
    }


def markdown(res: dict[str, Any], args: argparse.Namespace) -> str:
    st, enc = res["stacks"], res["encoders"]
    m1 = "mamba1"
    lines = [
        f"Mamba-1 vs Mamba-2 (SSD) vs mambapy, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{res['threads']} thread(s), load average {res['load_start']:.2f} at start / {res['load_end']:.2f} at end; "
        f"best of {args.repeats}, repeats interleaved",
    ]
    if st:
        lines += [
            "",
            f"Layer stacks, width {args.dim}, depth {args.depth}, forward direction "
            f"(inference: 1 × {args.tokens} tokens; training step: {args.train_batch} × {args.train_tokens} tokens, "
            "forward + backward + AdamW):",
            "",
            "| stack | params | inference (s) | training step (s) | inference vs mamba1 | training vs mamba1 |"
            " inference vs mambapy | training vs mambapy |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        inf, tr = st["inference"], st["training"]
        for k in inf:
            rel = f"{inf[m1]['best'] / inf[k]['best']:.2f}× | {tr[m1]['best'] / tr[k]['best']:.2f}×"
            if "mambapy" in inf:
                vs = f"{inf['mambapy']['best'] / inf[k]['best']:.2f}× | {tr['mambapy']['best'] / tr[k]['best']:.2f}×"
            else:
                vs = "– | –"
            secs = f"{inf[k]['best']:.3f} | {tr[k]['best']:.3f}"
            lines.append(f"| {k} | {st['params'][k] / 1e6:.2f} M | {secs} | {rel} | {vs} |")
        lines += ["", "(× = how many times faster than the named reference; > 1 is faster.)"]
    if enc:
        lines += [
            "",
            "Whole tiny encoders (bidirectional, parameter-matched: "
            + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in enc["params"].items())
            + "), one-pass embedding, batch 1:",
            "",
            "| clip (s) | tokens | msm_mamba_tiny (s) | msm_mamba2_tiny (s) | Mamba-2 speed-up |"
            " speed-up in process CPU time |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for s, r in enc["lengths"].items():
            a, b = r["msm_mamba_tiny"]["best"], r["msm_mamba2_tiny"]["best"]
            ca, cb = r["msm_mamba_tiny"]["cpu_best"], r["msm_mamba2_tiny"]["cpu_best"]
            lines.append(f"| {s} | {r['tokens']} | {a:.3f} | {b:.3f} | {a / b:.2f}× | {ca / cb:.2f}× |")
    if res.get("note"):
        lines += ["", res["note"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=6000, help="inference length of the stacks")
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--train-tokens", type=int, default=496)
    ap.add_argument("--chunk-sizes", type=int, nargs="+", default=[32, 64], help="Mamba-2 chunk lengths")
    ap.add_argument("--seconds", type=float, nargs="*", default=SECONDS, help="encoder clip lengths (none: skip)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--repeat-budget", type=float, default=60.0,
                    help="no further encoder round once one round took this many seconds")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--no-mambapy", action="store_true", help="leave mambapy out")
    ap.add_argument("--no-stacks", action="store_true", help="time only the encoders")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "mamba2")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    note = ""
    with_mambapy = not args.no_mambapy
    if with_mambapy:
        try:
            import mambapy  # noqa: F401
        except ImportError:
            with_mambapy = False
            note = "mambapy is not installed (pip install mambapy): its rows are missing."
    load_start = os.getloadavg()[0]
    print(f"load average at start {load_start:.2f}", flush=True)
    res: dict[str, Any] = {"threads": torch.get_num_threads(), "load_start": load_start, "note": note,
                           "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    res["stacks"] = {} if args.no_stacks else bench_stacks(args, with_mambapy)
    if res["stacks"]:
        print("  stacks: " + ", ".join(f"{k} {v['best']:.3f} / {res['stacks']['training'][k]['best']:.3f} s"
                                       for k, v in res["stacks"]["inference"].items()), flush=True)
    res["encoders"] = (bench_encoders(("msm_mamba_tiny", "msm_mamba2_tiny"), args.seconds, args.repeats,
                                      args.repeat_budget) if args.seconds else {})
    res["load_end"] = os.getloadavg()[0]
    table = markdown(res, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mamba2.md").write_text(table + "\n")
    (args.out / "mamba2.json").write_text(json.dumps(res, indent=2) + "\n")
    print("\n" + table)
    print(f"\nwrote {args.out}/mamba2.{{md,json}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
