"""Label-free health signals of an embedding set.

* **RankMe** (Garrido et al., ICML 2023, "RankMe: Assessing the downstream performance of
  pretrained self-supervised representations by their rank"): with singular values σ of the
  (uncentred) embedding matrix Z (N × D) and ``p_k = σ_k / ‖σ‖₁ + ε``, RankMe(Z) =
  ``exp(−Σ_k p_k log p_k)`` — a smooth effective rank in ``[1, min(N, D)]``. Higher is better
  at equal dimension; values are only comparable between embedding sets with the same N.
* **Collapse checks**: fraction of dimensions whose variance is ~0 (below 1e-6 × the mean
  variance: dead units), the mean pairwise cosine similarity of the clips (→ 1 when every
  clip maps to the same direction), and the mean/std of the L2 norms.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

RANKME_EPS = 1e-7


def rankme(z: np.ndarray, eps: float = RANKME_EPS) -> float:
    """Effective rank of ``z`` (N, D) as defined by Garrido et al. (2023)."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or min(z.shape) == 0:
        raise ValueError(f"rankme needs a non-empty (N, D) matrix, got {z.shape}")
    s = np.linalg.svd(z, compute_uv=False)
    total = s.sum()
    if total <= 0:
        return 1.0
    p = s / total + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def mean_pairwise_cosine(z: np.ndarray) -> float:
    """Mean cosine similarity over all pairs i ≠ j, exactly, in O(N·D).

    With unit vectors u_i: Σ_{i≠j} u_i·u_j = ‖Σ u_i‖² − N. Zero vectors count as similarity 0.
    """
    z = np.asarray(z, dtype=np.float64)
    n = len(z)
    if n < 2:
        return float("nan")
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    u = np.divide(z, norms, out=np.zeros_like(z), where=norms > 0)
    s = u.sum(axis=0)
    n_unit = float((norms[:, 0] > 0).sum())
    return float((s @ s - n_unit) / (n * (n - 1)))


@dataclass
class EmbeddingHealth:
    """Label-free statistics of one embedding set (see module docstring)."""

    n: int
    dim: int
    rankme: float
    rankme_ratio: float  # rankme / min(n, dim)
    dead_dim_frac: float
    mean_cosine: float
    norm_mean: float
    norm_std: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def embedding_health(z: np.ndarray, dead_rel: float = 1e-6) -> EmbeddingHealth:
    """RankMe and collapse checks of ``z`` (N, D)."""
    z = np.asarray(z, dtype=np.float64)
    n, d = z.shape
    var = z.var(axis=0)
    mean_var = float(var.mean())
    dead = float((var <= dead_rel * mean_var).mean()) if mean_var > 0 else 1.0
    norms = np.linalg.norm(z, axis=1)
    r = rankme(z)
    return EmbeddingHealth(n=n, dim=d, rankme=r, rankme_ratio=r / min(n, d), dead_dim_frac=dead,
                           mean_cosine=mean_pairwise_cosine(z), norm_mean=float(norms.mean()),
                           norm_std=float(norms.std()))
