"""aiSFX peer: sound-effects embeddings (Ma & Lerch, ISMIR 2022), 512-d per ~2.3 s block at 44.1 kHz.

Model and weights come from the ``aisfx`` package (weights CC BY 4.0), installed with ``--no-deps``
because it pins numpy==1.23 / librosa==0.9.2. Its original front end is Essentia's; Essentia is not
a dependency here, so :func:`essentia_melspec` re-implements that front end in numpy (verified
against Essentia 2.1b6 to ~3e-6 on the log-mel values).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from audiofm.peers._base import PeerEmbedder, PeerInfo, package_file, require_module

SAMPLE_RATE = 44100
N_FFT = 2048  # aisfx.inference.SPEC_BLOCK_LENGTH
HOP = 1024  # aisfx.inference.SPEC_HOP_LENGTH
N_MELS = 96  # aisfx.inference.MEL_BINS
BLOCK = 100  # spectrogram frames per embedding (aisfx.inference.EMB_BLOCK_LENGTH), 2.32 s
SPEC_MAX = 9.457798957824707  # 'original' min-max normalisation of aisfx.preprocessing (min 0)

INFO = PeerInfo(
    name="aisfx",
    sample_rate=SAMPLE_RATE,
    embed_dim=512,
    window_seconds=BLOCK * HOP / SAMPLE_RATE,
    hop_seconds=BLOCK * HOP / SAMPLE_RATE / 2,
    pooling="mean over blocks",
    license="CC BY 4.0 (aisfx LICENSE file and README: pretrained model and paper)",
    packages=("aisfx==0.1.2",),
    description="aiSFX X-Sequential-CE CNN trained on sound-effects libraries (UCS categories)",
    caveats=(
        "Front end re-implements aisfx's Essentia mel spectrogram (Essentia is not installed).",
        "A trailing partial block is dropped (aisfx drop_partial_block=True); a clip shorter than "
        "one block gives one zero-padded block.",
    ),
)


def _hz_to_mel(f: npt.ArrayLike) -> np.ndarray:
    return 1127.01048 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)  # Essentia 'htkMel'


def _mel_to_hz(m: npt.ArrayLike) -> np.ndarray:
    return 700.0 * np.expm1(np.asarray(m, dtype=np.float64) / 1127.01048)


@lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """(N_MELS, N_FFT//2+1) weights of Essentia MelBands(htkMel, weighting='warping', 'unit_sum')."""
    n_bins = N_FFT // 2 + 1
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2))
    mel_edges = _hz_to_mel(edges)
    bin_hz = (SAMPLE_RATE / 2) / (n_bins - 1)
    weights = np.zeros((N_MELS, n_bins))
    for i in range(N_MELS):
        lo, centre, hi = edges[i : i + 3]
        # Essentia's TriangularBands visits bins round(lo)..round(hi) inclusive
        j = np.arange(int(lo / bin_hz + 0.5), min(int(hi / bin_hz + 0.5) + 1, n_bins))
        f = j * bin_hz
        m = _hz_to_mel(f)
        up = (f >= lo) & (f < centre)
        down = (f >= centre) & (f < hi)
        weights[i, j[up]] = (m[up] - mel_edges[i]) / (mel_edges[i + 1] - mel_edges[i])
        weights[i, j[down]] = (mel_edges[i + 2] - m[down]) / (mel_edges[i + 2] - mel_edges[i + 1])
        total = weights[i].sum()
        if total > 0:
            weights[i] /= total
    return weights


def essentia_melspec(wave: np.ndarray, chunk_frames: int = 2048) -> np.ndarray:
    """(n_frames, 96) log10(1e4 * mel power + 1) as aisfx's Essentia front end computes it.

    Essentia FrameCutter (startFromZero=False): frame k is centred on sample k*HOP with zero
    padding, frames run while their start is inside the signal; symmetric Hann, |rfft|^2.
    """
    n = int(np.ceil((wave.size + N_FFT / 2) / HOP))
    padded = np.zeros((n - 1) * HOP + N_FFT, dtype=np.float64)
    padded[N_FFT // 2 : N_FFT // 2 + wave.size] = wave
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / (N_FFT - 1))
    fb = mel_filterbank().T  # (bins, mels)
    out = np.empty((n, N_MELS))
    offsets = np.arange(N_FFT)
    for s in range(0, n, chunk_frames):
        k = np.arange(s, min(n, s + chunk_frames))
        frames = padded[k[:, None] * HOP + offsets] * window  # (chunk, N_FFT)
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        out[k] = np.log10(1e4 * (power @ fb) + 1.0)
    return out


class AisfxPeer(PeerEmbedder):
    """aiSFX embeddings: one 512-d vector per 100-frame (2.32 s) mel block, hop ``hop_fraction``."""

    info = INFO

    def __init__(self, hop_fraction: float = 0.5, batch_size: int = 32) -> None:
        if not 0.0 < hop_fraction <= 1.0:
            raise ValueError(f"hop_fraction must be in (0, 1], got {hop_fraction}")
        weights = package_file("aisfx", "models/checkpoint.pth", "aisfx==0.1.2", INFO.name)
        super().__init__(weights, {"hop_fraction": hop_fraction, "spec_norm": "original"})
        self.block_hop = max(1, round(BLOCK * hop_fraction))  # aisfx.preprocessing.compute_hopSize
        self.batch_size = batch_size
        cnn2d = require_module("aisfx.models.cnn2d", "aisfx==0.1.2", INFO.name, no_deps=True)
        state, ds_dict = _load_checkpoint(weights)
        model = cnn2d.CrossNet(cnn2d.EmbeddingNet("max", 3, 1, 64), ds_dict, "cpu")  # X-Sequential-CE
        model.load_state_dict(state)
        self.net = model.embedding_net.eval()  # the classifier heads are not used

    def _frames(self, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        spec = essentia_melspec(wave) / SPEC_MAX  # (n, 96), 'original' normalisation, min 0
        n = spec.shape[0]
        # aisfx.preprocessing.blocking with drop_partial_block=True, at least one block
        n_blocks = max(1, (n - BLOCK) // self.block_hop + 1)
        starts = np.arange(n_blocks) * self.block_hop
        padded = np.concatenate([spec, np.zeros((BLOCK, N_MELS))], axis=0).astype(np.float32)
        out = []
        with torch.no_grad():
            for i in range(0, n_blocks, self.batch_size):
                blocks = np.stack([padded[s : s + BLOCK] for s in starts[i : i + self.batch_size]])
                out.append(self.net(torch.from_numpy(blocks)).numpy())  # (b, 100, 96) -> (b, 512)
        # spectrogram frame k is centred on sample k*HOP
        timestamps = (starts + (BLOCK - 1) / 2) * HOP / SAMPLE_RATE
        return np.concatenate(out, axis=0), timestamps


def _load_checkpoint(path: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, ds_dict) from the checkpoint shipped in the aisfx package.

    The file is a pickle of (state_dict, ds_dict) whose ds_dict holds numpy int64 scalars, so the
    default ``weights_only=True`` loader refuses it. Rather than ``weights_only=False`` (arbitrary
    code), only the two numpy globals that file needs are allow-listed; this is done only for the
    file inside the installed aisfx package.
    """
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    allowed: list[Any] = [(scalar, "numpy.core.multiarray.scalar"), np.dtype, type(np.dtype(np.int64))]
    with torch.serialization.safe_globals(allowed):
        state, ds_dict = torch.load(path, map_location="cpu", weights_only=True)
    return state, ds_dict
