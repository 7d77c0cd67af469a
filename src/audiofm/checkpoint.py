"""Checkpoint directories for any model: ``config.json`` + ``model.safetensors`` (+ ``train_state.pt``).

A checkpoint has a *kind* and one config per component (:class:`CheckpointSpec`):

* ``"msm"`` — a masked-spectrogram pretraining model: ``encoder.*`` and decoder weights; the
  MSM-only fields (decoder size, masking) in ``spec.pretraining``;
* ``"encoder"`` — ``encoder.*`` weights only (no decoder), e.g. a contrastively tuned encoder;
* ``"classifier"`` — ``encoder.*`` + ``head.*`` weights; ``spec.head`` (:class:`HeadSpec`) holds
  the head's type and config, vocabulary, prediction type and the pooling/layer it reads.

Format 2 ``config.json``: ``{"format", "format_version": 2, "kind", "audiofm_version",
"created", "weights_sha256", "model": {name, encoder, segment_seconds, pretraining, head},
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

import torch
from torch import nn

from . import __version__
from .config import ConfigError, from_dict, to_dict
from .io import atomic_dir
from .models.encoder import POOLINGS, AudioEncoder, EncoderConfig
from .models.heads import HEADS
from .models.msm import ModelConfig

FORMAT = "audiofm-checkpoint"
FORMAT_VERSION = 2
KINDS = ("msm", "encoder", "classifier")
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
class CheckpointSpec:
    """What a checkpoint holds. kind: one of :data:`KINDS`. name: the preset / model name.
    encoder: front end (with normalisation statistics) + patches + backbone. segment_seconds:
    training crop, the default embedding chunk. pretraining: the MSM-only ``ModelConfig``
    fields (kind "msm"). head: the task head (required for kind "classifier")."""

    kind: str
    name: str
    encoder: EncoderConfig
    segment_seconds: float = 4.0
    pretraining: dict[str, Any] | None = None
    head: HeadSpec | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
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
    if spec.kind != "msm":
        keep = ("encoder.", "head.") if spec.head is not None else ("encoder.",)
        tensors = {k: v for k, v in tensors.items() if k.startswith(keep)}
    if not any(k.startswith("encoder.") for k in tensors):
        raise CheckpointError(f"{path}: the weights contain no encoder (no 'encoder.*' keys); nothing was written")
    if spec.head is not None and not any(k.startswith("head.") for k in tensors):
        raise CheckpointError(f"{path}: the spec has a head but the weights have no 'head.*' keys; "
                              "nothing was written")
    try:
        with atomic_dir(path, overwrite=overwrite) as tmp:
            save_file(tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT})
            model = to_dict(spec)
            kind = model.pop("kind")
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
        components["decoder"] = {
            "dim": cfg.decoder_dim, "depth": cfg.decoder_depth, "heads": cfg.decoder_heads,
            "mask_mode": cfg.mask_mode, "mask_ratio": cfg.mask_ratio, "encoder_input": cfg.encoder_input,
            "parameters": count_parameters(MSMModel(cfg)) - components["encoder"]["parameters"]}
        expected = {k: tuple(v.shape) for k, v in MSMModel(cfg).state_dict().items()}
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
