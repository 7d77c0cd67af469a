"""The embedding API: ``audiofm.load(path).embed(wave, sr)``.

Long audio is cut into chunks of ``chunk_seconds`` (default: the model's training segment)
that overlap by ``n_fft - hop`` samples, so every chunk yields whole time patches and the
stitched frames are exactly the frames of the whole signal; each chunk is encoded on its own
(positions restart per chunk, as in training). ``chunk_seconds=None`` encodes the whole input in
one pass (the recurrent backbones' memory is linear in length).

The embedder is built from the checkpoint's encoder config alone (no decoder); a "classifier"
checkpoint loads as a :class:`Classifier`, whose ``predict(wave, sr)`` adds its task head.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import checkpoint as ckpt
from .audio import prepare
from .config import to_dict
from .embedding import FREQ_MIXES, LAYER_MIXES, Embeddings, chunk_plan, chunk_starts, patch_timestamps, pooled_dim
from .models.encoder import AudioEncoder, block_range, pool_frames
from .models.heads import Head, build_head
from .train.distributed import autocast

if TYPE_CHECKING:
    from .retrieval.model import TextAudioModel
    from .stream import EmbeddingStream

_AUTO = "auto"
PRECISIONS = ("fp32", "bf16")


@dataclass
class _Chunk:
    clip: int
    index: int
    wave: np.ndarray


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Embedder:
    """Deterministic clip and frame embeddings from an audiofm encoder (an ``AudioEmbedder``).

    segment_seconds: the encoder's training crop (the default ``chunk_seconds``). name /
    weights_id: identify the model (``weights_id`` enters :meth:`fingerprint`).
    layer: encoder block whose output is used (-1 = last, after the final norm).
    layers / layer_mix: read the ``layers`` blocks ending at ``layer`` instead (0 = every block up
    to it), each normalised, averaged ('mean') or concatenated ('concat', layers·D dims)
    (:meth:`~audiofm.models.encoder.AudioEncoder.forward_tokens`).
    freq_mix: how each time patch's frequency patches make its frame: 'mean' (D dims) or
    'concat' (low to high frequency, freq_patches·D dims; keeps the spectral layout that the
    mean discards — results §21) (:func:`~audiofm.models.encoder.merge_freq`).
    pooling: clip pooling over frames (:data:`~audiofm.embedding.POOLINGS`): 'mean', 'max',
    'meanmax' or 'meanstd' (the last two concatenate two statistics, 2·frame dims).
    precision: 'fp32', or 'bf16' to run the encoder under bf16 autocast (matmuls in bfloat16,
    outputs returned as float32; the front end and the recurrent scans stay in float32). bf16
    embeddings are close to, not equal to, fp32 ones, so bf16 enters :meth:`fingerprint` (fp32 keys
    are those of earlier versions).
    """

    def __init__(
        self,
        encoder: AudioEncoder,
        *,
        segment_seconds: float,
        name: str,
        weights_id: str,
        layer: int = -1,
        pooling: str = "mean",
        layers: int = 1,
        layer_mix: str = "mean",
        freq_mix: str = "mean",
        chunk_seconds: float | str | None = _AUTO,
        batch_size: int = 16,
        device: str | torch.device | None = None,
        precision: str = "fp32",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if layers == 0:  # every block up to ``layer``: recorded as their count (the same cache key)
            block_range(encoder.backbone.depth, layer)  # checks the block
            layers = layer % encoder.backbone.depth + 1
        if freq_mix not in FREQ_MIXES:
            raise ValueError(f"freq_mix must be one of {', '.join(FREQ_MIXES)}, got {freq_mix!r}")
        frame_dim = encoder.cfg.dim * (layers if layer_mix == "concat" else 1)
        frame_dim *= encoder.cfg.freq_patches if freq_mix == "concat" else 1
        self.embed_dim = pooled_dim(frame_dim, pooling)  # checks the pooling name
        block_range(encoder.backbone.depth, layer, layers)  # checks the blocks
        if layer_mix not in LAYER_MIXES:
            raise ValueError(f"layer_mix must be one of {', '.join(LAYER_MIXES)}, got {layer_mix!r}")
        self.device = torch.device(device) if device is not None else _default_device()
        self.encoder = encoder.to(self.device).eval()
        self.encoder_config = cfg = encoder.cfg
        self.segment_seconds = float(segment_seconds)
        self.name = name
        self.weights_id = weights_id
        self.layer = layer
        self.pooling = pooling
        self.layers = layers
        self.layer_mix = layer_mix
        self.freq_mix = freq_mix
        self.batch_size = batch_size
        self.precision = precision
        fe = cfg.frontend
        self.sample_rate = fe.sample_rate
        self.frame_dim = frame_dim
        self.patch_seconds = cfg.patch_seconds
        if chunk_seconds == _AUTO:
            chunk_seconds = self.segment_seconds
        self.chunk_seconds: float | None = None if chunk_seconds in (None, 0) else float(chunk_seconds)
        if self.chunk_seconds is not None:  # chunk length and hop (samples between chunks)
            self._chunk_len, self._chunk_hop = chunk_plan(self.chunk_seconds, cfg.patch_t, fe.hop_length,
                                                          fe.fft_size, fe.sample_rate)

    # -- AudioEmbedder --------------------------------------------------------------------
    def fingerprint(self) -> str:
        """A cache key: weights id, encoder config and embedding settings."""
        spec: dict[str, Any] = {"weights": self.weights_id, "layer": self.layer, "pooling": self.pooling,
                                "chunk": self.chunk_seconds, "encoder": to_dict(self.encoder_config)}
        if self.layers != 1:  # absent at the default, so that earlier cache keys stay valid
            spec.update(layers=self.layers, layer_mix=self.layer_mix)
        if self.freq_mix != "mean":  # likewise
            spec["freq_mix"] = self.freq_mix
        if self.precision != "fp32":  # likewise
            spec["precision"] = self.precision
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def embed(self, wave: np.ndarray, sr: int) -> Embeddings:
        """Embeddings of one mono (or (T, C)) waveform at rate ``sr``."""
        return self.embed_batch([wave], sr)[0]

    def embed_batch(self, waves: list[np.ndarray], sr: int) -> list[Embeddings]:
        prepared = [prepare(w, sr, self.sample_rate, name=f"input {i}") for i, w in enumerate(waves)]
        chunks = [c for i, w in enumerate(prepared) for c in self._split(i, w)]
        frames: dict[tuple[int, int], np.ndarray] = {}
        order = sorted(range(len(chunks)), key=lambda j: -len(chunks[j].wave))  # less padding
        with torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                group = [chunks[j] for j in order[s : s + self.batch_size]]
                for c, f in zip(group, self._encode([c.wave for c in group])):
                    frames[(c.clip, c.index)] = f
        out = []
        for i in range(len(prepared)):
            parts = [frames[(i, j)] for j in range(sum(1 for c in chunks if c.clip == i))]
            fr = np.concatenate(parts, axis=0)
            out.append(Embeddings(self._pool(fr), fr, self.timestamps(fr.shape[0])))
        return out

    # -- helpers --------------------------------------------------------------------------
    def stream(self, sr: int | None = None) -> EmbeddingStream:
        """An :class:`~audiofm.stream.EmbeddingStream`: push audio pieces at rate ``sr`` (default:
        the model's), get frame embeddings as time patches complete — equal to one pass over the
        whole input. Needs a forward-direction Mamba or xLSTM encoder."""
        from .stream import EmbeddingStream

        return EmbeddingStream(self, self.sample_rate if sr is None else sr)

    def timestamps(self, n: int, start: int = 0) -> np.ndarray:
        """Centre (seconds) of time patches start..start+n-1 of a signal starting at 0."""
        fe = self.encoder_config.frontend
        return patch_timestamps(n, self.encoder_config.patch_t, fe.hop_length, fe.fft_size, fe.sample_rate, start)

    def _split(self, clip: int, wave: np.ndarray) -> list[_Chunk]:
        if self.chunk_seconds is None:
            return [_Chunk(clip, 0, wave)]
        starts = chunk_starts(len(wave), self._chunk_len, self._chunk_hop)
        return [_Chunk(clip, j, wave[s : s + self._chunk_len]) for j, s in enumerate(starts)]

    def _encode(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        n = max(len(w) for w in waves)
        batch = np.zeros((len(waves), n), dtype=np.float32)
        for i, w in enumerate(waves):
            batch[i, : len(w)] = w
        x = torch.from_numpy(batch).to(self.device)
        lengths = torch.tensor([len(w) for w in waves], device=self.device)
        with autocast(self.device, self.precision):
            fr, valid = self.encoder.frame_embeddings(x, lengths, layer=self.layer, layers=self.layers,
                                                      layer_mix=self.layer_mix, freq_mix=self.freq_mix)
        arr = fr.float().cpu().numpy()
        counts = valid.sum(dim=1).cpu().tolist()
        return [arr[i, : int(c)] for i, c in enumerate(counts)]

    def _pool(self, frames: np.ndarray) -> np.ndarray:
        """Clip embedding of ``frames (T, D)`` by this embedder's pooling (:func:`pool_frames`)."""
        return pool_frames(torch.from_numpy(np.ascontiguousarray(frames))[None], None, self.pooling)[0].numpy()

    def __repr__(self) -> str:
        layers = f", layers={self.layers}, layer_mix={self.layer_mix!r}" if self.layers != 1 else ""
        layers += f", freq_mix={self.freq_mix!r}" if self.freq_mix != "mean" else ""
        return (f"Embedder({self.name!r}, dim={self.embed_dim}, rate={self.sample_rate}, layer={self.layer}{layers}, "
                f"pooling={self.pooling!r}, chunk_seconds={self.chunk_seconds})")


class Classifier(Embedder):
    """A "classifier" checkpoint: the embedder plus its task head. :meth:`predict` gives class
    probabilities (softmax for multiclass, sigmoid for multilabel) in ``vocabulary`` order; the
    head reads the clip embedding of its own ``layer`` and ``pooling``."""

    def __init__(self, encoder: AudioEncoder, head: Head, *, vocabulary: Sequence[str], prediction_type: str,
                 **kwargs: Any) -> None:
        super().__init__(encoder, **kwargs)
        if prediction_type not in ckpt.PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {ckpt.PREDICTION_TYPES}, got {prediction_type!r}")
        self.head = head.to(self.device).eval()
        self.vocabulary: list[str] = list(vocabulary)
        self.prediction_type = prediction_type

    def predict(self, wave: np.ndarray, sr: int) -> np.ndarray:
        """Class probabilities ``(C,)`` of one waveform at rate ``sr``."""
        return self.predict_batch([wave], sr)[0]

    def predict_batch(self, waves: list[np.ndarray], sr: int) -> np.ndarray:
        """Class probabilities ``(N, C)`` of ``waves`` at rate ``sr``."""
        if not waves:
            return np.zeros((0, len(self.vocabulary)), dtype=np.float32)
        z = np.stack([np.asarray(e.clip, dtype=np.float32) for e in self.embed_batch(waves, sr)])  # (N, D)
        with torch.inference_mode():
            logits = self.head(torch.from_numpy(z).to(self.device)).float()  # (N, C)
        p = logits.softmax(dim=-1) if self.prediction_type == "multiclass" else logits.sigmoid()
        return p.cpu().numpy()

    def __repr__(self) -> str:
        return (f"Classifier({self.name!r}, {len(self.vocabulary)} {self.prediction_type} classes, "
                f"rate={self.sample_rate}, layer={self.layer}, pooling={self.pooling!r})")


def load_model(path: str | os.PathLike[str], **kwargs: Any) -> Embedder | TextAudioModel:
    """What ``audiofm.load`` returns: a "dual" (audio–text) checkpoint as a
    :class:`~audiofm.retrieval.model.TextAudioModel` (:func:`~audiofm.retrieval.model.load_dual`;
    kwargs: text_model, device, batch_size), any other kind as by :func:`load`."""
    if ckpt.load_spec(ckpt.resolve(path)).kind == "dual":
        from .retrieval.model import load_dual

        return load_dual(path, **kwargs)
    return load(path, **kwargs)


def load(path: str | os.PathLike[str], *, strict: bool = True, **kwargs: Any) -> Embedder:
    """Load a checkpoint or run directory as an :class:`Embedder` (kwargs: see Embedder), or a
    :class:`Classifier` for a "classifier" checkpoint. Builds the encoder from the checkpoint's
    encoder config only (never a decoder) and loads its ``encoder.*`` weights. A "dual"
    checkpoint is refused (it is not an audio embedder: open it with ``audiofm.load``)."""
    d = ckpt.resolve(path)
    spec = ckpt.load_spec(d)
    if spec.kind == "dual":
        raise ckpt.CheckpointError(f"{d}: an audio–text ('dual') checkpoint, not an audio embedder; open it with "
                                   "audiofm.load(path) or audiofm.retrieval.load_dual(path)")
    state = ckpt.load_state_dict(d)
    encoder = AudioEncoder(spec.encoder)
    ckpt.load_weights(encoder, ckpt.component(state, "encoder", str(d)), str(d), strict=strict)
    kwargs.setdefault("name", Path(path).name)
    kwargs.update(segment_seconds=spec.segment_seconds, weights_id=ckpt.weights_id(d))
    if spec.kind != "classifier":
        return Embedder(encoder, **kwargs)
    h = spec.head
    assert h is not None and h.vocabulary is not None and h.prediction_type is not None  # checked by the spec
    if kwargs.get("layers", 1) != 1:
        raise ValueError(f"{d}: this classifier's head reads one block (layer={h.layer}); cannot load it with "
                         f"layers={kwargs['layers']}")
    if kwargs.get("freq_mix", "mean") != "mean":
        raise ValueError(f"{d}: this classifier's head reads frames averaged over frequency; cannot load it with "
                         f"freq_mix={kwargs['freq_mix']!r}")
    for key in ("layer", "pooling"):
        if key in kwargs and kwargs[key] != getattr(h, key):
            raise ValueError(f"{d}: this classifier's head reads {key}={getattr(h, key)!r}; "
                             f"cannot load it with {key}={kwargs[key]!r}")
    kwargs.update(layer=h.layer, pooling=h.pooling)
    head = build_head(h.type, **h.config)
    ckpt.load_weights(head, ckpt.component(state, "head", str(d)), f"{d} head", strict=strict)
    return Classifier(encoder, head, vocabulary=h.vocabulary, prediction_type=h.prediction_type, **kwargs)


def random_like(path_or_name: str | os.PathLike[str], seed: int = 0, **kwargs: Any) -> Embedder:
    """The same encoder architecture (and front-end statistics) as a checkpoint or preset,
    randomly initialised with ``seed`` — the 'random' baseline.

    The encoder is initialised exactly as MSM pretraining initialises it (the pretraining model
    is built under the seed and only its encoder kept), so a seed gives the same weights as the
    starting point of a pretraining run and as earlier audiofm versions.
    """
    from .models.msm import MSMModel
    from .models.registry import model_config

    p = Path(path_or_name)
    spec = ckpt.load_spec(p) if p.exists() else ckpt.CheckpointSpec.from_model_config(model_config(str(path_or_name)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = MSMModel(spec.model_config()).encoder
    kwargs.setdefault("name", f"random-{spec.name}")
    return Embedder(encoder, segment_seconds=spec.segment_seconds, weights_id=f"random-seed{seed}", **kwargs)


def load_base(name_or_path: str, seed: int = 0) -> tuple[AudioEncoder, ckpt.CheckpointSpec, dict[str, Any]]:
    """The encoder of a checkpoint or run directory (any kind with an encoder, a "dual" one's
    audio encoder included; strict weights) and its spec, or a randomly initialised registry
    preset; plus provenance (path and weights id, or preset and seed)."""
    from .models.registry import list_models, model_config

    p = Path(name_or_path)
    if p.exists():
        d = ckpt.resolve(p)
        spec = ckpt.load_spec(d)
        if spec.kind == "dual":
            if spec.encoder is None:
                raise ckpt.CheckpointError(f"{d}: this audio–text checkpoint has no audiofm audio encoder (its audio "
                                           "tower is a frozen embedder)")
            encoder = AudioEncoder(spec.encoder)
            ckpt.load_weights(encoder, ckpt.component(ckpt.load_state_dict(d), "encoder", str(d)), str(d))
            spec = ckpt.CheckpointSpec("encoder", spec.name, spec.encoder, spec.segment_seconds)
            return encoder, spec, {"checkpoint": str(d), "weights": ckpt.weights_id(d)}
        emb = load(d)
        return emb.encoder, spec, {"checkpoint": str(d), "weights": emb.weights_id}
    if name_or_path in list_models():
        emb = random_like(name_or_path, seed=seed)
        spec = ckpt.CheckpointSpec.from_model_config(model_config(name_or_path), kind="encoder")
        return emb.encoder, spec, {"preset": name_or_path, "random_init_seed": seed}
    raise ckpt.CheckpointError(f"{p}: no such checkpoint or run directory (nor a model preset name)")
