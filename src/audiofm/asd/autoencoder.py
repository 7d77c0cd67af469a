"""The DCASE 2023/2024 Task 2 autoencoder baseline, on audiofm's log-mel front end.

Features: 128 log-mel bins (64 ms window, 32 ms hop at 16 kHz, as the baseline's 1024/512
samples), 5 consecutive frames stacked into one 640-d vector; z-scored by the training mean/std
(one scalar each; the baseline feeds raw dB — the scaling only conditions the optimisation).
Model: dense encoder 4 × (Linear 128 → BatchNorm → ReLU), an 8-d bottleneck (Linear → BN →
ReLU), the mirrored decoder and a linear output, trained with MSE (Adam). Scores per clip:

* ``mse`` — mean squared reconstruction error over the clip's vectors (the baseline's default);
* ``mahalanobis`` — the baseline's *selective Mahalanobis* mode: each domain's covariance of the
  training reconstruction errors (Ledoit-Wolf shrinkage here), the clip's mean squared
  Mahalanobis distance of its error vectors under each domain's inverse covariance, the
  minimum over domains.

Read for this: ``nttcslab/dcase2023_task2_baseline_ae`` (``networks/dcase2023t2_ae``,
``networks/criterion/mahala.py``). Trained by a small loop here (:meth:`AEDetector.fit`), not
by the engine: the engine's recipes checkpoint an :class:`~audiofm.models.encoder.AudioEncoder`
spec (front end, backbone, head) and the baseline is none of that; its whole state is a few
hundred kB and it retrains in seconds to minutes, so resume and DDP bring nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from ..frontend import FrontendConfig, LogMel

MODES = ("mse", "mahalanobis")


def _baseline_frontend() -> FrontendConfig:
    return FrontendConfig(sample_rate=16000, win_ms=64.0, hop_ms=32.0, n_fft=1024, n_mels=128)


@dataclass
class AEConfig:
    """frames: consecutive log-mel frames per input vector. hidden / bottleneck / layers: the
    dense widths and the encoder depth. epochs, batch_size, lr: Adam training. mode: 'mse' or
    'mahalanobis' (selective, per domain). seed: initialisation and batch order."""

    frontend: FrontendConfig = field(default_factory=_baseline_frontend)
    frames: int = 5
    hidden: int = 128
    bottleneck: int = 8
    layers: int = 4
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    mode: str = "mse"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.frames < 1 or self.layers < 1 or self.epochs < 1:
            raise ValueError("frames, layers and epochs must be ≥ 1")


def _block(i: int, o: int) -> list[nn.Module]:
    return [nn.Linear(i, o), nn.BatchNorm1d(o), nn.ReLU()]


class DenseAE(nn.Module):
    """Dense autoencoder ``(B, frames·n_mels) → (B, frames·n_mels)``."""

    def __init__(self, dim: int, hidden: int = 128, bottleneck: int = 8, layers: int = 4) -> None:
        super().__init__()
        enc: list[nn.Module] = []
        for i in range(layers):
            enc += _block(dim if i == 0 else hidden, hidden)
        enc += _block(hidden, bottleneck)
        dec: list[nn.Module] = []
        for i in range(layers):
            dec += _block(bottleneck if i == 0 else hidden, hidden)
        dec.append(nn.Linear(hidden, dim))
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


def frame_vectors(wave: np.ndarray, logmel: LogMel, frames: int) -> np.ndarray:
    """Stacked log-mel vectors ``(T − frames + 1, frames · n_mels)`` of a mono wave."""
    with torch.no_grad():
        lm = logmel.log_mel(torch.from_numpy(np.asarray(wave, dtype=np.float32))[None])[0].T  # (T, M)
    t = lm.shape[0] - frames + 1
    if t < 1:
        raise ValueError(f"clip too short: {lm.shape[0]} frames < {frames}")
    return torch.cat([lm[i:i + t] for i in range(frames)], dim=1).numpy()


class AEDetector:
    """Fit on normal training waves (with domains); :meth:`score` test waves (higher = anomalous)."""

    def __init__(self, cfg: AEConfig | None = None) -> None:
        self.cfg = cfg or AEConfig()
        self.logmel = LogMel(self.cfg.frontend).eval()
        self.model: DenseAE | None = None
        self.history: list[float] = []

    def _features(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [frame_vectors(w, self.logmel, self.cfg.frames) for w in waves]

    def fit(self, waves: Sequence[np.ndarray], domains: Sequence[str] | None = None) -> list[float]:
        """Train; returns the mean training loss of every epoch."""
        c = self.cfg
        feats = self._features(waves)
        x = np.concatenate(feats)
        self.mean, self.std = float(x.mean()), float(x.std() + 1e-8)
        xt = torch.from_numpy((x - self.mean) / self.std).float()
        g = torch.Generator().manual_seed(c.seed)
        torch.manual_seed(c.seed)
        self.model = DenseAE(xt.shape[1], c.hidden, c.bottleneck, c.layers)
        opt = torch.optim.Adam(self.model.parameters(), lr=c.lr)
        self.model.train()
        self.history = []
        for _ in range(c.epochs):
            perm = torch.randperm(len(xt), generator=g)
            total, n = 0.0, 0
            for i in range(0, len(xt), c.batch_size):
                xb = xt[perm[i:i + c.batch_size]]
                if len(xb) < 2:  # batch norm needs two
                    continue
                loss = (self.model(xb) - xb).square().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(xb)
                n += len(xb)
            self.history.append(total / max(n, 1))
        self.model.eval()
        doms = ["source"] * len(feats) if domains is None else [d or "source" for d in domains]
        self._fit_mahalanobis(feats, doms)
        self._train_scores = self._score_features(feats)
        return self.history

    def _errors(self, f: np.ndarray) -> np.ndarray:
        assert self.model is not None
        x = torch.from_numpy((f - self.mean) / self.std).float()
        with torch.no_grad():
            return (x - self.model(x)).numpy().astype(np.float64)  # (V, 640)

    def _fit_mahalanobis(self, feats: list[np.ndarray], domains: list[str]) -> None:
        from sklearn.covariance import LedoitWolf

        self.precisions: list[np.ndarray] = []
        if self.cfg.mode != "mahalanobis":
            return
        for dom in sorted(set(domains)):
            e = np.concatenate([self._errors(f) for f, d in zip(feats, domains) if d == dom])
            self.precisions.append(LedoitWolf(assume_centered=True).fit(e).precision_)

    def _score_features(self, feats: list[np.ndarray]) -> np.ndarray:
        out = np.empty(len(feats))
        for i, f in enumerate(feats):
            e = self._errors(f)
            if self.cfg.mode == "mse":
                out[i] = float(np.mean(e ** 2))
            else:
                out[i] = min(float(np.mean(np.einsum("vd,de,ve->v", e, p, e))) for p in self.precisions)
        return out

    def score(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Anomaly scores ``(N,)`` of waves at the front end's sample rate."""
        if self.model is None:
            raise RuntimeError("fit the autoencoder before scoring")
        return self._score_features(self._features(waves))

    def train_scores(self) -> np.ndarray:
        return np.asarray(self._train_scores)
