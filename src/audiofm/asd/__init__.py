"""Anomalous sound detection (DCASE Task 2): data layouts, official scores, pseudo-attributes,
scoring backends. The pipeline (``audiofm.asd.pipeline``) and the autoencoder baseline
(``audiofm.asd.autoencoder``) import torch and are not imported here."""

from __future__ import annotations

from ..data.dcase import DcaseClip, DcaseNameError, dcase_clip, detect_year, parse_name, read_dcase
from ..data.dcase_truth import GroundTruth, read_ground_truth
from .metrics import (
    EPS,
    MAX_FPR,
    DcaseScores,
    auc,
    decision_metrics,
    domain_auc,
    gamma_threshold,
    official_score,
    official_values,
    pauc,
    read_submission,
    score_dcase,
    score_rows,
    score_section,
    score_submission,
    submission_name,
    write_submission,
)
from .pseudo import (
    Clustering,
    PseudoLabels,
    attribute_agreement,
    attribute_label,
    cluster_embeddings,
    pseudo_attributes,
)
from .scoring import BACKENDS, make_backend

__all__ = [
    "BACKENDS",
    "EPS",
    "MAX_FPR",
    "Clustering",
    "DcaseClip",
    "DcaseNameError",
    "DcaseScores",
    "GroundTruth",
    "PseudoLabels",
    "attribute_agreement",
    "attribute_label",
    "auc",
    "cluster_embeddings",
    "dcase_clip",
    "decision_metrics",
    "detect_year",
    "domain_auc",
    "gamma_threshold",
    "make_backend",
    "official_score",
    "official_values",
    "parse_name",
    "pauc",
    "pseudo_attributes",
    "read_dcase",
    "read_ground_truth",
    "read_submission",
    "score_dcase",
    "score_rows",
    "score_section",
    "score_submission",
    "submission_name",
    "write_submission",
]
