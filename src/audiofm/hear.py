"""HEAR 2021 common API (hearbenchmark.com/hear-api.html) for audiofm checkpoints.

>>> import audiofm.hear as hear
>>> model = hear.load_model("runs/my_run/checkpoint")          # layer=..., pooling=... optional
>>> scene = hear.get_scene_embeddings(audio, model)             # (n_sounds, scene_embedding_size)
>>> emb, ts = hear.get_timestamp_embeddings(audio, model)       # (n_sounds, T, D), (n_sounds, T) in ms

``audio`` is a float Tensor ``(n_sounds, n_samples)`` of mono audio in [-1, 1] at
``model.sample_rate`` (callers resample; HEAR provides the task audio at common rates). All
sounds of a call have the same length, so each embeds exactly as it would alone: the result for
a batch equals the results one by one. Timestamp embeddings are the encoder's frame
embeddings; timestamps are the frame *centres* in milliseconds from the start of the sound,
identical for every sound of the batch. Scene embeddings are the pooled clip embeddings (the
``pooling`` given to :func:`load_model`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .embedding import AudioEmbedder, Embeddings


class HearModel(torch.nn.Module):
    """An :class:`~audiofm.embedding.AudioEmbedder` with the attributes HEAR requires.

    ``sample_rate``: rate the audio must have. ``scene_embedding_size``: width of the pooled
    clip embedding (``embed_dim``; 2·D for mean+max pooling). ``timestamp_embedding_size``:
    width D of the frame embeddings (the embedder's ``frame_dim``, else measured on 1 s of
    silence). ``batch_size``: sounds per ``embed_batch`` call (memory bound; results do not
    depend on it).
    """

    def __init__(self, embedder: AudioEmbedder, batch_size: int = 16) -> None:
        super().__init__()
        self.embedder = embedder
        self.sample_rate = int(embedder.sample_rate)
        self.scene_embedding_size = int(embedder.embed_dim)
        frame_dim = getattr(embedder, "frame_dim", None)
        if frame_dim is None:
            probe = embedder.embed(np.zeros(self.sample_rate, dtype=np.float32), self.sample_rate)
            frame_dim = probe.frames.shape[1]
        self.timestamp_embedding_size = int(frame_dim)
        self.batch_size = int(batch_size)

    def forward(self, audio: Tensor) -> Tensor:
        return get_scene_embeddings(audio, self)


def load_model(model_file_path: str = "", **kwargs: Any) -> HearModel:
    """Load an audiofm checkpoint directory as a HEAR model.

    Keyword arguments: ``layer`` (encoder block, -1 last) and ``pooling`` ("mean", "max",
    "meanmax") are passed to :func:`audiofm.load`; ``batch_size`` bounds memory. With an empty
    path, ``model_name="msm_vit_debug"`` (and optional ``seed``) builds that registered
    architecture with random weights — for smoke tests only.
    """
    batch_size = int(kwargs.pop("batch_size", 16))
    model_name = kwargs.pop("model_name", None)
    seed = int(kwargs.pop("seed", 0))
    if model_file_path:
        from . import load

        return HearModel(load(str(model_file_path), **kwargs), batch_size=batch_size)
    if model_name:
        from .api import random_like

        return HearModel(random_like(str(model_name), seed=seed, **kwargs), batch_size=batch_size)
    raise ValueError("load_model needs an audiofm checkpoint directory (config.json + model.safetensors), "
                     "e.g. load_model('runs/my_run/checkpoint')")


def _embed(audio: Tensor, model: HearModel) -> list[Embeddings]:
    if not isinstance(model, HearModel):
        raise ValueError(f"model must come from audiofm.hear.load_model, got {type(model).__name__}")
    if not isinstance(audio, Tensor) or audio.ndim != 2:
        shape = tuple(audio.shape) if isinstance(audio, Tensor) else type(audio).__name__
        raise ValueError(f"audio must be a Tensor of shape (n_sounds, n_samples), got {shape}")
    if audio.shape[1] == 0:
        raise ValueError("audio has 0 samples per sound")
    waves = [a for a in audio.detach().to("cpu", torch.float32).numpy()]
    out: list[Embeddings] = []
    for s in range(0, len(waves), model.batch_size):
        chunk = waves[s : s + model.batch_size]
        embs = model.embedder.embed_batch(chunk, model.sample_rate)
        if len(embs) != len(chunk):
            raise RuntimeError(f"{model.embedder.name}: embed_batch returned {len(embs)} results for "
                               f"{len(chunk)} sounds")
        out.extend(embs)
    return out


def get_scene_embeddings(audio: Tensor, model: HearModel) -> Tensor:
    """One embedding per sound: float32 ``(n_sounds, model.scene_embedding_size)``."""
    embs = _embed(audio, model)
    if not embs:
        return torch.zeros((0, model.scene_embedding_size), dtype=torch.float32, device=audio.device)
    clips = np.stack([np.asarray(e.clip, dtype=np.float32) for e in embs])
    return torch.from_numpy(clips).to(audio.device)


def get_timestamp_embeddings(audio: Tensor, model: HearModel) -> tuple[Tensor, Tensor]:
    """Frame embeddings and their centre times.

    Returns float32 ``(n_sounds, n_timestamps, model.timestamp_embedding_size)`` and float32
    ``(n_sounds, n_timestamps)`` timestamps in **milliseconds**, the same for every sound.
    """
    embs = _embed(audio, model)
    if not embs:
        d = model.timestamp_embedding_size
        return (torch.zeros((0, 0, d), dtype=torch.float32, device=audio.device),
                torch.zeros((0, 0), dtype=torch.float32, device=audio.device))
    counts = {e.frames.shape[0] for e in embs}
    if len(counts) != 1:
        raise RuntimeError(f"{model.embedder.name}: sounds of equal length gave different frame counts "
                           f"{sorted(counts)}")
    ts = np.asarray(embs[0].timestamps, dtype=np.float64)
    for e in embs[1:]:
        if not np.allclose(e.timestamps, ts, rtol=0, atol=1e-9):
            raise RuntimeError(f"{model.embedder.name}: frame timestamps differ between sounds of equal "
                               "length")
    frames = np.stack([np.asarray(e.frames, dtype=np.float32) for e in embs])  # (n, T, D)
    ms = np.broadcast_to((ts * 1000.0).astype(np.float32), (len(embs), len(ts))).copy()  # (n, T)
    return torch.from_numpy(frames).to(audio.device), torch.from_numpy(ms).to(audio.device)


__all__ = ["HearModel", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]
