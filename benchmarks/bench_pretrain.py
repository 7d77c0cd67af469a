"""Pretraining throughput, model FLOP utilisation (MFU) and front-end speed on this machine.

    python benchmarks/bench_pretrain.py --models msm_vit_tiny --seconds 4 10 --precision fp32 bf16

For each model × clip length × precision: clips/s of full optimizer steps (frontend + masking +
forward + backward + AdamW) on random audio, FLOPs per step counted by torch's FlopCounterMode
(matmuls, convolutions, attention), and MFU = achieved FLOP/s ÷ the matmul rate measured in the
same run at the same precision. The front end is timed as a multiple of real time. Results go to
``--out`` as JSON and markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from audiofm.frontend import FrontendConfig, LogMel
from audiofm.models import count_parameters, create_model


def matmul_rate(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    """Sustained FLOP/s of square matmuls at ``dtype`` on this machine."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def train_step_fn(name: str, seconds: float, batch: int, precision: str):
    torch.manual_seed(0)
    model = create_model(name, segment_seconds=seconds)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    n = model.cfg.segment_samples
    wave = torch.randn(batch, n) * 0.1
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(wave, model.sample_mask(batch, n, gen))["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return model, step


def bench_train(name: str, seconds: float, batch: int, precision: str, steps: int) -> dict:
    model, step = train_step_fn(name, seconds, batch, precision)
    with FlopCounterMode(display=False) as fc:
        step()
    flops = fc.get_total_flops()
    step()  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    dt = (time.perf_counter() - t0) / steps
    cpu = (time.process_time() - c0) / steps  # with --threads 1: the step's cost whatever the load
    return {"model": name, "clip_seconds": seconds, "batch": batch, "precision": precision,
            "encoder_params_M": round(count_parameters(model.encoder) / 1e6, 2),
            "step_seconds": round(dt, 3), "cpu_step_seconds": round(cpu, 3), "clips_per_s": round(batch / dt, 2),
            "gflop_per_step": round(flops / 1e9, 1), "achieved_gflops": round(flops / dt / 1e9, 1)}


def bench_frontend(batch: int = 16, seconds: float = 10.0, reps: int = 20) -> dict:
    fe = LogMel(FrontendConfig())
    x = torch.randn(batch, int(seconds * 16000))
    fe(x)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for _ in range(reps):
            fe(x)
    dt = (time.perf_counter() - t0) / reps
    return {"batch": batch, "clip_seconds": seconds, "ms_per_batch": round(dt * 1e3, 2),
            "x_real_time": round(batch * seconds / dt, 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["msm_vit_tiny"])
    ap.add_argument("--seconds", nargs="+", type=float, default=[4.0])
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    peak = {p: matmul_rate(torch.float32 if p == "fp32" else torch.bfloat16) for p in args.precision}
    rows = []
    for name in args.models:
        for s in args.seconds:
            for p in args.precision:
                r = bench_train(name, s, args.batch, p, args.steps)
                r["mfu_pct"] = round(100 * r["achieved_gflops"] * 1e9 / peak[p], 1)
                rows.append(r)
                print(json.dumps(r), flush=True)
    fe = bench_frontend()
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "matmul_gflops": {p: round(v / 1e9, 1) for p, v in peak.items()}}
    (out / "pretrain_throughput.json").write_text(json.dumps({"machine": info, "train": rows, "frontend": fe},
                                                             indent=2))
    # CPU time per step relative to the first model's at the same clip length and precision
    first = {(r["clip_seconds"], r["precision"]): r["cpu_step_seconds"] for r in reversed(rows)}
    lines = [f"machine: {info}", "", "| model | clip s | batch | precision | enc. params (M) | s/step | CPU s/step | "
             f"× {args.models[0]} (CPU) | clips/s | GFLOP/step | GFLOP/s | MFU % |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['clip_seconds']:g} | {r['batch']} | {r['precision']} | {r['encoder_params_M']} | "
              f"{r['step_seconds']} | {r['cpu_step_seconds']} | "
              f"{r['cpu_step_seconds'] / first[(r['clip_seconds'], r['precision'])]:.2f} | {r['clips_per_s']} | "
              f"{r['gflop_per_step']} | {r['achieved_gflops']} | {r['mfu_pct']} |" for r in rows]
    lines += ["", f"front end: {fe['batch']}×{fe['clip_seconds']:g} s clips in {fe['ms_per_batch']} ms = "
              f"{fe['x_real_time']:.0f}× real time"]
    (out / "pretrain_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
