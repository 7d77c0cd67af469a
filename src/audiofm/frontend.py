"""Log-mel front end: batched ``torch.stft`` → power → HTK mel → log → normalise, always in fp32.

``LogMel(cfg, exportable=True)`` computes the same spectrum as a real-valued strided conv with
the windowed DFT basis (cos and sin rows) instead of the complex-valued ``torch.stft``, so the
front end traces to ONNX; it equals the ``stft`` path to float32 rounding.

Frames are taken without centre padding (Kaldi "snip edges"): frame ``i`` covers samples
``[i*hop, i*hop + n_fft)``, so a frame depends only on the samples it covers (streamable), and
its centre is at ``(i*hop + n_fft/2) / sample_rate`` seconds. Inputs shorter than one frame are
zero-padded to one frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config import NonNegativeFloat, PositiveFloat, PositiveInt, check_ranges


@dataclass
class FrontendConfig:
    """sample_rate: model rate in Hz. win_ms / hop_ms: analysis window and hop.
    n_fft: FFT size (None → next power of two ≥ window). n_mels: mel bins.
    f_min / f_max: mel range in Hz (f_max None → Nyquist). log_eps: added before log.
    mean / std: normalisation statistics of the log-mel (set by ``audiofm stats``)."""

    sample_rate: PositiveInt = 16000
    win_ms: PositiveFloat = 25.0
    hop_ms: PositiveFloat = 10.0
    n_fft: PositiveInt | None = None
    n_mels: PositiveInt = 128
    f_min: NonNegativeFloat = 0.0
    f_max: PositiveFloat | None = None
    log_eps: PositiveFloat = 1e-6
    mean: float = 0.0
    std: PositiveFloat = 1.0

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.n_fft is None:
            self.n_fft = 1 << math.ceil(math.log2(self.win_length))
        if self.n_fft < self.win_length:
            raise ValueError(f"n_fft={self.n_fft} is shorter than the window ({self.win_length} samples)")

    @property
    def win_length(self) -> int:
        return round(self.sample_rate * self.win_ms / 1000)

    @property
    def hop_length(self) -> int:
        return round(self.sample_rate * self.hop_ms / 1000)

    @property
    def fft_size(self) -> int:
        assert self.n_fft is not None
        return self.n_fft

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` samples (at least 1)."""
        return max(1, 1 + (num_samples - self.fft_size) // self.hop_length)

    def frame_centre(self, index: Tensor | int) -> Tensor | float:
        """Centre time in seconds of frame ``index``."""
        return (index * self.hop_length + self.fft_size / 2) / self.sample_rate


def hz_to_mel(f: Tensor) -> Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float, f_max: float) -> Tensor:
    """(n_freqs, n_mels) HTK-mel triangular filters, unnormalised (peak 1)."""
    freqs = torch.linspace(0, sample_rate / 2, n_freqs, dtype=torch.float64)
    pts = mel_to_hz(torch.linspace(hz_to_mel(torch.tensor(f_min)).item(),
                                   hz_to_mel(torch.tensor(f_max)).item(), n_mels + 2, dtype=torch.float64))
    lower, centre, upper = pts[:-2], pts[1:-1], pts[2:]
    up = (freqs[:, None] - lower[None]) / (centre - lower)[None]
    down = (upper[None] - freqs[:, None]) / (upper - centre)[None]
    return torch.clamp(torch.minimum(up, down), min=0.0).float()


def dft_basis(window: Tensor) -> Tensor:
    """``(2·(N/2+1), 1, N)`` conv weights: the windowed DFT's real (cos) rows then imaginary
    (−sin) rows, so that a stride-hop conv gives the one-sided STFT of ``torch.stft``."""
    n = window.shape[0]
    k = torch.arange(n // 2 + 1, dtype=torch.float64)[:, None]
    angle = 2 * math.pi * k * torch.arange(n, dtype=torch.float64)[None] / n  # (F, N)
    w = window.double()[None]
    return torch.cat([torch.cos(angle) * w, -torch.sin(angle) * w]).float()[:, None]


class LogMel(nn.Module):
    """Waveforms ``(B, S)`` at ``cfg.sample_rate`` → normalised log-mel ``(B, n_mels, T)``.
    ``exportable``: the DFT-basis conv instead of ``torch.stft`` (traceable; see the module doc)."""

    def __init__(self, cfg: FrontendConfig, exportable: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.exportable = exportable
        f_max = cfg.f_max if cfg.f_max is not None else cfg.sample_rate / 2
        window = torch.hann_window(cfg.win_length, periodic=True)
        # centre the window inside n_fft samples, as torch.stft does with win_length < n_fft
        left = (cfg.fft_size - cfg.win_length) // 2
        padded = torch.zeros(cfg.fft_size)
        padded[left : left + cfg.win_length] = window
        self.register_buffer("window", padded, persistent=False)
        fb = mel_filterbank(cfg.fft_size // 2 + 1, cfg.n_mels, cfg.sample_rate, cfg.f_min, f_max)
        self.register_buffer("fbank", fb, persistent=False)
        self.window: Tensor
        self.fbank: Tensor
        if exportable:
            self.register_buffer("dft_basis", dft_basis(padded), persistent=False)
            self.dft_basis: Tensor

    def log_mel(self, wave: Tensor) -> Tensor:
        """Un-normalised log-mel ``(B, n_mels, T)`` of ``wave: (B, S)``."""
        cfg = self.cfg
        with torch.autocast(device_type=wave.device.type, enabled=False):
            x = wave.float()
            if self.exportable:
                # pad to one frame without a branch on the length: max(0, n_fft - S) zeros
                x = nn.functional.pad(x, (0, torch.sym_max(0, cfg.fft_size - x.shape[-1])))
                spec = nn.functional.conv1d(x[:, None], self.dft_basis, stride=cfg.hop_length)  # (B, 2F, T)
                re, im = spec.chunk(2, dim=1)
                mel = torch.matmul(self.fbank.T, re.square() + im.square())  # (B, n_mels, T)
                return torch.log(mel + cfg.log_eps)
            if x.shape[-1] < cfg.fft_size:
                x = nn.functional.pad(x, (0, cfg.fft_size - x.shape[-1]))
            spec = torch.stft(x, cfg.fft_size, hop_length=cfg.hop_length, window=self.window,
                              center=False, return_complex=True)  # (B, F, T)
            power = spec.real.square() + spec.imag.square()
            mel = torch.matmul(self.fbank.T, power)  # (B, n_mels, T)
            return torch.log(mel + cfg.log_eps)

    def forward(self, wave: Tensor) -> Tensor:
        return self.normalise(self.log_mel(wave))

    def normalise(self, logmel: Tensor) -> Tensor:
        return (logmel - self.cfg.mean) / self.cfg.std

    def frame_lengths(self, num_samples: Tensor) -> Tensor:
        """Frames per item for ``num_samples: (B,)`` valid samples."""
        n = torch.clamp(num_samples - self.cfg.fft_size, min=0) // self.cfg.hop_length + 1
        return n.long()
