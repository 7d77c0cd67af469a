"""Streaming embeddings for forward-direction recurrent encoders (Mamba, mLSTM).

Feed audio in pieces of any size; every complete time patch (160 ms with the default front end)
comes out as soon as its samples have arrived, and :meth:`EmbeddingStream.flush` emits the last,
partial one. The frames equal a one-pass ``audiofm.load(path, chunk_seconds=None).embed(...)`` of
the concatenated audio (up to float rounding), with constant memory per step:

* the log-mel front end takes frames without centre padding, so a frame depends only on the
  samples it covers (the stream keeps the < ``n_fft`` samples not yet framed);
* tokens are time-major and positions are absolute time indices, so each time column is embedded
  on its own;
* each block of a forward-direction Mamba / mLSTM backbone carries a constant-size state
  (:func:`audiofm.models.backbones._scan.stream_blocks`). Only :meth:`EmbeddingStream.clip`'s
  history of emitted frames grows (D floats per time patch).

Bidirectional and alternating backbones see future tokens, and attention sees all tokens, so
they cannot stream: :meth:`audiofm.api.Embedder.stream` raises a ``ValueError`` saying so.

    >>> emb = audiofm.load("runs/mamba_forward")
    >>> stream = emb.stream(sr=16000)
    >>> for piece in microphone_pieces():
    ...     frames, times = stream.push(piece)     # (k, D), (k,) — k ≥ 0 new time patches
    >>> frames, times = stream.flush()             # the last, zero-padded time patch
    >>> stream.clip()                              # pooled over everything so far
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .audio import AudioError, to_mono
from .models.backbones._scan import stream_blocks
from .models.encoder import merge_freq
from .models.patch import patchify

if TYPE_CHECKING:
    from .api import Embedder


class EmbeddingStream:
    """Incremental frame embeddings of one audio stream (see the module docstring)."""

    def __init__(self, embedder: Embedder, sr: int) -> None:
        if embedder.precision != "fp32":
            raise ValueError(f"{embedder.name}: streaming runs in fp32 (its carried state would drift in bf16); "
                             "load the model with precision='fp32' to stream")
        enc = embedder.encoder
        blocks = list(enc.backbone.blocks)
        if not all(hasattr(b, "init_state") for b in blocks):
            raise ValueError(
                f"{embedder.name}: a {enc.cfg.backbone} backbone cannot stream (attention sees every "
                "token); streaming needs a Mamba or xLSTM encoder with direction='forward'")
        direction = getattr(enc.backbone.config, "direction", "bidirectional")
        if direction != "forward":
            raise ValueError(
                f"{embedder.name}: streaming needs a backbone with direction='forward', this one is "
                f"{direction!r} (its blocks see future tokens); pretrain with "
                "--set model_overrides.encoder.backbone_cfg.direction=forward, or embed whole files "
                "with audiofm.load(path, chunk_seconds=None)")
        if embedder.layers != 1:
            raise ValueError(f"{embedder.name}: streaming reads one block; load the model without layers="
                             f"{embedder.layers} to stream")
        depth = len(blocks)
        last = embedder.layer % depth
        self._blocks = blocks[: last + 1]
        self._final_norm = last == depth - 1
        self.embedder = embedder
        self.encoder = enc
        fe = enc.cfg.frontend
        self.rate = fe.sample_rate
        self._n_fft, self._hop = fe.fft_size, fe.hop_length
        self._pt, self._pf, self._fp = enc.cfg.patch_t, enc.cfg.patch_f, enc.cfg.freq_patches
        self._resampler: Any = None
        if int(sr) != self.rate:
            import soxr

            self._resampler = soxr.ResampleStream(int(sr), self.rate, 1, dtype="float32")
        self._samples = np.zeros(0, dtype=np.float32)  # not yet covered by a whole frame
        self._frames: list[torch.Tensor] = []  # normalised log-mel frames (n_mels, k) not yet in a patch
        self._pending = 0
        self._states: list[Any] | None = None
        self._t = 0  # time patches emitted
        self._done = False
        self._emitted: list[np.ndarray] = []

    # -- public -----------------------------------------------------------------------------
    def push(self, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add the next piece (mono ``(T,)`` or ``(T, C)``, the rate given to ``stream``);
        returns the frame embeddings ``(k, D)`` and their centre times ``(k,)`` completed by it."""
        if self._done:
            raise RuntimeError("this stream was flushed; start a new one with embedder.stream()")
        x = to_mono(np.asarray(wave, dtype=np.float32))
        if x.size and not np.all(np.isfinite(x)):
            raise AudioError("stream input contains NaN or infinite samples")
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x, last=False)
        return self._feed(x)

    def flush(self) -> tuple[np.ndarray, np.ndarray]:
        """End of input: emit what remains (the last time patch, zero-padded as in one pass)."""
        if self._done:
            raise RuntimeError("this stream was already flushed")
        frames, times = self._feed(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
                                   if self._resampler is not None else np.zeros(0, np.float32))
        self._done = True
        if self._t == 0 and not self._pending:  # never a whole frame
            if not self._samples.size:
                raise AudioError("stream input is empty (0 samples)")
            # shorter than one frame: zero-padded to one frame, as in one pass
            pad = np.zeros(self._n_fft, dtype=np.float32)
            pad[: self._samples.size] = self._samples
            self._add_frames(pad)
        if self._pending:
            spec = torch.cat(self._frames, dim=1)
            spec = torch.nn.functional.pad(spec, (0, self._pt - spec.shape[1]))  # 0 = normalised mean
            self._frames, self._pending = [], 0
            more, more_t = self._encode(spec)
            frames, times = np.concatenate([frames, more]), np.concatenate([times, more_t])
        return frames, times

    def clip(self) -> np.ndarray:
        """The clip embedding of everything emitted so far (the embedder's pooling)."""
        if not self._emitted:
            raise ValueError("no frames yet: push at least one time patch of audio (or flush)")
        return self.embedder._pool(np.concatenate(self._emitted))

    @property
    def frames_emitted(self) -> int:
        return self._t

    # -- internals --------------------------------------------------------------------------
    def _feed(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        buf = np.concatenate([self._samples, x]) if self._samples.size else x
        if buf.size >= self._n_fft:
            k = 1 + (buf.size - self._n_fft) // self._hop
            self._add_frames(buf[: (k - 1) * self._hop + self._n_fft])
            buf = buf[k * self._hop :]
        self._samples = np.ascontiguousarray(buf, dtype=np.float32)
        ready = self._pending // self._pt
        if ready == 0:
            return np.zeros((0, self.embedder.frame_dim), np.float32), np.zeros(0)
        spec = torch.cat(self._frames, dim=1)
        take = ready * self._pt
        self._frames = [spec[:, take:]] if spec.shape[1] > take else []
        self._pending -= take
        return self._encode(spec[:, :take])

    def _add_frames(self, samples: np.ndarray) -> None:
        with torch.inference_mode():
            spec = self.encoder.frontend(torch.from_numpy(samples).to(self.embedder.device)[None])[0]
        self._frames.append(spec)
        self._pending += spec.shape[1]

    def _encode(self, spec: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Whole time patches ``spec (n_mels, k·pt)`` → frame embeddings ``(k, D)``."""
        k = spec.shape[1] // self._pt
        with torch.inference_mode():
            tokens = patchify(spec[None], self._pf, self._pt)
            x = self.encoder.embed_tokens(tokens, self._fp, k, t0=self._t)
            x, self._states = stream_blocks(self._blocks, x, self._states)
            if self._final_norm:
                x = self.encoder.norm(x)
            frames = merge_freq(x, k, self._fp, self.embedder.freq_mix)[0].float().cpu().numpy()
        times = self.embedder.timestamps(k, start=self._t)
        self._t += k
        self._emitted.append(frames)
        return frames, times

