"""Embedding-style forward cost of the tiny backbones vs clip length (CPU, batch 1, no grad).

    python benchmarks/bench_backbone_scaling.py                          # 10 30 60 120 300 600 s
    python benchmarks/bench_backbone_scaling.py --seconds 10 30 --backbones mamba xlstm --out /tmp/b

Tokens for a clip of S seconds with the default front end (10 ms hop, 128 mel bins, 16×16
patches): 8 × floor(S·100/16). Backbones are built at the backbone level with the tiny size
(Transformer dim 192 depth 12 heads 3, SDPA attention; Mamba and xLSTM from their
``preset_fields("tiny")``, parameter-matched and bidirectional).

Each (backbone, length) runs in its own subprocess. Latency: one warm-up forward on at most 2048
tokens, then ``--repeats`` timed forwards; the table shows the minimum wall time (the median
and the process CPU time, steadier on a loaded machine with ``--threads 1``, are in the JSON).
Peak memory: the subprocess's ``ru_maxrss`` after the timed forwards minus its ``ru_maxrss``
right after building the model, i.e. the extra resident memory the full-length forward needed
(activations, attention/scan workspaces), not counting weights.

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

SECONDS = [10, 30, 60, 120, 300, 600]
BACKBONES = ["transformer", "mamba", "xlstm"]
TRANSFORMER_TINY = {"dim": 192, "depth": 12, "heads": 3}
WARMUP_TOKENS = 2048


def tokens_for(seconds: float) -> int:
    """Token count of a clip with the default front end (10 ms hop, 128 mels, 16×16 patches)."""
    return 8 * int(seconds * 100 // 16)


def _maxrss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def build(name: str):  # -> Backbone
    import importlib

    from audiofm.models.backbones import build_backbone

    if name == "transformer":
        return build_backbone("transformer", **TRANSFORMER_TINY)
    fields = importlib.import_module(f"audiofm.models.backbones.{name}").preset_fields("tiny")
    return build_backbone(name, **fields)


def worker(name: str, tokens: int, repeats: int, threads: int | None) -> dict:
    """Time ``repeats`` forwards of backbone ``name`` on ``tokens`` tokens in this process."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(name).eval()
    base = _maxrss_mib()
    with torch.inference_mode():
        model(torch.randn(1, min(tokens, WARMUP_TOKENS), model.dim))
        x = torch.randn(1, tokens, model.dim)
        times, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            y = model(x)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            del y
    return {
        "backbone": name,
        "tokens": tokens,
        "params": sum(p.numel() for p in model.parameters()),
        "seconds_min": min(times),
        "seconds_median": statistics.median(times),
        "cpu_seconds_min": min(cpu),
        "peak_mib": _maxrss_mib() - base,
        "threads": torch.get_num_threads(),
    }


def run_one(name: str, tokens: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, str(tokens), "--repeats", str(args.repeats)]
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
        f"Forward latency / extra peak RSS, batch 1, no grad ({platform.machine()}, "
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
    lines += ["", f"Fitted scaling exponent (time ∝ tokens^k): {fit}"]
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
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per (backbone, length)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "backbone_scaling")
    ap.add_argument("--worker", nargs=2, metavar=("BACKBONE", "TOKENS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.repeats, args.threads)))
        return 0

    results = []
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
