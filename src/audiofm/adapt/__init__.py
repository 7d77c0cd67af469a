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
    "AdaptModel": "finetune",
    "AugmentConfig": "augment",
    "ClassBalancedSampler": "sampler",
    "Classifier": "finetune",
    "ContrastiveConfig": "finetune",
    "FinetuneConfig": "finetune",
    "Geometry": "geometry",
    "SupervisedConfig": "finetune",
    "adapt_report": "report",
    "class_cosines": "geometry",
    "finetune": "finetune",
    "freeze_encoder": "finetune",
    "geometry": "geometry",
    "layerwise_param_groups": "finetune",
    "load_classifier": "finetune",
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
