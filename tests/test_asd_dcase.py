"""DCASE Task 2 layouts: name parsing for every year, layout detection, ground-truth joins, real data."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from audiofm.data.dcase import DcaseNameError, dcase_clip, detect_year, parse_name, read_dcase
from audiofm.data.dcase_truth import read_ground_truth
from audiofm.data.manifest import DataError

HEART = SHARED_DATA / "asd" / "heart"
ASD_MACHINES = Path(os.environ.get("AUDIOFM_ASD_MACHINES", "")) if os.environ.get("AUDIOFM_ASD_MACHINES") else None


def touch(root: Path, *names: str) -> None:
    """Empty files: the reader parses names and never decodes audio."""
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


# ---- parse_name, one case per year's pattern ----------------------------------------------------

def test_parse_2020() -> None:
    c = parse_name("anomaly_id_04_00000123.wav", 2020, machine="fan", split="test")
    assert (c.machine, c.section, c.index, c.label, c.domain, c.split) == \
        ("fan", "04", "00000123", "anomaly", "", "test")
    hidden = parse_name("id_02_00000005.wav", 2020, split="test")
    assert hidden.label == "" and hidden.section == "02"
    with pytest.raises(DcaseNameError, match=r"normal\|anomaly\}_id_<ID>_<8 digits>"):
        parse_name("normal_id_2_0005.wav", 2020)


def test_parse_2021() -> None:
    c = parse_name("section_03_target_test_anomaly_0012.wav", 2021, split="test")
    assert (c.section, c.domain, c.label, c.index) == ("03", "target", "anomaly", "0012")
    ev = parse_name("section_04_source_test_0003.wav", 2021, split="test")
    assert (ev.domain, ev.label) == ("source", "")
    with pytest.raises(DcaseNameError, match="section_<00-05>"):
        parse_name("section_06_source_test_normal_0000.wav", 2021)


def test_parse_2022() -> None:
    c = parse_name("section_02_target_train_normal_0005_m-n_W_pat_01.wav", 2022, split="train")
    assert (c.section, c.domain, c.split, c.label) == ("02", "target", "train", "normal")
    assert c.attributes == {"m-n": "W", "pat": "01"}
    ev = parse_name("section_05_0011.wav", 2022, split="test")
    assert (ev.section, ev.index, ev.domain, ev.label, ev.attributes) == ("05", "0011", "", "", {})


def test_parse_2023_to_2025() -> None:
    c = parse_name("section_00_source_test_anomaly_0003_car_A1_spd_4_mic_1.wav", 2023, split="test")
    assert c.attributes == {"car": "A1", "spd": "4", "mic": "1"} and c.label == "anomaly"
    with pytest.raises(DcaseNameError, match="section_00_"):
        parse_name("section_01_source_test_anomaly_0003.wav", 2023)   # a 2022 name, not 2023
    assert parse_name("section_01_source_test_anomaly_0003.wav", 2022).section == "01"
    hidden = parse_name("section_00_target_train_normal_0001_noAttribute.wav", 2024, split="train")
    assert hidden.attributes_hidden and hidden.attributes == {} and hidden.index == "0001"
    sup = parse_name("section_00_source_supplemental_clean_0007.wav", 2025, split="supplemental")
    assert (sup.split, sup.kind, sup.domain, sup.label) == ("supplemental", "clean", "source", "")
    with pytest.raises(DcaseNameError):
        parse_name("section_00_source_supplemental_clean_0007.wav", 2023)
    raw = parse_name("section_00_source_train_normal_0000_vel_6_odd.wav", 2023)
    assert raw.attributes == {"attributes": "vel_6_odd"}   # not pairs: kept raw for attributes_00.csv


def test_parse_split_folder_mismatch() -> None:
    with pytest.raises(DcaseNameError, match="says 'test'.*'train' folder"):
        parse_name("section_00_source_test_normal_0000.wav", 2023, split="train")


# ---- read_dcase on generated trees ----------------------------------------------------------------

def make_2023(root: Path, machine: str = "fan", index0: int = 0, attrs: str = "_mdl_a_spd_1") -> Path:
    d = root / machine
    touch(d, *[f"train/section_00_source_train_normal_{i + index0:04d}{attrs}.wav" for i in range(3)],
          f"train/section_00_target_train_normal_{index0:04d}{attrs}.wav",
          *[f"test/section_00_{dom}_test_{lab}_{index0:04d}{attrs}.wav"
            for dom in ("source", "target") for lab in ("normal", "anomaly")])
    return d


def test_read_2023_folder_of_machines(tmp_path: Path) -> None:
    make_2023(tmp_path, "fan")
    make_2023(tmp_path, "valve", attrs="_pat_00")
    (tmp_path / "fan" / "attributes_00.csv").write_text("file_name,d1p,d1v\n")
    assert detect_year(tmp_path) == 2023
    rows = read_dcase(tmp_path)
    assert len(rows) == 16
    assert Counter((r.attributes["dcase.machine"], r.split) for r in rows) == {
        ("fan", "train"): 4, ("fan", "test"): 4, ("valve", "train"): 4, ("valve", "test"): 4}
    r = next(r for r in rows if r.id == "fan/test/section_00_target_test_anomaly_0000_mdl_a_spd_1.wav")
    assert (r.split, r.domain, r.labels, r.attributes["mdl"], r.attributes["dcase.section"]) == \
        ("test", "target", ["anomaly"], "a", "00")
    clip = dcase_clip(r)
    assert (clip.machine, clip.attributes, clip.label) == ("fan", {"mdl": "a", "spd": "1"}, "anomaly")
    assert len(read_dcase(tmp_path / "valve")) == 8                      # one machine type as root
    assert {r.attributes["dcase.machine"] for r in read_dcase(tmp_path, machines=["valve"])} == {"valve"}
    with pytest.raises(DataError, match="no machine type"):
        read_dcase(tmp_path, machines=["pump"])


def test_detect_each_year(tmp_path: Path) -> None:
    y20 = tmp_path / "y20" / "fan"
    touch(y20, "train/normal_id_00_00000000.wav", "test/anomaly_id_00_00000001.wav")
    y21 = tmp_path / "y21" / "pump"
    touch(y21, "train/section_01_source_train_normal_0000.wav", "source_test/section_01_source_test_normal_0000.wav",
          "target_test/section_01_target_test_anomaly_0000.wav")
    y22 = tmp_path / "y22" / "fan"
    touch(y22, "train/section_02_source_train_normal_0000_m-n_W.wav")
    make_2023(tmp_path / "y24", index0=1)
    y24b = tmp_path / "y24b" / "ToothBrush"
    touch(y24b, "train/section_00_source_train_normal_0000_noAttribute.wav")
    y25 = make_2023(tmp_path / "y25")
    touch(y25, "supplemental/section_00_source_supplemental_clean_0000.wav")
    got = {name: detect_year(tmp_path / name) for name in ("y20", "y21", "y22", "y24", "y24b", "y25")}
    assert got == {"y20": 2020, "y21": 2021, "y22": 2022, "y24": 2024, "y24b": 2024, "y25": 2025}
    rows21 = read_dcase(y21)
    assert {(r.split, r.domain) for r in rows21} == {("train", "source"), ("test", "source"), ("test", "target")}
    rows20 = read_dcase(y20)
    assert {r.attributes["dcase.section"] for r in rows20} == {"00"} and rows20[0].domain == ""
    rows25 = read_dcase(y25)
    assert Counter(r.split for r in rows25)["supplemental"] == 1
    hidden = read_dcase(y24b)[0]
    assert hidden.attributes["dcase.hidden"] == "attributes" and dcase_clip(hidden).attributes_hidden


def test_attribute_csv_fills_raw_and_missing(tmp_path: Path) -> None:
    d = tmp_path / "bandsaw"
    touch(d, "train/section_00_source_train_normal_0000_vel_6_x.wav", "train/section_00_source_train_normal_0001.wav")
    (d / "attributes_00.csv").write_text(
        "file_name,d1p,d1v,d2p,d2v\n"
        "bandsaw/train/section_00_source_train_normal_0000_vel_6_x.wav,vel,6_x,,\n"
        "bandsaw/train/section_00_source_train_normal_0001.wav,vel,7,load,2\n")
    rows = {Path(r.path).name: r for r in read_dcase(d, year=2023)}
    assert dcase_clip(rows["section_00_source_train_normal_0000_vel_6_x.wav"]).attributes == {"vel": "6_x"}
    assert dcase_clip(rows["section_00_source_train_normal_0001.wav"]).attributes == {"vel": "7", "load": "2"}


def test_bad_names_reported_at_once(tmp_path: Path) -> None:
    d = make_2023(tmp_path, "fan")
    touch(d, "test/section_00_1.wav", "train/recording.wav")
    with pytest.raises(DcaseNameError) as e:
        read_dcase(d)
    msg = str(e.value)
    assert "2 file name(s)" in msg and "section_00_1.wav" in msg and "recording.wav" in msg
    assert "section_00_{source|target}_{train|test}" in msg
    with pytest.raises(DcaseNameError, match="8 file name"):
        read_dcase(make_2023(tmp_path / "other"), year=2020)        # explicit override, wrong layout


def eval_set(root: Path) -> Path:
    d = root / "ToyTank"
    touch(d, "train/section_00_source_train_normal_0000_car_A1.wav",
          *[f"test/section_00_{i:04d}.wav" for i in range(4)])
    return d


def test_evaluation_set_hidden_then_joined(tmp_path: Path) -> None:
    d = eval_set(tmp_path / "eval")
    rows = read_dcase(d)
    test = [r for r in rows if r.split == "test"]
    assert len(test) == 4 and all(r.labels == [] and r.domain == "" for r in test)
    gt = tmp_path / "evaluator"
    for sub, lines in {
        "ground_truth_data": ["section_00_0000.wav,0", "section_00_0001.wav,1", "section_00_0002.wav,1",
                              "section_00_0003.wav,0"],
        "ground_truth_domain": ["section_00_0000.wav,1", "section_00_0001.wav,1", "section_00_0002.wav,0",
                                "section_00_0003.wav,0"],
        "ground_truth_attributes": ["section_00_0000.wav,section_00_target_test_normal_0022_car_C1",
                                    "section_00_0001.wav,section_00_target_test_anomaly_0032_car_C1",
                                    "section_00_0002.wav,section_00_source_test_anomaly_0016_car_A1",
                                    "section_00_0003.wav,section_00_source_test_normal_0003_car_A2"]}.items():
        (gt / sub).mkdir(parents=True)
        (gt / sub / "ground_truth_ToyTank_section_00_test.csv").write_text("\n".join(lines) + "\n")
    joined = {Path(r.path).name: r for r in read_dcase(d, ground_truth=gt) if r.split == "test"}
    r1 = joined["section_00_0001.wav"]
    assert (r1.labels, r1.domain, r1.attributes["car"]) == (["anomaly"], "target", "C1")
    assert [joined[f"section_00_{i:04d}.wav"].labels[0] for i in range(4)] == ["normal", "anomaly", "anomaly", "normal"]
    # ground truth that misses a hidden test clip of a machine type it covers is an error
    partial = tmp_path / "partial.csv"
    partial.write_text("file_name,anomaly\nToyTank/test/section_00_0000.wav,0\n")
    with pytest.raises(DcaseNameError, match="(?s)3 file.*section_00_0001.wav: hidden label and no ground-truth"):
        read_dcase(d, ground_truth=partial)
    # only the labels file: domains stay hidden
    only = read_dcase(d, ground_truth=gt / "ground_truth_data" / "ground_truth_ToyTank_section_00_test.csv")
    assert {r.domain for r in only if r.split == "test"} == {""}


def test_eval_data_list_and_conflicts(tmp_path: Path) -> None:
    d = eval_set(tmp_path / "eval")
    lst = tmp_path / "eval_data_list.csv"
    lst.write_text("ToyTank\n" + "".join(
        f"section_00_{i:04d}.wav,section_00_source_test_{'anomaly' if i % 2 else 'normal'}_{i:04d}_car_B2.wav,{i % 2}\n"
        for i in range(4)))
    truth = read_ground_truth(lst)
    assert truth[("ToyTank", "section_00_0001.wav")].label == "anomaly"
    rows = [r for r in read_dcase(d, ground_truth=lst) if r.split == "test"]
    assert Counter(r.labels[0] for r in rows) == {"normal": 2, "anomaly": 2} and {r.domain for r in rows} == {"source"}
    # a development set whose names disagree with the ground truth: every conflict is reported
    dev = make_2023(tmp_path / "dev", "fan")
    (dev / "ground_truth_00.csv").write_text(
        "section_00_source_test_normal_0000_mdl_a_spd_1.wav,1\nsection_00_target_test_anomaly_0000_mdl_a_spd_1.wav,0\n")
    with pytest.raises(DcaseNameError, match=r"(?s)2 file\(s\) disagree.*label 'normal', the ground truth 'anomaly'"):
        read_dcase(dev, ground_truth=dev)


# ---- the real example data ------------------------------------------------------------------------

@pytest.mark.data
@pytest.mark.skipif(not HEART.is_dir(), reason="shared data not available (AUDIOFM_DATA)")
def test_real_heart() -> None:
    assert detect_year(HEART) == 2023
    rows = read_dcase(HEART, ground_truth=HEART)      # ground_truth_00.csv agrees with every test name
    assert Counter((r.split, r.domain, r.labels[0]) for r in rows) == {
        ("train", "source", "normal"): 120, ("test", "source", "normal"): 80, ("test", "source", "anomaly"): 80}
    assert Counter(r.attributes["label"] for r in rows if r.labels == ["anomaly"]) == {"MR": 27, "MS": 27, "MVP": 26}


@pytest.mark.data
@pytest.mark.skipif(ASD_MACHINES is None or not ASD_MACHINES.is_dir(),
                    reason="rendered asd-machines not available (set AUDIOFM_ASD_MACHINES)")
def test_real_asd_machines() -> None:
    assert ASD_MACHINES is not None
    assert detect_year(ASD_MACHINES) == 2023
    rows = read_dcase(ASD_MACHINES, ground_truth=ASD_MACHINES)
    for machine in ("car-engine", "prop-aircraft"):
        mine = [r for r in rows if r.attributes["dcase.machine"] == machine]
        assert Counter((r.split, r.domain, r.labels[0]) for r in mine) == {
            ("train", "source", "normal"): 200, ("train", "target", "normal"): 10,
            ("test", "source", "normal"): 25, ("test", "source", "anomaly"): 25,
            ("test", "target", "normal"): 25, ("test", "target", "anomaly"): 25}
        assert all(set(dcase_clip(r).attributes) == {"mdl", "spd"} for r in mine)
