import pytest
import torch

from audiofm.models.masking import make_mask, masked_indices, visible_indices
from audiofm.models.patch import patchify, sincos_2d, unpatchify


@pytest.mark.parametrize("pf,pt", [(16, 16), (16, 4), (8, 2)])
def test_patchify_round_trip_and_time_major_order(pf, pt):
    spec = torch.randn(2, 64, 32)
    tok = patchify(spec, pf, pt)
    Fp, Tp = 64 // pf, 32 // pt
    assert tok.shape == (2, Fp * Tp, pf * pt)
    torch.testing.assert_close(unpatchify(tok, Fp, Tp, pf, pt), spec)
    # token n = t * Fp + f holds spec[f*pf:(f+1)*pf, t*pt:(t+1)*pt]
    t, f = 1, Fp - 1
    expect = spec[0, f * pf : (f + 1) * pf, t * pt : (t + 1) * pt]
    torch.testing.assert_close(tok[0, t * Fp + f].view(pf, pt), expect)


def test_patchify_rejects_ragged():
    with pytest.raises(ValueError, match="not divisible"):
        patchify(torch.randn(1, 60, 32), 16, 16)


def test_sincos_positions():
    pos = sincos_2d(4, 5, 32)
    assert pos.shape == (20, 32)
    assert torch.allclose(pos[0, 16:], pos[4, 16:])  # same freq index, different time: freq half equal
    assert not torch.allclose(pos[0, :16], pos[4, :16])
    torch.testing.assert_close(sincos_2d(4, 2, 32, t0=3), pos[12:20])
    with pytest.raises(ValueError):
        sincos_2d(2, 2, 30)


@pytest.mark.parametrize("mode", ["random", "time", "freq", "timefreq"])
@pytest.mark.parametrize("ratio", [0.5, 0.75])
def test_mask_ratio_and_equal_counts(mode, ratio):
    Fp, Tp = 8, 25
    m = make_mask(16, Fp, Tp, ratio, mode, torch.Generator().manual_seed(0))
    counts = m.sum(1)
    assert torch.all(counts == counts[0]) and 0 < counts[0] < Fp * Tp
    assert abs(counts[0].item() / (Fp * Tp) - ratio) < 0.12
    grid = m.view(16, Tp, Fp)
    if mode == "time":  # whole time steps
        assert torch.all(grid.all(2) | (~grid).all(2))
    if mode == "freq":  # whole frequency bands
        assert torch.all(grid.all(1) | (~grid).all(1))


def test_mask_deterministic_and_indices_sorted():
    a = make_mask(4, 8, 10, 0.75, "random", torch.Generator().manual_seed(1))
    b = make_mask(4, 8, 10, 0.75, "random", torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    vis, hid = visible_indices(a), masked_indices(a)
    assert vis.shape[1] + hid.shape[1] == 80
    assert torch.all(vis[:, 1:] > vis[:, :-1])
    assert not torch.any(a.gather(1, vis))


def test_mask_rejects_bad_arguments():
    with pytest.raises(ValueError):
        make_mask(1, 2, 2, 1.0)
    with pytest.raises(ValueError, match="unknown mask mode"):
        make_mask(1, 2, 2, 0.5, "blocks")
