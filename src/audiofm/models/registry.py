"""Model registry: ``create_model("msm_vit_tiny", **overrides)``.

A preset is a few numbers over one class (:class:`~audiofm.models.msm.MSMModel`). Names are
``msm_<backbone>_<size>`` with backbone vit (Transformer), mamba or xlstm and size debug, tiny,
small or base. Overrides of ``None`` are dropped, so CLI defaults never override presets.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

from ..config import ConfigError, from_dict, merge, to_dict
from .msm import ModelConfig, MSMModel

_PRESETS: dict[str, Callable[[], dict[str, Any]]] = {}

# Transformer sizes: (dim, depth, heads, decoder_dim, decoder_depth, decoder_heads)
_VIT_SIZES = {
    "debug": (64, 2, 2, 64, 1, 2),
    "tiny": (192, 12, 3, 128, 2, 4),
    "small": (384, 12, 6, 256, 4, 8),
    "base": (768, 12, 12, 512, 8, 16),
}
_BACKBONE_MODULES = {"mamba": "audiofm.models.backbones.mamba", "xlstm": "audiofm.models.backbones.xlstm"}


def register_preset(name: str) -> Callable[[Callable[[], dict[str, Any]]], Callable[[], dict[str, Any]]]:
    def deco(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        _PRESETS[name] = fn
        return fn

    return deco


def _msm_preset(backbone: str, size: str) -> dict[str, Any]:
    dim, depth, heads, ddim, ddepth, dheads = _VIT_SIZES[size]
    if backbone == "transformer":
        bcfg: dict[str, Any] = {"dim": dim, "depth": depth, "heads": heads}
    else:
        module = importlib.import_module(_BACKBONE_MODULES[backbone])
        bcfg = dict(module.preset_fields(size))
        if bcfg.get("dim", dim) != dim:
            raise ConfigError(f"{backbone} preset {size} must keep dim={dim}")
    return {
        "encoder": {"backbone": backbone, "backbone_cfg": bcfg},
        "decoder_dim": ddim, "decoder_depth": ddepth, "decoder_heads": dheads,
    }


def _bind(backbone: str, size: str) -> Callable[[], dict[str, Any]]:
    return lambda: _msm_preset(backbone, size)


for _size in _VIT_SIZES:
    for _short, _bb in (("vit", "transformer"), ("mamba", "mamba"), ("xlstm", "xlstm")):
        register_preset(f"msm_{_short}_{_size}")(_bind(_bb, _size))


def list_models() -> list[str]:
    return sorted(_PRESETS)


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The :class:`ModelConfig` of preset ``name`` with nested ``overrides`` applied."""
    if name not in _PRESETS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    data = merge(to_dict(ModelConfig()), _PRESETS[name]())
    data["name"] = name
    data = merge(data, {k: v for k, v in overrides.items() if v is not None})
    return from_dict(ModelConfig, data, where=name)


def create_model(name: str, **overrides: Any) -> MSMModel:
    return MSMModel(model_config(name, **overrides))


def build_model(cfg: ModelConfig | dict[str, Any]) -> MSMModel:
    """Rebuild a model from a (saved) config."""
    if not isinstance(cfg, ModelConfig):
        cfg = from_dict(ModelConfig, cfg, where="model config")
    return MSMModel(dataclasses.replace(cfg))
