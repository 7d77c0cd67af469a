"""Tables from the per-seed score files (``scores/seed<N>.csv``) of `audiofm asd run`
directories, finished or stopped early (a run writes results.csv only at its end).

    python benchmarks/asd_collect.py DCASE_ROOT RUN_DIR [LABEL=RUN_DIR,RUN_DIR ...]

Prints one markdown row per run and machine type: seeds found, AUC-s, AUC-t, pAUC, official
score (mean ± 95 % t-CI over seeds, %), total seconds when the run finished. ``LABEL=A,B`` pools
the seeds of several run directories (e.g. seed 0 in A, seeds 1-2 added with ``--first-seed 1``
in B) into one row; a seed found in two of them is an error. The seconds are then summed.
"""

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

from audiofm.asd.pipeline import long_rows, split_rows, summary_table
from audiofm.data.dcase import read_dcase


def collect(root, runs):
    rows = read_dcase(root)
    _, test = split_rows(rows)
    out = []
    for spec in runs:
        label, sep, dirs = spec.partition("=")
        paths = [Path(d) for d in (dirs if sep else spec).split(",")]
        label = label if sep else paths[0].name
        files = [f for run in paths if (run / "scores").is_dir() for f in sorted((run / "scores").glob("seed*.csv"))]
        if not files:
            continue
        seeds = [int(f.stem[4:]) for f in files]
        if len(set(seeds)) != len(seeds):
            raise SystemExit(f"{spec}: a seed occurs in more than one run directory: {sorted(seeds)}")
        res = []
        for f, seed in zip(files, seeds):
            with f.open() as fh:
                sc = {r["id"]: float(r["score"]) for r in csv.DictReader(fh)}
            scores = np.array([sc[r.id] for r in test])
            res += long_rows(test, scores, model=label, method="", seed=seed, n_train={})
        summ = summary_table(res)
        times = [json.loads((run / "timings.json").read_text()).get("total_seconds") if (run / "timings.json").is_file()
                 else None for run in paths]
        secs = None if None in times else round(sum(times), 1)
        out.append((label, len(files), summ, secs))
    return out

def fmt(r):
    if r is None or math.isnan(r["mean"]):
        return "—"
    hw = "" if math.isnan(r["ci95"]) else f" ± {100*r['ci95']:.1f}"
    return f"{100*r['mean']:.1f}{hw}"

if __name__ == "__main__":
    root = sys.argv[1]
    for name, n, summ, secs in collect(root, sys.argv[2:]):
        cell = {(r["task"], r["metric"]): r for r in summ}
        tasks = list(dict.fromkeys(r["task"] for r in summ))
        for t in tasks:
            vals = " | ".join(fmt(cell.get((t, m))) for m in ("auc_source", "auc_target", "pauc", "official_score"))
            print(f"| {name} | {t} | {n} | {vals} | {secs if t == 'all' else ''} |")
