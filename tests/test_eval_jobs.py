"""Probe fits in worker processes (``--jobs``) give the same results, bit for bit, as one process."""

from __future__ import annotations

import csv
from pathlib import Path

from test_eval_suite import ConstantFake, write_task

from audiofm.eval.probes import ProbeConfig
from audiofm.eval.suite import EmbedderSpec, EvalConfig, run_evaluation

# columns that are timings, not results
TIMING = {"fit_seconds", "predict_seconds"}


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "results.csv").open() as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def test_jobs_give_identical_results(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    write_task(tasks, "kf", folds=3, per_class=5)
    write_task(tasks, "tvt", mode="trainvaltest", per_class=5, labels=("a", "b", "c"), multilabel=True)
    probe = ProbeConfig()
    probe.mlp.max_epochs, probe.mlp.hidden_dim = 12, 32
    runs = {}
    for jobs in (1, 2):
        out = tmp_path / f"run{jobs}"
        cfg = EvalConfig(tasks=str(tasks), out=str(out), seeds=2, probe=probe, progress=jobs == 2,
                         threads=1, jobs=jobs, cache=str(tmp_path / "cache"))
        res = run_evaluation(cfg, embedders=[EmbedderSpec("fake", ConstantFake(), {}, "test")])
        runs[jobs] = _rows(out)
        assert len(res.results) == len(runs[jobs])
        assert set(res.timings["jobs"][0]["probe_seconds"]) == {"linear", "mlp", "knn"}
        assert all(v > 0 for j in res.timings["jobs"] for v in j["probe_seconds"].values())
    assert len(runs[1]) == 3 * 3 * 2 + 1 * 3 * 2 * 2  # kf: rounds × probes × seeds; tvt: × 2 metrics
    assert runs[2] == runs[1]  # same rows, same order, same values to the last digit
    mlp = [r["value"] for r in runs[1] if r["method"] == "mlp" and r["task"] == "kf" and r["fold"] == "fold00"]
    assert len(mlp) == 2
