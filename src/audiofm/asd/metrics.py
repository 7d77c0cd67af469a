"""DCASE Task 2 scores as the organisers' evaluators compute them, and the submission files.

Per year (``y_true`` 1 = anomaly, larger score = more anomalous):

* 2022-2025 (``Kota-Dohi/dcase2022_evaluator`` ``dcase2022_task2_evaluator.py``,
  ``nttcslab/dcase2023_task2_evaluator`` and ``nttcslab/dcase2024_task2_evaluator``, the same
  rules): per machine type and section, ``auc_<domain>`` = ROC AUC over that domain's normal
  clips **plus every anomalous clip of both domains**; ``pauc`` = scikit-learn's standardised
  partial AUC at FPR <= 0.1 over all clips of the section (both domains); the official score is
  the harmonic mean of all AUC-source, AUC-target and pAUC values, each floored at machine
  epsilon. Precision/recall/F1 of the decisions are computed on each domain's clips only.
* 2021 (``y-kawagu/dcase2021_task2_evaluator``): per machine, section and domain, AUC and pAUC
  on that domain's test clips only; the official score is the harmonic mean of all those AUC
  and pAUC values together, floored at machine epsilon (the evaluator prints the two columns'
  harmonic means separately; the combined mean is the task paper's ranking score, arXiv 2106.04492).
* 2020 (``y-kawagu/dcase2020_task2_evaluator`` ``evaluator.py``): AUC and pAUC per machine ID
  (``section`` here) and their arithmetic mean per machine type. The challenge ranked teams by
  ranks, which one system cannot reproduce, so 2020 has no official score here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.dcase import dcase_clip
from ..data.manifest import DataError, Row
from ..io import write_text

MAX_FPR = 0.1
EPS = sys.float_info.epsilon
DOMAINS = ("source", "target")


def auc(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """ROC AUC (scikit-learn's ``roc_auc_score``)."""
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(np.asarray(y_true), np.asarray(scores, dtype=np.float64)))


def pauc(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, max_fpr: float = MAX_FPR) -> float:
    """McClish-standardised partial AUC at FPR <= ``max_fpr`` (``roc_auc_score(max_fpr=...)``)."""
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(np.asarray(y_true), np.asarray(scores, dtype=np.float64), max_fpr=max_fpr))


def domain_auc(y_true: np.ndarray, scores: np.ndarray, domains: np.ndarray, domain: str) -> float:
    """2022-2025 AUC of ``domain``: its normal clips plus all anomalous clips (NaN without normals)."""
    y, d = np.asarray(y_true), np.asarray(domains)
    keep = (d == domain) | (y != 0)
    if not np.any(keep & (y == 0)) or not np.any(y != 0):
        return float("nan")
    return auc(y[keep], np.asarray(scores)[keep])


def _both(y: np.ndarray) -> bool:
    return bool(np.any(y == 0) and np.any(y != 0))


def decision_metrics(y_true: np.ndarray, decisions: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of 0/1 decisions, denominators floored at epsilon (evaluator rule)."""
    y, p = np.asarray(y_true) != 0, np.asarray(decisions) != 0
    tp, fp, fn = float(np.sum(y & p)), float(np.sum(~y & p)), float(np.sum(y & ~p))
    prec = tp / max(tp + fp, EPS)
    rec = tp / max(tp + fn, EPS)
    return {"precision": prec, "recall": rec, "f1": 2.0 * prec * rec / max(prec + rec, EPS)}


def score_section(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
                  domains: Sequence[str] | np.ndarray | None = None, year: int = 2023,
                  decisions: Sequence[int] | np.ndarray | None = None) -> list[tuple[str, str, float]]:
    """One section's (domain, metric, value) triples; domain "all" for pooled values.

    Values that cannot be computed (a domain without normal clips, a class missing) are left out.
    """
    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    d = np.asarray(domains if domains is not None else [""] * len(y)).astype(str)
    dec = None if decisions is None else np.asarray(decisions).astype(int)
    if not (len(y) == len(s) == len(d)) or (dec is not None and len(dec) != len(y)):
        raise ValueError(f"labels ({len(y)}), scores ({len(s)}), domains ({len(d)})"
                         + (f" and decisions ({len(dec)})" if dec is not None else "") + " differ in length")
    if not np.all(np.isfinite(s)):
        raise ValueError("anomaly scores must be finite")
    out: list[tuple[str, str, float]] = []
    if year == 2020:
        if _both(y):
            out += [("all", "auc", auc(y, s)), ("all", "pauc", pauc(y, s))]
        return out
    if year >= 2022 and _both(y):
        out += [("all", "auc", auc(y, s)), ("all", "pauc", pauc(y, s))]
    for dom in DOMAINS:
        here = d == dom
        if not np.any(here):
            continue
        if year >= 2022:
            v = domain_auc(y, s, d, dom)
            if not np.isnan(v):
                out.append((dom, "auc", v))
        elif _both(y[here]):
            out += [(dom, "auc", auc(y[here], s[here])), (dom, "pauc", pauc(y[here], s[here]))]
        if dec is not None:
            out += [(dom, k, v) for k, v in decision_metrics(y[here], dec[here]).items()]
    return out


def official_values(table: Sequence[Mapping[str, Any]], year: int) -> list[float]:
    """The per-section values that enter the year's official score (see the module docstring)."""
    if year == 2020:
        return []
    if year == 2021:
        keep = [("source", "auc"), ("target", "auc"), ("source", "pauc"), ("target", "pauc")]
    else:
        keep = [("source", "auc"), ("target", "auc"), ("all", "pauc")]
        if not any(r["metric"] == "auc" and r["domain"] in DOMAINS for r in table):
            return []                   # domains unknown (hidden, no ground truth): no official score
    return [float(r["value"]) for dm in keep for r in table if (r["domain"], r["metric"]) == dm
            and r["section"] not in ("", "mean")]


def official_score(table: Sequence[Mapping[str, Any]], year: int) -> float | None:
    """Harmonic mean of :func:`official_values`, each floored at machine epsilon (None for 2020)."""
    vals = official_values(table, year)
    if not vals:
        return None
    from scipy.stats import hmean
    return float(hmean(np.maximum(np.asarray(vals, dtype=np.float64), EPS)))


@dataclass
class DcaseScores:
    """Long-format scores: one dict per (machine, section, domain, metric, value)."""

    year: int
    table: list[dict[str, Any]] = field(default_factory=list)
    official_score: float | None = None

    def value(self, machine: str, section: str, domain: str, metric: str) -> float:
        for r in self.table:
            if (r["machine"], r["section"], r["domain"], r["metric"]) == (machine, section, domain, metric):
                return float(r["value"])
        raise KeyError(f"no {metric} for {machine} section {section} domain {domain}")


def score_dcase(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
                machines: Sequence[str], sections: Sequence[str], domains: Sequence[str] | None = None,
                year: int = 2023, decisions: Sequence[int] | np.ndarray | None = None) -> DcaseScores:
    """Score every (machine, section) of parallel arrays the year's way; 2020 adds per-machine means."""
    y, s = np.asarray(y_true), np.asarray(scores, dtype=np.float64)
    m, sec = np.asarray(machines).astype(str), np.asarray(sections).astype(str)
    d = np.asarray(domains if domains is not None else [""] * len(y)).astype(str)
    dec = None if decisions is None else np.asarray(decisions)
    if not (len(y) == len(s) == len(m) == len(sec) == len(d)):
        raise ValueError("labels, scores, machines, sections and domains must have the same length")
    out = DcaseScores(year=year)
    for machine in sorted({str(v) for v in m}):
        per: dict[str, list[float]] = {"auc": [], "pauc": []}
        for section in sorted({str(v) for v in sec[m == machine]}):
            i = (m == machine) & (sec == section)
            for dom, metric, v in score_section(y[i], s[i], d[i], year, None if dec is None else dec[i]):
                out.table.append({"machine": machine, "section": section, "domain": dom, "metric": metric,
                                  "value": float(v)})
                if metric in per:
                    per[metric].append(v)
        if year == 2020:
            out.table += [{"machine": machine, "section": "mean", "domain": "all", "metric": k,
                           "value": float(np.mean(v))} for k, v in per.items() if v]
    out.official_score = official_score(out.table, year)
    if out.official_score is not None:
        out.table.append({"machine": "all", "section": "", "domain": "all", "metric": "official_score",
                          "value": out.official_score})
    return out


def score_rows(rows: Sequence[Row], scores: Sequence[float] | np.ndarray, year: int | None = None,
               decisions: Sequence[int] | np.ndarray | None = None) -> DcaseScores:
    """Score DCASE test rows (from ``read_dcase``, labels known) with their anomaly scores."""
    clips = [dcase_clip(r) for r in rows]
    missing = [r.id for r, c in zip(rows, clips) if c.label not in ("normal", "anomaly")]
    if missing:
        raise DataError(f"{len(missing)} clip(s) have no normal/anomaly label (evaluation set without ground "
                        f"truth? pass ground_truth= to read_dcase): {missing[:5]}")
    yr = year if year is not None else int(rows[0].attributes["dcase.year"])
    return score_dcase([c.label == "anomaly" for c in clips], scores, [c.machine for c in clips],
                       [c.section for c in clips], [c.domain for c in clips], yr, decisions)


def gamma_threshold(train_scores: Sequence[float] | np.ndarray, q: float = 0.9) -> float:
    """Decision threshold as the official baselines set it: the ``q`` quantile of a gamma
    distribution fitted (``scipy.stats.gamma.fit``, shape, loc and scale) to normal training scores."""
    from scipy.stats import gamma
    x = np.asarray(train_scores, dtype=np.float64)
    if x.size < 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"need at least 2 finite training scores to fit a gamma distribution, got {x.size}")
    a, loc, scale = gamma.fit(x)
    return float(gamma.ppf(q, a, loc=loc, scale=scale))


def submission_name(kind: str, machine: str, section: str, year: int = 2023, domain: str = "") -> str:
    """Official submission file name; ``kind`` is "anomaly_score" or "decision_result"."""
    if kind not in ("anomaly_score", "decision_result"):
        raise ValueError(f"kind must be 'anomaly_score' or 'decision_result', not {kind!r}")
    if year == 2020:
        if kind != "anomaly_score":
            raise ValueError("DCASE 2020 submissions have anomaly scores only")
        return f"anomaly_score_{machine}_id_{section}.csv"
    if year == 2021:
        if domain not in DOMAINS:
            raise ValueError(f"DCASE 2021 file names need the domain (source|target), got {domain!r}")
        return f"{kind}_{machine}_section_{section}_{domain}_test.csv"
    return f"{kind}_{machine}_section_{section}_test.csv"


def write_submission(folder: str | os.PathLike[str], rows: Sequence[Row], scores: Sequence[float] | np.ndarray,
                     threshold: float | Mapping[str, float] | None = None, year: int | None = None) -> list[Path]:
    """Write ``anomaly_score_*`` (and, with a threshold, ``decision_result_*``) CSVs for test rows.

    Lines are ``<file name>,<value>`` without a header; a clip is decided anomalous (1) when its
    score is above the threshold (one float, or one per machine type). Returns the files written.
    """
    if len(rows) != len(scores):
        raise ValueError(f"{len(rows)} rows but {len(scores)} scores")
    groups: dict[tuple[str, str, str], list[tuple[str, float]]] = {}
    yr = year
    for r, v in zip(rows, scores):
        c = dcase_clip(r)
        yr = yr if yr is not None else int(r.attributes["dcase.year"])
        if c.split != "test":
            raise DataError(f"{r.id}: submissions hold test clips only (this one is {c.split!r})")
        key = (c.machine, c.section, c.domain if yr == 2021 else "")
        groups.setdefault(key, []).append((Path(r.path).name, float(v)))
    if yr is None:
        raise ValueError("no rows to write")
    if threshold is not None and not isinstance(threshold, (int, float)):
        lacking = sorted({m for m, _, _ in groups} - set(threshold))
        if lacking:
            raise ValueError(f"no decision threshold for machine type(s) {lacking}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for (machine, section, domain), items in sorted(groups.items()):
        items.sort()
        written.append(write_text(out / submission_name("anomaly_score", machine, section, yr, domain),
                                  "".join(f"{n},{v!r}\n" for n, v in items)))
        if threshold is not None and yr != 2020:
            t = threshold if isinstance(threshold, (int, float)) else threshold[machine]
            written.append(write_text(out / submission_name("decision_result", machine, section, yr, domain),
                                      "".join(f"{n},{int(v > t)}\n" for n, v in items)))
    return written


def read_submission(path: str | os.PathLike[str]) -> dict[str, float]:
    """A submission CSV as {file name: value}."""
    out: dict[str, float] = {}
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            name, _, value = line.partition(",")
            try:
                out[name] = float(value)
            except ValueError:
                raise DataError(f"{path}:{i}: expected <file name>,<number>, got {line!r}") from None
    return out


def score_submission(folder: str | os.PathLike[str], rows: Sequence[Row], year: int | None = None) -> DcaseScores:
    """Score a submission folder against labelled test rows, file by file as the evaluators do.

    Reads each group's ``anomaly_score_*`` file (and ``decision_result_*`` when every group has
    one); missing files, missing clips and clips that are not among the rows are all reported.
    """
    if not rows:
        raise ValueError("no rows to score")
    yr = year if year is not None else int(rows[0].attributes["dcase.year"])
    groups: dict[tuple[str, str, str], list[int]] = {}
    for i, r in enumerate(rows):
        c = dcase_clip(r)
        groups.setdefault((c.machine, c.section, c.domain if yr == 2021 else ""), []).append(i)
    scores = np.zeros(len(rows))
    decisions: np.ndarray | None = np.zeros(len(rows), dtype=int)
    problems: list[str] = []
    for (machine, section, domain), idx in sorted(groups.items()):
        path = Path(folder) / submission_name("anomaly_score", machine, section, yr, domain)
        if not path.is_file():
            problems.append(f"{path.name}: missing")
            continue
        names = [Path(rows[i].path).name for i in idx]
        got = read_submission(path)
        lacking, extra = sorted(set(names) - set(got)), sorted(set(got) - set(names))
        if lacking or extra:
            problems.append(f"{path.name}: {len(lacking)} clip(s) missing {lacking[:3]}, "
                            f"{len(extra)} unknown {extra[:3]}")
            continue
        scores[idx] = [got[n] for n in names]
        dec_path = path.with_name(path.name.replace("anomaly_score", "decision_result", 1))
        if decisions is not None and yr != 2020 and dec_path.is_file():
            dec = read_submission(dec_path)
            if set(dec) != set(names):
                problems.append(f"{dec_path.name}: its clips differ from the anomaly scores'")
                continue
            decisions[idx] = [int(dec[n]) for n in names]
        else:
            decisions = None
    if problems:
        raise DataError(f"{folder}: the submission does not match the {len(rows)} test clips:\n  "
                        + "\n  ".join(problems))
    return score_rows(rows, scores, yr, decisions)
