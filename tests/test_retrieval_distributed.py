"""Retrieval training under DDP: 2 gloo CPU processes (torchrun) with the same global batch train
what 1 process does — the InfoNCE (and cluster) terms see the gathered global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_retrieval_train import make_clotho

import audiofm
from audiofm.cli import main

pytest.importorskip("sentence_transformers")


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    data = make_clotho(tmp_path / "clotho")
    common = ["retrieval", "train", "--audio-model", "logmel", "--data", str(data), "--max-steps", "4",
              "--batch-size", "8", "--lr", "3e-3", "--no-progress", "--cluster-weight", "0.5",
              "--set", "n_clusters=4", "--set", "cluster_method=kmeans", "--set", "model.embed_dim=16",
              "--set", "model.max_text_tokens=16", "--set", "train.warmup_steps=1", "--set", "train.log_every=1",
              "--set", "train.evaluate_every=2", "--set", "train.device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(audiofm.__file__).parents[1])}
    # the reference in this process (one interpreter start fewer), the pair under torchrun
    assert main([*common, "--out", str(tmp_path / "one"), "--cache", str(tmp_path / "cache1")]) == 0
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "audiofm.cli", *common, "--out", str(tmp_path / "two"), "--cache",
                          str(tmp_path / "cache2")], capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    runs = [tmp_path / r / "seed-0" for r in ("one", "two")]
    logs = [[json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()] for r in runs]
    losses = [[m["loss"] for m in log if "loss" in m] for log in logs]
    assert len(losses[0]) == 4 and losses[0] == pytest.approx(losses[1], rel=1e-4)
    scores = [[m["eval"]["score"] for m in log if "eval" in m] for log in logs]
    assert len(scores[0]) == 3 and scores[0] == pytest.approx(scores[1], abs=1e-6)
    assert json.loads((runs[1] / "run_info.json").read_text()).get("world_size", 2) == 2
    a, b = (load_file(str(r / "model" / "model.safetensors")) for r in runs)
    assert set(a) == set(b) and {k.split(".")[0] for k in a} == {"audio_proj", "text_proj", "temperature"}
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
