"""Class-balanced P×K batches and seeded augmentation views."""

import numpy as np
import pytest
import torch

from audiofm.adapt.augment import AugmentConfig, augment_wave, mixup_pairs, pad_batch, spec_mask
from audiofm.adapt.sampler import ClassBalancedSampler, auto_clips_per_class


def _labels(counts):
    return [[c] for c, n in enumerate(counts) for _ in range(n)]


def test_pxk_structure_and_determinism():
    counts = [5, 3, 8, 1, 6, 4, 7]
    labels = _labels(counts)
    s = ClassBalancedSampler(labels, 7, classes_per_batch=3, clips_per_class=4)
    for step in range(20):
        ids, seeds = s(11, step, 12)
        assert len(ids) == len(seeds) == 12
        groups = [ids[k : k + 4] for k in range(0, 12, 4)]
        classes = [labels[g[0]][0] for g in groups]
        assert len(set(classes)) == 3  # P distinct classes
        for c, g in zip(classes, groups):
            assert all(labels[i] == [c] for i in g)  # K clips of that class
            if counts[c] >= 4:  # smaller classes are drawn with replacement
                assert len(set(g)) == 4
        assert (ids, seeds) == s(11, step, 12)
    assert s(11, 0, 12) != s(12, 0, 12)
    with pytest.raises(ValueError, match="batch_size"):
        s(0, 0, 10)


def test_every_class_reachable_each_cycle():
    labels = _labels([2] * 10)
    s = ClassBalancedSampler(labels, 10, classes_per_batch=4, clips_per_class=2)
    assert s.steps_per_cycle == 3
    for cycle in range(4):
        seen = set()
        for step in range(cycle * 3, cycle * 3 + 3):
            seen |= {labels[i][0] for i in s(5, step, 8)[0]}
        assert seen == set(range(10))


def test_multilabel_membership_and_errors():
    labels = [[0, 1], [1], [2], [0, 2], [1, 2], [0]]
    s = ClassBalancedSampler(labels, 4, classes_per_batch=3, clips_per_class=2)  # class 3 has no clips
    assert list(s.classes) == [0, 1, 2]
    ids, _ = s(0, 0, 6)
    for k, c in zip(range(0, 6, 2), s.classes_at(0, 0)):
        assert all(int(c) in labels[i] for i in ids[k : k + 2])
    with pytest.raises(ValueError, match="only 3 classes"):
        ClassBalancedSampler(labels, 4, classes_per_batch=4, clips_per_class=2)
    assert auto_clips_per_class(16, 6) == 4 and auto_clips_per_class(16, 20) == 2 and auto_clips_per_class(12, 3) == 4
    with pytest.raises(ValueError, match="more divisors"):
        auto_clips_per_class(7, 3)


def test_views_are_seeded():
    rng = np.random.default_rng(0)
    wave = rng.standard_normal(16000).astype(np.float32) * 0.1
    cfg = AugmentConfig(gain_db=6, noise_prob=1.0, time_masks=2, freq_masks=2)
    a, b = augment_wave(wave, 8000, cfg, 7), augment_wave(wave, 8000, cfg, 7)
    assert a.shape == (8000,) and torch.equal(a, b)
    assert not torch.equal(a, augment_wave(wave, 8000, cfg, 8))
    assert augment_wave(wave[:3000], 8000, cfg, 7).shape == (3000,)  # shorter clips are used whole
    m = spec_mask(64, 100, 40, cfg, 3)
    assert m.shape == (64, 100) and torch.equal(m, spec_mask(64, 100, 40, cfg, 3))
    assert not m[:, 40:].all(dim=0).any()  # time masks stay inside the valid frames
    x, lengths = pad_batch([torch.ones(3), torch.ones(5)])
    assert x.shape == (2, 5) and lengths.tolist() == [3, 5] and x[0, 3:].abs().sum() == 0
    perm, lam = mixup_pairs(6, 0.4, 1)
    assert sorted(perm.tolist()) == list(range(6)) and ((lam >= 0) & (lam <= 1)).all()
    with pytest.raises(ValueError, match="noise_prob"):
        AugmentConfig(noise_prob=2.0)
