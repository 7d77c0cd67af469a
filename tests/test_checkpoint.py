import json

import numpy as np
import pytest
import torch

import audiofm
from audiofm import checkpoint as ckpt
from audiofm.api import random_like
from audiofm.checkpoint import CheckpointSpec
from audiofm.models import create_model


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    m = create_model("msm_vit_debug")
    path = ckpt.save_checkpoint(tmp_path / "ck", CheckpointSpec.from_model_config(m.cfg), m, {"step": 3}, {"step": 3})
    return path, m


def test_round_trip_rebuilds_identical_encoder(saved):
    path, m = saved
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors", "train_state.pt"]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind
    e = audiofm.load(path)
    for k, v in m.encoder.state_dict().items():
        torch.testing.assert_close(e.encoder.state_dict()[k], v)
    assert ckpt.load_train_state(path)["step"] == 3
    assert ckpt.load_config(path) == m.cfg
    spec = ckpt.load_spec(path)
    assert spec.kind == "msm" and spec.head is None and spec.pretraining["decoder_depth"] == m.cfg.decoder_depth
    assert set(ckpt.load_state_dict(path)) == set(m.state_dict())  # the decoder is kept for kind "msm"
    info = ckpt.read_info(path)
    assert info["format_version"] == ckpt.FORMAT_VERSION == 2 and info["kind"] == "msm" and info["step"] == 3


def test_refuses_to_overwrite(saved):
    path, m = saved
    spec = CheckpointSpec.from_model_config(m.cfg)
    with pytest.raises(ckpt.CheckpointError, match="already exists"):
        ckpt.save_checkpoint(path, spec, m)
    with pytest.raises(TypeError, match="from_model_config"):
        ckpt.save_checkpoint(path.with_name("other"), m.cfg, m)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reserved"):
        ckpt.save_checkpoint(path.with_name("other"), spec, m, meta={"kind": "x"})
    assert not path.with_name("other").exists()


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
    d = json.loads(good)
    d["kind"] = "detector"
    cfg.write_text(json.dumps(d))
    with pytest.raises(ckpt.CheckpointError, match="incompatible model config.*kind"):
        audiofm.load(path)
    d = json.loads(good)
    d["model"]["pretraining"]["mask_mode"] = "spiral"
    cfg.write_text(json.dumps(d))
    with pytest.raises(ckpt.CheckpointError, match="incompatible model config.*mask_mode"):
        ckpt.load_spec(path)


def test_incompatible_weights_reported(saved):
    path, _ = saved
    # config says depth 3, weights have depth 2 → missing keys named
    cfg = json.loads((path / "config.json").read_text())
    cfg["model"]["encoder"]["backbone_cfg"] = {"dim": 64, "depth": 3, "heads": 2}
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ckpt.CheckpointError, match="missing .*blocks.2"):
        audiofm.load(path)
    cfg["model"]["encoder"]["backbone_cfg"] = {"dim": 32, "depth": 2, "heads": 2}  # weights are 64-d
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ckpt.CheckpointError, match="wrong shape"):
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


def test_random_like_is_the_pretraining_initialisation():
    # the random baseline keeps the weights earlier versions (and a pretraining run) start from
    torch.manual_seed(5)
    ref = create_model("msm_vit_debug").encoder.state_dict()
    got = random_like("msm_vit_debug", seed=5).encoder.state_dict()
    assert set(got) == set(ref)
    for k, v in ref.items():
        torch.testing.assert_close(got[k], v)
