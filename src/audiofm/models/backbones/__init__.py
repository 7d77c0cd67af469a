"""Backbone registry: ``build_backbone(name, **fields)`` for 'transformer', 'mamba', 'xlstm'.

Backbones register themselves with :func:`register_backbone`; their modules are imported lazily
so that importing audiofm stays cheap.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

from .base import Backbone, BackboneConfig

_MODULES = {
    "transformer": "audiofm.models.backbones.transformer",
    "mamba": "audiofm.models.backbones.mamba",
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
        raise KeyError(f"unknown backbone {name!r}; available: {sorted(_MODULES)}")
    return _REGISTRY[name]


def backbone_config(name: str, **fields: Any) -> BackboneConfig:
    """The typed config of backbone ``name`` with ``fields`` set (unknown fields are an error)."""
    config_cls, _ = _lookup(name)
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(fields) - known
    if unknown:
        raise TypeError(
            f"backbone {name!r} has no setting(s) {sorted(unknown)}; its settings: {sorted(known)}"
        )
    return config_cls(**fields)


def build_backbone(name: str, **fields: Any) -> Backbone:
    """Build backbone ``name`` from its config fields."""
    _, fn = _lookup(name)
    return fn(backbone_config(name, **fields))


def list_backbones() -> list[str]:
    return sorted(_MODULES)


__all__ = [
    "Backbone",
    "BackboneConfig",
    "backbone_config",
    "build_backbone",
    "list_backbones",
    "register_backbone",
]
