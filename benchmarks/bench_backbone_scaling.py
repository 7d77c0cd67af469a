"""Embedding latency and memory of the tiny encoders vs clip length (CPU, batch 1, one pass).

    python benchmarks/bench_backbone_scaling.py                          # 10 30 60 120 300 600 s
    python benchmarks/bench_backbone_scaling.py --seconds 10 30 --backbones mamba xlstm --out /tmp/b
    python benchmarks/bench_backbone_scaling.py --seconds 10 120 --precision fp32 bf16 --threads 1

Tokens for a clip of S seconds with the default front end (10 ms hop, 128 mel bins, 16×16
patches): 8 × floor(S·100/16). The encoders are the tiny presets (Transformer dim 192 depth 12
heads 3 with SDPA attention; Mamba, Mamba-2 and xLSTM parameter-matched and bidirectional).

What is timed is the whole embedding path of the tiny encoder (``msm_{vit,mamba,mamba2,xlstm}_tiny``):
log-mel front end → patches → patch embedding + positions → backbone → norm → frame embeddings
(``AudioEncoder.frame_embeddings``), on random audio, in one pass (no chunking), inference mode.
Each (backbone, length) runs in its own subprocess. Latency: one warm-up forward on at most 2048
tokens, then up to ``--repeats`` timed forwards (no further repeat once ``--repeat-budget``
seconds have been spent); the table shows the minimum wall time (the median and the process CPU
time, steadier on a loaded machine with ``--threads 1``, are in the JSON). Peak memory: the
subprocess's ``ru_maxrss`` after the timed forwards minus its ``ru_maxrss`` right after building
the model, i.e. the extra resident memory the full-length pass needed (input audio, activations,
attention/scan workspaces), not counting weights.

``--precision fp32 bf16`` times each backbone in both (bf16: the forward under bf16 autocast, as
``audiofm.load(path, precision="bf16")``), as columns ``name`` and ``name/bf16`` of one run.

Writes ``scaling.json``, ``scaling.md`` and ``scaling.png`` (log-log time vs tokens, with the
least-squares slope of log time on log tokens per backbone) to ``--out``. Timings on a shared
machine are noisy; compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _timing import samples_for, tokens_for

SECONDS = [10, 30, 60, 120, 300, 600]
BACKBONES = ["transformer", "mamba", "mamba2", "xlstm"]
WARMUP_TOKENS = 2048


def _maxrss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


PRESETS = {"transformer": "msm_vit_tiny", "mamba": "msm_mamba_tiny", "mamba2": "msm_mamba2_tiny",
           "xlstm": "msm_xlstm_tiny"}


def build(name: str):  # -> AudioEncoder
    from audiofm.models.encoder import AudioEncoder
    from audiofm.models.registry import model_config

    return AudioEncoder(model_config(PRESETS[name.split("/")[0]]).encoder)


def worker(name: str, tokens: int, repeats: int, threads: int | None, budget: float) -> dict:
    """Time up to ``repeats`` one-pass embeddings by encoder ``name`` of audio giving ``tokens``
    (``name/bf16``: under bf16 autocast)."""
    import contextlib

    import torch

    amp = (torch.autocast("cpu", dtype=torch.bfloat16) if name.endswith("/bf16")
           else contextlib.nullcontext())

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(name).eval()
    base = _maxrss_mib()
    with torch.inference_mode(), amp:
        model.frame_embeddings(0.1 * torch.randn(1, samples_for(min(tokens, WARMUP_TOKENS))))
        x = 0.1 * torch.randn(1, samples_for(tokens))
        times, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            y, _ = model.frame_embeddings(x)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            assert y.shape[1] * 8 == tokens, (y.shape, tokens)
            del y
            if sum(times) > budget:
                break
    return {
        "backbone": name,
        "tokens": tokens,
        "params": sum(p.numel() for p in model.parameters()),
        "repeats": len(times),
        "seconds_min": min(times),
        "seconds_median": statistics.median(times),
        "cpu_seconds_min": min(cpu),
        "peak_mib": _maxrss_mib() - base,
        "threads": torch.get_num_threads(),
    }


def run_one(name: str, tokens: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, str(tokens), "--repeats", str(args.repeats),
           "--repeat-budget", str(args.repeat_budget)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"backbone": name, "tokens": tokens, "error": f"timeout after {args.timeout} s"}
    if done.returncode != 0:
        return {"backbone": name, "tokens": tokens, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of log(time) on log(tokens)."""
    import numpy as np

    if len(points) < 2:
        return None
    x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def markdown(results: list[dict], seconds: list[float], backbones: list[str], exponents: dict) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    threads = next((r["threads"] for r in results if "threads" in r), "?")
    lines = [
        f"One-pass embedding latency / extra peak RSS, batch 1, no grad ({platform.machine()}, "
        f"{os.cpu_count()} CPUs, {threads} thread(s), load {load:.1f} at end)",
        "",
        "| clip (s) | tokens | " + " | ".join(backbones) + " |",
        "|---|---|" + "---|" * len(backbones),
    ]
    by_key = {(r["backbone"], r["tokens"]): r for r in results}
    for s in seconds:
        n = tokens_for(s)
        cells = []
        for b in backbones:
            r = by_key.get((b, n))
            if r is None:
                cells.append("–")
            elif "error" in r:
                cells.append(f"failed ({r['error']})")
            else:
                cells.append(f"{r['seconds_min']:.3f} s / {r['peak_mib']:.0f} MiB")
        lines.append(f"| {s:g} | {n} | " + " | ".join(cells) + " |")
    fit = ", ".join(f"{b} {e:.2f}" if e is not None else f"{b} n/a" for b, e in exponents.items())
    lines += ["", f"Fitted scaling exponent (time ∝ tokens^k, all lengths): {fit}"]
    for b in backbones:
        if b == "transformer" or "transformer" not in backbones:
            continue
        faster = [s for s in seconds if (r := by_key.get((b, tokens_for(s)))) and "error" not in r
                  and (t := by_key.get(("transformer", tokens_for(s)))) and "error" not in t
                  and r["seconds_min"] < t["seconds_min"]]
        first = None  # the shortest length from which on every measured length is faster
        for sec in sorted(seconds, reverse=True):
            if sec not in faster:
                break
            first = sec
        lines.append(f"{b} faster than the Transformer from {first:g} s on" if first is not None
                     else f"{b} not faster than the Transformer at any measured length")
    return "\n".join(lines)


def plot(results: list[dict], exponents: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for b, k in exponents.items():
        pts = sorted((r["tokens"], r["seconds_min"]) for r in results if r["backbone"] == b and "error" not in r)
        if pts:
            label = f"{b} (k={k:.2f})" if k is not None else b
            ax.loglog(*zip(*pts), marker="o", label=label)
    ax.set_xlabel("tokens")
    ax.set_ylabel("forward seconds (batch 1)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=SECONDS, help="clip lengths in seconds")
    ap.add_argument("--backbones", nargs="+", default=BACKBONES, choices=BACKBONES)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--repeat-budget", type=float, default=60.0,
                    help="no further timed repeat once this many seconds have been spent on one length")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                    help="precisions to time; bf16 runs under bf16 autocast (default: fp32)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per (backbone, length)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "backbone_scaling")
    ap.add_argument("--worker", nargs=2, metavar=("BACKBONE", "TOKENS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.repeats, args.threads, args.repeat_budget)))
        return 0

    results = []
    args.backbones = [b if p == "fp32" else f"{b}/{p}" for b in args.backbones for p in args.precision]
    for b in args.backbones:
        for s in args.seconds:
            r = run_one(b, tokens_for(s), args)
            results.append(r)
            shown = r.get("error") or f"{r['seconds_min']:.3f} s, {r['peak_mib']:.0f} MiB"
            print(f"{b:12s} {s:6g} s clip {tokens_for(s):6d} tokens: {shown}", flush=True)
            if "error" in r:
                break  # longer clips would fail too
    exponents = {
        b: slope([(r["tokens"], r["seconds_min"]) for r in results if r["backbone"] == b and "error" not in r])
        for b in args.backbones
    }
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(results, args.seconds, args.backbones, exponents)
    (args.out / "scaling.md").write_text(table + "\n")
    (args.out / "scaling.json").write_text(
        json.dumps({"results": results, "exponents": exponents, "seconds": args.seconds}, indent=2) + "\n"
    )
    plot(results, exponents, args.out / "scaling.png")
    print("\n" + table)
    print(f"\nwrote {args.out}/scaling.{{md,json,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
