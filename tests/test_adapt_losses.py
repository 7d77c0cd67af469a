"""SupCon and Jaccard-weighted SupCon against direct loop implementations."""

import math

import pytest
import torch

from audiofm.adapt.losses import pair_weights, supcon_loss, weighted_supcon_loss


def _ref_supcon(z, labels, tau):
    """Khosla et al. (2020) L_out, written as the paper's sums, one anchor at a time."""
    z = torch.nn.functional.normalize(z.double(), dim=1)
    M = len(z)
    total, anchors = 0.0, 0
    for i in range(M):
        pos = [p for p in range(M) if p != i and labels[p] == labels[i]]
        if not pos:
            continue
        denom = sum(torch.exp(z[i] @ z[a] / tau) for a in range(M) if a != i)
        total = total + (-1.0 / len(pos)) * sum(torch.log(torch.exp(z[i] @ z[p] / tau) / denom) for p in pos)
        anchors += 1
    return total / anchors


def _ref_jaccard(z, y, tau):
    """Jaccard-weighted SupCon: w_ip = |Yi ∩ Yp| / |Yi ∪ Yp|, loss_i normalised by Σ_p w_ip."""
    z = torch.nn.functional.normalize(z.double(), dim=1)
    M = len(z)
    sets = [{c for c in range(y.shape[1]) if y[i, c] > 0} for i in range(M)]
    total, anchors = 0.0, 0
    for i in range(M):
        w = [len(sets[i] & sets[p]) / len(sets[i] | sets[p]) if p != i and (sets[i] | sets[p]) else 0.0
             for p in range(M)]
        if sum(w) == 0:
            continue
        denom = sum(torch.exp(z[i] @ z[a] / tau) for a in range(M) if a != i)
        total = total - sum(w[p] * torch.log(torch.exp(z[i] @ z[p] / tau) / denom)
                            for p in range(M) if w[p] > 0) / sum(w)
        anchors += 1
    return total / anchors


@pytest.mark.parametrize("tau", [0.07, 0.1, 0.5])
def test_supcon_matches_loop_reference(tau):
    g = torch.Generator().manual_seed(0)
    B = 6
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    z = torch.randn(2 * B, 8, generator=g)  # two views per clip
    lab2 = torch.cat([labels, labels])
    ours = supcon_loss(z, lab2, tau)
    ref = _ref_supcon(z, lab2.tolist(), tau)
    assert ours.dtype == torch.float32
    assert float(ours) == pytest.approx(float(ref), rel=1e-5)


def test_supcon_gradient_matches_reference():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(10, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 2, 0, 0, 1, 1, 2, 0])
    a = z.clone().requires_grad_(True)
    b = z.clone().requires_grad_(True)
    supcon_loss(a, labels, 0.2).backward()
    _ref_supcon(b, labels.tolist(), 0.2).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)  # ours computes in float32


def test_jaccard_weights_and_loss_match_reference():
    y = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0], [0, 0, 0, 0]],
                     dtype=torch.float32)
    w = pair_weights(y)
    assert torch.equal(w, w.T) and torch.all(w.diagonal() == 0)
    assert float(w[0, 1]) == pytest.approx(1 / 2)  # {0,1} vs {0}
    assert float(w[0, 2]) == pytest.approx(1 / 3)  # {0,1} vs {1,2}
    assert float(w[0, 4]) == 1.0 and float(w[0, 3]) == 0.0
    assert float(w[5].sum()) == 0.0  # no labels, no positives
    g = torch.Generator().manual_seed(2)
    z = torch.randn(12, 6, generator=g, dtype=torch.float64)
    y2 = torch.cat([y, y])
    a = z.clone().requires_grad_(True)
    b = z.clone().requires_grad_(True)
    ours = supcon_loss(a, y2, 0.1)
    ref = _ref_jaccard(b, y2, 0.1)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


def test_single_label_multihot_equals_supcon():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(8, 4, generator=g)
    idx = torch.tensor([0, 1, 2, 0, 1, 2, 0, 3])
    onehot = torch.nn.functional.one_hot(idx, 4).float()
    assert float(supcon_loss(z, onehot, 0.1)) == pytest.approx(float(supcon_loss(z, idx, 0.1)), rel=1e-6)


def test_edge_cases():
    z = torch.randn(3, 4, requires_grad=True)
    loss = supcon_loss(z, torch.tensor([0, 1, 2]), 0.1)  # nobody has a positive
    assert loss.item() == 0.0 and loss.requires_grad
    # perfectly clustered, well separated → loss near its minimum log(#positives per anchor)
    e = torch.eye(2).repeat_interleave(3, dim=0)  # 3 copies of each of 2 orthogonal directions
    lo = weighted_supcon_loss(e, pair_weights(torch.tensor([0, 0, 0, 1, 1, 1])), 0.05)
    assert float(lo) == pytest.approx(math.log(2), abs=1e-3)
    with pytest.raises(ValueError, match="temperature"):
        supcon_loss(z, torch.tensor([0, 1, 2]), 0.0)
    with pytest.raises(ValueError, match="labels"):
        pair_weights(torch.zeros(2, 2, 2))
