"""Backbone registry: ``build_backbone(name, **fields)`` for 'transformer', 'mamba', 'mamba2', 'xlstm'.

Backbones register themselves (their typed config class and builder) with
:func:`register_backbone`; their modules, listed once in ``_MODULES``, are imported lazily so that
importing audiofm stays cheap. Every backbone module also has a size-preset table
(``preset_fields(size, ...)``, read through :func:`preset_fields` here).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from .base import SIZE_DIMS, Backbone, BackboneConfig

_MODULES = {
    "transformer": "audiofm.models.backbones.transformer",
    "mamba": "audiofm.models.backbones.mamba",
    "mamba2": "audiofm.models.backbones.mamba2",
    "xlstm": "audiofm.models.backbones.xlstm",
}
_REGISTRY: dict[str, tuple[type[BackboneConfig], Callable[[Any], Backbone]]] = {}


def register_backbone(
    name: str, config_cls: type[BackboneConfig]
) -> Callable[[Callable[[Any], Backbone]], Callable[[Any], Backbone]]:
    """Decorator registering a backbone builder ``fn(config) -> Backbone`` under ``name``."""

    def deco(fn: Callable[[Any], Backbone]) -> Callable[[Any], Backbone]:
        _REGISTRY[name] = (config_cls, fn)
        return fn

    return deco


def _lookup(name: str) -> tuple[type[BackboneConfig], Callable[[Any], Backbone]]:
    if name not in _REGISTRY and name in _MODULES:
        importlib.import_module(_MODULES[name])
    if name not in _REGISTRY:
        raise KeyError(f"unknown backbone {name!r}; available: {', '.join(list_backbones())}")
    return _REGISTRY[name]


def backbone_config_class(name: str) -> type[BackboneConfig]:
    """The typed config class of backbone ``name`` (KeyError naming the available ones)."""
    return _lookup(name)[0]


def backbone_config(name: str, **fields: Any) -> BackboneConfig:
    """The typed config of backbone ``name`` with ``fields`` set, coerced and checked by
    :func:`audiofm.config.from_dict` (unknown or ill-typed fields are a ConfigError)."""
    from ...config import from_dict

    return from_dict(backbone_config_class(name), fields, where=f"backbone {name!r}")


def as_backbone_config(name: str, cfg: BackboneConfig | Mapping[str, Any] | None) -> BackboneConfig:
    """``cfg`` as the typed config of backbone ``name``: a mapping (e.g. from an old
    ``config.json``) is built through :func:`backbone_config`, None gives the defaults; a typed
    config of another backbone is an error."""
    cls = backbone_config_class(name)
    if cfg is None:
        return cls()
    if isinstance(cfg, Mapping):
        return backbone_config(name, **cfg)
    if type(cfg) is not cls:
        raise ValueError(f"backbone {name!r} takes a {cls.__name__}, got a {type(cfg).__name__}")
    return cfg


def build_backbone(name: str, **fields: Any) -> Backbone:
    """Build backbone ``name`` from its config fields."""
    _, fn = _lookup(name)
    return fn(backbone_config(name, **fields))


def build_backbone_from(name: str, cfg: BackboneConfig) -> Backbone:
    """Build backbone ``name`` from its typed config."""
    _, fn = _lookup(name)
    return fn(as_backbone_config(name, cfg))


def preset_fields(name: str, size: str, **kw: Any) -> dict[str, Any]:
    """Config fields of backbone ``name`` at model size ``size`` (one of :data:`SIZE_DIMS`),
    from that backbone module's preset table; ``kw`` e.g. ``direction`` for recurrent ones."""
    _, fn = _lookup(name)
    presets = getattr(importlib.import_module(fn.__module__), "preset_fields", None)
    if presets is None:
        raise KeyError(f"backbone {name!r} has no size presets")
    return dict(presets(size, **kw))


def list_backbones() -> list[str]:
    return sorted(set(_MODULES) | set(_REGISTRY))


__all__ = [
    "SIZE_DIMS",
    "Backbone",
    "BackboneConfig",
    "as_backbone_config",
    "backbone_config",
    "backbone_config_class",
    "build_backbone",
    "build_backbone_from",
    "list_backbones",
    "preset_fields",
    "register_backbone",
]
