"""The embedding contract shared by audiofm checkpoints, baselines and peer models.

Anything that turns audio into embeddings (an audiofm checkpoint, the log-mel baseline, a
pretrained peer) implements :class:`AudioEmbedder`, so evaluation, caching and reports treat
them all alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class Embeddings:
    """Embeddings of one clip.

    ``clip``: (C,) pooled clip embedding. ``frames``: (T, D) frame embeddings (C may differ
    from D, e.g. mean+max pooling gives C = 2·D).
    ``timestamps``: (T,) centre time of each frame in seconds from the start of the input.
    """

    clip: np.ndarray
    frames: np.ndarray
    timestamps: np.ndarray

    def __post_init__(self) -> None:
        if self.frames.ndim != 2 or self.timestamps.shape != (self.frames.shape[0],):
            raise ValueError(
                f"frames must be (T, D) and timestamps (T,); got {self.frames.shape} and "
                f"{self.timestamps.shape}"
            )
        if self.clip.ndim != 1:
            raise ValueError(f"clip must be a vector (C,); got shape {self.clip.shape}")


@runtime_checkable
class AudioEmbedder(Protocol):
    """What evaluation needs from a model: deterministic embeddings of mono audio.

    ``sample_rate`` is the rate the model works at; ``embed`` accepts any rate and resamples.
    ``fingerprint()`` identifies the weights and embedding settings (used as a cache key).
    """

    name: str
    sample_rate: int
    embed_dim: int

    def embed(self, wave: np.ndarray, sr: int) -> Embeddings: ...

    def embed_batch(self, waves: list[np.ndarray], sr: int) -> list[Embeddings]: ...

    def fingerprint(self) -> str: ...


# --- torch-free pieces shared by the PyTorch Embedder and the ONNX embedder -------------------

POOLINGS = ("mean", "max", "meanmax", "meanstd")
"""Clip poolings over frames: 'mean', 'max', 'meanmax' (mean and max concatenated, 2·D) and
'meanstd' (mean and population standard deviation concatenated, 2·D)."""
LAYER_MIXES = ("mean", "concat")
"""How several blocks' outputs are combined (``layers`` > 1): their average, or concatenated."""
FREQ_MIXES = ("mean", "concat")
"""How the frequency patches of one time patch make a frame: their average (D dims), or
concatenated from low to high frequency (Fp·D dims, the frame of MSM-MAE and M2D)."""


def pooled_dim(frame_dim: int, pooling: str) -> int:
    """Size of a clip embedding pooled by ``pooling`` from frames of ``frame_dim`` dims."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    return frame_dim * (2 if pooling in ("meanmax", "meanstd") else 1)


def pool_frames_np(frames: np.ndarray, pooling: str = "mean") -> np.ndarray:
    """Clip embedding ``(C,)`` of ``frames (T, D)``: the numpy form of
    :func:`audiofm.models.encoder.pool_frames` over all frames (tested equal), for torch-free
    embedders."""
    pooled_dim(frames.shape[-1], pooling)  # checks the name
    parts = []
    if pooling in ("mean", "meanmax", "meanstd"):
        parts.append(frames.mean(axis=0, dtype=np.float32))
    if pooling in ("max", "meanmax"):
        parts.append(frames.max(axis=0))
    if pooling == "meanstd":
        parts.append(frames.std(axis=0, dtype=np.float32))
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)).astype(np.float32)


def chunk_plan(chunk_seconds: float, patch_t: int, hop_length: int, fft_size: int, sample_rate: int
               ) -> tuple[int, int]:
    """``(chunk length, chunk hop)`` in samples for chunks of about ``chunk_seconds`` that hold
    whole time patches and overlap by ``fft_size - hop_length`` samples, so that the stitched
    frames of the chunks are exactly the frames of the whole signal."""
    patch_seconds = patch_t * hop_length / sample_rate
    k = max(1, round(chunk_seconds / patch_seconds))
    hop = k * patch_t * hop_length
    return hop + fft_size - hop_length, hop


def chunk_starts(num_samples: int, chunk_len: int, chunk_hop: int) -> list[int]:
    """Start samples of the chunks of a signal (one chunk, at 0, when it fits)."""
    if num_samples <= chunk_len:
        return [0]
    return list(range(0, num_samples - (chunk_len - chunk_hop), chunk_hop))


def patch_timestamps(n: int, patch_t: int, hop_length: int, fft_size: int, sample_rate: int, start: int = 0
                     ) -> np.ndarray:
    """Centre (seconds) of time patches ``start..start+n-1`` of a signal starting at 0: the mean
    of the centres of the patch's frames (frame ``i`` covers samples ``[i·hop, i·hop + n_fft)``)."""
    idx = np.arange(start, start + n, dtype=np.float64)
    return ((idx * patch_t + (patch_t - 1) / 2) * hop_length + fft_size / 2) / sample_rate
