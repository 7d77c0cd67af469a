"""Training engine: exact resume, DDP == single process, run-directory safety."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from audiofm.train.engine import RunDirError, TrainConfig, batch_ids, lr_at
from audiofm.train.pretrain import DataConfig, PretrainConfig, pretrain


def _cfg(source, steps=12, **train):
    t = dict(max_steps=steps, batch_size=4, warmup_steps=3, log_every=1, ckpt_every=4, seed=3)
    t.update(train)
    return PretrainConfig(model="msm_vit_debug", model_overrides={"segment_seconds": 1.0},
                          data=DataConfig(source=str(source)), train=TrainConfig(**t), stats_clips=10)


def _losses(run):
    return [json.loads(ln)["loss"] for ln in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def test_schedule_and_batches():
    cfg = TrainConfig(max_steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    assert lr_at(cfg, 0) == pytest.approx(0.1) and lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 100) == pytest.approx(0.1) and lr_at(cfg, 55) == pytest.approx(0.55)
    ids, _ = batch_ids(0, 0, 5, 5)
    assert sorted(ids) == list(range(5))  # one epoch = a permutation
    assert batch_ids(0, 3, 4, 7) == batch_ids(0, 3, 4, 7)


def test_resume_equals_uninterrupted(tmp_path, audio_folder):
    pretrain(_cfg(audio_folder), tmp_path / "full", progress=False)
    part = pretrain(_cfg(audio_folder, max_minutes=0.0), tmp_path / "part", progress=False)
    assert part["status"] == "time budget reached" and part["step"] == 0
    # stop at step 8 by giving a shorter run the same schedule: interrupt via max_steps then resume
    cfg = _cfg(audio_folder)
    cfg.train.max_steps = 12
    import audiofm.train.engine as eng

    calls = {"n": 0}
    orig = eng.Engine.save

    class Stop(Exception):
        pass

    def save_then_stop(self, optimizer, final=False):
        out = orig(self, optimizer, final)
        calls["n"] += 1
        if self.step == 8 and not final:
            raise Stop()
        return out

    eng.Engine.save = save_then_stop  # simulate a crash right after the step-8 checkpoint
    try:
        with pytest.raises(Stop):
            pretrain(cfg, tmp_path / "resumed", progress=False)
    finally:
        eng.Engine.save = orig
    res = pretrain(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert res["step"] == 12
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "full")  # same trajectory, no duplicates
    a = load_file(tmp_path / "full" / "model" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_run_dir_is_never_overwritten(tmp_path, audio_folder):
    pretrain(_cfg(audio_folder, steps=2), tmp_path / "r", progress=False)
    before = (tmp_path / "r" / "metrics.jsonl").read_text()
    with pytest.raises(RunDirError, match="already holds a run"):
        pretrain(_cfg(audio_folder, steps=2), tmp_path / "r", progress=False)
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == before
    with pytest.raises(RunDirError, match="nothing to resume"):
        pretrain(_cfg(audio_folder, steps=2), tmp_path / "new", resume=True, progress=False)


def test_accumulation_matches_full_batch(tmp_path, audio_folder):
    pretrain(_cfg(audio_folder, steps=4), tmp_path / "a", progress=False)
    pretrain(_cfg(audio_folder, steps=4, accum_steps=2), tmp_path / "b", progress=False)
    assert _losses(tmp_path / "a") == pytest.approx(_losses(tmp_path / "b"), rel=1e-5)
    a = load_file(tmp_path / "a" / "model" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "model.safetensors")
    # summing two half-batch gradients rounds differently from one full batch, and Adam turns a
    # near-zero gradient's rounding into a step of up to ±lr: bound the gap well below one step
    # (lr 5e-4) and its mean far below that
    diffs = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    assert diffs.max() < 1e-4 and diffs.mean() < 1e-6


def test_ddp_two_processes_match_one(tmp_path, audio_folder):
    """torchrun with 2 CPU processes (gloo) and the same global batch == 1 process."""
    common = ["pretrain", "--model", "msm_vit_debug", "--data", str(audio_folder), "--max-steps", "6",
              "--batch-size", "4", "--seed", "1", "--no-progress", "--set", "model_overrides.segment_seconds=1.0",
              "--set", "train.warmup_steps=2", "--set", "train.log_every=1", "--set", "stats_clips=10"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "audiofm.cli", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "audiofm.cli", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    info = json.loads((tmp_path / "two" / "run_info.json").read_text())
    assert info["world_size"] == 2
    np_one, np_two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert np_one == pytest.approx(np_two, rel=1e-4)
    a = load_file(tmp_path / "one" / "model" / "model.safetensors")
    b = load_file(tmp_path / "two" / "model" / "model.safetensors")
    # gradients are averaged in a different order, so Adam's normalised steps differ by float
    # noise: bound the gap well below one step (lr 5e-4) and its mean far below that
    diffs = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    assert diffs.max() < 1e-4 and diffs.mean() < 1e-6


def test_budget_calibration_sets_the_schedule(tmp_path, audio_folder):
    """``budget_minutes``: the pretraining recipe is timed (Batch interface, training device),
    the step count replaces ``max_steps`` (warm-up 10 %) and is re-fitted as training goes (the
    last ``max_steps`` is the one finished); a resume keeps the schedule (tests/test_budget.py)."""
    cfg = _cfg(audio_folder, steps=10_000)
    cfg.budget_minutes = 0.01
    res = pretrain(cfg, tmp_path / "b", progress=False)
    steps = cfg.train.max_steps
    assert 1 <= steps < 10_000 and 1 <= cfg.train.warmup_steps <= steps
    assert res["status"] == "completed" and res["step"] == steps
    again = _cfg(audio_folder, steps=10_000)
    again.budget_minutes = 0.01
    again.train.max_steps += 1  # the saved schedule wins over any new one
    assert pretrain(again, tmp_path / "b", resume=True, progress=False)["step"] == steps


def test_auto_precision_follows_the_cpu_flags(tmp_path, audio_folder):
    from audiofm.train.distributed import native_bf16, resolve_precision

    cpu = torch.device("cpu")
    for flags, want in (("fpu sse avx512f avx512bw", False), ("fpu avx512f avx512_bf16", True),
                        ("fpu amx_bf16 amx_tile", True)):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
        assert native_bf16(cpu, info) is want
    assert native_bf16(cpu, tmp_path / "absent") is False  # not Linux: fp32
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="'auto'"):
        TrainConfig(precision="fp16")
    # a run with 'auto' records what it resolved to on this machine
    pretrain(_cfg(audio_folder, steps=2, precision="auto"), tmp_path / "run", progress=False)
    import yaml

    saved = yaml.safe_load((tmp_path / "run" / "run_config.yaml").read_text())["train"]["precision"]
    assert saved == resolve_precision("auto", cpu)
