"""Shard reading throughput against the folder reader, on the same clips, in one run.

    python benchmarks/bench_shards.py --data /work/shared/data/tasks --shard-size 1000 --repeats 3

Writes the clips of ``--data`` (any supported input) as shards in a temporary directory (timed),
then reads every clip through the one row loader (:func:`audiofm.data.dataset.load_row`: bytes,
FLAC decode, mono, resampling to ``--sample-rate`` when the file's rate differs) from the
source files and from the shards, in dataset order and in a random order (training's access
pattern), ``--repeats`` times each after one warm-up pass (so both read from the page cache:
what is compared is the reader, not the disk). Reports clips/s, audio seconds per second and
the ratio shards ÷ folder; ``--out`` writes JSON and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from audiofm.data import read_rows, write_shards
from audiofm.data.dataset import load_row, row_duration


def read_all(rows: list[Any], order: list[int], sr: int) -> float:
    """Seconds to decode every row once, in ``order``."""
    t0 = time.perf_counter()
    for i in order:
        load_row(rows[i], sr)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = os.environ.get("AUDIOFM_DATA")
    ap.add_argument("--data", default=str(Path(data) / "tasks") if data else None, required=not data,
                    help="any supported input (default: $AUDIOFM_DATA/tasks)")
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--max-clips", type=int, default=None, help="use the first N clips (default: all)")
    ap.add_argument("--sample-rate", type=int, default=16000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", help="write <out>.json and <out>.md")
    args = ap.parse_args()

    rows = read_rows(args.data)[: args.max_clips]
    audio_s = sum(row_duration(r) for r in rows)
    src_bytes = sum(os.stat(r.path).st_size for r in rows)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_shards(rows, Path(tmp) / "shards", args.shard_size)
        write_s = time.perf_counter() - t0
        shard_rows = read_rows(Path(tmp) / "shards")
        n = len(rows)
        orders = {"sequential": list(range(n)),
                  "random": [int(i) for i in np.random.default_rng(0).permutation(n)]}
        results: list[dict[str, Any]] = []
        for name, order in orders.items():
            for reader, rs in (("folder", rows), ("shards", shard_rows)):
                read_all(rs, order, args.sample_rate)  # warm-up: page cache, imports
                best = min(read_all(rs, order, args.sample_rate) for _ in range(args.repeats))
                results.append({"order": name, "reader": reader, "clips_per_s": n / best,
                                "audio_x_realtime": audio_s / best})
    by = {(r["order"], r["reader"]): r for r in results}
    for r in results:
        r["ratio_vs_folder"] = r["clips_per_s"] / by[(r["order"], "folder")]["clips_per_s"]
    report = {"data": args.data, "clips": n, "audio_hours": audio_s / 3600, "source_mb": src_bytes / 2**20,
              "shards": -(-n // args.shard_size), "shard_size": args.shard_size, "write_clips_per_s": n / write_s,
              "sample_rate": args.sample_rate, "repeats": args.repeats, "results": results,
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "python": platform.python_version()}}
    lines = [f"{n} clips ({audio_s / 3600:.2f} h, {src_bytes / 2**20:.0f} MB) in {report['shards']} shards of "
             f"{args.shard_size}; written at {n / write_s:.0f} clips/s", "",
             "| order | reader | clips/s | audio × real time | shards ÷ folder |", "|---|---|---|---|---|"]
    lines += [f"| {r['order']} | {r['reader']} | {r['clips_per_s']:.0f} | {r['audio_x_realtime']:.0f} | "
              f"{r['ratio_vs_folder']:.2f} |" for r in results]
    print("\n".join(lines))
    if args.out:
        Path(args.out).with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        Path(args.out).with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
