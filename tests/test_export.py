"""Export: the exportable layers equal the normal ones; ONNX graphs equal PyTorch; OnnxEmbedder
(without torch) equals ``audiofm.load(...).embed`` on real audio; `audiofm export` / `evaluate`.

Tolerances (float32, max |Δ|): exportable layers vs normal path 1e-5 (measured ≤ 2e-6); DFT-basis
front end vs ``torch.stft`` 1e-4 on the log-mel (measured ≤ 3e-5); ONNX Runtime vs PyTorch 1e-4 on
frames and clip (measured ≤ 1e-6 for the debug presets).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import SHARED_DATA

from audiofm.checkpoint import CheckpointSpec, save_checkpoint
from audiofm.embedding import POOLINGS, pool_frames_np
from audiofm.frontend import FrontendConfig, LogMel
from audiofm.models.encoder import AudioEncoder, pool_frames
from audiofm.models.registry import build_model, model_config

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
LAYERS_ATOL = 1e-5
ONNX_ATOL = 1e-4

# every backbone and direction, and xLSTM's three cell forms
VARIANTS = [
    ("msm_vit_debug", {}),
    *[("msm_mamba_debug", {"direction": d}) for d in ("bidirectional", "forward", "alternating")],
    *[("msm_mamba2_debug", {"direction": d}) for d in ("bidirectional", "forward", "alternating")],
    *[("msm_xlstm_debug", {"direction": d}) for d in ("bidirectional", "forward", "alternating")],
    ("msm_xlstm_debug", {"form": "parallel"}),
    ("msm_xlstm_debug", {"form": "recurrent", "direction": "alternating"}),
]


def _encoders(name: str, overrides: dict[str, str]) -> tuple[AudioEncoder, AudioEncoder]:
    cfg = model_config(name, encoder={"backbone_cfg": overrides}).encoder if overrides else model_config(name).encoder
    torch.manual_seed(0)
    normal = AudioEncoder(cfg).eval()
    export = AudioEncoder(cfg, exportable=True).eval()
    export.load_state_dict(normal.state_dict())
    return normal, export


@pytest.mark.parametrize(("name", "overrides"), VARIANTS, ids=lambda v: str(v))
def test_exportable_layers_equal_normal_path(name: str, overrides: dict[str, str]) -> None:
    normal, export = _encoders(name, overrides)
    g = torch.Generator().manual_seed(1)
    for n in (400, 16000, 37000):  # shorter than one frame, 1 s, 2.3 s; a padded batch of three
        wave = torch.randn(3, n, generator=g) * 0.3
        lengths = torch.tensor([n, max(1, n // 2), max(1, n // 5)])
        with torch.no_grad():
            fa, va = normal.frame_embeddings(wave, lengths)
            fb, vb = export.frame_embeddings(wave, lengths)
            ca = normal.clip_embedding(wave, lengths, pooling="meanmax")
            cb = export.clip_embedding(wave, lengths, pooling="meanmax")
        assert torch.equal(va, vb)
        torch.testing.assert_close(fb * vb[..., None], fa * va[..., None], atol=LAYERS_ATOL, rtol=0)
        torch.testing.assert_close(cb, ca, atol=LAYERS_ATOL, rtol=0)
        # one row alone (no padding: the exportable path still passes its all-False mask)
        with torch.no_grad():
            torch.testing.assert_close(export.frame_embeddings(wave[:1])[0], normal.frame_embeddings(wave[:1])[0],
                                       atol=LAYERS_ATOL, rtol=0)


def test_dft_front_end_equals_stft() -> None:
    fe = FrontendConfig()
    stft, dft = LogMel(fe), LogMel(fe, exportable=True)
    assert not dict(dft.state_dict())  # the basis is a non-persistent buffer: checkpoints are unchanged
    g = torch.Generator().manual_seed(0)
    for n in (100, 512, 16000, 160037):
        x = torch.randn(2, n, generator=g) * 0.3
        x[1] *= 1e-3  # quiet audio: log of small powers
        torch.testing.assert_close(dft(x), stft(x), atol=1e-4, rtol=0)


def test_numpy_pooling_equals_pool_frames() -> None:
    frames = torch.randn(9, 8, generator=torch.Generator().manual_seed(0))
    for pooling in POOLINGS:
        np.testing.assert_allclose(pool_frames_np(frames.numpy(), pooling), pool_frames(frames[None], None, pooling)[0],
                                   atol=1e-6)


# --------------------------------------------------------------------------- ONNX graphs

ORT = pytest.importorskip("onnxruntime", reason="the export extra is not installed")

EXPORTS = {  # preset → (backbone overrides, front end): every backbone, both front-end layouts
    "msm_vit_debug": ({}, "included"),
    "msm_mamba_debug": ({"direction": "alternating"}, "included"),
    "msm_mamba2_debug": ({"direction": "alternating"}, "included"),
    "msm_xlstm_debug": ({}, "separate"),
}


def _checkpoint(root: Path, name: str, overrides: dict[str, str]) -> Path:
    cfg = model_config(name, encoder={"backbone_cfg": overrides}) if overrides else model_config(name)
    torch.manual_seed(0)
    return save_checkpoint(root / name, CheckpointSpec.from_model_config(cfg), build_model(cfg))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Each backbone's debug checkpoint and its ONNX export (written once; export takes ~1 min)."""
    from audiofm.export.commands import main

    root = tmp_path_factory.mktemp("export")
    out = {}
    for name, (overrides, frontend) in EXPORTS.items():
        ckpt = _checkpoint(root, name, overrides)
        onnx_file = root / f"{name}.onnx"
        assert main(["export", str(ckpt), "--format", "onnx", "--out", str(onnx_file), "--frontend", frontend]) == 0
        out[name] = (ckpt, onnx_file)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPORTS))
def test_onnx_graph_equals_pytorch(exported: dict[str, tuple[Path, Path]], name: str) -> None:
    import audiofm
    from audiofm.export.embedder import OnnxEmbedder, read_metadata

    ckpt, onnx_file = exported[name]
    meta = read_metadata(onnx_file)
    ref = audiofm.load(ckpt, device="cpu")
    assert meta["weights_id"] == ref.weights_id and meta["sample_rate"] == 16000
    assert (meta["hop_length"], meta["fft_size"], meta["patch_t"], meta["pooling"]) == (160, 512, 16, "mean")
    assert meta["frontend"] == EXPORTS[name][1] and meta["timestamps"] == "patch_centre"
    onnx_emb = OnnxEmbedder(onnx_file, threads=1)
    g = torch.Generator().manual_seed(2)
    for n in (300, 31680, 64000):  # under one frame, 1.98 s, 4 s: dynamic batch and length
        wave = torch.randn(3, n, generator=g) * 0.1
        lengths = torch.tensor([n, max(1, n // 3), max(1, n // 7)])
        frames, counts, clip = onnx_emb.run(wave.numpy(), lengths.numpy())
        with torch.no_grad():
            fr, valid = ref.encoder.frame_embeddings(wave, lengths)
            cl = ref.encoder.clip_embedding(wave, lengths)
        assert frames.shape == tuple(fr.shape) and counts.tolist() == valid.sum(1).tolist()
        mask = valid.numpy()[..., None]
        np.testing.assert_allclose(frames * mask, fr.numpy() * mask, atol=ONNX_ATOL, rtol=0)
        np.testing.assert_allclose(clip, cl.numpy(), atol=ONNX_ATOL, rtol=0)
    from audiofm.export.commands import main

    assert main(["export", str(ckpt), "--out", str(onnx_file), "--no-check"]) == 2  # never overwritten silently


def _real_clips() -> list[np.ndarray]:
    files = sorted((SHARED_DATA / "tasks" / "fsdd-digit" / "16000" / "fold00").glob("*.flac"))[:12]
    if not files:
        pytest.skip("needs the shared task audio (AUDIOFM_DATA)")
    clips = [sf.read(f, dtype="float32")[0] for f in files]
    long = np.concatenate(clips * 4)  # > 16 s: several 4 s chunks (the training segment)
    return [clips[0], clips[1], clips[2][:2000], long]


_NO_TORCH = """
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
import numpy as np
from audiofm.export import OnnxEmbedder
data = np.load(sys.argv[2])
waves = [data[f"wave{i}"] for i in range(int(data["n"]))]
emb = OnnxEmbedder(sys.argv[1], threads=1)
out = emb.embed_batch(waves, 16000)
np.savez(sys.argv[3], **{f"clip{i}": e.clip for i, e in enumerate(out)},
         **{f"frames{i}": e.frames for i, e in enumerate(out)}, **{f"ts{i}": e.timestamps for i, e in enumerate(out)})
print(json.dumps({"torch_loaded": "torch" in sys.modules, "dim": emb.embed_dim, "name": emb.name}))
"""


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("name", list(EXPORTS))
def test_onnx_embedder_without_torch_on_real_audio(exported: dict[str, tuple[Path, Path]], name: str,
                                                   tmp_path: Path) -> None:
    import audiofm

    ckpt, onnx_file = exported[name]
    waves = _real_clips()
    np.savez(tmp_path / "in.npz", n=len(waves), **{f"wave{i}": w for i, w in enumerate(waves)})
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH, str(onnx_file), str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["torch_loaded"] is False
    got = np.load(tmp_path / "out.npz")
    ref = audiofm.load(ckpt, device="cpu")
    assert ref.chunk_seconds is not None and len(waves[-1]) > 4 * ref.chunk_seconds * 16000  # several chunks
    for i, e in enumerate(ref.embed_batch(waves, 16000)):
        assert got[f"frames{i}"].shape == e.frames.shape
        np.testing.assert_allclose(got[f"frames{i}"], e.frames, atol=ONNX_ATOL, rtol=0)
        np.testing.assert_allclose(got[f"clip{i}"], e.clip, atol=ONNX_ATOL, rtol=0)
        np.testing.assert_array_equal(got[f"ts{i}"], e.timestamps)


@pytest.mark.slow
def test_evaluate_takes_an_onnx_model(exported: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    from conftest import make_hear_task

    from audiofm.eval.commands import main

    _, onnx_file = exported["msm_vit_debug"]
    make_hear_task(tmp_path / "tasks", folds=3, per_class=3)
    run = tmp_path / "run"
    rc = main(["evaluate", "--model", str(onnx_file), "--tasks", str(tmp_path / "tasks"), "--out", str(run),
               "--seeds", "1", "--max-folds", "1", "--probes", "knn", "--threads", "1", "--no-progress"])
    assert rc == 0
    text = (run / "results.csv").read_text()
    assert "msm_vit_debug.onnx" in text and "knn" in text
    # a graph exported with one pooling is not evaluated with another
    rc = main(["evaluate", "--model", str(onnx_file), "--pooling", "max", "--tasks", str(tmp_path / "tasks"),
               "--out", str(tmp_path / "run2"), "--seeds", "1", "--probes", "knn", "--no-progress"])
    assert rc == 2
    # nor with several blocks (the graph reads one)
    rc = main(["evaluate", "--model", str(onnx_file), "--layers", "2", "--tasks", str(tmp_path / "tasks"),
               "--out", str(tmp_path / "run3"), "--seeds", "1", "--probes", "knn", "--no-progress"])
    assert rc == 2 and not (tmp_path / "run3").exists()
    # nor with its frequency patches concatenated (the graph averages them)
    rc = main(["evaluate", "--model", str(onnx_file), "--freq-mix", "concat", "--tasks", str(tmp_path / "tasks"),
               "--out", str(tmp_path / "run4"), "--seeds", "1", "--probes", "knn", "--no-progress"])
    assert rc == 2 and not (tmp_path / "run4").exists()


def test_export_refuses_bad_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from audiofm.cli import main

    ckpt = _checkpoint(tmp_path, "msm_vit_debug", {})
    assert main(["export", str(ckpt), "--out", str(tmp_path / "m.bin")]) == 2
    assert "--out must end in .onnx" in capsys.readouterr().err
    assert main(["export", str(ckpt), "--out", str(tmp_path / "m.onnx"), "--layer", "7"]) == 2
    assert "out of range" in capsys.readouterr().err
