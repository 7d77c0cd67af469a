"""End-to-end `audiofm evaluate` / `audiofm report` on generated tasks (and, if present, real data)."""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import pytest
from test_eval_suite import write_task

from audiofm.eval.commands import add_parsers, main

SHARED_TASKS = Path(os.environ.get("AUDIOFM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "tasks"
PNG = b"\x89PNG\r\n\x1a\n"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def tasks(tmp_path: Path) -> Path:
    root = tmp_path / "tasks"
    write_task(root, "pitch-kfold", folds=3, per_class=3)
    write_task(root, "pitch-tvt", mode="trainvaltest", per_class=3, labels=("a", "b", "c"))
    return root


@pytest.fixture
def small_config(tmp_path: Path) -> Path:
    p = tmp_path / "eval.yaml"
    p.write_text("probe:\n  mlp: {hidden_dim: 64, max_epochs: 20, patience: 5}\n  linear: {c_grid: [0.01, 1.0]}\n")
    return p


def test_add_parsers_registers_commands() -> None:
    parser = argparse.ArgumentParser(prog="audiofm")
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["evaluate", "--baseline", "logmel,random", "--baseline", "aisfx", "--tasks", "t",
                              "--out", "o", "--folds", "0,2"])
    assert callable(args.func) and args.folds == [0, 2] and args.baseline == ["logmel,random", "aisfx"]
    args = parser.parse_args(["report", "a", "b", "--out", "c"])
    assert callable(args.func) and args.runs == ["a", "b"]


def test_evaluate_logmel_end_to_end(tasks: Path, small_config: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    rc = main(["evaluate", "--baseline", "logmel", "--tasks", str(tasks), "--out", str(run), "--seeds", "2",
               "--config", str(small_config), "--threads", "1", "--no-progress"])
    assert rc == 0
    for name in ("results.csv", "summary.md", "comparisons.csv", "diagnostics.csv", "config.json",
                 "run_info.json", "tasks.json", "timings.json"):
        assert (run / name).is_file(), name
    for png in ("scores_by_task.png", "dual_probe.png"):
        data = (run / "plots" / png).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
    rows = _rows(run / "results.csv")
    # long format: (3 folds + 1 round) × 3 probes × 2 seeds × 1 metric (top1_acc, multiclass)
    assert len(rows) == (3 + 1) * 3 * 2
    assert {r["task"] for r in rows} == {"pitch-kfold", "pitch-tvt"}
    assert {r["metric"] for r in rows} == {"top1_acc"} and all(r["primary"] == "True" for r in rows)
    assert all(0.0 <= float(r["value"]) <= 1.0 for r in rows)
    assert {json.loads(r["hparams"])["C"] for r in rows if r["method"] == "linear"} <= {0.01, 1.0}
    summary = (run / "summary.md").read_text()
    for part in ("## linear probe", "## mlp probe", "## knn probe", "| logmel |", "RankMe", "plots/dual_probe.png"):
        assert part in summary, part
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["probe"]["mlp"]["hidden_dim"] == 64 and cfg["seeds"] == 2 and cfg["embedders"][0]["label"] == "logmel"
    env = json.loads((run / "run_info.json").read_text())
    assert env["versions"]["torch"] and "git" in env
    tj = json.loads((run / "tasks.json").read_text())
    assert tj["pitch-kfold"]["fingerprint"]["clips"] == 18 and tj["pitch-tvt"]["split_mode"] == "trainvaltest"
    timings = json.loads((run / "timings.json").read_text())
    assert timings["total_seconds"] > 0 and not any(j["cache_hit"] for j in timings["jobs"])

    # a second run sharing the cache embeds nothing
    run2 = tmp_path / "run2"
    rc = main(["evaluate", "--baseline", "logmel", "--tasks", str(tasks), "--out", str(run2), "--seeds", "1",
               "--probes", "linear,knn", "--cache", str(run / "embeddings"), "--only", "pitch-kfold",
               "--threads", "1", "--no-progress"])
    assert rc == 0
    assert all(j["cache_hit"] for j in json.loads((run2 / "timings.json").read_text())["jobs"])

    # merged report: the same model evaluated twice stays apart
    merged = tmp_path / "merged"
    assert main(["report", str(run), str(run2), "--out", str(merged)]) == 0
    mrows = _rows(merged / "results.csv")
    assert {r["model"] for r in mrows} == {"logmel", "logmel@run2"}
    assert len(mrows) == len(rows) + 3 * 2  # run2: 3 folds × 2 probes × 1 seed
    msum = (merged / "summary.md").read_text()
    assert "Paired comparisons" in msum and "logmel@run2" in msum
    assert (merged / "plots" / "scores_by_task.png").read_bytes().startswith(PNG)

    # nothing is overwritten without being asked, and never a command's own input
    results = (run / "results.csv").read_bytes()
    assert main(["report", str(run), str(run2), "--out", str(run), "--overwrite"]) == 2
    assert main(["report", str(run2), "--out", str(run)]) == 2  # another run's results.csv
    assert main(["report", str(run), "--out", str(run / "plots")]) == 2  # into an input run
    assert (run / "results.csv").read_bytes() == results
    assert main(["report", str(run), str(run2), "--out", str(merged)]) == 2
    summary = (merged / "summary.md").read_text()
    assert main(["report", str(run2), "--out", str(merged), "--overwrite"]) == 0
    assert (merged / "summary.md").read_text() != summary
    pre = tmp_path / "pretrain_run"
    pre.mkdir()
    (pre / "run_config.yaml").write_text("model: x\n")
    assert main(["report", str(run), "--out", str(pre)]) == 2
    assert sorted(p.name for p in pre.iterdir()) == ["run_config.yaml"]
    assert main(["evaluate", "--baseline", "logmel", "--tasks", str(tasks), "--out", str(tasks / "pitch-tvt"),
                 "--overwrite", "--no-progress"]) == 2


def test_models_random_baseline_and_comparisons(tasks: Path, small_config: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from audiofm.checkpoint import CheckpointSpec, save_checkpoint
    from audiofm.models.registry import build_model, model_config

    cfg = model_config("msm_vit_debug")
    torch.manual_seed(3)
    ckpt = save_checkpoint(tmp_path / "tiny", CheckpointSpec.from_model_config(cfg), build_model(cfg))
    run = tmp_path / "run"
    rc = main(["evaluate", "--model", str(ckpt), "--baseline", "logmel,random", "--tasks", str(tasks),
               "--only", "pitch-kfold", "--out", str(run), "--seeds", "2", "--max-folds", "2",
               "--probes", "linear,knn", "--config", str(small_config), "--threads", "1", "--no-progress"])
    assert rc == 0
    rows = _rows(run / "results.csv")
    assert [m for m in dict.fromkeys(r["model"] for r in rows)] == ["tiny", "logmel", "random-init(tiny)"]
    comps = _rows(run / "comparisons.csv")
    assert {(c["model"], c["reference"]) for c in comps} == {("logmel", "tiny"), ("random-init(tiny)", "tiny")}
    assert all(c["n"] == "2" for c in comps)  # deterministic probes: one unit per round
    assert "Paired comparisons (vs the first model)" in (run / "summary.md").read_text()


def test_errors_are_one_line(tasks: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["evaluate", "--baseline", "logmel", "--tasks", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("audiofm evaluate: error:") and "nope" in err and "\n" not in err
    rc = main(["evaluate", "--baseline", "no-such-peer", "--tasks", str(tasks), "--out", str(tmp_path / "o")])
    assert rc == 2 and "unknown peer" in capsys.readouterr().err
    rc = main(["evaluate", "--baseline", "random", "--tasks", str(tasks), "--out", str(tmp_path / "o")])
    assert rc == 2 and "needs a --model" in capsys.readouterr().err
    rc = main(["evaluate", "--baseline", "logmel", "--tasks", str(tasks), "--out", str(tmp_path / "o"),
               "--only", "missing"])
    assert rc == 2 and "missing" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "no results.csv" in capsys.readouterr().err
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "results.csv").write_text("model\n")
    rc = main(["evaluate", "--baseline", "logmel", "--tasks", str(tasks), "--out", str(tmp_path / "done")])
    err = capsys.readouterr().err
    assert rc == 2 and "already exists and holds results.csv; pass --overwrite" in err and "\n" not in err.strip()
    assert not (tmp_path / "o" / "results.csv").exists()


@pytest.mark.data
@pytest.mark.skipif(not (SHARED_TASKS / "fsdd-digit").is_dir(), reason="shared data not available (AUDIOFM_DATA)")
def test_real_task_smoke(tmp_path: Path) -> None:
    run = tmp_path / "run"
    rc = main(["evaluate", "--baseline", "logmel", "--tasks", str(SHARED_TASKS), "--only", "fsdd-digit",
               "--out", str(run), "--seeds", "1", "--max-folds", "1", "--probes", "linear,knn", "--threads", "1",
               "--no-progress"])
    assert rc == 0
    rows = _rows(run / "results.csv")
    assert len(rows) == 2 and all(float(r["value"]) > 0.15 for r in rows)  # well above 10 % chance
