import json

import numpy as np
import pytest
import torch

import audiofm
from audiofm import checkpoint as ckpt
from audiofm.api import random_like
from audiofm.models import create_model


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    m = create_model("msm_vit_debug")
    path = ckpt.save_checkpoint(tmp_path / "ck", m.cfg, m, {"step": 3}, {"step": 3})
    return path, m


def test_round_trip_rebuilds_identical_encoder(saved):
    path, m = saved
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors", "train_state.pt"]
    e = audiofm.load(path)
    for k, v in m.encoder.state_dict().items():
        torch.testing.assert_close(e.encoder.state_dict()[k], v)
    assert ckpt.load_train_state(path)["step"] == 3
    assert ckpt.load_config(path) == m.cfg


def test_refuses_to_overwrite(saved):
    path, m = saved
    with pytest.raises(ckpt.CheckpointError, match="already exists"):
        ckpt.save_checkpoint(path, m.cfg, m)


def test_truncated_weights(saved):
    path, _ = saved
    f = path / "model.safetensors"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(ckpt.CheckpointError, match="corrupt or truncated"):
        audiofm.load(path)


def test_corrupt_config_and_newer_format(saved):
    path, _ = saved
    cfg = path / "config.json"
    good = cfg.read_text()
    cfg.write_text(good[:50])
    with pytest.raises(ckpt.CheckpointError, match="corrupt or truncated"):
        audiofm.load(path)
    d = json.loads(good)
    d["format_version"] = 99
    cfg.write_text(json.dumps(d))
    with pytest.raises(ckpt.CheckpointError, match="newer than this audiofm"):
        audiofm.load(path)


def test_incompatible_weights_reported(saved, tmp_path):
    path, _ = saved
    other = create_model("msm_vit_debug", encoder={"backbone_cfg": {"dim": 64, "depth": 3, "heads": 2}})
    # config says depth 3, weights have depth 2 → missing keys named
    cfg = json.loads((path / "config.json").read_text())
    cfg["model"] = json.loads(json.dumps(ckpt.to_dict(other.cfg)))
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ckpt.CheckpointError, match="missing .*blocks.2"):
        audiofm.load(path)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="not an audiofm checkpoint"):
        audiofm.load(tmp_path)
    with pytest.raises(ckpt.CheckpointError, match="no such"):
        audiofm.load(tmp_path / "missing")


def test_random_like_is_seeded_and_differs_from_trained(saved):
    path, _ = saved
    a, b = random_like(path, seed=1), random_like(path, seed=1)
    w = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    np.testing.assert_array_equal(a.embed(w, 16000).clip, b.embed(w, 16000).clip)
    assert a.fingerprint() != audiofm.load(path).fingerprint()
