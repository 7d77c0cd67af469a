"""Built-in baseline embedders and the resolution of ``--baseline`` names.

``logmel``: mean and standard deviation over time of the log-mel spectrogram, per mel bin
(``2 * n_mels`` dims) — the floor any learned encoder must clear. ``random``: the first
``--model``'s architecture with random weights (:func:`audiofm.api.random_like`). Any other
name is a peer model from :mod:`audiofm.peers`, optionally with constructor settings after
colons: ``crepe:hop_ms=50:capacity=tiny`` (see :func:`parse_baseline`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from ..audio import prepare
from ..embedding import AudioEmbedder, Embeddings
from ..frontend import FrontendConfig, LogMel

LOGMEL_VERSION = 1  # bump when the baseline's output changes (invalidates cached embeddings)


class LogMelEmbedder:
    """Pooled log-mel baseline implementing :class:`~audiofm.embedding.AudioEmbedder`.

    ``clip``: ``[mean_t(x), std_t(x)]`` of the (un-normalised unless the config says otherwise)
    log-mel ``x`` — ``(2 * n_mels,)``. ``frames``: the log-mel frames themselves
    ``(T, n_mels)``. ``timestamps``: the frame centres from :meth:`FrontendConfig.frame_centre`.
    """

    def __init__(self, config: FrontendConfig | None = None, name: str = "logmel") -> None:
        self.config = config if config is not None else FrontendConfig()
        self.name = name
        self.sample_rate = self.config.sample_rate
        self.embed_dim = 2 * self.config.n_mels
        self.frame_dim = self.config.n_mels
        self._frontend = LogMel(self.config).eval()

    def fingerprint(self) -> str:
        spec = {"baseline": "logmel", "version": LOGMEL_VERSION, "frontend": asdict(self.config)}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def embed(self, wave: np.ndarray, sr: int) -> Embeddings:
        return self.embed_batch([wave], sr)[0]

    def embed_batch(self, waves: list[np.ndarray], sr: int) -> list[Embeddings]:
        if not waves:
            return []
        cfg = self.config
        prepared = [prepare(w, sr, self.sample_rate, name=f"clip {i} of the batch")
                    for i, w in enumerate(waves)]
        lengths = [len(w) for w in prepared]
        batch = np.zeros((len(prepared), max(max(lengths), cfg.fft_size)), dtype=np.float32)
        for i, w in enumerate(prepared):
            batch[i, : len(w)] = w
        with torch.no_grad():
            spec = self._frontend(torch.from_numpy(batch))  # (B, n_mels, T)
            n_frames = self._frontend.frame_lengths(torch.tensor(lengths)).tolist()
        out = []
        for i, n in enumerate(n_frames):
            x = np.ascontiguousarray(spec[i, :, :n].T.numpy(), dtype=np.float32)  # (T, n_mels)
            clip = np.concatenate([x.mean(axis=0), x.std(axis=0)]).astype(np.float32)
            centres = cfg.frame_centre(torch.arange(n, dtype=torch.float64))
            assert isinstance(centres, torch.Tensor)
            out.append(Embeddings(clip=clip, frames=x, timestamps=centres.numpy()))
        return out


BUILTIN_BASELINES = ("logmel", "random")


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_baseline(spec: str) -> tuple[str, dict[str, Any]]:
    """``"crepe:hop_ms=50:capacity=tiny"`` → ``("crepe", {"hop_ms": 50, "capacity": "tiny"})``.

    Values become bool (true/false), int or float when they parse as such, else stay strings.
    """
    name, *items = spec.split(":")
    kwargs: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"baseline {spec!r}: expected NAME:KEY=VALUE[:KEY=VALUE...], got {item!r}")
        kwargs[key] = _value(value)
    return name, kwargs


def make_baseline(name: str, models: list[str], *, layer: int = -1, pooling: str = "mean",
                  seed: int = 0, **embed: Any) -> AudioEmbedder:
    """Resolve a ``--baseline`` name to an embedder.

    ``logmel`` → :class:`LogMelEmbedder`; ``random`` → the first of ``models`` randomly
    initialised (``audiofm.api.random_like``, same ``layer``/``pooling`` and other ``embed``
    settings of :class:`audiofm.api.Embedder`, e.g. ``layers``); anything else →
    ``audiofm.peers.get_peer(name, **settings)`` for ``name = "peer:key=value:..."`` (a missing
    optional package raises ImportError with the peer's own install hint; an unknown setting
    raises ValueError listing the peer's settings).
    """
    name, options = parse_baseline(name)
    if options and name in BUILTIN_BASELINES:
        raise ValueError(f"baseline {name!r} takes no settings (got {sorted(options)})")
    if name == "logmel":
        return LogMelEmbedder()
    if name == "random":
        if not models:
            raise ValueError("baseline 'random' needs a --model to copy the architecture from; "
                             "add --model CKPT or drop 'random' from --baseline")
        from ..api import random_like

        kwargs: dict[str, Any] = {"layer": layer, "pooling": pooling, **embed}
        return random_like(models[0], seed=seed, **kwargs)
    from ..peers import get_peer

    return get_peer(name, **options)
