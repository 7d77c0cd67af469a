"""Contrastive and distillation losses for audio–text dual encoders.

Both losses are computed on the global batch: pass features that were already gathered over
processes (``Batch.gather`` in the training engine, exact gradients), together with the global
clip ids. Row i of ``audio`` and row i of ``text`` form pair i; a clip with several captions in
the batch appears once per caption (its audio rows repeat).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def clip_codes(clip_ids: Tensor | Sequence[Hashable], device: torch.device | None = None) -> Tensor:
    """(B,) int64 codes of clip ids (equal ids → equal codes), from a tensor or any hashables."""
    if isinstance(clip_ids, Tensor):
        if clip_ids.ndim != 1:
            raise ValueError(f"clip_ids must be 1-D, got shape {tuple(clip_ids.shape)}")
        return clip_ids.to(device=device, dtype=torch.long)
    codes: dict[Hashable, int] = {}
    return torch.tensor([codes.setdefault(c, len(codes)) for c in clip_ids], dtype=torch.long, device=device)


def positives(clip_ids: Tensor | Sequence[Hashable], device: torch.device | None = None) -> Tensor:
    """(B, B) boolean matrix: pair i and pair j are of the same clip."""
    c = clip_codes(clip_ids, device)
    return c[:, None] == c[None, :]


def similarity_logits(audio: Tensor, text: Tensor, temperature: float | Tensor) -> Tensor:
    """(B, B) cosine similarities of L2-normalised audio (rows) and text (columns) / temperature."""
    if audio.ndim != 2 or text.ndim != 2 or audio.shape != text.shape:
        raise ValueError(f"audio and text must both be (B, D); got {tuple(audio.shape)} and {tuple(text.shape)}")
    a = F.normalize(audio, dim=-1)
    t = F.normalize(text, dim=-1)
    return a @ t.T / temperature


def multi_positive_infonce(audio: Tensor, text: Tensor, clip_ids: Tensor | Sequence[Hashable],
                           temperature: float | Tensor) -> Tensor:
    """Symmetric InfoNCE where every caption of the same clip in the batch is a positive.

    With C = cos(audio_i, text_j) / temperature and P the (B, B) same-clip matrix, the loss is
    -½ (mean over P of log softmax_i C[i, j] + mean over P of log softmax_j C[i, j]): the audio
    and text directions, each averaged over all positive pairs — the training loss of the
    DCASE 2025 Task 6 baseline (``d25_t6/retrieval_module.py``, ``training_step``).
    """
    logits = similarity_logits(audio, text, temperature)  # (B, B) audio × text
    pos = positives(clip_ids, logits.device)
    if pos.shape != logits.shape:
        raise ValueError(f"{pos.shape[0]} clip ids for a batch of {logits.shape[0]}")
    log_p_audio = torch.log_softmax(logits, dim=0)  # which audio, given the caption
    log_p_text = torch.log_softmax(logits, dim=1)   # which caption, given the audio
    return -0.5 * (log_p_audio[pos].mean() + log_p_text[pos].mean())


class Temperature(nn.Module):
    """A softmax temperature, fixed or learned (stored as its log, so it stays positive)."""

    def __init__(self, init: float = 0.05, learnable: bool = True, min_value: float = 1e-3) -> None:
        super().__init__()
        if not init > 0 or not min_value > 0:
            raise ValueError(f"temperature and its minimum must be > 0, got {init} and {min_value}")
        self.learnable = learnable
        self.min_value = min_value
        log_t = torch.tensor(math.log(init))
        if learnable:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    def forward(self) -> Tensor:
        return self.log_temperature.exp().clamp(min=self.min_value)

    def extra_repr(self) -> str:
        return f"value={float(self.forward()):.4g}, learnable={self.learnable}"


class MultiPositiveInfoNCE(nn.Module):
    """:func:`multi_positive_infonce` with a :class:`Temperature` (fixed or learned)."""

    def __init__(self, temperature: float = 0.05, learnable: bool = True) -> None:
        super().__init__()
        self.temperature = Temperature(temperature, learnable)

    def forward(self, audio: Tensor, text: Tensor, clip_ids: Tensor | Sequence[Hashable]) -> Tensor:
        return multi_positive_infonce(audio, text, clip_ids, self.temperature())


def teacher_targets(teacher_similarities: Tensor | Sequence[Tensor], temperature: float) -> tuple[Tensor, Tensor]:
    """Soft targets from an ensemble: the teachers' (B, B) audio × text similarity matrices are
    averaged, divided by ``temperature`` and normalised over texts per audio (rows) and over
    audios per text (columns). Returns (audio→text (B, B), text→audio (B, B) as columns)."""
    sims = teacher_similarities if isinstance(teacher_similarities, Tensor) else torch.stack(list(teacher_similarities))
    if sims.ndim == 2:
        sims = sims[None]
    if sims.ndim != 3 or sims.shape[1] != sims.shape[2]:
        raise ValueError(f"teacher similarities must be (M, B, B) or a list of (B, B), got {tuple(sims.shape)}")
    sims = sims.detach()
    mean = (sims if sims.is_floating_point() else sims.float()).mean(0) / temperature
    return torch.softmax(mean, dim=1), torch.softmax(mean, dim=0)


def distillation_loss(audio: Tensor, text: Tensor, teacher_similarities: Tensor | Sequence[Tensor],
                      temperature: float | Tensor, teacher_temperature: float | None = None,
                      kind: Literal["ce", "kl"] = "ce") -> Tensor:
    """Match the student's audio→text and text→audio distributions to the ensemble's soft targets.

    Student: softmax over texts of each audio row and over audios of each text column of
    cos(audio, text) / temperature. Targets: :func:`teacher_targets` (teacher temperature
    defaults to the student's value). ``kind="ce"``: cross-entropy −Σ q log p; ``"kl"``:
    KL(q ‖ p) = cross-entropy − entropy(q) (same gradient). Mean over rows (and over columns),
    average of the two directions — the estimated-correspondence targets of Primus, Schmid &
    Widmer, "Estimated Audio–Caption Correspondences Improve Language-Based Audio Retrieval"
    (DCASE 2024 Workshop), as used by arXiv 2509.16649.
    """
    logits = similarity_logits(audio, text, temperature)
    if teacher_temperature is not None:
        t_temp = teacher_temperature
    else:
        t_temp = float(temperature.detach()) if isinstance(temperature, Tensor) else float(temperature)
    q_a2t, q_t2a = teacher_targets(teacher_similarities, t_temp)
    if q_a2t.shape != logits.shape:
        raise ValueError(f"teacher matrices are {tuple(q_a2t.shape)} for a batch of {tuple(logits.shape)}")
    q_a2t, q_t2a = q_a2t.to(logits), q_t2a.to(logits)
    log_p_a2t = torch.log_softmax(logits, dim=1)
    log_p_t2a = torch.log_softmax(logits, dim=0)
    ce_a2t = -(q_a2t * log_p_a2t).sum(1).mean()
    ce_t2a = -(q_t2a * log_p_t2a).sum(0).mean()
    loss = 0.5 * (ce_a2t + ce_t2a)
    if kind == "kl":
        ent = 0.5 * (-(q_a2t * q_a2t.clamp_min(1e-30).log()).sum(1).mean()
                     - (q_t2a * q_t2a.clamp_min(1e-30).log()).sum(0).mean())
        loss = loss - ent
    elif kind != "ce":
        raise ValueError(f"kind must be 'ce' or 'kl', not {kind!r}")
    return loss


class ContrastiveDistillationLoss(nn.Module):
    """(1 − weight) · multi-positive InfoNCE + weight · distillation, one shared temperature.

    ``weight=0`` is plain contrastive training; ``weight=1`` learns from the teachers alone.
    Returns the loss and its parts (floats, for logging).
    """

    def __init__(self, weight: float = 0.5, temperature: float = 0.05, learnable: bool = True,
                 teacher_temperature: float | None = None, kind: Literal["ce", "kl"] = "ce") -> None:
        super().__init__()
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"distillation weight must be in [0, 1], got {weight}")
        self.weight = weight
        self.teacher_temperature = teacher_temperature
        self.kind: Literal["ce", "kl"] = kind
        self.temperature = Temperature(temperature, learnable)

    def forward(self, audio: Tensor, text: Tensor, clip_ids: Tensor | Sequence[Hashable],
                teacher_similarities: Tensor | Sequence[Tensor] | None = None) -> tuple[Tensor, dict[str, float]]:
        tau = self.temperature()
        con = multi_positive_infonce(audio, text, clip_ids, tau)
        parts = {"contrastive": float(con.detach()), "temperature": float(tau.detach())}
        if self.weight == 0.0:
            return con, parts
        if teacher_similarities is None:
            raise ValueError(f"distillation weight is {self.weight} but no teacher similarities were given")
        dist = distillation_loss(audio, text, teacher_similarities, tau, self.teacher_temperature, self.kind)
        parts["distillation"] = float(dist.detach())
        return (1.0 - self.weight) * con + self.weight * dist, parts
