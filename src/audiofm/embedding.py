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
