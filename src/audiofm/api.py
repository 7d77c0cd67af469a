"""The embedding API: ``audiofm.load(path).embed(wave, sr)``.

Long audio is cut into chunks of ``chunk_seconds`` (default: the model's training segment)
that overlap by ``n_fft - hop`` samples, so every chunk yields whole time patches and the
stitched frames are exactly the frames of the whole signal; each chunk is encoded on its own
(positions restart per chunk, as in training). ``chunk_seconds=None`` encodes the whole input in
one pass (the recurrent backbones' memory is linear in length).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import checkpoint as ckpt
from .audio import prepare
from .config import to_dict
from .embedding import Embeddings
from .models.encoder import POOLINGS, AudioEncoder
from .models.msm import ModelConfig
from .models.registry import build_model, model_config

if TYPE_CHECKING:
    from .stream import EmbeddingStream

_AUTO = "auto"


@dataclass
class _Chunk:
    clip: int
    index: int
    wave: np.ndarray


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Embedder:
    """Deterministic clip and frame embeddings from an audiofm encoder (an ``AudioEmbedder``).

    layer: encoder block whose output is used (-1 = last, after the final norm).
    pooling: clip pooling over frames: 'mean', 'max' or 'meanmax' (concatenated, 2·D dims).
    Frames are the mean over frequency patches of each time patch.
    """

    def __init__(
        self,
        encoder: AudioEncoder,
        config: ModelConfig,
        *,
        name: str,
        weights_id: str,
        layer: int = -1,
        pooling: str = "mean",
        chunk_seconds: float | str | None = _AUTO,
        batch_size: int = 16,
        device: str | torch.device | None = None,
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        depth = encoder.backbone.depth
        if not -depth <= layer < depth:
            raise ValueError(f"layer {layer} out of range for a {depth}-block encoder")
        self.device = torch.device(device) if device is not None else _default_device()
        self.encoder = encoder.to(self.device).eval()
        self.config = config
        self.name = name
        self.weights_id = weights_id
        self.layer = layer
        self.pooling = pooling
        self.batch_size = batch_size
        fe = config.encoder.frontend
        self.sample_rate = fe.sample_rate
        self.frame_dim = config.encoder.dim
        self.embed_dim = self.frame_dim * (2 if pooling == "meanmax" else 1)
        self.patch_seconds = config.encoder.patch_seconds
        if chunk_seconds == _AUTO:
            chunk_seconds = config.segment_seconds
        self.chunk_seconds: float | None = None if chunk_seconds in (None, 0) else float(chunk_seconds)
        if self.chunk_seconds is not None:
            k = max(1, round(self.chunk_seconds / self.patch_seconds))
            self._chunk_hop = k * config.encoder.patch_t * fe.hop_length  # samples between chunks
            self._chunk_len = self._chunk_hop + fe.fft_size - fe.hop_length

    # -- AudioEmbedder --------------------------------------------------------------------
    def fingerprint(self) -> str:
        spec = {"weights": self.weights_id, "layer": self.layer, "pooling": self.pooling,
                "chunk": self.chunk_seconds, "config": to_dict(self.config)}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def embed(self, wave: np.ndarray, sr: int) -> Embeddings:
        """Embeddings of one mono (or (T, C)) waveform at rate ``sr``."""
        return self.embed_batch([wave], sr)[0]

    def embed_batch(self, waves: list[np.ndarray], sr: int) -> list[Embeddings]:
        prepared = [prepare(w, sr, self.sample_rate, name=f"input {i}") for i, w in enumerate(waves)]
        chunks = [c for i, w in enumerate(prepared) for c in self._split(i, w)]
        frames: dict[tuple[int, int], np.ndarray] = {}
        order = sorted(range(len(chunks)), key=lambda j: -len(chunks[j].wave))  # less padding
        with torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                group = [chunks[j] for j in order[s : s + self.batch_size]]
                for c, f in zip(group, self._encode([c.wave for c in group])):
                    frames[(c.clip, c.index)] = f
        out = []
        for i in range(len(prepared)):
            parts = [frames[(i, j)] for j in range(sum(1 for c in chunks if c.clip == i))]
            fr = np.concatenate(parts, axis=0)
            out.append(Embeddings(self._pool(fr), fr, self.timestamps(fr.shape[0])))
        return out

    # -- helpers --------------------------------------------------------------------------
    def stream(self, sr: int | None = None) -> EmbeddingStream:
        """An :class:`~audiofm.stream.EmbeddingStream`: push audio pieces at rate ``sr`` (default:
        the model's), get frame embeddings as time patches complete — equal to one pass over the
        whole input. Needs a forward-direction Mamba or xLSTM encoder."""
        from .stream import EmbeddingStream

        return EmbeddingStream(self, self.sample_rate if sr is None else sr)

    def timestamps(self, n: int, start: int = 0) -> np.ndarray:
        """Centre (seconds) of time patches start..start+n-1 of a signal starting at 0."""
        fe = self.config.encoder.frontend
        pt = self.config.encoder.patch_t
        idx = np.arange(start, start + n, dtype=np.float64)
        return ((idx * pt + (pt - 1) / 2) * fe.hop_length + fe.fft_size / 2) / fe.sample_rate

    def _split(self, clip: int, wave: np.ndarray) -> list[_Chunk]:
        if self.chunk_seconds is None or len(wave) <= self._chunk_len:
            return [_Chunk(clip, 0, wave)]
        starts = range(0, len(wave) - (self._chunk_len - self._chunk_hop), self._chunk_hop)
        return [_Chunk(clip, j, wave[s : s + self._chunk_len]) for j, s in enumerate(starts)]

    def _encode(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        n = max(len(w) for w in waves)
        batch = np.zeros((len(waves), n), dtype=np.float32)
        for i, w in enumerate(waves):
            batch[i, : len(w)] = w
        x = torch.from_numpy(batch).to(self.device)
        lengths = torch.tensor([len(w) for w in waves], device=self.device)
        fr, valid = self.encoder.frame_embeddings(x, lengths, layer=self.layer)
        arr = fr.float().cpu().numpy()
        counts = valid.sum(dim=1).cpu().tolist()
        return [arr[i, : int(c)] for i, c in enumerate(counts)]

    def _pool(self, frames: np.ndarray) -> np.ndarray:
        if self.pooling == "mean":
            return frames.mean(axis=0)
        if self.pooling == "max":
            return frames.max(axis=0)
        return np.concatenate([frames.mean(axis=0), frames.max(axis=0)])

    def __repr__(self) -> str:
        return (f"Embedder({self.name!r}, dim={self.embed_dim}, rate={self.sample_rate}, layer={self.layer}, "
                f"pooling={self.pooling!r}, chunk_seconds={self.chunk_seconds})")


def _encoder_state(state: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """Encoder weights from a full-model state dict (decoder weights are ignored)."""
    enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    if not enc:
        raise ckpt.CheckpointError(f"{where}: the weights contain no encoder (no 'encoder.*' keys)")
    return enc


def load(path: str | os.PathLike[str], *, strict: bool = True, **kwargs: Any) -> Embedder:
    """Load a checkpoint or run directory as an :class:`Embedder` (kwargs: see Embedder)."""
    d = ckpt.resolve(path)
    config = ckpt.load_config(d)
    model = build_model(config)
    state = _encoder_state(ckpt.load_state_dict(d), str(d))
    ckpt.load_weights(model.encoder, state, str(d), strict=strict)
    kwargs.setdefault("name", Path(path).name)
    return Embedder(model.encoder, config, weights_id=ckpt.content_hash(d), **kwargs)


def random_like(path_or_name: str | os.PathLike[str], seed: int = 0, **kwargs: Any) -> Embedder:
    """The same architecture (and front-end statistics) as a checkpoint or preset, randomly
    initialised with ``seed`` — the 'random' baseline."""
    p = Path(path_or_name)
    config = ckpt.load_config(p) if p.exists() else model_config(str(path_or_name))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(config)
    kwargs.setdefault("name", f"random-{config.name}")
    return Embedder(model.encoder, config, weights_id=f"random-seed{seed}", **kwargs)
