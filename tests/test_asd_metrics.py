"""Official DCASE Task 2 scores (hand-computed cases and direct formulas) and submission files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA
from scipy.stats import gamma, hmean
from sklearn.metrics import roc_auc_score, roc_curve

from audiofm.asd.metrics import (
    EPS,
    decision_metrics,
    domain_auc,
    gamma_threshold,
    official_score,
    pauc,
    read_submission,
    score_dcase,
    score_rows,
    score_section,
    score_submission,
    submission_name,
    write_submission,
)
from audiofm.data.dcase import read_dcase

BASELINE = SHARED_DATA / "asd-machines" / "baseline.py"
_RENDERED = os.environ.get("AUDIOFM_ASD_MACHINES")
ASD_MACHINES = Path(_RENDERED) if _RENDERED else None

# One section, two normals and two anomalies per domain (1 = anomaly):
#   source normals 0.1, 0.4   source anomalies 0.35, 0.8
#   target normals 0.5, 0.9   target anomalies 0.05, 0.7
Y = [0, 0, 1, 1, 0, 0, 1, 1]
S = [0.1, 0.4, 0.35, 0.8, 0.5, 0.9, 0.05, 0.7]
D = ["source"] * 4 + ["target"] * 4


def as_dict(triples: list[tuple[str, str, float]]) -> dict[tuple[str, str], float]:
    return {(d, m): v for d, m, v in triples}


def test_2023_rules_by_hand() -> None:
    got = as_dict(score_section(Y, S, D, year=2023))
    # AUC source: normals {0.1, 0.4} against ALL anomalies {0.35, 0.8, 0.05, 0.7}:
    #   0.1 is beaten by 0.35, 0.8, 0.7 (3); 0.4 by 0.8, 0.7 (2) -> 5 / 8 = 0.625
    assert got[("source", "auc")] == pytest.approx(5 / 8)
    # AUC target: normals {0.5, 0.9}: 0.5 beaten by 0.8, 0.7 (2); 0.9 by none -> 2 / 8 = 0.25
    assert got[("target", "auc")] == pytest.approx(2 / 8)
    # pAUC over both domains: the top score 0.9 is a normal, so the ROC has TPR 0 for FPR < 0.25;
    #   partial area on [0, 0.1] = 0; standardised 0.5 * (1 + (0 - 0.005) / (0.1 - 0.005)) = 9 / 19
    assert got[("all", "pauc")] == pytest.approx(9 / 19)
    # official: harmonic mean of (5/8, 1/4, 9/19) = 3 / (8/5 + 4 + 19/9) = 135 / 347
    sc = score_dcase(Y, S, ["fan"] * 8, ["00"] * 8, D, year=2023)
    assert sc.official_score == pytest.approx(135 / 347)
    assert sc.value("all", "", "all", "official_score") == pytest.approx(135 / 347)
    assert score_dcase(Y, S, ["fan"] * 8, ["00"] * 8, D, year=2022).official_score == pytest.approx(135 / 347)


def test_all_anomalies_rule_differs_from_domain_only() -> None:
    y, s, d = np.array(Y), np.array(S), np.array(D)
    # source-only AUC would be 3/4 (0.1 < 0.35, 0.8; 0.4 < 0.8): the 2022+ rule adds the target
    # anomalies 0.05 and 0.7, one below both source normals, one above both -> 5/8
    only = roc_auc_score(y[d == "source"], s[d == "source"])
    assert only == pytest.approx(3 / 4)
    assert domain_auc(y, s, d, "source") == pytest.approx(5 / 8)
    keep = (d == "source") | (y == 1)
    assert domain_auc(y, s, d, "source") == pytest.approx(roc_auc_score(y[keep], s[keep]))
    assert np.isnan(domain_auc(y[d == "source"], s[d == "source"], np.array(["source"] * 4), "target"))


def test_2021_rules_by_hand() -> None:
    got = as_dict(score_section(Y, S, D, year=2021))
    # each domain on its own clips: source 3/4, target normals {0.5, 0.9} vs {0.05, 0.7}: 1/4
    assert got[("source", "auc")] == pytest.approx(3 / 4)
    assert got[("target", "auc")] == pytest.approx(1 / 4)
    # source pAUC: top score 0.8 is an anomaly -> TPR 0.5 at FPR 0, area on [0, 0.1] = 0.05;
    #   0.5 * (1 + (0.05 - 0.005) / 0.095) = 14 / 19.  target: top 0.9 normal -> 9 / 19
    assert got[("source", "pauc")] == pytest.approx(14 / 19)
    assert got[("target", "pauc")] == pytest.approx(9 / 19)
    assert ("all", "pauc") not in got
    sc = score_dcase(Y, S, ["pump"] * 8, ["03"] * 8, D, year=2021)
    assert sc.official_score == pytest.approx(4 / (4 / 3 + 4 + 19 / 14 + 19 / 9))


def test_2020_per_id_means_by_hand() -> None:
    # id 01: normals 0.1, 0.2, anomaly 0.3 -> AUC 1; id 02: normals 0.5, 0.1, anomaly 0.3 -> AUC 1/2
    y = [0, 0, 1, 0, 0, 1]
    s = [0.1, 0.2, 0.3, 0.5, 0.1, 0.3]
    sc = score_dcase(y, s, ["fan"] * 6, ["01"] * 3 + ["02"] * 3, year=2020)
    assert sc.value("fan", "01", "all", "auc") == pytest.approx(1.0)
    assert sc.value("fan", "02", "all", "auc") == pytest.approx(0.5)
    assert sc.value("fan", "mean", "all", "auc") == pytest.approx(0.75)
    # id 01 pAUC: the anomaly is on top -> 1; id 02: the normal 0.5 is on top -> 9/19 (as above)
    assert sc.value("fan", "mean", "all", "pauc") == pytest.approx((1 + 9 / 19) / 2)
    assert sc.official_score is None


def test_pauc_is_sklearn_standardised_value() -> None:
    # ten normals 0.0 .. 0.9 and anomalies 0.95, 0.85: TPR 0.5 at FPR 0 -> area 0.05 -> 14/19
    y = [0] * 10 + [1, 1]
    s = [i / 10 for i in range(10)] + [0.95, 0.85]
    assert pauc(y, s) == pytest.approx(14 / 19)
    rng = np.random.default_rng(0)
    for _ in range(5):
        yy = rng.integers(0, 2, 200)
        ss = rng.normal(size=200) + 0.7 * yy
        # direct formula: ROC interpolated at FPR 0.1, trapezoid area, McClish standardisation
        fpr, tpr, _ = roc_curve(yy, ss)
        stop = np.searchsorted(fpr, 0.1, side="right")
        x = np.r_[fpr[:stop], 0.1]
        t = np.r_[tpr[:stop], np.interp(0.1, fpr[stop - 1:stop + 1], tpr[stop - 1:stop + 1])]
        area = float(np.sum((x[1:] - x[:-1]) * (t[1:] + t[:-1]) / 2))
        direct = 0.5 * (1 + (area - 0.005) / (0.1 - 0.005))
        assert pauc(yy, ss) == pytest.approx(direct)
        assert pauc(yy, ss) == pytest.approx(roc_auc_score(yy, ss, max_fpr=0.1))


def test_official_score_matches_scipy_over_machines_and_sections() -> None:
    rng = np.random.default_rng(1)
    n = 40
    machines = np.repeat(["fan", "gearbox"], 2 * n)
    sections = np.tile(np.repeat(["00", "01"], n), 2)
    domains = np.tile(np.repeat(["source", "target"], n // 2), 4)
    y = rng.integers(0, 2, 4 * n)
    s = rng.normal(size=4 * n) + y
    sc = score_dcase(y, s, machines, sections, domains, year=2022)
    vals = []
    for metric, dom in (("auc", "source"), ("auc", "target"), ("pauc", "all")):
        for m in ("fan", "gearbox"):
            for sec in ("00", "01"):
                i = (machines == m) & (sections == sec)
                keep = i & (((domains == dom) | (y == 1)) if metric == "auc" else True)
                v = roc_auc_score(y[keep], s[keep], max_fpr=0.1 if metric == "pauc" else None)
                assert sc.value(m, sec, dom, metric) == pytest.approx(v)
                vals.append(v)
    assert len(vals) == 12 and sc.official_score == pytest.approx(hmean(vals))


def test_epsilon_floor() -> None:
    # a section whose anomalies all score below every normal: AUCs are 0, floored at machine epsilon
    y = [0, 1, 0, 1]
    s = [0.9, 0.1, 0.8, 0.2]
    sc = score_dcase(y, s, ["fan"] * 4, ["00"] * 4, ["source", "source", "target", "target"], year=2023)
    assert sc.value("fan", "00", "source", "auc") == 0.0
    # pAUC: the top score is a normal -> 9/19 (as above); official = hmean(eps, eps, 9/19) ~ 3 eps
    assert sc.value("fan", "00", "all", "pauc") == pytest.approx(9 / 19)
    assert sc.official_score == pytest.approx(hmean([EPS, EPS, 9 / 19]))
    assert sc.official_score == pytest.approx(3 * EPS, rel=1e-6)
    assert EPS == sys.float_info.epsilon
    table = [{"machine": "m", "section": "00", "domain": "source", "metric": "auc", "value": 0.0}]
    assert official_score(table, 2023) == pytest.approx(EPS)


def test_missing_domain_is_left_out() -> None:
    # a source-only section (like asd/heart): no target AUC, the official score uses what exists
    got = as_dict(score_section([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], ["source"] * 4, year=2023))
    assert set(got) == {("all", "auc"), ("all", "pauc"), ("source", "auc")}


def test_no_official_score_without_domains() -> None:
    # an evaluation set scored with labels but without the domain ground truth: pooled values only
    sc = score_dcase(Y, S, ["fan"] * 8, ["00"] * 8, None, year=2023)
    assert {(r["domain"], r["metric"]) for r in sc.table} == {("all", "auc"), ("all", "pauc")}
    assert sc.official_score is None


def test_decision_metrics_by_hand() -> None:
    # tp 1 (index 2), fp 1 (index 1), fn 1 (index 3): precision = recall = F1 = 1/2
    assert decision_metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 0])) == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5})
    # nothing decided anomalous: 0 / max(0, eps) = 0 everywhere
    assert decision_metrics(np.array([0, 1]), np.array([0, 0])) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    got = as_dict(score_section(Y, S, D, year=2023, decisions=[0, 0, 1, 1, 0, 1, 0, 1]))
    assert got[("source", "f1")] == pytest.approx(1.0)      # source decisions are all right
    # target: tp 1 (0.7), fp 1 (0.9), fn 1 (0.05) -> 1/2
    assert got[("target", "precision")] == pytest.approx(0.5)


def test_gamma_threshold() -> None:
    x = np.random.default_rng(0).gamma(shape=3.0, scale=2.0, size=4000)
    t = gamma_threshold(x)
    a, loc, scale = gamma.fit(x)
    assert t == pytest.approx(gamma.ppf(0.9, a, loc=loc, scale=scale))
    assert t == pytest.approx(gamma.ppf(0.9, 3.0, scale=2.0), rel=0.05)
    assert np.mean(x <= t) == pytest.approx(0.9, abs=0.02)
    with pytest.raises(ValueError, match="at least 2"):
        gamma_threshold([1.0])


def dcase_tree(root: Path, year: int = 2023) -> Path:
    d = root / "fan"
    for split, names in {
        "train": ["section_00_source_train_normal_0000_a_1.wav"],
        "test": [f"section_00_{dom}_test_{lab}_{i:04d}_a_1.wav" for dom in ("source", "target")
                 for lab in ("normal", "anomaly") for i in range(2)]}.items():
        (d / split).mkdir(parents=True)
        for n in names:
            (d / split / n).write_bytes(b"")
    return root


def test_submission_files_and_score_rows(tmp_path: Path) -> None:
    rows = [r for r in read_dcase(dcase_tree(tmp_path / "data")) if r.split == "test"]
    scores = np.linspace(0.0, 1.0, len(rows))
    out = tmp_path / "sub"
    files = write_submission(out, rows, scores, threshold={"fan": 0.5})
    assert [f.name for f in files] == ["anomaly_score_fan_section_00_test.csv",
                                       "decision_result_fan_section_00_test.csv"]
    lines = (out / "anomaly_score_fan_section_00_test.csv").read_text().splitlines()
    assert len(lines) == 8 and lines == sorted(lines) and not lines[0].startswith("file")
    got = read_submission(out / "anomaly_score_fan_section_00_test.csv")
    want = {Path(r.path).name: float(v) for r, v in zip(rows, scores)}
    assert got == pytest.approx(want)
    dec = read_submission(out / "decision_result_fan_section_00_test.csv")
    assert dec == {n: float(v > 0.5) for n, v in want.items()}
    sc = score_rows(rows, scores)
    direct = score_dcase([r.labels == ["anomaly"] for r in rows], scores, ["fan"] * 8, ["00"] * 8,
                         [r.domain for r in rows], 2023)
    assert sc.official_score == pytest.approx(direct.official_score)
    # the written files scored back as the evaluator reads them: same numbers, decisions included
    back = score_submission(out, rows)
    with_dec = score_rows(rows, scores, decisions=(scores > 0.5).astype(int))
    assert back.table == with_dec.table and any(r["metric"] == "f1" for r in back.table)
    assert back.official_score == pytest.approx(sc.official_score)
    assert all(type(r["machine"]) is str and type(r["value"]) is float for r in back.table)
    (out / "anomaly_score_fan_section_00_test.csv").write_text("section_00_source_test_normal_0000_a_1.wav,0.1\n")
    with pytest.raises(ValueError, match="7 clip\\(s\\) missing"):
        score_submission(out, rows)
    train = [r for r in read_dcase(tmp_path / "data") if r.split == "train"]
    with pytest.raises(ValueError, match="test clips only"):
        write_submission(out, train, [0.0])
    with pytest.raises(ValueError, match=r"no decision threshold for machine type\(s\) \['fan'\]"):
        write_submission(tmp_path / "none", rows, scores, threshold={"pump": 1.0})
    assert not (tmp_path / "none").exists()


def test_submission_names_per_year() -> None:
    assert submission_name("decision_result", "ToyCar", "00") == "decision_result_ToyCar_section_00_test.csv"
    assert submission_name("anomaly_score", "fan", "03", 2021, "target") == \
        "anomaly_score_fan_section_03_target_test.csv"
    assert submission_name("anomaly_score", "valve", "04", 2020) == "anomaly_score_valve_id_04.csv"
    with pytest.raises(ValueError, match="domain"):
        submission_name("anomaly_score", "fan", "03", 2021)


@pytest.mark.data
@pytest.mark.skipif(not (BASELINE.is_file() and ASD_MACHINES is not None and ASD_MACHINES.is_dir()),
                    reason="rendered asd-machines (AUDIOFM_ASD_MACHINES) and its baseline.py not available")
def test_real_asd_machines_reproduces_the_readme_baseline() -> None:
    """The set's own kNN baseline (README, seed 0) uses per-domain AUCs: the 2021 rule must give them."""
    import importlib.util

    assert ASD_MACHINES is not None
    spec = importlib.util.spec_from_file_location("asd_machines_baseline", BASELINE)
    assert spec is not None and spec.loader is not None
    bl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bl)
    rows = read_dcase(ASD_MACHINES / "car-engine")
    tr = [r for r in rows if r.split == "train"]
    te = [r for r in rows if r.split == "test"]
    xtr = np.stack([bl.feature(r.path) for r in tr])
    xte = np.stack([bl.feature(r.path) for r in te])
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    zte, ztr = (xte - mu) / sd, (xtr - mu) / sd
    s = np.sqrt(((zte[:, None] - ztr[None]) ** 2).sum(-1).min(1))     # distance to the nearest normal
    per_domain = score_rows(te, s, year=2021)
    assert per_domain.value("car-engine", "00", "source", "auc") == pytest.approx(0.776, abs=5e-4)
    assert per_domain.value("car-engine", "00", "target", "auc") == pytest.approx(0.642, abs=5e-4)
    official = score_rows(te, s)
    assert official.value("car-engine", "00", "all", "pauc") == pytest.approx(0.573, abs=5e-4)
