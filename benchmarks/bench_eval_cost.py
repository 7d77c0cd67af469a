"""Where evaluation time goes: embedding vs probing on a real task, and probe cost at scale.

    python benchmarks/bench_eval_cost.py /work/shared/data/tasks/fsdd-digit      # + synthetic part
    python benchmarks/bench_eval_cost.py --n 10000 --dim 192 --classes 20        # synthetic only

Part 1 (a HEAR task dir given): embeds every clip with the log-mel baseline (no cache), then
runs each probe over all rounds with one seed; reports seconds for each and the share of
embedding. Part 2: probes a synthetic set of ``n`` clips × ``dim`` dims in ``classes`` Gaussian
clusters (60/20/20 train/valid/test) with all three probes at their default grids, plus the kNN
search with both backends. Prints markdown tables with the machine, thread count and load
average (timings on a shared machine are noisy; compare ratios within one run).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _machine(threads: int) -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
            f"{threads} thread(s), load average {load[0]:.1f} at start")


def bench_task(task_dir: Path, seeds: int) -> list[str]:
    from audiofm.data import read_hear_task
    from audiofm.data.tasks import encode_labels
    from audiofm.eval.baselines import LogMelEmbedder
    from audiofm.eval.cache import EmbeddingCache, get_embeddings
    from audiofm.eval.probes import DETERMINISTIC_PROBES, PROBES, ProbeConfig, run_probe
    from audiofm.eval.suite import round_data

    task = read_hear_task(task_dir)
    emb = LogMelEmbedder()
    with tempfile.TemporaryDirectory() as tmp:
        got = get_embeddings(emb, task.name, task.rows, cache=EmbeddingCache(tmp), progress=False)
        t0 = time.perf_counter()
        get_embeddings(emb, task.name, task.rows, cache=EmbeddingCache(tmp), progress=False)
        hit = time.perf_counter() - t0
    labels = encode_labels(task.rows, task.vocabulary, task.prediction_type)
    cfg = ProbeConfig()
    probe_s = dict.fromkeys(PROBES, 0.0)
    scores: dict[str, list[float]] = {p: [] for p in PROBES}
    rounds = task.rounds()
    for split in rounds:
        data = round_data(task, got.clip, labels, split)
        for p in PROBES:
            for seed in range(1 if p in DETERMINISTIC_PROBES else seeds):
                t0 = time.perf_counter()
                res = run_probe(p, data, cfg, seed=seed)
                probe_s[p] += time.perf_counter() - t0
                scores[p].append(next(iter(res.metrics.values())))
    total_probe = sum(probe_s.values())
    n = len(task.rows)
    lines = [f"### {task.name}: {n} clips, {len(rounds)} rounds, log-mel baseline, MLP seeds: {seeds}", "",
             "| stage | seconds | share | note |", "| --- | ---: | ---: | --- |",
             f"| embed (decode + log-mel) | {got.seconds:.2f} | {got.seconds / (got.seconds + total_probe):.0%} | "
             f"{n / got.seconds:.0f} clips/s |",
             f"| cache hit (load .npz) | {hit:.3f} | – | replaces the embedding step on re-runs |"]
    for p in PROBES:
        lines.append(f"| probe {p} (all rounds) | {probe_s[p]:.2f} | "
                     f"{probe_s[p] / (got.seconds + total_probe):.0%} | mean score {np.mean(scores[p]):.3f} |")
    lines.append(f"| **total** | {got.seconds + total_probe:.2f} | 100% | |")
    return [*lines, ""]


def bench_synthetic(n: int, dim: int, classes: int, separation: float, seed: int = 0) -> list[str]:
    from audiofm.eval.probes import PROBES, ProbeConfig, ProbeData, run_probe
    from audiofm.search import faiss_available, knn_search

    rng = np.random.default_rng(seed)
    means = rng.standard_normal((classes, dim)) * separation
    y = rng.integers(0, classes, n)
    x = (means[y] + rng.standard_normal((n, dim))).astype(np.float32)
    a, b = int(0.6 * n), int(0.8 * n)
    data = ProbeData(x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:], "multiclass", classes)
    lines = [f"### Synthetic: {n} × {dim}, {classes} Gaussian classes, mean scale {separation} "
             f"(train {a} / valid {b - a} / test {n - b})", "",
             "| probe | seconds | accuracy | chosen |", "| --- | ---: | ---: | --- |"]
    cfg = ProbeConfig()
    total = 0.0
    for p in PROBES:
        t0 = time.perf_counter()
        res = run_probe(p, data, cfg, seed=0)
        dt = time.perf_counter() - t0
        total += dt
        chosen = {k: v for k, v in res.hparams.items() if not isinstance(v, dict) and k != "hidden_dim"}
        lines.append(f"| {p} | {dt:.2f} | {res.metrics['top1_acc']:.3f} | {chosen} |")
    lines.append(f"| **all three** | {total:.2f} | | |")
    base = x[:a] / np.linalg.norm(x[:a], axis=1, keepdims=True)
    q = x[a:] / np.linalg.norm(x[a:], axis=1, keepdims=True)
    lines += ["", "| exact kNN search, k=50, 4000 queries | seconds |", "| --- | ---: |"]
    for backend in ("numpy", "faiss") if faiss_available() else ("numpy",):
        t0 = time.perf_counter()
        knn_search(q, base, 50, metric="ip", backend=backend)
        lines.append(f"| {backend} | {time.perf_counter() - t0:.2f} |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("task", nargs="?", help="a HEAR task directory (e.g. .../tasks/fsdd-digit)")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--separation", type=float, default=0.12,
                    help="std of the class means (noise std 1); 0.12 gives a hard, non-separable problem")
    ap.add_argument("--seeds", type=int, default=1, help="MLP seeds in the task part")
    ap.add_argument("--threads", type=int, default=1, help="torch/BLAS/faiss threads")
    args = ap.parse_args(argv)

    from audiofm.eval.suite import limit_threads

    print(f"# bench_eval_cost — {_machine(args.threads)}\n")
    print(f"command: `python benchmarks/bench_eval_cost.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n")
    with limit_threads(args.threads):
        # warm-up: first use of torch.optim / scipy / sklearn imports costs seconds once per process
        from audiofm.eval.probes import MLPProbeConfig, ProbeData, linear_probe, mlp_probe

        z = np.random.default_rng(0).standard_normal((40, 4)).astype(np.float32)
        yy = np.arange(40) % 2
        warm = ProbeData(z, yy, z, yy, z, yy, "multiclass", 2)
        linear_probe(warm)
        mlp_probe(warm, MLPProbeConfig(hidden_dim=8, max_epochs=2))
        if args.task:
            print("\n".join(bench_task(Path(args.task), args.seeds)))
        print("\n".join(bench_synthetic(args.n, args.dim, args.classes, args.separation)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
