"""Retrieval metrics: R@k and mAP@k with one or several relevant items per query, both directions.

Definitions follow the DCASE 2025 Task 6 baseline, ``d25_t6/retrieval_module.py``
(``on_validation_epoch_end``, read in the CPJKU baseline as mirrored at
github.com/KhushWadhwa24/dcase2025_task6_baseline):

- rank: the 1-based position of an item when the query's scores are sorted in decreasing
  order (the baseline's ``argsort(argsort(-c)) + 1``);
- R@k: the fraction of queries with at least one relevant item ranked within the top k (with
  the original pairs, one relevant file per caption, as the baseline's ``topk`` test);
- AP@k: with the relevant items' ranks sorted, r_1 < r_2 < ... < r_n, the sum over those with
  r_i ≤ k of the precision at that rank, i / r_i, divided by n, the number of relevant items
  (not min(n, k)) — the baseline's ``average_precision_at_k``. With one relevant item this is
  1 / rank within the top k and 0 beyond, the baseline's mAP@10 on the original pairs;
- mAP@k: the mean of AP@k over queries. DCASE 2025 ranks systems by mAP@16 on the
  several-relevant annotations (dcase.community/challenge2025/task-language-based-audio-retrieval-results);
  the baseline's code calls the same AP function with k = 10.

Ties: the baseline ranks by ``torch.argsort``, whose order among equal scores is unspecified.
Here it is explicit: ``ties="stable"`` (default) keeps equal-scored items in item order (a
stable sort, what the baseline's argsort yields when it is stable), ``"pessimistic"`` puts
relevant items after irrelevant ones of equal score (a lower bound, e.g. for constant scores),
``"optimistic"`` before them (an upper bound).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Ties = Literal["stable", "pessimistic", "optimistic"]
TIES: tuple[str, ...] = ("stable", "pessimistic", "optimistic")
RECALL_KS = (1, 5, 10)


def rank_positions(scores: np.ndarray, relevant: np.ndarray, ties: Ties = "stable") -> np.ndarray:
    """(Q, N) 1-based rank of every item for every query (scores sorted high to low)."""
    scores, relevant = _check(scores, relevant)
    q, n = scores.shape
    index = np.broadcast_to(np.arange(n), (q, n))
    if ties == "stable":
        order = np.argsort(-scores, axis=1, kind="stable")
    elif ties in ("pessimistic", "optimistic"):
        flag = relevant.astype(np.int8) if ties == "pessimistic" else (~relevant).astype(np.int8)
        order = np.lexsort((index, flag, -scores), axis=-1)  # last key is the primary one
    else:
        raise ValueError(f"ties must be one of {', '.join(TIES)}, not {ties!r}")
    ranks = np.empty((q, n), dtype=np.int64)
    np.put_along_axis(ranks, order, np.arange(1, n + 1)[None, :].repeat(q, 0), axis=1)
    return ranks


def average_precision_at_k(ranks: Sequence[int] | np.ndarray, k: int) -> float:
    """AP@k of one query from the 1-based ranks of all its relevant items (see module doc)."""
    r = np.sort(np.asarray(ranks, dtype=np.int64))
    if r.size == 0:
        raise ValueError("average precision needs at least one relevant item")
    hits = np.arange(1, r.size + 1)
    within = r <= k
    return float(np.sum(hits[within] / r[within]) / r.size)


def recall_at_k(ranks: Sequence[int] | np.ndarray, k: int) -> float:
    """1.0 if any relevant item is ranked within the top k, else 0.0."""
    r = np.asarray(ranks)
    return float(r.size > 0 and int(r.min()) <= k)


@dataclass
class QueryResult:
    """One query: the indices of its relevant items and their ranks, per relevance set
    (``"pairs"``; ``"multi"`` when several-relevant annotations were given), and its values
    (per-query R@k as 0/1 and AP@k under the metric names)."""

    index: int
    relevant: dict[str, list[int]]
    ranks: dict[str, list[int]]
    values: dict[str, float] = field(default_factory=dict)

    def record(self, query_ids: Sequence[str] | None = None,
               item_ids: Sequence[str] | None = None) -> dict[str, Any]:
        """A JSON-ready dict, with ids instead of indices when given."""
        def item(i: int) -> Any:
            return item_ids[i] if item_ids is not None else i
        out: dict[str, Any] = {"query": query_ids[self.index] if query_ids is not None else self.index}
        for name, idx in self.relevant.items():
            order = np.argsort(self.ranks[name], kind="stable")
            out[f"{name}_relevant"] = [item(idx[j]) for j in order]
            out[f"{name}_ranks"] = [self.ranks[name][j] for j in order]
        out.update(self.values)
        return out


@dataclass
class RetrievalResult:
    """Metric values (means over queries) and the per-query results behind them."""

    direction: str                     # "text_to_audio" | "audio_to_text" | free text
    metrics: dict[str, float]          # r_at_1, r_at_5, r_at_10, map_at_10, map_at_16, ...
    queries: list[QueryResult]
    ties: str = "stable"

    def records(self, query_ids: Sequence[str] | None = None,
                item_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        return [q.record(query_ids, item_ids) for q in self.queries]


def retrieval_metrics(scores: np.ndarray, relevant: np.ndarray | Mapping[str, np.ndarray], *,
                      recall_ks: Sequence[int] = RECALL_KS, map_ks: Sequence[int] = (10,),
                      multi_map_ks: Sequence[int] = (), ties: Ties = "stable",
                      direction: str = "text_to_audio") -> RetrievalResult:
    """R@k and mAP@k of a (Q, N) score matrix (queries × items; higher = more similar).

    ``relevant`` is a (Q, N) boolean matrix of the original pairs, or a mapping with ``"pairs"``
    and, optionally, ``"multi"`` (the several-relevant annotations). R@k (``recall_ks``) and
    mAP@k (``map_ks``) are computed on the pairs, mAP@k for ``multi_map_ks`` on ``"multi"``;
    each metric is named ``r_at_<k>`` / ``map_at_<k>``.
    """
    sets = {"pairs": relevant} if isinstance(relevant, np.ndarray) else dict(relevant)
    if "pairs" not in sets or set(sets) - {"pairs", "multi"}:
        raise ValueError(f"relevant needs a 'pairs' matrix and optionally 'multi', got {sorted(sets)}")
    if multi_map_ks and "multi" not in sets:
        raise ValueError("multi_map_ks needs the 'multi' relevance matrix")
    ranks_of: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for name, rel in sets.items():
        s, m = _check(scores, rel, where=name)
        masks[name] = m
        ranks_of[name] = rank_positions(s, m, ties)
    wanted = [("pairs", "r", k) for k in recall_ks] + [("pairs", "map", k) for k in map_ks] \
        + [("multi", "map", k) for k in multi_map_ks]
    names = [f"{kind}_at_{k}" for _, kind, k in wanted]
    if len(set(names)) != len(names):
        raise ValueError(f"metric names repeat: {names} (a k in both map_ks and multi_map_ks)")
    queries: list[QueryResult] = []
    for qi in range(scores.shape[0]):
        rel_idx = {name: np.flatnonzero(m[qi]) for name, m in masks.items()}
        rel_ranks = {name: ranks_of[name][qi, idx] for name, idx in rel_idx.items()}
        values = {}
        for (name, kind, k), metric in zip(wanted, names):
            values[metric] = (recall_at_k if kind == "r" else average_precision_at_k)(rel_ranks[name], k)
        queries.append(QueryResult(qi, {n: [int(i) for i in v] for n, v in rel_idx.items()},
                                   {n: [int(r) for r in v] for n, v in rel_ranks.items()}, values))
    metrics = {m: float(np.mean([q.values[m] for q in queries])) for m in names}
    return RetrievalResult(direction, metrics, queries, ties)


def text_to_audio(scores: np.ndarray, pairs: np.ndarray, multi: np.ndarray | None = None, *,
                  ties: Ties = "stable") -> RetrievalResult:
    """Text→audio on (T, A) caption × clip scores: R@1/5/10 and mAP@10 on the original pairs,
    mAP@16 on the several-relevant annotations ``multi`` (on the pairs when not given)."""
    rel: dict[str, np.ndarray] = {"pairs": pairs, "multi": multi if multi is not None else pairs}
    return retrieval_metrics(scores, rel, map_ks=(10,), multi_map_ks=(16,), ties=ties,
                             direction="text_to_audio")


def audio_to_text(scores: np.ndarray, pairs: np.ndarray, *, ties: Ties = "stable") -> RetrievalResult:
    """Audio→text from the same (T, A) caption × clip scores: each clip queries the captions;
    its relevant items are its own captions (R@k: any of them in the top k; AP@k as above)."""
    s, p = _check(scores, pairs)
    return retrieval_metrics(s.T, p.T, map_ks=(10, 16), ties=ties, direction="audio_to_text")


def relevance_matrix(queries: Sequence[str], items: Sequence[str],
                     relevance: Mapping[str, Sequence[str] | frozenset[str] | set[str]],
                     where: str = "relevance") -> np.ndarray:
    """(Q, N) boolean matrix: query text → relevant item ids. Every query must be known and
    every relevant id must be one of ``items``; all problems are named at once."""
    col = {it: j for j, it in enumerate(items)}
    if len(col) != len(items):
        raise ValueError(f"{where}: item ids repeat")
    out = np.zeros((len(queries), len(items)), dtype=bool)
    missing_q: list[str] = []
    missing_items: set[str] = set()
    for i, q in enumerate(queries):
        files = relevance.get(q)
        if files is None:
            missing_q.append(q)
            continue
        for f in files:
            j = col.get(f)
            if j is None:
                missing_items.add(f)
            else:
                out[i, j] = True
    problems = []
    if missing_q:
        problems.append(f"{len(missing_q)} quer(ies) without relevance: {missing_q[:5]}")
    if missing_items:
        problems.append(f"{len(missing_items)} relevant id(s) not among the {len(items)} items: "
                        f"{sorted(missing_items)[:5]}")
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems))
    return out


def _check(scores: np.ndarray, relevant: np.ndarray, where: str = "relevant") -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    r = np.asarray(relevant)
    if s.ndim != 2 or r.shape != s.shape:
        raise ValueError(f"scores must be (queries, items) and {where} the same shape; got {s.shape} and {r.shape}")
    if r.dtype != bool:
        raise ValueError(f"{where} must be a boolean matrix, not {r.dtype}")
    if not np.isfinite(s).all():
        raise ValueError(f"scores hold {int((~np.isfinite(s)).sum())} non-finite value(s)")
    empty = np.flatnonzero(~r.any(axis=1))
    if empty.size:
        raise ValueError(f"{where}: {empty.size} quer(ies) have no relevant item (first: {empty[:5].tolist()})")
    return s, r
