"""Supervised contrastive losses on L2-normalised projections.

**SupCon** (Khosla et al., NeurIPS 2020, the "L_out" form): for anchor ``i`` among the ``M``
views of a batch, with positives ``P(i)`` (other views sharing its class, including the
other view of the same clip) and ``A(i)`` = every view but ``i``,

    ℓ_i = −1/|P(i)| · Σ_{p∈P(i)} log( exp(z_i·z_p/τ) / Σ_{a∈A(i)} exp(z_i·z_a/τ) ),

averaged over the anchors that have at least one positive.

**Jaccard-weighted SupCon** for multi-label data (arXiv 2309.11895): every pair gets a weight
``w_ip = |Y_i ∩ Y_p| / |Y_i ∪ Y_p|`` and ``ℓ_i = −Σ_p w_ip log softmax_i(p) / Σ_p w_ip``. With one
label per clip the weights are 1 for same-class pairs and 0 otherwise, which is SupCon exactly,
so both are :func:`weighted_supcon_loss` with different :func:`pair_weights`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def pair_weights(labels: Tensor) -> Tensor:
    """Positive-pair weights ``(M, M)`` with a zero diagonal.

    ``labels``: ``(M,)`` class indices (weight 1 for equal classes, else 0) or ``(M, C)``
    multi-hot (Jaccard similarity of the label sets; a clip without labels has no positives).
    """
    if labels.ndim == 1:
        w = (labels[:, None] == labels[None, :]).float()
    elif labels.ndim == 2:
        y = (labels > 0).float()
        inter = y @ y.T  # (M, M) |Yi ∩ Yj|
        size = y.sum(dim=1)
        union = size[:, None] + size[None, :] - inter
        w = torch.where(union > 0, inter / union.clamp(min=1.0), torch.zeros_like(inter))
    else:
        raise ValueError(f"labels must be (M,) class indices or (M, C) multi-hot, got shape {tuple(labels.shape)}")
    return w.fill_diagonal_(0.0)


def weighted_supcon_loss(z: Tensor, weights: Tensor, temperature: float = 0.1) -> Tensor:
    """Mean over anchors with any positive weight of ``−Σ_p w_ip log softmax_i(p) / Σ_p w_ip``.

    ``z``: ``(M, E)`` projections (normalised here); ``weights``: ``(M, M)`` non-negative,
    diagonal ignored. Computed in float32. Returns 0 (with a graph) when no anchor has a positive.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if z.ndim != 2 or weights.shape != (z.shape[0], z.shape[0]):
        raise ValueError(f"need z (M, E) and weights (M, M); got {tuple(z.shape)} and {tuple(weights.shape)}")
    z = F.normalize(z.float(), dim=1)
    M = z.shape[0]
    eye = torch.eye(M, dtype=torch.bool, device=z.device)
    logits = (z @ z.T) / temperature  # (M, M)
    logits = logits.masked_fill(eye, float("-inf"))  # an anchor is never its own contrast
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    w = weights.float().to(z.device).masked_fill(eye, 0.0)
    wsum = w.sum(dim=1)
    has_pos = wsum > 0
    if not bool(has_pos.any()):
        return z.sum() * 0.0
    per_anchor = -(w * log_prob.masked_fill(eye, 0.0)).sum(dim=1)[has_pos] / wsum[has_pos]
    return per_anchor.mean()


def supcon_loss(z: Tensor, labels: Tensor, temperature: float = 0.1) -> Tensor:
    """SupCon (class indices ``(M,)``) or Jaccard-weighted SupCon (multi-hot ``(M, C)``) of
    projections ``z: (M, E)``; two views of a clip are two rows with the same labels."""
    return weighted_supcon_loss(z, pair_weights(labels), temperature)
