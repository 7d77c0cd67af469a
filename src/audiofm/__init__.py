"""audiofm: pretrain, evaluate, adapt and apply self-supervised audio encoders.

>>> import audiofm
>>> model = audiofm.load("runs/my_run")          # a checkpoint or run directory
>>> emb = model.embed(wave, sr)                   # emb.clip (D,), emb.frames (T, D), emb.timestamps (T,)
>>> audiofm.load("runs/my_classifier").predict(wave, sr)   # a "classifier" checkpoint: probabilities (C,)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .api import Embedder


def load(path: str, **kwargs: Any) -> Embedder:
    """Load a checkpoint (or run) directory as an :class:`~audiofm.api.Embedder` (a
    :class:`~audiofm.api.Classifier` for a "classifier" checkpoint)."""
    from .api import load as _load

    return _load(path, **kwargs)


def create_model(name: str, **overrides: Any) -> Any:
    """Create a registered model by name, e.g. ``create_model("msm_vit_tiny")``."""
    from .models.registry import create_model as _create

    return _create(name, **overrides)


def list_models() -> list[str]:
    from .models.registry import list_models as _list

    return _list()


__all__ = ["__version__", "create_model", "list_models", "load"]
