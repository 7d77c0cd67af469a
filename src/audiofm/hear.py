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

**Timestamps lie within the audio and are evenly spaced**: a frame whose centre falls after the
end of the sound (the last, partial time patch, whose frames' centre can lie past the end) is
not returned. The hop is the model's time patch (160 ms for 16-frame patches at 10 ms).
``load_model(..., timestamp_hop_ms=40)`` gives finer timestamps by *shifted passes*: the encoder
runs ``r = patch hop / timestamp_hop_ms`` times on the sound shifted by multiples of the finer hop
(zeros prepended, or samples dropped, at the start) and the frames are interleaved, so each
returned frame is the model's own embedding of a time patch centred at its timestamp — r times
the compute, no retraining (docs/export.md measures it). A path ending in ``.onnx`` loads an
exported graph (:class:`audiofm.export.OnnxEmbedder`).
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

    def __init__(self, embedder: AudioEmbedder, batch_size: int = 16, timestamp_hop_ms: float | None = None
                 ) -> None:
        super().__init__()
        self.embedder = embedder
        self.sample_rate = int(embedder.sample_rate)
        self.scene_embedding_size = int(embedder.embed_dim)
        frame_dim = getattr(embedder, "frame_dim", None)
        hop = getattr(embedder, "patch_seconds", None)
        if frame_dim is None or (timestamp_hop_ms is not None and hop is None):
            probe = embedder.embed(np.zeros(self.sample_rate, dtype=np.float32), self.sample_rate)
            frame_dim = probe.frames.shape[1]
            hop = float(np.diff(probe.timestamps)[0]) if hop is None and len(probe.timestamps) > 1 else hop
        self.timestamp_embedding_size = int(frame_dim)
        self.batch_size = int(batch_size)
        #: passes of the encoder on shifted audio per timestamp call (1 = the model's own hop)
        self.passes = 1
        self.shift_samples = 0
        #: of the passes, how many run on the sound delayed (zeros prepended): as many as keep the
        #: first frame centre ≥ 0
        self.early_passes = 0
        if timestamp_hop_ms is not None:
            self.passes, self.shift_samples = _shifted_passes(timestamp_hop_ms, hop, self.sample_rate)
            first = embedder.embed(np.zeros(self.sample_rate, dtype=np.float32), self.sample_rate).timestamps[0]
            self.early_passes = min(self.passes - 1, int(first * self.sample_rate // self.shift_samples))

    def forward(self, audio: Tensor) -> Tensor:
        return get_scene_embeddings(audio, self)


def load_model(model_file_path: str = "", **kwargs: Any) -> HearModel:
    """Load an audiofm checkpoint directory as a HEAR model.

    Keyword arguments: ``layer`` (encoder block, -1 last), ``pooling`` ("mean", "max",
    "meanmax", "meanstd"), ``freq_mix`` ("mean", "concat") and the other
    :class:`~audiofm.api.Embedder` settings are passed to :func:`audiofm.load`; ``batch_size`` bounds memory;
    ``timestamp_hop_ms`` (e.g. 40, 20, 10: the patch hop divided by a whole number) gives finer
    timestamps by shifted passes (see the module doc). A ``.onnx`` path loads an exported graph. With an empty
    path, ``model_name="msm_vit_debug"`` (and optional ``seed``) builds that registered
    architecture with random weights — for smoke tests only.
    """
    batch_size = int(kwargs.pop("batch_size", 16))
    model_name = kwargs.pop("model_name", None)
    seed = int(kwargs.pop("seed", 0))
    hop_ms = kwargs.pop("timestamp_hop_ms", None)
    hop_ms = None if hop_ms is None else float(hop_ms)
    if model_file_path and str(model_file_path).endswith(".onnx"):
        from .export.embedder import OnnxEmbedder

        return HearModel(OnnxEmbedder(str(model_file_path), **kwargs), batch_size, hop_ms)
    if model_file_path:
        from . import load

        return HearModel(load(str(model_file_path), **kwargs), batch_size, hop_ms)
    if model_name:
        from .api import random_like

        return HearModel(random_like(str(model_name), seed=seed, **kwargs), batch_size, hop_ms)
    raise ValueError("load_model needs an audiofm checkpoint directory (config.json + model.safetensors), "
                     "e.g. load_model('runs/my_run/checkpoint')")


def _check(audio: Tensor, model: HearModel) -> None:
    if not isinstance(model, HearModel):
        raise ValueError(f"model must come from audiofm.hear.load_model, got {type(model).__name__}")
    if not isinstance(audio, Tensor) or audio.ndim != 2:
        shape = tuple(audio.shape) if isinstance(audio, Tensor) else type(audio).__name__
        raise ValueError(f"audio must be a Tensor of shape (n_sounds, n_samples), got {shape}")
    if audio.shape[1] == 0:
        raise ValueError("audio has 0 samples per sound")


def _embed(audio: Tensor, model: HearModel) -> list[Embeddings]:
    _check(audio, model)
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
    ``(n_sounds, n_timestamps)`` timestamps in **milliseconds**, the same for every sound, evenly
    spaced (the model's patch hop, or ``timestamp_hop_ms``) and within the sound: frames whose
    centre falls after its end are not returned.
    """
    _check(audio, model)
    if audio.shape[0] == 0:
        d = model.timestamp_embedding_size
        return (torch.zeros((0, 0, d), dtype=torch.float32, device=audio.device),
                torch.zeros((0, 0), dtype=torch.float32, device=audio.device))
    n_samples = audio.shape[1]
    duration = n_samples / model.sample_rate
    per_pass: list[tuple[np.ndarray, np.ndarray]] = []  # (frames (n, T_j, D), centre times (T_j,))
    for j in range(model.passes):
        offset = (j - model.early_passes) * model.shift_samples  # samples: < 0 prepend zeros, > 0 drop
        if offset < 0:
            shifted = torch.cat([audio.new_zeros(audio.shape[0], -offset), audio], dim=1)
        else:
            shifted = audio[:, offset:]
        if shifted.shape[1] == 0:
            continue
        embs = _embed(shifted, model)
        ts = _timestamps_of(embs) + offset / model.sample_rate
        per_pass.append((np.stack([np.asarray(e.frames, dtype=np.float32) for e in embs]), ts))
    # interleave the passes by time: frame k of the pass shifted by o has centre t_k + o
    frames_all = np.concatenate([f for f, _ in per_pass], axis=1)
    ts_all = np.concatenate([t for _, t in per_pass])
    order = np.argsort(ts_all, kind="stable")
    ts_all, frames_all = ts_all[order], frames_all[:, order]
    first = float(ts_all[0])
    step = model.shift_samples / model.sample_rate if model.passes > 1 else (
        float(ts_all[1] - ts_all[0]) if len(ts_all) > 1 else 0.0)
    # keep the evenly spaced run from the first centre that lies within the sound
    n = 1
    while n < len(ts_all) and abs(ts_all[n] - (first + n * step)) < 1e-9 and ts_all[n] <= duration + 1e-9:
        n += 1
    ts = first + step * np.arange(n, dtype=np.float64)
    if ts[0] > duration:  # a sound shorter than half a time patch: its one frame, centred in it
        ts = np.asarray([duration / 2])
    frames = frames_all[:, :n]
    ms = np.broadcast_to((ts * 1000.0).astype(np.float32), (frames.shape[0], n)).copy()  # (n_sounds, T)
    return torch.from_numpy(np.ascontiguousarray(frames)).to(audio.device), torch.from_numpy(ms).to(audio.device)


def _timestamps_of(embs: list[Embeddings]) -> np.ndarray:
    """The frame centres (seconds) shared by every sound of a call."""
    counts = {e.frames.shape[0] for e in embs}
    if len(counts) != 1:
        raise RuntimeError(f"sounds of equal length gave different frame counts {sorted(counts)}")
    ts = np.asarray(embs[0].timestamps, dtype=np.float64)
    for e in embs[1:]:
        if not np.allclose(e.timestamps, ts, rtol=0, atol=1e-9):
            raise RuntimeError("frame timestamps differ between sounds of equal length")
    return ts


def _shifted_passes(hop_ms: float, patch_seconds: float | None, sample_rate: int) -> tuple[int, int]:
    """(passes r, shift in samples) giving timestamps every ``hop_ms`` from a model whose frames
    are ``patch_seconds`` apart: r must be whole and the shift a whole number of samples."""
    if patch_seconds is None:
        raise ValueError("timestamp_hop_ms needs an embedder with more than one frame per second of audio")
    hop_samples = round(patch_seconds * sample_rate)
    r = round(patch_seconds * 1000 / hop_ms)
    if r < 1 or abs(r * hop_ms - patch_seconds * 1000) > 1e-6 or hop_samples % r:
        ok = [f"{patch_seconds * 1000 / d:g}" for d in range(1, hop_samples + 1)
              if hop_samples % d == 0 and d <= 64]
        raise ValueError(f"timestamp_hop_ms={hop_ms:g} does not divide the model's frame hop of "
                         f"{patch_seconds * 1000:g} ms into whole passes; use one of {', '.join(ok)}")
    return r, hop_samples // r


__all__ = ["HearModel", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]
