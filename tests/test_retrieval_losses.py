"""Multi-positive InfoNCE and ensemble distillation against direct (loop) references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from audiofm.retrieval.losses import (
    ContrastiveDistillationLoss,
    MultiPositiveInfoNCE,
    Temperature,
    distillation_loss,
    multi_positive_infonce,
    positives,
    teacher_targets,
)


def cosine(a: torch.Tensor, t: torch.Tensor) -> list[list[float]]:
    out = []
    for i in range(a.shape[0]):
        row = []
        for j in range(t.shape[0]):
            ai, tj = a[i].tolist(), t[j].tolist()
            dot = sum(x * y for x, y in zip(ai, tj))
            row.append(dot / math.sqrt(sum(x * x for x in ai)) / math.sqrt(sum(y * y for y in tj)))
        out.append(row)
    return out


def reference_infonce(a: torch.Tensor, t: torch.Tensor, ids: list[str], tau: float) -> float:
    """Every (audio i, caption j) of the same clip is a positive; average −log p over positives
    in each direction (p over audios for a caption, over captions for an audio), then halve."""
    c = [[s / tau for s in row] for row in cosine(a, t)]
    b = len(ids)
    pos = [(i, j) for i in range(b) for j in range(b) if ids[i] == ids[j]]
    audio_dir = text_dir = 0.0
    for i, j in pos:
        audio_dir += -(c[i][j] - math.log(sum(math.exp(c[k][j]) for k in range(b))))
        text_dir += -(c[i][j] - math.log(sum(math.exp(c[i][k]) for k in range(b))))
    return 0.5 * (audio_dir / len(pos) + text_dir / len(pos))


def test_multi_positive_infonce_matches_loop_reference():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 5, generator=g, dtype=torch.float64)
    t = torch.randn(6, 5, generator=g, dtype=torch.float64)
    ids = ["x", "y", "x", "z", "y", "x"]  # clip x has three captions in the batch, y two
    a[2] = a[0]
    a[5] = a[0]
    a[4] = a[1]
    for tau in (0.05, 0.3):
        got = multi_positive_infonce(a, t, ids, tau)
        assert float(got) == pytest.approx(reference_infonce(a, t, ids, tau), rel=1e-10)
    codes = torch.tensor([7, 3, 7, 1, 3, 7])
    by_code = multi_positive_infonce(a, t, codes, 0.1)
    assert float(by_code) == pytest.approx(float(multi_positive_infonce(a, t, ids, 0.1)))
    assert positives(ids).sum() == 9 + 4 + 1


def test_one_caption_per_clip_is_clip_loss():
    g = torch.Generator().manual_seed(1)
    a, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    logits = F.normalize(a, dim=-1) @ F.normalize(t, dim=-1).T / 0.07
    labels = torch.arange(5)
    clip = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    assert float(multi_positive_infonce(a, t, list(range(5)), 0.07)) == pytest.approx(float(clip), rel=1e-5)


def test_learnable_and_fixed_temperature():
    loss = MultiPositiveInfoNCE(temperature=0.1, learnable=True)
    assert float(loss.temperature().detach()) == pytest.approx(0.1)
    g = torch.Generator().manual_seed(2)
    a = torch.randn(4, 3, generator=g, requires_grad=True)
    t = torch.randn(4, 3, generator=g, requires_grad=True)
    value = loss(a, t, ["p", "q", "p", "r"])
    value.backward()
    assert loss.temperature.log_temperature.grad is not None and a.grad is not None and t.grad is not None
    assert float(value.detach()) == pytest.approx(reference_infonce(a.detach(), t.detach(), ["p", "q", "p", "r"], 0.1),
                                                 rel=1e-5)
    fixed = Temperature(0.2, learnable=False)
    assert list(fixed.parameters()) == [] and "log_temperature" in fixed.state_dict()
    with pytest.raises(ValueError, match="> 0"):
        Temperature(0.0)


def test_global_batch_gradients_split_like_two_processes():
    """The loss on the gathered batch gives each half the gradient it would get from the full batch."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(8, 4, generator=g, dtype=torch.float64)
    t = torch.randn(8, 4, generator=g, dtype=torch.float64)
    ids = [0, 1, 2, 0, 3, 4, 1, 5]
    full_a, full_t = a.clone().requires_grad_(), t.clone().requires_grad_()
    multi_positive_infonce(full_a, full_t, ids, 0.1).backward()
    halves = [(a[:4].clone().requires_grad_(), t[:4].clone().requires_grad_()),
              (a[4:].clone().requires_grad_(), t[4:].clone().requires_grad_())]
    gathered_a = torch.cat([h[0] for h in halves])
    gathered_t = torch.cat([h[1] for h in halves])
    multi_positive_infonce(gathered_a, gathered_t, ids, 0.1).backward()
    assert torch.allclose(torch.cat([h[0].grad for h in halves]), full_a.grad)  # type: ignore[misc]
    assert torch.allclose(torch.cat([h[1].grad for h in halves]), full_t.grad)  # type: ignore[misc]


def reference_distillation(a, t, teachers, tau, tau_t, kind="ce"):
    b = a.shape[0]
    s = cosine(a, t)
    mean = [[sum(m[i][j] for m in teachers) / len(teachers) for j in range(b)] for i in range(b)]

    def softmax(v):
        mx = max(v)
        e = [math.exp(x - mx) for x in v]
        return [x / sum(e) for x in e]

    row_terms, col_terms = [], []
    for i in range(b):  # audio i → distribution over captions
        q = softmax([mean[i][j] / tau_t for j in range(b)])
        p = softmax([s[i][j] / tau for j in range(b)])
        row_terms.append(sum(-qj * math.log(pj) + (qj * math.log(qj) if kind == "kl" else 0.0)
                             for qj, pj in zip(q, p)))
    for j in range(b):  # caption j → distribution over audios
        q = softmax([mean[i][j] / tau_t for i in range(b)])
        p = softmax([s[i][j] / tau for i in range(b)])
        col_terms.append(sum(-qi * math.log(pi) + (qi * math.log(qi) if kind == "kl" else 0.0)
                             for qi, pi in zip(q, p)))
    return 0.5 * (sum(row_terms) / b + sum(col_terms) / b)


def test_distillation_matches_loop_reference():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(5, 6, generator=g, dtype=torch.float64)
    t = torch.randn(5, 6, generator=g, dtype=torch.float64)
    teachers = [torch.rand(5, 5, generator=g, dtype=torch.float64) * 2 - 1 for _ in range(3)]
    as_lists = [m.tolist() for m in teachers]
    for kind in ("ce", "kl"):
        got = distillation_loss(a, t, teachers, 0.07, teacher_temperature=0.2, kind=kind)  # type: ignore[arg-type]
        assert float(got) == pytest.approx(reference_distillation(a, t, as_lists, 0.07, 0.2, kind), rel=1e-6)
    stacked = distillation_loss(a, t, torch.stack(teachers), 0.07, teacher_temperature=0.2)
    assert float(stacked) == pytest.approx(float(distillation_loss(a, t, teachers, 0.07, 0.2)))
    rows, cols = teacher_targets(teachers, 0.2)
    assert torch.allclose(rows.sum(1), torch.ones(5, dtype=rows.dtype))
    assert torch.allclose(cols.sum(0), torch.ones(5, dtype=cols.dtype))


def test_distillation_is_zero_kl_when_student_equals_teacher():
    g = torch.Generator().manual_seed(5)
    a = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    sim = (F.normalize(a, dim=-1) @ F.normalize(t, dim=-1).T).detach()
    kl = distillation_loss(a, t, [sim, sim], 0.1, kind="kl")
    assert float(kl.detach()) == pytest.approx(0.0, abs=1e-12)
    kl.backward()
    assert float(a.grad.abs().max()) < 1e-10  # type: ignore[union-attr]


def test_combined_weight():
    g = torch.Generator().manual_seed(6)
    a, t = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    ids = ["a", "b", "a", "c"]
    teachers = torch.rand(2, 4, 4, generator=g)
    plain = ContrastiveDistillationLoss(weight=0.0, temperature=0.1)
    value, parts = plain(a, t, ids)
    assert float(value.detach()) == pytest.approx(float(multi_positive_infonce(a, t, ids, 0.1)), rel=1e-5)
    assert "distillation" not in parts
    mixed = ContrastiveDistillationLoss(weight=0.25, temperature=0.1, teacher_temperature=0.05)
    value, parts = mixed(a, t, ids, teachers)
    expected = 0.75 * parts["contrastive"] + 0.25 * parts["distillation"]
    assert float(value.detach()) == pytest.approx(expected, rel=1e-5)
    assert parts["distillation"] == pytest.approx(float(distillation_loss(a, t, teachers, 0.1, 0.05)), rel=1e-5)
    with pytest.raises(ValueError, match="no teacher"):
        mixed(a, t, ids)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        ContrastiveDistillationLoss(weight=1.5)
    with pytest.raises(ValueError, match="clip ids"):
        multi_positive_infonce(a, t, ["a", "b"], 0.1)
