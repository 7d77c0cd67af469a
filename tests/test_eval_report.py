"""Long-format results and the registry-driven report: the stored format-1 run reproduces its
summary tables and comparisons; anomaly-detection and retrieval runs render through the same code."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from audiofm.eval.registry import METRICS, metric_info
from audiofm.eval.report import report_runs, write_report
from audiofm.eval.results import RESULT_FIELDS, RunData, read_results, read_run, write_csv

V1 = Path(__file__).parent / "data" / "eval_run_v1"
PNG = b"\x89PNG\r\n\x1a\n"


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _comparable(md: str) -> list[str]:
    """Summary lines without the run path and wall-time lines (they name this machine's run)."""
    return [ln for ln in md.splitlines() if not ln.startswith(("Run: ", "Runs: ", "Wall time of "))]


def test_v1_results_convert_to_long_format() -> None:
    wide = _csv(V1 / "results.csv")
    long = read_results(V1 / "results.csv")
    ml = sum(r["prediction_type"] == "multilabel" for r in wide)
    assert len(long) == len(wide) + ml  # multilabel fits carry mAP and d_prime, multiclass top1_acc
    assert {r["metric"] for r in long} == {"top1_acc", "mAP", "d_prime"}
    assert all(set(RESULT_FIELDS) <= set(r) for r in long)
    primary = [r for r in long if r["primary"]]
    assert len(primary) == len(wide)
    for w, p in zip(wide, primary):
        assert (p["model"], p["task"], p["method"], p["fold"], p["seed"]) == \
            (w["model"], w["task"], w["probe"], w["round"], int(w["seed"]))
        assert p["metric"] == w["metric"] and p["value"] == float(w["score"])
        assert p["valid_value"] == float(w["valid_score"])
    assert all(math.isnan(r["valid_value"]) for r in long if not r["primary"])


def test_v1_run_reproduces_summary_and_comparisons(tmp_path: Path) -> None:
    write_report(read_run(V1), tmp_path)
    stored = (V1 / "summary.md").read_text()
    new = (tmp_path / "summary.md").read_text()
    _same_but_task_mean(new, stored)
    assert "| logmel | +2.1 ≈ (p=0.37) | +8.3 ≈ (p=0.42) | +5.2 ≈ (p=0.34) [+0.1, +13.4] |" in new
    old_rows = _csv(V1 / "comparisons.csv")
    new_rows = [r for r in _csv(tmp_path / "comparisons.csv") if r["primary"] == "True"]
    assert len(new_rows) == len(old_rows)
    for o, n in zip(old_rows, new_rows):
        assert (n["task"], n["method"], n["model"], n["reference"]) == (o["task"], o["probe"], o["model"],
                                                                      o["reference"])
        for k in ("n", "significant", "verdict"):
            assert n[k] == o[k], k
        for k in ("mean_diff", "t_low", "t_high", "p_value", "boot_low", "boot_high"):
            assert float(n[k]) == pytest.approx(float(o[k]), rel=1e-12, abs=1e-15), k
    # the secondary metric is compared too
    assert {r["metric"] for r in _csv(tmp_path / "comparisons.csv") if r["primary"] == "False"} == {"d_prime"}

    # `audiofm report` writes long-format results that read back to the same tables
    merged = tmp_path / "merged"
    report_runs([V1], merged)
    rows = _csv(merged / "results.csv")
    assert list(rows[0]) == ["run", *RESULT_FIELDS] and len(rows) == len(read_results(V1 / "results.csv"))
    again = tmp_path / "again"
    write_report(read_run(merged), again)
    _same_but_task_mean((again / "summary.md").read_text(), stored)


def _same_but_task_mean(new: str, stored: str) -> None:
    """``new`` has the lines of the ``stored`` summary, but for the paired comparisons' task-mean
    column and its note (newer than the stored v1 summary)."""
    lines = [ln for ln in _comparable(new) if not ln.startswith("Column *task mean*")]
    assert len(lines) == len(_comparable(stored))
    widened = 0
    for n, o in zip(lines, _comparable(stored)):
        widened += n != o
        assert n == o or n.rsplit("|", 2)[0] + "|" == o, (n, o)
    assert widened == 3 * 4  # header, separator and 2 model rows of the linear, mlp and kNN tables


def synthetic_run(kind: str) -> RunData:
    """Two models; ASD: machine types as tasks, auc/pauc/official_score, 3 sections (folds) × 1
    deterministic method + 1 seeded method; retrieval: one task, mAP@k and R@k, 3 seeds."""
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    if kind == "asd":
        tasks, metrics, primary = ["fan", "pump", "valve"], ["auc", "pauc", "official_score"], "official_score"
        methods, folds, seeds = {"knn-score": True, "gmm": False}, ["sec00", "sec01", "sec02"], [0, 1]
    else:
        tasks, metrics, primary = ["clotho"], ["map_at_10", "map_at_16", "r_at_1", "r_at_5", "r_at_10"], "map_at_16"
        methods, folds, seeds = {"dual-encoder": False}, ["test"], [0, 1, 2]
    for model, lift in (("base", 0.0), ("tuned", 0.12)):
        for t, task in enumerate(tasks):
            for method, det in methods.items():
                for fold in folds:
                    noise = rng.normal(0, 0.01, len(seeds))
                    for j, seed in enumerate(seeds):
                        eps = 0.0 if det else noise[j]
                        base = {m: 0.55 + 0.05 * t + 0.02 * k + lift + eps for k, m in enumerate(metrics)}
                        if kind == "asd":
                            vals = [base["auc"], base["pauc"]]
                            base["official_score"] = len(vals) / sum(1 / v for v in vals)
                        for m in metrics:
                            rows.append({"model": model, "task": task, "method": method, "fold": fold, "seed": seed,
                                         "metric": m, "value": base[m], "primary": m == primary,
                                         "prediction_type": kind, "valid_value": float("nan"), "hparams": {},
                                         "n_train": 10, "n_valid": 5, "n_test": 5, "fit_seconds": 0.5,
                                         "predict_seconds": 0.1, "deterministic": det})
    return RunData(rows, [], [{"name": kind, "path": kind}])


def _table(md: str, heading: str) -> list[list[str]]:
    block = md.split(f"{heading}\n\n", 1)[1].split("\n\n", 1)[0]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in block.splitlines()]


def test_asd_run_renders_with_harmonic_mean(tmp_path: Path) -> None:
    data = synthetic_run("asd")
    write_csv(tmp_path / "run" / "results.csv", data.results, RESULT_FIELDS)  # long format round trip
    run = read_run(tmp_path / "run")
    written = write_report(run, tmp_path / "report")
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "methods: knn-score, gmm" in md and "AUC, pAUC and official score in %." in md
    assert "Metric per task — fan: official score, pump: official score, valve: official score." in md
    table = _table(md, "## knn-score")
    assert table[0] == ["model", "fan", "pump", "valve", "harmonic mean"]
    tuned = {t: np.mean([r["value"] for r in data.results if r["model"] == "tuned" and r["task"] == t
                         and r["method"] == "knn-score" and r["metric"] == "official_score"])
             for t in ("fan", "pump", "valve")}
    hmean = 3 / sum(1 / v for v in tuned.values())
    row = next(r for r in table if r[0] == "tuned")
    assert row[1].startswith(f"**{100 * tuned['fan']:.1f}** ± ") and row[-1] == f"**{100 * hmean:.1f}**"
    assert "## AUC (asd tasks)" in md and "## pAUC (asd tasks)" in md
    # deterministic method: one unit per section; seeded method: section × seed
    assert "CI over rounds (deterministic method: one unit per round); units per cell: 3." in md
    assert "CI over round × seed units; units per cell: 6." in md
    assert "Difference of means (score points; % for official score)" in md
    gmm = _table(md.split("## Paired comparisons")[1], "### gmm")
    assert gmm[2][0] == "tuned" and all("▲" in c for c in gmm[2][1:])
    comps = _csv(tmp_path / "report" / "comparisons.csv")
    assert {(c["metric"], c["verdict"]) for c in comps if c["method"] == "gmm"} == \
        {("official_score", "better"), ("auc", "better"), ("pauc", "better")}
    assert (tmp_path / "report" / "plots" / "scores_by_task.png").read_bytes().startswith(PNG)
    assert not (tmp_path / "report" / "plots" / "dual_probe.png").exists()  # no linear/kNN probes
    assert tmp_path / "report" / "summary.md" in written


def test_retrieval_run_renders_in_percent_with_task_mean(tmp_path: Path) -> None:
    data = synthetic_run("retrieval")
    write_report(data, tmp_path, compare_to="best")
    md = (tmp_path / "summary.md").read_text()
    assert "mAP@10, mAP@16, R@1, R@5 and R@10 in %." in md and "clotho: mAP@16" in md
    table = _table(md, "## dual-encoder")
    assert table[0] == ["model", "clotho", "task mean"]
    value = np.mean([r["value"] for r in data.results if r["model"] == "tuned" and r["metric"] == "map_at_16"])
    assert re.fullmatch(rf"\*\*{100 * value:.1f}\*\* ± \d+\.\d", table[3][1])
    for label in ("mAP@10", "R@1", "R@5", "R@10"):
        assert f"## {label} (retrieval tasks)" in md
    assert "## Paired comparisons (vs the best model of each column)" in md
    cmp = _table(md.split("## Paired comparisons")[1], "### dual-encoder")
    assert cmp[2][0] == "base" and "▼" in cmp[2][1] and "vs tuned" in cmp[2][1]


def test_registry_covers_the_application_metrics() -> None:
    for name in ("top1_acc", "mAP", "d_prime", "auc", "pauc", "official_score", "map_at_10", "map_at_16",
                 "r_at_1", "r_at_5", "r_at_10"):
        assert name in METRICS and METRICS[name].label
    assert METRICS["official_score"].across_tasks == "hmean" and METRICS["top1_acc"].percent
    assert not METRICS["d_prime"].percent
    other = metric_info("eer")  # unregistered: raw, under its own name
    assert other.label == "eer" and not other.percent and other.across_tasks == "mean"
