"""Resemblyzer peer: GE2E speaker encoder (Resemble AI), 256-d per 1.6 s partial at 16 kHz.

Weights (``pretrained.pt``) ship in the ``Resemblyzer`` package (Apache-2.0). The package imports
librosa at import time, so it is installed with ``--no-deps`` and not imported: the 3-layer LSTM
is rebuilt here with the same shapes and the package's state dict is loaded strictly, and its
preprocessing is re-implemented with numpy (mel front end equal to ``resemblyzer.audio.
wav_to_mel_spectrogram`` under librosa 0.11, verified to ~1e-6 relative) and ``webrtcvad``
(from ``webrtcvad-wheels``) for ``trim_long_silences``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from audiofm.peers._base import PeerEmbedder, PeerInfo, package_file, require_module

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms (hparams.mel_window_length)
HOP = 160  # 10 ms (hparams.mel_window_step)
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s (hparams.partials_n_frames)
VAD_WINDOW = 480  # 30 ms (hparams.vad_window_length)
VAD_AVERAGE_WIDTH = 8
VAD_MAX_SILENCE = 6
TARGET_DBFS = -30.0
INT16_MAX = 2**15 - 1

INFO = PeerInfo(
    name="resemblyzer",
    sample_rate=SAMPLE_RATE,
    embed_dim=256,
    window_seconds=PARTIAL_FRAMES * HOP / SAMPLE_RATE,
    hop_seconds=round(SAMPLE_RATE / 1.3 / HOP) * HOP / SAMPLE_RATE,
    pooling="L2-normalised mean of the L2-normalised partial embeddings (Resemblyzer's own)",
    license="Apache-2.0 (Resemblyzer code and pretrained.pt)",
    packages=("Resemblyzer==0.1.4", "webrtcvad-wheels==2.0.14.post1"),
    description="Resemblyzer VoiceEncoder: GE2E 3-layer LSTM speaker encoder on 40-bin mel frames",
    caveats=(
        "By default the input is volume-normalised (up to -30 dBFS) and long silences are cut with "
        "webrtcvad, as resemblyzer.preprocess_wav does; frame timestamps are mapped back to the "
        "original input. If the VAD finds no voice the whole clip is used.",
        "Mel padding follows librosa >= 0.10 (zero padding); the model was trained with older "
        "librosa (reflect padding), which only changes the first and last 10 ms frames.",
    ),
)


class VoiceEncoder(nn.Module):
    """Same layers and state-dict keys as ``resemblyzer.VoiceEncoder``."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        self.relu = nn.ReLU()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        # mels: (B, frames, 40) -> (B, 256), non-negative and L2-normalised
        _, (hidden, _) = self.lstm(mels)
        embeds = self.relu(self.linear(hidden[-1]))
        return embeds / torch.norm(embeds, dim=1, keepdim=True)


def _hz_to_mel(f: npt.ArrayLike) -> np.ndarray:
    """Slaney mel scale (librosa ``htk=False``)."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    mel = f / f_sp
    return np.where(f >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mel)


def _mel_to_hz(m: npt.ArrayLike) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """(40, 201) = ``librosa.filters.mel(sr=16000, n_fft=400, n_mels=40)`` (Slaney scale and norm)."""
    fft_hz = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2))
    ramps = mel_hz[:, None] - fft_hz[None, :]
    fdiff = np.diff(mel_hz)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]


def mel_spectrogram(wave: np.ndarray, chunk_frames: int = 4096) -> np.ndarray:
    """(1 + len//160, 40) mel power frames (not log), as ``resemblyzer.audio.wav_to_mel_spectrogram``.

    librosa stft defaults: periodic Hann, centred frames (frame k on sample k*160), zero padding.
    """
    n = 1 + wave.size // HOP
    padded = np.zeros((n - 1) * HOP + N_FFT, dtype=np.float64)
    padded[N_FFT // 2 : N_FFT // 2 + wave.size] = wave  # fits: (len//160)*160 + 400 > len + 200
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)
    fb = mel_filterbank().T  # (201, 40)
    out = np.empty((n, N_MELS), dtype=np.float32)
    for s in range(0, n, chunk_frames):
        k = np.arange(s, min(n, s + chunk_frames))
        frames = padded[k[:, None] * HOP + np.arange(N_FFT)] * window
        out[k] = (np.abs(np.fft.rfft(frames, axis=1)) ** 2) @ fb
    return out


def normalize_volume(wave: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Raise (never lower) the level to ``target_dbfs`` like ``resemblyzer.audio.normalize_volume``."""
    rms = float(np.sqrt(np.mean((wave.astype(np.float64) * INT16_MAX) ** 2)))
    if rms == 0.0:
        return wave
    change = target_dbfs - 20 * np.log10(rms / INT16_MAX)
    if change < 0:
        return wave
    return (wave * 10 ** (change / 20)).astype(np.float32)


def voiced_indices(wave: np.ndarray) -> np.ndarray:
    """Indices of the samples ``resemblyzer.audio.trim_long_silences`` keeps (webrtcvad mode 3)."""
    from scipy.ndimage import binary_dilation

    webrtcvad = require_module("webrtcvad", "webrtcvad-wheels==2.0.14.post1", INFO.name)
    n = wave.size - wave.size % VAD_WINDOW
    pcm = np.clip(np.round(wave[:n] * INT16_MAX), -(2**15), INT16_MAX).astype("<i2").tobytes()
    vad = webrtcvad.Vad(3)
    flags = np.array(
        [vad.is_speech(pcm[s * 2 : (s + VAD_WINDOW) * 2], SAMPLE_RATE) for s in range(0, n, VAD_WINDOW)],
        dtype=np.float64,
    )
    if flags.size == 0:
        return np.arange(0)
    width = VAD_AVERAGE_WIDTH  # moving average exactly as resemblyzer's
    padded = np.concatenate((np.zeros((width - 1) // 2), flags, np.zeros(width // 2)))
    acc = np.cumsum(padded)
    acc[width:] = acc[width:] - acc[:-width]
    mask = np.round(acc[width - 1 :] / width).astype(bool)
    mask = binary_dilation(mask, np.ones(VAD_MAX_SILENCE + 1))
    return np.nonzero(np.repeat(mask, VAD_WINDOW))[0]


def partial_starts(n_samples: int, rate: float, min_coverage: float) -> np.ndarray:
    """First mel frame of each partial (``VoiceEncoder.compute_partial_slices``)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = round((SAMPLE_RATE / rate) / HOP)
    if not 0 < step <= PARTIAL_FRAMES:
        raise ValueError(f"rate {rate} gives a partial step of {step} frames; need 1..{PARTIAL_FRAMES}")
    starts = np.arange(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step)
    last = starts[-1] * HOP
    coverage = (n_samples - last) / (PARTIAL_FRAMES * HOP)
    if coverage < min_coverage and starts.size > 1:
        starts = starts[:-1]
    return starts


class ResemblyzerPeer(PeerEmbedder):
    """Resemblyzer speaker embeddings of 1.6 s partials, ``rate`` partials per second."""

    info = INFO

    def __init__(
        self,
        trim_silence: bool = True,
        normalize: bool = True,
        rate: float = 1.3,
        min_coverage: float = 0.75,
        batch_size: int = 64,
    ) -> None:
        if not 0 < min_coverage <= 1:
            raise ValueError(f"min_coverage must be in (0, 1], got {min_coverage}")
        path = package_file("resemblyzer", "pretrained.pt", "Resemblyzer==0.1.4", INFO.name)
        super().__init__(
            path,
            {"trim_silence": trim_silence, "normalize": normalize, "rate": rate, "min_coverage": min_coverage},
        )
        self.trim_silence, self.normalize = trim_silence, normalize
        self.rate, self.min_coverage, self.batch_size = rate, min_coverage, batch_size
        partial_starts(PARTIAL_FRAMES * HOP, rate, min_coverage)  # validates rate
        if trim_silence:
            require_module("webrtcvad", "webrtcvad-wheels==2.0.14.post1", INFO.name)
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in checkpoint["model_state"].items() if k.startswith(("lstm.", "linear."))}
        self.net = VoiceEncoder()
        self.net.load_state_dict(state)  # strict: every layer must come from the checkpoint
        self.net.eval()

    def _frames(self, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.normalize:
            wave = normalize_volume(wave)
        kept = voiced_indices(wave) if self.trim_silence else np.arange(0)
        if kept.size >= VAD_WINDOW:
            wave = wave[kept]
        else:  # no voice found (or trimming off): use the whole clip
            kept = np.arange(wave.size)
        starts = partial_starts(wave.size, self.rate, self.min_coverage)
        stop = (starts[-1] + PARTIAL_FRAMES) * HOP
        padded = np.zeros(max(stop, wave.size), dtype=np.float32)
        padded[: wave.size] = wave
        mel = mel_spectrogram(padded)
        mels = np.stack([mel[s : s + PARTIAL_FRAMES] for s in starts])  # (P, 160, 40)
        out = []
        with torch.no_grad():
            for i in range(0, len(mels), self.batch_size):
                out.append(self.net(torch.from_numpy(mels[i : i + self.batch_size])).numpy())
        # partial centre in the (trimmed) signal, mapped back to the input's time line
        centre = np.round((starts + (PARTIAL_FRAMES - 1) / 2) * HOP).astype(np.int64)
        inside = np.minimum(centre, kept.size - 1)
        original = kept[inside] + (centre - inside)
        return np.concatenate(out, axis=0), original / SAMPLE_RATE

    def _pool(self, frames: np.ndarray) -> np.ndarray:
        mean = frames.mean(axis=0)
        return mean / np.linalg.norm(mean)
