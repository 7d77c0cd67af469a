"""Checkpoint directories for any model: ``config.json`` + ``model.safetensors`` (+ ``train_state.pt``).

A checkpoint has a *kind* and one config per component (:class:`CheckpointSpec`):

* ``"msm"`` — a masked-spectrogram pretraining model: ``encoder.*`` and decoder weights; the
  MSM-only fields (decoder size, masking) in ``spec.pretraining``;
* ``"encoder"`` — ``encoder.*`` weights only (no decoder), e.g. a contrastively tuned encoder;
* ``"classifier"`` — ``encoder.*`` + ``head.*`` weights; ``spec.head`` (:class:`HeadSpec`) holds
  the head's type and config, vocabulary, prediction type and the pooling/layer it reads;
* ``"dual"`` — an audio–text dual encoder (:mod:`audiofm.retrieval.model`): ``spec.dual``
  (:class:`DualSpec`) holds its config, the text tower (model, fingerprint, trained layers), the
  frozen audio embedder when the audio tower is not an audiofm encoder (``spec.encoder`` is
  then None), both projections and the temperature; weights ``encoder.*`` (an audiofm audio
  tower), ``text.*`` (only the trained text layers), ``audio_proj.*``, ``text_proj.*``,
  ``temperature.*``.

Format 2 ``config.json``: ``{"format", "format_version": 2, "kind", "audiofm_version",
"created", "weights_sha256", "model": {name, encoder, segment_seconds, pretraining, head[, dual]},
...meta}``. ``weights_sha256`` is the digest of ``model.safetensors`` taken at save time; it is
the checkpoint's weights id, so loading never hashes the weights. Format 1 (written before
checkpoints had kinds: ``"model"`` is an MSM ``ModelConfig``; a supervised fine-tune added the
side-cars ``head.json`` + ``head.safetensors``) still loads: it is converted to a spec of kind
``"msm"`` or ``"classifier"`` (a format-1 fine-tune keeps the decoder weights it was saved with,
and the side-car weights appear as ``head.*``); its digest is computed once, on demand.

Writes are atomic (:func:`audiofm.io.atomic_dir`), so a checkpoint directory that exists is
complete. Weights load with ``weights_only``; missing / unexpected keys and shape mismatches
are errors that name them.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import __version__
from .config import ConfigError, NonNegativeInt, PositiveInt, from_dict, to_dict
from .embedding import POOLINGS
from .io import atomic_dir
from .models.encoder import AudioEncoder, EncoderConfig
from .models.heads import HEADS
from .models.msm import TRAINING_PARTS, ModelConfig

FORMAT = "audiofm-checkpoint"
FORMAT_VERSION = 2
KINDS = ("msm", "encoder", "classifier", "dual")
DUAL_PARTS = ("encoder.", "text.", "audio_proj.", "text_proj.", "temperature.")  # weights of kind "dual"
PREDICTION_TYPES = ("multiclass", "multilabel")
WEIGHTS = "model.safetensors"
# ModelConfig fields that only the MSM pretraining model has (stored in spec.pretraining)
PRETRAINING_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig)
                           if f.name not in ("name", "encoder", "segment_seconds"))
_RESERVED = ("format", "format_version", "kind", "audiofm_version", "created", "weights_sha256", "model", "path")
_V1_HEAD = ("head.json", "head.safetensors")  # format-1 side-cars of a supervised fine-tune
_v1_digests: dict[tuple[str, int, int], str] = {}


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupt or incompatible; the message says which."""


@dataclass
class HeadSpec:
    """A task head kept in the checkpoint. type: a :data:`audiofm.models.heads.HEADS` name;
    config: its constructor arguments (``build_head(type, **config)`` rebuilds it). vocabulary /
    prediction_type ('multiclass' | 'multilabel'): what its outputs mean. pooling / layer: the
    clip embedding it reads (encoder block ``layer``, pooled over frames)."""

    type: str
    config: dict[str, Any] = field(default_factory=dict)
    vocabulary: list[str] | None = None
    prediction_type: str | None = None
    pooling: str = "mean"
    layer: int = -1

    def __post_init__(self) -> None:
        if self.type not in HEADS:
            raise ValueError(f"head type must be one of {sorted(HEADS)}, got {self.type!r}")
        if self.prediction_type is not None and self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        n = self.config.get("n_classes")
        if self.vocabulary is not None and n is not None and len(self.vocabulary) != n:
            raise ValueError(f"the vocabulary has {len(self.vocabulary)} labels but the head has {n} outputs")


@dataclass
class AudioEmbedderSpec:
    """A frozen non-audiofm audio tower of a dual encoder. name: its
    :func:`audiofm.eval.baselines.make_baseline` name with settings (``"logmel"``,
    ``"crepe:hop_ms=50"``); fingerprint: the embedder's at save time; sample_rate, dim: its
    rate and clip-embedding size."""

    name: str
    fingerprint: str
    sample_rate: PositiveInt
    dim: PositiveInt


@dataclass
class TextTowerSpec:
    """The text tower of a dual encoder. model: "" (the bundled all-MiniLM-L6-v2) or the local
    sentence-transformers model directory; name: its display name; fingerprint: sha256 (16 hex)
    of the model directory (:meth:`audiofm.retrieval.text.TextEncoder.fingerprint`), checked at
    load; dim: sentence-embedding size; max_tokens: truncation; trainable: top transformer
    layers trained and stored as ``text.*`` (0 none, -1 all); layers: the model's layer count."""

    model: str
    name: str
    fingerprint: str
    dim: PositiveInt
    max_tokens: PositiveInt
    trainable: int = 0
    layers: NonNegativeInt = 0

    def __post_init__(self) -> None:
        if self.trainable < -1:
            raise ValueError(f"trainable must be -1 (all), 0 or a number of top layers, got {self.trainable}")


@dataclass
class ProjectionSpec:
    """A projection into the shared space: type 'linear' or 'mlp' (Linear → GELU → Linear with
    ``hidden`` units), in_dim → out_dim."""

    type: str
    in_dim: PositiveInt
    out_dim: PositiveInt
    hidden: PositiveInt = 512

    def __post_init__(self) -> None:
        if self.type not in ("linear", "mlp"):
            raise ValueError(f"projection type must be 'linear' or 'mlp', got {self.type!r}")


@dataclass
class DualSpec:
    """What a "dual" checkpoint adds. config: the ``DualEncoderConfig`` it was built with (as a
    mapping). audio_embedder: the frozen audio embedder, None when the audio tower is the
    checkpoint's audiofm encoder. audio_dim: pre-projection audio feature size. text: the text
    tower. audio_proj / text_proj: the projections. temperature: its value at save time (the
    weights hold it exactly); learn_temperature: whether it was learned. provenance: where the
    audio tower came from (checkpoint + weights id, or preset + seed)."""

    config: dict[str, Any]
    text: TextTowerSpec
    audio_proj: ProjectionSpec
    text_proj: ProjectionSpec
    audio_dim: PositiveInt
    temperature: float = 0.05
    learn_temperature: bool = True
    audio_embedder: AudioEmbedderSpec | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.audio_proj.in_dim != self.audio_dim or self.text_proj.in_dim != self.text.dim:
            raise ValueError(f"the projections take {self.audio_proj.in_dim} / {self.text_proj.in_dim} inputs but "
                             f"the towers give {self.audio_dim} / {self.text.dim}")
        if self.audio_proj.out_dim != self.text_proj.out_dim:
            raise ValueError(f"the audio and text projections differ in size ({self.audio_proj.out_dim} vs "
                             f"{self.text_proj.out_dim})")


@dataclass
class CheckpointSpec:
    """What a checkpoint holds. kind: one of :data:`KINDS`. name: the preset / model name.
    encoder: front end (with normalisation statistics) + patches + backbone; None only for a
    "dual" checkpoint whose audio tower is a frozen embedder (``dual.audio_embedder``).
    segment_seconds: training crop, the default embedding chunk. pretraining: the MSM-only
    ``ModelConfig`` fields (kind "msm"). head: the task head (required for kind "classifier").
    dual: the audio–text parts (required for kind "dual")."""

    kind: str
    name: str
    # None only for kind "dual" with a frozen audio embedder (checked below), so every other
    # kind's readers keep a plain EncoderConfig
    encoder: EncoderConfig = None  # type: ignore[assignment]
    segment_seconds: float = 4.0
    pretraining: dict[str, Any] | None = None
    head: HeadSpec | None = None
    dual: DualSpec | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "dual":
            if self.dual is None:
                raise ValueError("a 'dual' checkpoint needs its dual-encoder spec (dual)")
            if (self.encoder is None) == (self.dual.audio_embedder is None):
                raise ValueError("a 'dual' checkpoint has either an audio encoder or a frozen audio embedder "
                                 "(dual.audio_embedder), not both nor neither")
        else:
            if self.encoder is None:
                raise ValueError(f"a {self.kind!r} checkpoint needs an encoder config")
            if self.dual is not None:
                raise ValueError(f"a {self.kind!r} checkpoint has no dual-encoder spec (dual is for kind 'dual')")
        if self.kind == "classifier":
            if self.head is None:
                raise ValueError("a 'classifier' checkpoint needs a head")
            if self.head.vocabulary is None or self.head.prediction_type is None:
                raise ValueError("a 'classifier' head needs a vocabulary and a prediction_type")
        if self.pretraining is not None:
            unknown = sorted(set(self.pretraining) - set(PRETRAINING_FIELDS))
            if unknown:
                raise ValueError(f"unknown pretraining field(s) {unknown}; valid: {list(PRETRAINING_FIELDS)}")

    @classmethod
    def from_model_config(cls, cfg: ModelConfig, kind: str = "msm", head: HeadSpec | None = None
                          ) -> CheckpointSpec:
        """The spec of an MSM model config; the pretraining fields are kept for kind "msm" only."""
        pre = {f: getattr(cfg, f) for f in PRETRAINING_FIELDS} if kind == "msm" else None
        return cls(kind=kind, name=cfg.name, encoder=copy.deepcopy(cfg.encoder),
                   segment_seconds=cfg.segment_seconds, pretraining=pre, head=head)

    def model_config(self) -> ModelConfig:
        """The MSM :class:`ModelConfig` (pretraining defaults where this spec has none)."""
        return ModelConfig(name=self.name, encoder=copy.deepcopy(self.encoder),
                           segment_seconds=self.segment_seconds, **(self.pretraining or {}))


# ------------------------------------------------------------------------------------ save


def _tensors(state: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(state, AudioEncoder):
        items = {f"encoder.{k}": v for k, v in state.state_dict().items()}
    elif isinstance(state, nn.Module):
        items = dict(state.state_dict())
    else:
        items = dict(state)
    return {k: v.detach().contiguous().cpu() for k, v in items.items()}


def _sha256(f: Path) -> str:
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(
    path: str | os.PathLike[str],
    spec: CheckpointSpec,
    state: nn.Module | Mapping[str, torch.Tensor],
    train_state: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a checkpoint directory atomically and return its path.

    ``state``: a model (an :class:`AudioEncoder` is saved as ``encoder.*``) or a state dict.
    Kind "msm" keeps every key; kinds "encoder" / "classifier" keep ``encoder.*`` (and
    ``head.*`` when the spec has a head) and drop the rest (the decoder). ``meta``: extra
    ``config.json`` entries (step, data fingerprint, ...).
    """
    from safetensors.torch import save_file

    if not isinstance(spec, CheckpointSpec):
        raise TypeError(f"save_checkpoint needs a CheckpointSpec, got {type(spec).__name__}; for an MSM "
                        "ModelConfig pass CheckpointSpec.from_model_config(cfg)")
    clash = sorted(set(meta or {}) & set(_RESERVED))
    if clash:
        raise ValueError(f"meta keys {clash} are reserved checkpoint fields")
    tensors = _tensors(state)
    if spec.kind == "dual":
        tensors = {k: v for k, v in tensors.items() if k.startswith(DUAL_PARTS + TRAINING_PARTS)}
        needed = [p for p in DUAL_PARTS[2:] if not any(k.startswith(p) for k in tensors)]
        if spec.encoder is not None:
            needed += [] if any(k.startswith("encoder.") for k in tensors) else ["encoder."]
        if needed:
            raise CheckpointError(f"{path}: a 'dual' checkpoint needs {', '.join(n + '*' for n in needed)} "
                                  "weights; nothing was written")
    elif spec.kind != "msm":
        keep = ("encoder.", "head.") if spec.head is not None else ("encoder.",)
        tensors = {k: v for k, v in tensors.items() if k.startswith(keep)}
    if spec.encoder is not None and not any(k.startswith("encoder.") for k in tensors):
        raise CheckpointError(f"{path}: the weights contain no encoder (no 'encoder.*' keys); nothing was written")
    if spec.head is not None and not any(k.startswith("head.") for k in tensors):
        raise CheckpointError(f"{path}: the spec has a head but the weights have no 'head.*' keys; "
                              "nothing was written")
    try:
        with atomic_dir(path, overwrite=overwrite) as tmp:
            save_file(tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT})
            model = to_dict(spec)
            kind = model.pop("kind")
            for key in ("encoder", "dual"):  # absent rather than null (other kinds' files stay as they were)
                if model.get(key) is None:
                    model.pop(key)
            info = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
                    "audiofm_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "weights_sha256": _sha256(tmp / WEIGHTS), "model": model, **(meta or {})}
            (tmp / "config.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
            if train_state is not None:
                torch.save(train_state, tmp / "train_state.pt")
    except FileExistsError as e:
        raise CheckpointError(str(e)) from None
    return Path(path)


# ------------------------------------------------------------------------------------ load


def resolve(path: str | os.PathLike[str]) -> Path:
    """A checkpoint directory from a checkpoint, or a run directory (its final model, else its
    latest periodic checkpoint)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint or run directory")
    if (p / "config.json").is_file():
        return p
    if (p / "model" / "config.json").is_file():
        return p / "model"
    latest = latest_checkpoint(p / "checkpoints")
    if latest is not None:
        return latest
    raise CheckpointError(f"{p}: not an audiofm checkpoint (no config.json) nor a run directory with one")


def latest_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    f = Path(folder)
    if not f.is_dir():
        return None
    steps = sorted(d for d in f.iterdir() if d.is_dir() and d.name.startswith("step_")
                   and (d / "config.json").is_file())
    return steps[-1] if steps else None


def read_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint, validated for format and version; ``"path"``
    is added (the checkpoint directory)."""
    d = resolve(path)
    try:
        info = json.loads((d / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{d}/config.json is corrupt or truncated ({e}); re-copy the checkpoint") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{d}: config.json is not an audiofm checkpoint config")
    v = info.get("format_version")
    if not isinstance(v, int) or v < 1:
        raise CheckpointError(f"{d}: config.json has no valid format_version ({v!r}); re-copy the checkpoint")
    if v > FORMAT_VERSION:
        raise CheckpointError(
            f"{d}: checkpoint format version {v} is newer than this audiofm supports ({FORMAT_VERSION}); "
            "upgrade audiofm"
        )
    info["path"] = str(d)
    return info


def _v1_head(d: Path) -> HeadSpec | None:
    """The head of a format-1 supervised fine-tune (side-car ``head.json``), else None."""
    f = d / _V1_HEAD[0]
    if not f.is_file():
        return None
    try:
        h = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{f} is corrupt or truncated ({e}); re-copy the checkpoint") from None
    if not isinstance(h, dict) or h.get("format") != "audiofm-head" or h.get("kind") != "linear":
        raise CheckpointError(f"{f}: not an audiofm linear classifier head description")
    try:
        vocabulary = [str(v) for v in h["vocabulary"]]
        return HeadSpec(type="classifier", config={"dim": int(h["dim"]), "n_classes": len(vocabulary), "dropout": 0.0},
                        vocabulary=vocabulary, prediction_type=h["prediction_type"],
                        pooling=h.get("pooling", "mean"), layer=int(h.get("layer", -1)))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{f}: incompatible head description ({e})") from None


def _spec(info: dict[str, Any]) -> CheckpointSpec:
    d = Path(info["path"])
    where = f"{d}/config.json model"
    head = _v1_head(d) if info["format_version"] == 1 else None
    try:
        if info["format_version"] == 1:
            spec = CheckpointSpec.from_model_config(from_dict(ModelConfig, info["model"], where=where))
            # a format-1 fine-tune still carries its pretraining decoder (kept as stored)
            return spec if head is None else dataclasses.replace(spec, kind="classifier", head=head)
        spec = from_dict(CheckpointSpec, {**info["model"], "kind": info.get("kind")}, where=where)
        if spec.kind == "msm":
            spec.model_config()  # the pretraining fields must make an MSM config
        return spec
    except (ConfigError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{d}: incompatible model config ({e})") from None


def load_spec(path: str | os.PathLike[str]) -> CheckpointSpec:
    """The :class:`CheckpointSpec` of a checkpoint (format 1 converted; a format-1 side-car
    ``head.json`` makes it kind "classifier")."""
    return _spec(read_info(path))


def load_config(path: str | os.PathLike[str]) -> ModelConfig:
    """The MSM :class:`ModelConfig` of a checkpoint (``load_spec(path).model_config()``)."""
    spec = load_spec(path)
    try:
        return spec.model_config()
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{resolve(path)}: incompatible model config ({e})") from None


def _load_file(f: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not f.is_file():
        raise CheckpointError(f"{f.parent}: {f.name} is missing")
    try:
        return load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{f}: corrupt or truncated weights ({e}); re-copy the checkpoint") from None


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Every weight of a checkpoint by key (a format-1 ``head.safetensors`` as ``head.*``)."""
    info = read_info(path)
    d = Path(info["path"])
    state = _load_file(d / WEIGHTS)
    if info["format_version"] == 1 and (d / _V1_HEAD[0]).is_file():
        state.update({f"head.{k}": v for k, v in _load_file(d / _V1_HEAD[1]).items()})
    return state


def weights_id(path: str | os.PathLike[str]) -> str:
    """The sha256 of ``model.safetensors``: stored in ``config.json`` at save time (format 1:
    computed once per process, on demand). Identifies the weights in caches."""
    info = read_info(path)
    digest = info.get("weights_sha256")
    if isinstance(digest, str) and digest:
        return digest
    f = Path(info["path"]) / WEIGHTS
    if not f.is_file():
        raise CheckpointError(f"{info['path']}: {WEIGHTS} is missing")
    st = f.stat()
    key = (str(f.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _v1_digests:
        _v1_digests[key] = _sha256(f)
    return _v1_digests[key]


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], where: str, strict: bool = True) -> None:
    """Load ``state`` into ``model``, reporting missing/unexpected keys and shape mismatches."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if wrong:
        k = wrong[0]
        raise CheckpointError(f"{where}: {len(wrong)} weight(s) have the wrong shape, e.g. {k}: "
                              f"checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
    if strict and (missing or unexpected):
        raise CheckpointError(f"{where}: weights do not match the model: missing {missing[:5]}"
                              f"{'...' if len(missing) > 5 else ''} ({len(missing)}), unexpected "
                              f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''} ({len(unexpected)})")
    model.load_state_dict(state, strict=False)


def component(state: Mapping[str, torch.Tensor], prefix: str, where: str) -> dict[str, torch.Tensor]:
    """The weights under ``prefix.`` (e.g. "encoder", "head") with the prefix removed."""
    p = f"{prefix}."
    out = {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
    if not out:
        raise CheckpointError(f"{where}: the weights contain no {prefix} (no '{p}*' keys)")
    return out


def load_train_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    f = Path(path) / "train_state.pt"
    if not f.is_file():
        raise CheckpointError(f"{path}: no train_state.pt; cannot resume from a weights-only checkpoint")
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated pickles/zip archives
        raise CheckpointError(f"{f}: corrupt or truncated training state ({e})") from None


# -------------------------------------------------------------------------------- describe


def _check_weights(d: Path, shapes: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]],
                   digest: Any) -> None:
    """The weights file holds exactly the tensors the config describes, unchanged since saving."""
    where = f"{d / WEIGHTS}"
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{where}: the weights do not belong to this config.json: {len(missing)} missing "
                              f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    wrong = sorted(k for k in expected if shapes[k] != expected[k])
    if wrong:
        k = wrong[0]
        raise CheckpointError(f"{where}: {len(wrong)} weight(s) have the wrong shape for this config.json, e.g. "
                              f"{k}: {shapes[k]} vs {expected[k]}")
    if isinstance(digest, str) and digest and _sha256(d / WEIGHTS) != digest:
        raise CheckpointError(f"{where}: the weights changed after saving (sha256 differs from config.json's "
                              "weights_sha256); re-copy the checkpoint")


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``audiofm info`` shows: kind, components (those with weights in the file) and
    their configs and parameter counts, provenance. The weights are verified first: present,
    complete, exactly the tensors (names and shapes) the config describes, and unchanged since
    saving (their sha256); a :class:`CheckpointError` says which check failed."""
    from safetensors import SafetensorError, safe_open

    from .models.heads import build_head
    from .models.msm import MSMModel, count_parameters

    info = read_info(path)
    d = Path(info["path"])
    spec = _spec(info)
    if not (d / WEIGHTS).is_file():
        raise CheckpointError(f"{d}: {WEIGHTS} is missing; re-copy the checkpoint")
    try:
        with safe_open(str(d / WEIGHTS), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{d / WEIGHTS}: corrupt or truncated weights ({e}); re-copy the checkpoint") from None
    if spec.kind == "dual":
        return _describe_dual(info, spec, shapes)
    keys = list(shapes)
    enc = spec.encoder
    encoder = AudioEncoder(enc)
    expected = {f"encoder.{k}": tuple(v.shape) for k, v in encoder.state_dict().items()}
    components: dict[str, dict[str, Any]] = {"encoder": {
        "backbone": enc.backbone, "backbone_cfg": to_dict(enc.backbone_cfg), "dim": enc.dim,
        "patch": [enc.patch_f, enc.patch_t], "frontend": to_dict(enc.frontend),
        "parameters": count_parameters(encoder)}}
    if any(not k.startswith(("encoder.", "head.")) for k in keys):
        cfg = spec.model_config()
        msm = MSMModel(cfg)
        components["decoder"] = {
            "dim": cfg.decoder_dim, "depth": cfg.decoder_depth, "heads": cfg.decoder_heads,
            "mask_mode": cfg.mask_mode, "mask_ratio": cfg.mask_ratio, "encoder_input": cfg.encoder_input,
            "objective": cfg.objective,
            "parameters": count_parameters(msm) - components["encoder"]["parameters"]}
        # training-only parts (the latent objective's teacher) are in periodic checkpoints only
        training = any(k.startswith(TRAINING_PARTS) for k in keys)
        expected = {k: tuple(v.shape) for k, v in msm.state_dict().items()
                    if training or not k.startswith(TRAINING_PARTS)}
    if spec.head is not None:
        h = spec.head
        components["head"] = {"type": h.type, "config": h.config, "prediction_type": h.prediction_type,
                              "classes": None if h.vocabulary is None else len(h.vocabulary),
                              "pooling": h.pooling, "layer": h.layer,
                              "parameters": count_parameters(build_head(h.type, **h.config))}
        expected.update({f"head.{k}": tuple(v.shape) for k, v in build_head(h.type, **h.config).state_dict().items()})
    if info["format_version"] == 1:
        shapes.update({k: expected[k] for k in expected if k.startswith("head.")})  # in the side-car file
    _check_weights(d, shapes, expected, info.get("weights_sha256"))
    return {
        "checkpoint": str(d), "kind": spec.kind, "model": spec.name, "segment_seconds": spec.segment_seconds,
        "components": components,
        "parameters": {**{k: c["parameters"] for k, c in components.items()},
                       "total": sum(c["parameters"] for c in components.values())},
        "vocabulary": spec.head.vocabulary if spec.head is not None else None,
        "weights_sha256": weights_id(d), "step": info.get("step"),
        "data_fingerprint": info.get("data_fingerprint"), "created": info.get("created"),
        "format_version": info.get("format_version"), "audiofm_version": info.get("audiofm_version"),
    }


def _describe_dual(info: dict[str, Any], spec: CheckpointSpec, shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """:func:`describe` of a "dual" checkpoint: audio tower, text tower, projections, temperature.
    The text weights (``text.*``, only the trained layers) are counted, not shape-checked: their
    shapes come from the text model directory, which is not loaded here."""
    from .models.msm import count_parameters
    from .retrieval.model import Projection

    d = Path(info["path"])
    dual = spec.dual
    assert dual is not None
    cfg = dual.config
    expected: dict[str, tuple[int, ...]] = {}
    components: dict[str, dict[str, Any]] = {}
    audio: dict[str, Any] = {"source": cfg.get("audio_model"), "dim": dual.audio_dim,
                             "pooling": cfg.get("pooling"), "layer": cfg.get("layer"),
                             "trainable_blocks": cfg.get("audio_trainable")}
    if spec.encoder is not None:
        enc = spec.encoder
        encoder = AudioEncoder(enc)
        expected.update({f"encoder.{k}": tuple(v.shape) for k, v in encoder.state_dict().items()})
        audio.update({"backbone": enc.backbone, "backbone_cfg": to_dict(enc.backbone_cfg), "encoder_dim": enc.dim,
                      "patch": [enc.patch_f, enc.patch_t], "frontend": to_dict(enc.frontend),
                      "parameters": count_parameters(encoder)})
    else:
        e = dual.audio_embedder
        assert e is not None
        audio.update({"embedder": e.name, "fingerprint": e.fingerprint, "sample_rate": e.sample_rate,
                      "parameters": 0})
    components["audio"] = audio
    t = dual.text
    text_keys = [k for k in shapes if k.startswith("text.")]
    if (t.trainable != 0) != bool(text_keys):
        raise CheckpointError(f"{d / WEIGHTS}: the text tower has trainable={t.trainable} but the weights hold "
                              f"{len(text_keys)} 'text.*' tensors; re-copy the checkpoint")
    expected.update({k: shapes[k] for k in text_keys})
    components["text"] = {"model": t.model or t.name, "name": t.name, "fingerprint": t.fingerprint, "dim": t.dim,
                          "max_tokens": t.max_tokens, "trainable_layers": t.trainable, "layers": t.layers,
                          "parameters": sum(int(np.prod(shapes[k])) for k in text_keys)}
    for part, ps in (("audio_proj", dual.audio_proj), ("text_proj", dual.text_proj)):
        proj = Projection.from_spec(ps)
        expected.update({f"{part}.{k}": tuple(v.shape) for k, v in proj.state_dict().items()})
        components[part] = {**to_dict(ps), "parameters": count_parameters(proj)}
    expected["temperature.log_temperature"] = ()
    components["temperature"] = {"value": dual.temperature, "learned": dual.learn_temperature,
                                 "parameters": 1 if dual.learn_temperature else 0}
    _check_weights(d, shapes, expected, info.get("weights_sha256"))
    return {
        "checkpoint": str(d), "kind": spec.kind, "model": spec.name, "segment_seconds": spec.segment_seconds,
        "embed_dim": dual.audio_proj.out_dim, "components": components,
        "parameters": {**{k: c["parameters"] for k, c in components.items()},
                       "total": sum(c["parameters"] for c in components.values())},
        "vocabulary": None, "provenance": dual.provenance,
        "weights_sha256": weights_id(d), "step": info.get("step"),
        "data_fingerprint": info.get("data_fingerprint"), "created": info.get("created"),
        "format_version": info.get("format_version"), "audiofm_version": info.get("audiofm_version"),
    }
