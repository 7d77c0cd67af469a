"""Retrieval metrics against hand-computed rankings (one and several relevant items, ties)."""

from __future__ import annotations

import numpy as np
import pytest

from audiofm.retrieval.metrics import (
    audio_to_text,
    average_precision_at_k,
    rank_positions,
    recall_at_k,
    relevance_matrix,
    retrieval_metrics,
    text_to_audio,
)


def one_hot(q: int, n: int, rel: dict[int, list[int]]) -> np.ndarray:
    m = np.zeros((q, n), dtype=bool)
    for i, js in rel.items():
        m[i, js] = True
    return m


def test_average_precision_by_hand():
    # relevant items at ranks 1, 3, 6 of 20
    assert average_precision_at_k([6, 1, 3], 16) == pytest.approx((1 / 1 + 2 / 3 + 3 / 6) / 3)
    assert average_precision_at_k([1, 3, 6], 5) == pytest.approx((1 / 1 + 2 / 3) / 3)  # rank 6 is beyond k
    assert average_precision_at_k([1, 3, 6], 2) == pytest.approx(1 / 3)
    # divided by the number of relevant items, even when more than k
    assert average_precision_at_k([1, 2, 3], 2) == pytest.approx((1 + 1) / 3)
    # one relevant item: reciprocal rank within the top k
    assert average_precision_at_k([4], 10) == pytest.approx(0.25)
    assert average_precision_at_k([10], 10) == pytest.approx(0.1)
    assert average_precision_at_k([11], 10) == 0.0
    assert recall_at_k([7, 3], 3) == 1.0 and recall_at_k([7, 4], 3) == 0.0
    with pytest.raises(ValueError, match="at least one relevant"):
        average_precision_at_k([], 10)


def test_map16_several_relevant_against_hand_ranks():
    n = 20
    scores = np.tile(-np.arange(n, dtype=float), (3, 1))  # item j has rank j + 1
    scores[2] = scores[2][::-1]                              # query 2: item j has rank n - j
    rel = one_hot(3, n, {0: [0, 2, 5], 1: [0, 17], 2: [19, 3]})
    res = retrieval_metrics(scores, {"pairs": rel, "multi": rel}, recall_ks=(1, 5), map_ks=(),
                            multi_map_ks=(16,))
    ap = [(1 + 2 / 3 + 3 / 6) / 3, (1 / 1) / 2, (1 / 1) / 2]  # query 2: ranks 1 and 17 (beyond 16)
    assert [q.values["map_at_16"] for q in res.queries] == pytest.approx(ap)
    assert res.metrics["map_at_16"] == pytest.approx(np.mean(ap))
    assert res.metrics["r_at_1"] == 1.0
    assert res.queries[0].ranks["multi"] == [1, 3, 6]
    assert res.queries[2].ranks["multi"] == [17, 1]  # in item order (items 3, 19)
    rec = res.queries[2].record(item_ids=[f"f{j}" for j in range(n)])
    assert rec["multi_relevant"] == ["f19", "f3"] and rec["multi_ranks"] == [1, 17]
    assert rec["map_at_16"] == pytest.approx(0.5)


def test_ties_stable_pessimistic_optimistic():
    scores = np.array([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    rel = one_hot(2, 4, {0: [1], 1: [0, 3]})
    expected = {  # ranks of the relevant items; AP@10
        "stable": ([2], [1, 4], 1 / 2, (1 + 2 / 4) / 2),
        "pessimistic": ([3], [3, 4], 1 / 3, (1 / 3 + 2 / 4) / 2),
        "optimistic": ([1], [1, 2], 1.0, 1.0),
    }
    for ties, (r0, r1, ap0, ap1) in expected.items():
        res = retrieval_metrics(scores, rel, recall_ks=(1,), map_ks=(10,), ties=ties)  # type: ignore[arg-type]
        assert res.queries[0].ranks["pairs"] == r0, ties
        assert sorted(res.queries[1].ranks["pairs"]) == r1, ties
        assert res.queries[0].values["map_at_10"] == pytest.approx(ap0)
        assert res.queries[1].values["map_at_10"] == pytest.approx(ap1)
    ranks = rank_positions(scores, rel, "pessimistic")
    assert sorted(ranks[0].tolist()) == [1, 2, 3, 4] and sorted(ranks[1].tolist()) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="ties must be"):
        rank_positions(scores, rel, "random")  # type: ignore[arg-type]


def _baseline_style_map(scores: np.ndarray, rel: np.ndarray, k: int) -> float:
    """Independent re-statement of the baseline's procedure: 0-based ranks from a double argsort,
    precision i / (rank + 1) for sorted ranks below k, divided by the number of relevant files."""
    aps = []
    for c, r in zip(scores, rel):
        pos = np.argsort(np.argsort(-c, kind="stable"), kind="stable")[np.flatnonzero(r)]
        total = 0.0
        for i, rank in enumerate(sorted(pos.tolist()), start=1):
            if rank >= k:
                break
            total += i / (rank + 1)
        aps.append(total / len(pos))
    return float(np.mean(aps))


def test_matches_baseline_procedure_on_random_scores():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((40, 60))
    rel = rng.random((40, 60)) < 0.08
    rel[np.arange(40), rng.integers(0, 60, 40)] = True
    for k in (1, 10, 16):
        res = retrieval_metrics(scores, {"pairs": rel, "multi": rel}, recall_ks=(), map_ks=(),
                                multi_map_ks=(k,))
        assert res.metrics[f"map_at_{k}"] == pytest.approx(_baseline_style_map(scores, rel, k))


def test_text_to_audio_and_audio_to_text_by_hand():
    # 4 captions (rows) × 2 clips; captions 0, 1 describe clip 0 and captions 2, 3 clip 1
    scores = np.array([[0.9, 0.1], [0.2, 0.3], [0.4, 0.5], [0.8, 0.0]])
    pairs = one_hot(4, 2, {0: [0], 1: [0], 2: [1], 3: [1]})
    t2a = text_to_audio(scores, pairs)
    # ranks of the own clip: 1, 2, 1, 2
    assert t2a.metrics == pytest.approx({"r_at_1": 0.5, "r_at_5": 1.0, "r_at_10": 1.0, "map_at_10": 0.75,
                                         "map_at_16": 0.75})
    # caption 3 is also relevant to clip 0 (rank 1): AP = (1 + 2/2) / 2 = 1
    multi = pairs.copy()
    multi[3, 0] = True
    t2a_multi = text_to_audio(scores, pairs, multi)
    assert t2a_multi.metrics["map_at_10"] == pytest.approx(0.75)  # still on the pairs
    assert t2a_multi.metrics["map_at_16"] == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert t2a_multi.queries[3].ranks == {"pairs": [2], "multi": [1, 2]}
    a2t = audio_to_text(scores, pairs)
    # clip 0 ranks captions 0, 3, 2, 1 → its captions at ranks 1, 4; clip 1: captions 2, 1, 0, 3 → 1, 4
    assert a2t.direction == "audio_to_text"
    assert a2t.metrics == pytest.approx({"r_at_1": 1.0, "r_at_5": 1.0, "r_at_10": 1.0,
                                         "map_at_10": 0.75, "map_at_16": 0.75})
    assert [q.ranks["pairs"] for q in a2t.queries] == [[1, 4], [1, 4]]
    recs = a2t.records(query_ids=["clip0", "clip1"], item_ids=["c0", "c1", "c2", "c3"])
    assert recs[0]["query"] == "clip0" and recs[0]["pairs_relevant"] == ["c0", "c1"]


def test_recall_at_k_counts_truncation():
    scores = np.array([[5.0, 4, 3, 2, 1, 0]] * 3)
    pairs = one_hot(3, 6, {0: [0], 1: [2], 2: [5]})
    res = retrieval_metrics(scores, pairs, recall_ks=(1, 3, 5), map_ks=(3,))
    assert res.metrics["r_at_1"] == pytest.approx(1 / 3)
    assert res.metrics["r_at_3"] == pytest.approx(2 / 3)
    assert res.metrics["r_at_5"] == pytest.approx(2 / 3)
    assert res.metrics["map_at_3"] == pytest.approx((1 + 1 / 3 + 0) / 3)


def test_relevance_matrix_and_errors():
    m = relevance_matrix(["a dog", "a cat"], ["x.wav", "y.wav", "z.wav"],
                         {"a dog": {"x.wav", "z.wav"}, "a cat": ["y.wav"]})
    assert m.tolist() == [[True, False, True], [False, True, False]]
    with pytest.raises(ValueError, match=r"1 quer\(ies\) without relevance.*1 relevant id"):
        relevance_matrix(["a dog", "a cow"], ["x.wav"], {"a dog": ["x.wav", "q.wav"]})
    with pytest.raises(ValueError, match="no relevant item"):
        retrieval_metrics(np.zeros((2, 2)), np.array([[True, False], [False, False]]))
    with pytest.raises(ValueError, match="non-finite"):
        retrieval_metrics(np.array([[np.nan, 0.0]]), np.array([[True, False]]))
    with pytest.raises(ValueError, match="boolean"):
        retrieval_metrics(np.zeros((1, 2)), np.array([[1, 0]]))
    with pytest.raises(ValueError, match="same shape"):
        retrieval_metrics(np.zeros((1, 2)), np.array([[True, False, False]]))
