"""Checkpoint kinds (msm / encoder / classifier), format-1 compatibility, weights ids, info."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import audiofm
from audiofm import checkpoint as ckpt
from audiofm.api import Classifier, Embedder
from audiofm.checkpoint import CheckpointSpec, HeadSpec
from audiofm.models import create_model
from audiofm.models.heads import ClassifierHead

DATA = Path(__file__).parent / "data"
V1_MSM, V1_CLF = DATA / "ckpt_v1_msm", DATA / "ckpt_v1_classifier"


def golden_wave() -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(20800)
    return (0.3 * np.sin(2 * np.pi * 440 * t / 16000) + 0.05 * rng.standard_normal(20800)).astype(np.float32)


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(DATA / "ckpt_v1_golden.npz"))


@pytest.fixture
def msm(tmp_path):
    torch.manual_seed(0)
    m = create_model("msm_vit_debug", segment_seconds=1.0)
    return ckpt.save_checkpoint(tmp_path / "msm", CheckpointSpec.from_model_config(m.cfg), m), m


def _classifier(m, prediction_type="multiclass", vocabulary=("dog", "cat", "rain")):
    torch.manual_seed(1)
    head = ClassifierHead(m.cfg.encoder.dim, len(vocabulary))
    nn.init.normal_(head.fc.weight, std=0.5)
    nn.init.normal_(head.fc.bias, std=0.5)
    head.norm.set(np.random.default_rng(2).normal(0.1, 0.7, (50, m.cfg.encoder.dim)).astype(np.float32))
    spec = CheckpointSpec.from_model_config(m.cfg, kind="classifier", head=HeadSpec(
        head.head_type, head.config(), list(vocabulary), prediction_type))
    return spec, head


# ------------------------------------------------------------------------ format 1 (stored)


def test_v1_msm_checkpoint_reproduces_the_golden_embeddings(golden):
    spec = ckpt.load_spec(V1_MSM)
    assert spec.kind == "msm" and spec.head is None and spec.pretraining["decoder_dim"] == 32
    e = audiofm.load(V1_MSM)
    assert type(e) is Embedder
    out = e.embed(golden_wave(), 16000)
    np.testing.assert_allclose(out.clip, golden["clip"], atol=1e-5)
    np.testing.assert_allclose(out.frames, golden["frames"], atol=1e-5)
    np.testing.assert_allclose(out.timestamps, golden["timestamps"], atol=1e-9)
    assert ckpt.load_config(V1_MSM).decoder_depth == 1


def test_v1_classifier_loads_as_a_classifier_and_predicts_as_before(golden):
    spec = ckpt.load_spec(V1_CLF)
    assert spec.kind == "classifier" and spec.head is not None
    assert (spec.head.type, spec.head.vocabulary, spec.head.prediction_type) == ("classifier", ["a", "b"], "multiclass")
    state = ckpt.load_state_dict(V1_CLF)
    assert {"head.fc.weight", "head.norm.running_var"} <= set(state)  # the side-car, merged in
    clf = audiofm.load(V1_CLF)
    assert isinstance(clf, Classifier) and clf.vocabulary == ["a", "b"] and clf.prediction_type == "multiclass"
    wave = golden_wave()
    np.testing.assert_allclose(clf.embed(wave, 16000).clip, golden["clf_clip"], atol=1e-5)
    np.testing.assert_allclose(clf.predict(wave, 16000), golden["clf_probs"], atol=1e-5)
    probs = clf.predict_batch([wave, wave[:8000]], 16000)
    assert probs.shape == (2, 2) and np.allclose(probs.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(probs[0], golden["clf_probs"], atol=1e-5)


def test_v1_weights_id_is_hashed_on_demand_and_matches_the_old_content_hash():
    digest = hashlib.sha256((V1_MSM / "model.safetensors").read_bytes()).hexdigest()
    assert ckpt.weights_id(V1_MSM) == digest
    recorded = json.loads((V1_CLF / "config.json").read_text())["adaptation"]["base"]["weights"]
    assert digest.startswith(recorded)  # the 16-hex content hash the old code wrote


# ----------------------------------------------------------------------------- encoder only


def test_encoder_only_round_trip(msm, tmp_path):
    path, m = msm
    enc_path = ckpt.save_checkpoint(tmp_path / "enc", CheckpointSpec.from_model_config(m.cfg, kind="encoder"), m)
    keys = set(ckpt.load_state_dict(enc_path))
    assert keys == {f"encoder.{k}" for k in m.encoder.state_dict()}  # no decoder, no mask token
    spec = ckpt.load_spec(enc_path)
    assert spec.kind == "encoder" and spec.pretraining is None and spec.segment_seconds == 1.0
    w = np.random.default_rng(0).standard_normal(40000).astype(np.float32)  # > 1 chunk
    a, b = audiofm.load(path).embed(w, 16000), audiofm.load(enc_path).embed(w, 16000)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.clip, b.clip)
    # an AudioEncoder on its own is saved under encoder.*
    alone = ckpt.save_checkpoint(tmp_path / "alone", spec, m.encoder)
    assert set(ckpt.load_state_dict(alone)) == keys
    np.testing.assert_array_equal(audiofm.load(alone).embed(w, 16000).clip, a.clip)
    assert "decoder" not in ckpt.describe(enc_path)["components"]


def test_load_builds_no_decoder(msm, monkeypatch):
    path, m = msm
    from audiofm.models import msm as msm_module
    from audiofm.models.encoder import AudioEncoder

    def refuse(*args, **kwargs):
        raise AssertionError("audiofm.load built the pretraining model")

    monkeypatch.setattr(msm_module.MSMModel, "__init__", refuse)
    e = audiofm.load(path)
    assert type(e.encoder) is AudioEncoder
    assert sum(p.numel() for p in e.encoder.parameters()) == sum(p.numel() for p in m.encoder.parameters())


# ------------------------------------------------------------------------------- classifier


@pytest.mark.parametrize("prediction_type", ["multiclass", "multilabel"])
def test_classifier_is_one_directory_and_predicts_after_load(msm, tmp_path, prediction_type):
    _, m = msm
    spec, head = _classifier(m, prediction_type)
    path = ckpt.save_checkpoint(tmp_path / "clf", spec, nn.ModuleDict({"encoder": m.encoder, "head": head}))
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]  # no side-cars
    stored = json.loads((path / "config.json").read_text())
    assert stored["kind"] == "classifier" and stored["model"]["head"]["vocabulary"] == ["dog", "cat", "rain"]
    assert stored["model"]["pretraining"] is None
    assert not any(k.startswith(("decoder", "mask_token")) for k in ckpt.load_state_dict(path))

    clf = audiofm.load(path)
    assert isinstance(clf, Classifier) and clf.vocabulary == ["dog", "cat", "rain"]
    assert (clf.pooling, clf.layer) == ("mean", -1)
    waves = [golden_wave()[:12000], golden_wave()[4000:18000]]  # each within one chunk (15712 samples)
    got = clf.predict_batch(waves, 16000)
    head.eval()
    m.encoder.eval()
    with torch.no_grad():
        for i, w in enumerate(waves):
            z = m.encoder.clip_embedding(torch.from_numpy(w)[None], pooling="mean")
            logits = head(z)[0]
            p = logits.softmax(0) if prediction_type == "multiclass" else logits.sigmoid()
            np.testing.assert_allclose(got[i], p.numpy(), atol=1e-5)
            np.testing.assert_allclose(clf.predict(w, 16000), p.numpy(), atol=1e-5)
    assert clf.predict_batch([], 16000).shape == (0, 3)
    with pytest.raises(ValueError, match="pooling='mean'"):
        audiofm.load(path, pooling="max")
    with pytest.raises(ValueError, match="reads one block .* cannot load it with layers=2"):
        audiofm.load(path, layers=2)
    with pytest.raises(ValueError, match="averaged over frequency; cannot load it with freq_mix='concat'"):
        audiofm.load(path, freq_mix="concat")


def test_classifier_spec_and_weights_are_checked(msm, tmp_path):
    _, m = msm
    spec, head = _classifier(m)
    with pytest.raises(ValueError, match="needs a head"):
        CheckpointSpec.from_model_config(m.cfg, kind="classifier")
    with pytest.raises(ValueError, match="2 labels but the head has 3"):
        HeadSpec("classifier", head.config(), ["a", "b"], "multiclass")
    with pytest.raises(ckpt.CheckpointError, match="no 'head.\\*' keys"):
        ckpt.save_checkpoint(tmp_path / "nohead", spec, m)
    assert not (tmp_path / "nohead").exists()
    path = ckpt.save_checkpoint(tmp_path / "clf", spec, nn.ModuleDict({"encoder": m.encoder, "head": head}))
    cfg = json.loads((path / "config.json").read_text())
    cfg["model"]["head"]["config"]["n_classes"] = 4
    cfg["model"]["head"]["vocabulary"] = ["dog", "cat", "rain", "wind"]
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ckpt.CheckpointError, match="head.*wrong shape.*fc"):
        audiofm.load(path)


# ------------------------------------------------------------------------------ weights id


def test_weights_id_is_the_stored_digest_and_load_does_not_hash(msm, monkeypatch, tmp_path):
    path, m = msm
    real = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    stored = json.loads((path / "config.json").read_text())["weights_sha256"]
    assert ckpt.weights_id(path) == stored == real
    fp = audiofm.load(path).fingerprint()

    def no_hashing(*args, **kwargs):
        raise AssertionError("the weights were hashed while loading")

    monkeypatch.setattr(hashlib, "sha256", no_hashing)
    e = audiofm.load(path)
    assert e.weights_id == real
    monkeypatch.undo()
    assert e.fingerprint() == fp == audiofm.load(path).fingerprint()  # stable for a checkpoint + settings
    assert audiofm.load(path, layer=0).fingerprint() != fp
    with torch.no_grad():
        m.encoder.norm.weight.add_(0.01)
    other = ckpt.save_checkpoint(tmp_path / "other", CheckpointSpec.from_model_config(m.cfg), m)
    assert ckpt.weights_id(other) != real and audiofm.load(other).fingerprint() != fp


# ----------------------------------------------------------------------------------- info


def test_describe_and_info_show_kind_components_and_parameters(msm, tmp_path, capsys):
    from audiofm.cli import main
    from audiofm.models.msm import count_parameters

    path, m = msm
    d = ckpt.describe(path)
    assert d["kind"] == "msm" and list(d["components"]) == ["encoder", "decoder"]
    assert d["parameters"]["encoder"] == count_parameters(m.encoder)
    assert d["parameters"]["total"] == count_parameters(m)
    spec, head = _classifier(m)
    clf = ckpt.save_checkpoint(tmp_path / "clf", spec, nn.ModuleDict({"encoder": m.encoder, "head": head}))
    d = ckpt.describe(clf)
    assert d["kind"] == "classifier" and list(d["components"]) == ["encoder", "head"]
    assert d["parameters"]["head"] == count_parameters(head) and d["vocabulary"] == ["dog", "cat", "rain"]
    assert d["weights_sha256"] == ckpt.weights_id(clf)
    assert main(["info", str(clf)]) == 0
    out = capsys.readouterr().out
    assert "classifier (encoder, head)" in out and "3 multiclass classes" in out
    assert main(["info", str(V1_CLF), "--json"]) == 0
    v1 = json.loads(capsys.readouterr().out)
    assert v1["kind"] == "classifier" and set(v1["components"]) == {"encoder", "decoder", "head"}
    assert v1["format_version"] == 1 and v1["parameters"]["head"] == 2 * 32 + 2


def test_v1_side_car_errors_are_clear(tmp_path):
    import shutil

    d = shutil.copytree(V1_CLF, tmp_path / "v1")
    (d / "head.json").write_text('{"format": "audiofm-head", "kind": "lin')
    with pytest.raises(ckpt.CheckpointError, match="head.json is corrupt or truncated"):
        audiofm.load(d)
    shutil.copy(V1_CLF / "head.json", d / "head.json")
    f = d / "head.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(ckpt.CheckpointError, match="head.safetensors: corrupt or truncated"):
        audiofm.load(d)
    (d / "head.safetensors").unlink()
    with pytest.raises(ckpt.CheckpointError, match="head.safetensors is missing"):
        audiofm.load(d)
