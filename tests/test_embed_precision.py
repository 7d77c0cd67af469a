"""bf16 inference: `audiofm.load(path, precision="bf16")`, `embed/evaluate --precision bf16`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import tone

from audiofm.api import random_like
from audiofm.eval.runconfig import EvalConfig, EvalError, load_embedders, model_label


@pytest.mark.parametrize("preset", ["msm_vit_debug", "msm_mamba_debug", "msm_mamba2_debug", "msm_xlstm_debug"])
def test_bf16_close_to_fp32(preset: str, one_thread: None) -> None:
    waves = [tone(1.3, freq=330.0, seed=1), tone(0.7, freq=880.0, seed=2)]
    fp32 = random_like(preset).embed_batch(waves, 16000)
    bf16 = random_like(preset, precision="bf16").embed_batch(waves, 16000)
    for a, b in zip(fp32, bf16):
        assert b.clip.dtype == np.float32 and b.frames.dtype == np.float32
        assert b.frames.shape == a.frames.shape
        np.testing.assert_array_equal(b.timestamps, a.timestamps)
        cos = float(a.clip @ b.clip / np.linalg.norm(a.clip) / np.linalg.norm(b.clip))
        assert cos > 0.995, cos
        rel = np.linalg.norm(b.frames - a.frames) / np.linalg.norm(a.frames)
        assert 0 < rel < 0.05, rel  # really computed in bf16, and close


def test_precision_in_fingerprint_only_when_bf16() -> None:
    default = random_like("msm_vit_debug")
    assert default.precision == "fp32"
    assert random_like("msm_vit_debug", precision="fp32").fingerprint() == default.fingerprint()
    assert random_like("msm_vit_debug", precision="bf16").fingerprint() != default.fingerprint()
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        random_like("msm_vit_debug", precision="fp16")


def test_stream_refuses_bf16() -> None:
    emb = random_like("msm_mamba_debug", precision="bf16")
    with pytest.raises(ValueError, match="streaming runs in fp32"):
        emb.stream()


def test_evaluate_precision_settings(tmp_path: Path) -> None:
    cfg = EvalConfig(tasks=str(tmp_path), out=str(tmp_path / "run"), precision="bf16")
    assert cfg.embed_settings() == {"layer": -1, "pooling": "mean", "precision": "bf16"}
    assert "precision" not in EvalConfig(tasks=str(tmp_path), out=str(tmp_path / "r")).embed_settings()
    assert model_label("runs/m", -1, "mean", precision="bf16") == "m[bf16]"
    assert model_label("runs/m", -1, "mean") == "m"
    graph = tmp_path / "m.onnx"
    graph.write_bytes(b"")
    cfg = EvalConfig(tasks=str(tmp_path), out=str(tmp_path / "run"), models=[str(graph)], precision="bf16")
    with pytest.raises(EvalError, match="m.onnx: an exported graph runs in the precision it was exported in"):
        load_embedders(cfg)
    with pytest.raises(Exception, match="precision"):
        EvalConfig.from_dict({"tasks": str(tmp_path), "out": "x", "precision": "fp16"})
