"""Loss curves of several pretraining runs on one chart, against wall time and against steps.

    python benchmarks/plot_pretrain_runs.py runs/pre_vit_tiny runs/pre_mamba_tiny runs/pre_xlstm_tiny \\
        --out docs/img/pretrain_backbones.png

Reads each run's ``metrics.jsonl`` and ``run_config.yaml``; prints a markdown table (steps, training
seconds, clips seen, final loss as the mean of the last 5 logged values) and writes the PNG.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml


def read_run(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss" in r]
    if not rows:
        raise SystemExit(f"{run}: metrics.jsonl has no loss rows")
    cfg = yaml.safe_load((run / "run_config.yaml").read_text())
    tail = [r["loss"] for r in rows[-5:]]
    return {"run": run.name, "model": cfg.get("model"), "batch": cfg["train"]["batch_size"],
            "steps": rows[-1]["step"], "seconds": rows[-1]["elapsed_s"],
            "final_loss": sum(tail) / len(tail), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = ap.parse_args(argv)
    runs = [read_run(r) for r in args.runs]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for r in runs:
        steps = [x["step"] for x in r["rows"]]
        secs = [x["elapsed_s"] / 60 for x in r["rows"]]
        loss = [x["loss"] for x in r["rows"]]
        axes[0].plot(secs, loss, label=r["model"] or r["run"], lw=1)
        axes[1].plot(steps, loss, label=r["model"] or r["run"], lw=1)
    axes[0].set_xlabel("training minutes")
    axes[1].set_xlabel("optimizer steps")
    axes[1].set_xscale("log")
    axes[0].set_ylabel("masked-patch MSE (normalised targets)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print("| run | model | steps | batch | clips seen | training s | final loss (last 5 logs) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in runs:
        print(f"| {r['run']} | {r['model']} | {r['steps']} | {r['batch']} | {r['steps'] * r['batch']} | "
              f"{r['seconds']:.0f} | {r['final_loss']:.3f} |")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
