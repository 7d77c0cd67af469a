"""Run folders (a resumable run or nothing), the lock, honest resume, and no overwriting
without ``--overwrite`` (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from crash import crash_after_checkpoint
from safetensors.torch import load_file

from audiofm.cli import main
from audiofm.outputs import LOCK, OutputError, RunLock, check_output
from audiofm.train.pretrain import PretrainRecipe

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _pretrain(data: Path, out: Path, *extra: str, steps: int = 6) -> list[str]:
    return ["pretrain", "--model", "msm_vit_debug", "--data", str(data), "--out", str(out), "--max-steps", str(steps),
            "--batch-size", "2", "--no-progress", "--set", "model_overrides.segment_seconds=0.5",
            "--set", "train.warmup_steps=1", "--set", "train.log_every=1", "--set", "train.ckpt_every=2",
            "--set", "stats_clips=4", *extra]


def _steps(run: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------- run folders


def test_crash_at_start_leaves_a_reusable_folder(tmp_path, audio_folder, monkeypatch, capsys):
    run = tmp_path / "run"

    def broken(self, model, batch):
        raise RuntimeError("crash in the first step")

    monkeypatch.setattr(PretrainRecipe, "loss", broken)
    with pytest.raises(RuntimeError, match="first step"):
        main(_pretrain(audio_folder, run))
    assert (run / "run_config.yaml").is_file() and not (run / "checkpoints" / "step_00000002").exists()
    assert not (run / LOCK).exists()  # released on the way out
    monkeypatch.undo()
    # both a corrected rerun and --resume work, without deleting anything by hand
    assert main(_pretrain(audio_folder, run)) == 0
    assert "reusing the folder" in capsys.readouterr().err and _steps(run) == [1, 2, 3, 4, 5, 6]
    other = tmp_path / "other"
    monkeypatch.setattr(PretrainRecipe, "loss", broken)
    with pytest.raises(RuntimeError):
        main(_pretrain(audio_folder, other))
    monkeypatch.undo()
    assert main(["pretrain", "--out", str(other), "--resume", "--no-progress"]) == 0
    assert _steps(other) == [1, 2, 3, 4, 5, 6]


def test_validation_before_the_folder_and_foreign_folders(tmp_path, audio_folder, capsys):
    assert main(_pretrain(audio_folder, tmp_path / "r", "--set", "model_overrides.encoder.patch_t=0")) == 2
    assert main(_pretrain(tmp_path / "nothing", tmp_path / "r")) == 2
    assert not (tmp_path / "r").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    capsys.readouterr()
    assert main(_pretrain(audio_folder, mine)) == 2
    assert "not part of an audiofm run (notes.txt)" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


# ---------------------------------------------------------------------------------- the lock


HOLD = """
import sys
from audiofm.outputs import RunLock
lock = RunLock(sys.argv[1], command=["audiofm", "pretrain", "--out", sys.argv[1]]).acquire()
print("held", flush=True)
sys.stdin.read()
"""


def test_lock_refuses_a_second_process_and_takes_over_a_dead_ones(tmp_path, audio_folder, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=ENV)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert main(_pretrain(audio_folder, run)) == 2
        err = capsys.readouterr().err
        assert f"is in use by pid {holder.pid} on " in err and "audiofm pretrain --out" in err
        assert "\n" not in err.strip()
        with pytest.raises(OutputError, match=f"pid {holder.pid}"):
            RunLock(run).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert json.loads((run / LOCK).read_text())["pid"] == holder.pid  # left behind by the killed process
    assert main(_pretrain(audio_folder, run, steps=2)) == 0
    err = capsys.readouterr().err
    assert f"took over the stale lock of pid {holder.pid}" in err and "no longer runs" in err
    assert not (run / LOCK).exists() and _steps(run) == [1, 2]


def test_two_processes_on_one_out_never_both_run(tmp_path, audio_folder):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "audiofm.cli", *_pretrain(audio_folder, run, steps=4)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
             for _ in range(2)]
    outs = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in procs]
    codes = sorted(c for c, _ in outs)
    assert codes == [0, 2], outs
    err = next(e for c, e in outs if c == 2)
    assert "is in use by pid" in err or "already holds a run" in err
    assert _steps(run) == [1, 2, 3, 4]  # one run's metrics, not a mix


# ------------------------------------------------------------------------------------ resume


def test_resume_continues_the_saved_run_and_refuses_changes(tmp_path, audio_folder, monkeypatch, capsys):
    full, run = tmp_path / "full", tmp_path / "run"
    assert main(_pretrain(audio_folder, full)) == 0
    with crash_after_checkpoint(monkeypatch, step=4):
        main(_pretrain(audio_folder, run))
    capsys.readouterr()
    # an option that changes the run is refused, with the difference shown; nothing is touched
    before = (run / "run_config.yaml").read_text()
    assert main(["pretrain", "--out", str(run), "--resume", "--lr", "1e-3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "train.lr: 0.0005 → 0.001" in err and "--allow-change train.lr" in err
    assert main(["pretrain", "--out", str(run), "--resume", "--data", str(tmp_path), "--no-progress"]) == 2
    assert "data.source" in capsys.readouterr().err
    # the budget's clock decides the schedule: changing it is a change of meaning too
    assert main(["pretrain", "--out", str(run), "--resume", "--budget-clock", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "budget_clock" in err and "cpu" in err and "--allow-change budget_clock" in err
    assert (run / "run_config.yaml").read_text() == before and _steps(run) == [1, 2, 3, 4]
    # --resume alone: the saved settings (6 steps, not the default 1000), the uninterrupted result
    assert main(["pretrain", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert "completed at step 6" in capsys.readouterr().out and _steps(run) == [1, 2, 3, 4, 5, 6]
    a, b = load_file(full / "model" / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # an allowed change is made and recorded; a free one (time limit) needs no permission
    assert main(["pretrain", "--out", str(run), "--resume", "--max-steps", "8", "--allow-change", "train.max_steps",
                 "--max-minutes", "30", "--no-progress"]) == 0
    saved = yaml.safe_load((run / "run_config.yaml").read_text())
    assert saved["train"]["max_steps"] == 8 and _steps(run) == list(range(1, 9))
    (entry,) = saved["history"]
    assert entry["step"] == 6 and entry["changes"]["train.max_steps"] == {"saved": 6, "given": 8}
    assert entry["changes"]["train.max_minutes"] == {"saved": None, "given": 30.0}
    assert main(["pretrain", "--out", str(run), "--allow-change", "train.lr", "--no-progress"]) == 2
    assert "only applies with --resume" in capsys.readouterr().err
    assert main(["pretrain", "--out", str(run), "--resume", "--allow-change", "train.nope", "--no-progress"]) == 2
    assert "no such setting" in capsys.readouterr().err
    assert main(["pretrain", "--out", str(tmp_path / "new"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


# ------------------------------------------------------------------------------ overwriting


def test_check_output_rules(tmp_path):
    f = tmp_path / "a.npz"
    assert check_output(f) == f
    f.write_bytes(b"x")
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        check_output(f)
    assert check_output(f, overwrite=True) == f
    with pytest.raises(OutputError, match="is the input"):
        check_output(f, overwrite=True, inputs=[f])
    with pytest.raises(OutputError, match="is inside the input"):
        check_output(tmp_path / "sub" / "x", overwrite=True, folder=True, inputs=[tmp_path])
    d = tmp_path / "d"
    d.mkdir()
    assert check_output(d, folder=True) == d  # an empty folder is no output yet
    (d / "embeddings").mkdir()
    assert check_output(d, folder=True, unfinished=["embeddings"]) == d
    (d / "results.csv").write_text("x")
    with pytest.raises(OutputError, match="holds results.csv"):
        check_output(d, folder=True, unfinished=["embeddings"])


def test_embed_and_stats_refuse_existing_outputs(tmp_path, audio_folder, capsys):
    run = tmp_path / "run"
    assert main(_pretrain(audio_folder, run, steps=1)) == 0
    out = tmp_path / "e.npz"
    assert main(["embed", str(run), str(audio_folder), "--out", str(out), "--no-progress"]) == 0
    first = np.load(out)["clip"]
    capsys.readouterr()
    assert main(["embed", str(run), str(audio_folder), "--out", str(out), "--no-progress"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["embed", str(run), str(audio_folder), "--out", str(out), "--overwrite", "--no-progress"]) == 0
    np.testing.assert_array_equal(np.load(out)["clip"], first)
    wav = audio_folder / "low" / "low_0.flac"
    before = wav.read_bytes()
    assert main(["embed", str(run), str(wav), "--out", str(wav), "--overwrite", "--no-progress"]) == 2
    assert "is the input" in capsys.readouterr().err and wav.read_bytes() == before

    st = tmp_path / "stats.json"
    st.write_text("keep")
    assert main(["stats", str(audio_folder), "--model", "msm_vit_debug", "--out", str(st)]) == 2
    assert "already exists" in capsys.readouterr().err and st.read_text() == "keep"
    assert main(["stats", str(audio_folder), "--model", "msm_vit_debug", "--out", str(st), "--overwrite"]) == 0
    assert json.loads(st.read_text())["clips_used"] == 8
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\n" + "".join(f"{p}\n" for p in sorted(audio_folder.rglob("*.flac"))))
    assert main(["stats", str(manifest), "--model", "msm_vit_debug", "--out", str(manifest), "--overwrite"]) == 2
    assert "is the input" in capsys.readouterr().err and manifest.read_text().startswith("path\n")


def test_demo_refuses_an_earlier_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "summary.md").write_text("an earlier demo")
    args = ["demo", "--out", str(out), "--model", "msm_vit_debug", "--per-family", "4", "--steps", "1"]
    assert main(args) == 2
    assert "already exists and holds summary.md; pass --overwrite" in capsys.readouterr().err
    assert (out / "summary.md").read_text() == "an earlier demo"
