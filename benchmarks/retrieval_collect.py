"""One markdown table from several `audiofm retrieval evaluate` output directories.

    python benchmarks/retrieval_collect.py EVAL_DIR [EVAL_DIR ...] [--random]

Each EVAL_DIR holds a results.csv (long format). Prints one row per model: seeds, text→audio
mAP@16, mAP@10, R@1, R@5, R@10 and audio→text R@1, mAP@10, as mean ± 95 % t-CI over seeds in %
(the CI code of the evaluation report, :func:`audiofm.eval.stats.mean_ci`). ``--random`` adds
the random-ranking row of the first directory.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from audiofm.eval.results import read_results
from audiofm.eval.stats import mean_ci

COLUMNS = [("text_to_audio", "map_at_16", "T→A mAP@16"), ("text_to_audio", "map_at_10", "T→A mAP@10"),
           ("text_to_audio", "r_at_1", "T→A R@1"), ("text_to_audio", "r_at_5", "T→A R@5"),
           ("text_to_audio", "r_at_10", "T→A R@10"), ("audio_to_text", "r_at_1", "A→T R@1"),
           ("audio_to_text", "map_at_10", "A→T mAP@10")]


def cell(values: list[float]) -> str:
    if not values:
        return "–"
    ci = mean_ci([100 * v for v in values])
    return f"{ci.mean:.1f}" if len(values) < 2 else f"{ci.mean:.1f} ± {ci.half_width:.1f}"


def main(argv: list[str]) -> int:
    want_random = "--random" in argv
    dirs = [Path(a) for a in argv if a != "--random"]
    print("| model | seeds | " + " | ".join(c[2] for c in COLUMNS) + " |")
    print("|---|---:|" + "---:|" * len(COLUMNS))
    for i, d in enumerate(dirs):
        values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
        seeds: dict[str, set[int]] = defaultdict(set)
        for r in read_results(d / "results.csv"):
            values[(r["model"], r["method"], r["metric"])].append(float(r["value"]))
            seeds[r["model"]].add(int(r["seed"]))
        for model in seeds:
            if model == "random" and not (want_random and i == 0):
                continue
            cells = [cell(values[(model, m, k)]) for m, k, _ in COLUMNS]
            name = d.parent.name if model != "random" else "random ranking"
            print(f"| {name} | {len(seeds[model])} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
