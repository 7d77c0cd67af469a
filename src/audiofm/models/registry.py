"""Model registry: ``create_model("msm_vit_tiny", **overrides)``.

A preset is a few numbers over one class (:class:`~audiofm.models.msm.MSMModel`). Names are
``msm_<backbone>_<size>`` with backbone vit (Transformer), mamba, mamba2 (SSD) or xlstm and size debug, tiny,
small or base. The encoder of each size comes from its backbone's preset table
(:func:`~audiofm.models.backbones.preset_fields`, all of one width per size), the decoder from
:data:`DECODERS`. Overrides of ``None`` are dropped, so CLI defaults never override presets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import from_dict, merge
from .backbones import SIZE_DIMS, preset_fields
from .msm import ModelConfig, MSMModel

_PRESETS: dict[str, Callable[[], dict[str, Any]]] = {}


@dataclass(frozen=True)
class DecoderPreset:
    """The MSM decoder (a light Transformer) of one model size."""

    dim: int
    depth: int
    heads: int


DECODERS: dict[str, DecoderPreset] = {
    "debug": DecoderPreset(dim=64, depth=1, heads=2),
    "tiny": DecoderPreset(dim=128, depth=2, heads=4),
    "small": DecoderPreset(dim=256, depth=4, heads=8),
    "base": DecoderPreset(dim=512, depth=8, heads=16),
}
#: registry short name → backbone name
BACKBONE_NAMES = {"vit": "transformer", "mamba": "mamba", "mamba2": "mamba2", "xlstm": "xlstm"}


def register_preset(name: str) -> Callable[[Callable[[], dict[str, Any]]], Callable[[], dict[str, Any]]]:
    """Decorator registering ``fn() -> nested ModelConfig fields`` as model preset ``name``."""

    def deco(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        _PRESETS[name] = fn
        return fn

    return deco


def msm_preset(backbone: str, size: str) -> dict[str, Any]:
    """The ModelConfig fields of the MSM model with ``backbone`` at ``size``."""
    dec = DECODERS[size]
    return {
        "encoder": {"backbone": backbone, "backbone_cfg": preset_fields(backbone, size)},
        "decoder_dim": dec.dim, "decoder_depth": dec.depth, "decoder_heads": dec.heads,
    }


def _bind(backbone: str, size: str) -> Callable[[], dict[str, Any]]:
    return lambda: msm_preset(backbone, size)


for _size in SIZE_DIMS:
    for _short, _bb in BACKBONE_NAMES.items():
        register_preset(f"msm_{_short}_{_size}")(_bind(_bb, _size))


def list_models() -> list[str]:
    return sorted(_PRESETS)


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The :class:`ModelConfig` of preset ``name`` with nested ``overrides`` applied (typed and
    checked by :func:`~audiofm.config.from_dict`; fields neither sets keep the class defaults)."""
    if name not in _PRESETS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    data = merge({**_PRESETS[name](), "name": name}, _plain({k: v for k, v in overrides.items() if v is not None}))
    return from_dict(ModelConfig, data, where=name)


def with_overrides(cfg: ModelConfig, overrides: Mapping[str, Any], where: str = "model_overrides") -> ModelConfig:
    """``cfg`` with nested ``overrides`` applied, typed and checked as :func:`model_config` does."""
    from ..config import to_dict

    return from_dict(ModelConfig, merge(to_dict(cfg), _plain({k: v for k, v in overrides.items() if v is not None})),
                     where=where)


def _plain(d: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides with dataclass values (e.g. an EncoderConfig) as mappings, so they merge."""
    from ..config import to_dict

    return {k: to_dict(v) if dataclasses.is_dataclass(v) else (_plain(v) if isinstance(v, Mapping) else v)
            for k, v in d.items()}


def create_model(name: str, **overrides: Any) -> MSMModel:
    return MSMModel(model_config(name, **overrides))


def build_model(cfg: ModelConfig | dict[str, Any]) -> MSMModel:
    """Rebuild a model from a (saved) config."""
    if not isinstance(cfg, ModelConfig):
        cfg = from_dict(ModelConfig, cfg, where="model config")
    return MSMModel(dataclasses.replace(cfg))
