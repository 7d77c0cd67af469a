"""Adapting encoders to labelled tasks: supervised fine-tuning, contrastive-tuning (SupCon,
Jaccard-weighted for multi-label), and the dual-probe before/after report.

>>> from audiofm.adapt import FinetuneConfig, finetune
>>> finetune(FinetuneConfig(model="runs/base", task="tasks/emodb-emotion", method="contrastive"), "runs/emodb_con")

See ``docs/adaptation.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

# name → submodule; imported on first use so `import audiofm.adapt.commands` (the CLI) stays light
_EXPORTS = {
    "AdaptModel": "recipes",
    "AugmentConfig": "augment",
    "ClassBalancedSampler": "sampler",
    "ContrastiveConfig": "config",
    "ContrastiveRecipe": "contrastive",
    "FinetuneConfig": "config",
    "Geometry": "geometry",
    "SupervisedConfig": "config",
    "SupervisedRecipe": "supervised",
    "TaskRecipe": "recipes",
    "adapt_report": "report",
    "class_cosines": "geometry",
    "finetune": "tune",
    "finetune_config_from": "config",
    "finetune_rows": "tune",
    "freeze_encoder": "recipes",
    "geometry": "geometry",
    "layerwise_param_groups": "recipes",
    "pair_weights": "losses",
    "plot_projections": "geometry",
    "supcon_loss": "losses",
    "weighted_supcon_loss": "losses",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
