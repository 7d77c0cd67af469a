"""Check that two evaluation runs hold the same results, to the last digit.

    python benchmarks/eval_identical.py runs/suite_before runs/suite_after

Compares ``results.csv`` of two ``audiofm evaluate`` run directories row by row, every column but
the timings (``fit_seconds``, ``predict_seconds``), and prints the rows compared, the mismatches
(the first few in full) and each run's embedding / probing / total seconds from ``timings.json``.
Exit status 1 when anything differs. Used for the evaluation speed-up (docs/results.md §17).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

TIMING = ("fit_seconds", "predict_seconds")


def rows(run: Path) -> list[dict[str, str]]:
    with (run / "results.csv").open(newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="first run directory")
    ap.add_argument("b", type=Path, help="second run directory")
    args = ap.parse_args()
    ra, rb = rows(args.a), rows(args.b)
    bad = [(i, x, y) for i, (x, y) in enumerate(zip(ra, rb)) if x != y]
    for run in (args.a, args.b):
        t = json.loads((run / "timings.json").read_text())
        print(f"{run}: embedding {t['embed_seconds']:.1f} s, probing {t['probe_seconds']:.1f} s (sum over fits), "
              f"total {t['total_seconds']:.1f} s wall")
    print(f"rows: {len(ra)} vs {len(rb)}; differing rows: {len(bad)}")
    for i, x, y in bad[:5]:
        print(f"  row {i}: " + ", ".join(f"{k}: {x[k]!r} vs {y.get(k)!r}" for k in x if x[k] != y.get(k)))
    return 0 if len(ra) == len(rb) and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
