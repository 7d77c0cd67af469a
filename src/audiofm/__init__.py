"""audiofm: pretrain, evaluate, adapt and apply self-supervised audio encoders.

>>> import audiofm
>>> model = audiofm.load("runs/my_run")          # a checkpoint or run directory
>>> emb = model.embed(wave, sr)                   # emb.clip (D,), emb.frames (T, D), emb.timestamps (T,)
>>> audiofm.load("runs/my_classifier").predict(wave, sr)   # a "classifier" checkpoint: probabilities (C,)
>>> audiofm.load("runs/my_retrieval").embed_text(["a dog barks"])  # a "dual" checkpoint: (N, E), unit norm
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

def load(path: str, **kwargs: Any) -> Any:
    """Load a checkpoint (or run) directory as an :class:`~audiofm.api.Embedder` (a
    :class:`~audiofm.api.Classifier` for a "classifier" checkpoint, a
    :class:`~audiofm.retrieval.model.TextAudioModel` for a "dual" audio–text checkpoint; typed
    code that needs one of them calls :func:`audiofm.api.load` or
    :func:`audiofm.retrieval.load_dual`)."""
    from .api import load_model

    return load_model(path, **kwargs)


def create_model(name: str, **overrides: Any) -> Any:
    """Create a registered model by name, e.g. ``create_model("msm_vit_tiny")``."""
    from .models.registry import create_model as _create

    return _create(name, **overrides)


def list_models() -> list[str]:
    from .models.registry import list_models as _list

    return _list()


__all__ = ["__version__", "create_model", "list_models", "load"]
