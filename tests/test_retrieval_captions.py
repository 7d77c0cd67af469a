"""Caption dataset readers and relevance annotations, on tiny generated files and the rendered set."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA

from audiofm.data.captions import (
    check_relevance,
    pair_relevance,
    read_audiocaps,
    read_caption_pairs,
    read_clotho,
    read_relevance,
)
from audiofm.data.manifest import DataError
from audiofm.retrieval.metrics import relevance_matrix, text_to_audio

RENDERED = Path(os.environ.get("AUDIOFM_CAPTIONS", Path(tempfile.gettempdir()) / "captions"))
TUXPAINT = SHARED_DATA / "captions" / "tuxpaint-sfx"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def clotho(tmp_path: Path) -> Path:
    write(tmp_path / "clotho_captions_evaluation.csv",
          "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
          "a.wav,A dog barks.,\"A dog, barking.\",Barking.,A hound barks.,Dog noises.\n"
          "b.wav,Rain falls.,Rain on a roof.,,,\n")
    write(tmp_path / "clotho_metadata_evaluation.csv",
          "file_name,keywords,sound_id,license\na.wav,dog;bark,123,CC0\n")
    for name in ("a.wav", "b.wav"):
        write(tmp_path / "evaluation" / name, "")
    return tmp_path


def test_read_clotho(clotho: Path):
    rows = read_clotho(clotho, "evaluation", check_audio=True)
    assert [r.id for r in rows] == ["a.wav", "b.wav"]
    assert rows[0].captions == ["A dog barks.", "A dog, barking.", "Barking.", "A hound barks.", "Dog noises."]
    assert rows[1].captions == ["Rain falls.", "Rain on a roof."]
    assert rows[0].path == str(clotho / "evaluation" / "a.wav") and rows[0].split == "evaluation"
    assert rows[0].attributes == {"keywords": "dog;bark", "sound_id": "123", "license": "CC0"}
    assert rows[1].attributes == {}
    same = read_clotho(clotho / "clotho_captions_evaluation.csv")  # the CSV itself; split from its name
    assert [r.captions for r in same] == [r.captions for r in rows]
    assert pair_relevance(rows)["Rain falls."] == frozenset({"b.wav"})


def test_read_clotho_reports_every_problem(tmp_path: Path):
    csv = write(tmp_path / "clotho_captions_development.csv",
                "file_name,caption_1,caption_2\nx.wav,one,two\n,orphan,\nx.wav,again,\ny.wav,,\n")
    with pytest.raises(DataError) as e:
        read_clotho(tmp_path, "development", check_audio=True)
    msg = str(e.value)
    assert str(csv) in msg and "4 problem(s)" in msg and "file_name,caption_1,caption_2" in msg
    assert "line 3: empty file_name" in msg and "line 4: file_name 'x.wav' already on line 2" in msg
    assert "line 5: 'y.wav' has no caption" in msg and "x.wav not found" in msg
    write(tmp_path / "clotho_captions_validation.csv", "name,text\na,b\n")
    with pytest.raises(DataError, match=r"missing column\(s\) file_name, caption_1 \(header: name, text"):
        read_clotho(tmp_path, "validation")
    with pytest.raises(DataError, match="name the split"):
        read_clotho(tmp_path)
    with pytest.raises(DataError, match="file not found"):
        read_clotho(tmp_path, "evaluation")


def test_read_audiocaps(tmp_path: Path):
    csv = write(tmp_path / "test.csv",
                "audiocap_id,youtube_id,start_time,caption\n"
                "1,abc,30,A man speaks.\n2,abc,30,Someone talks.\n3,xyz,0,A car passes.\n")
    rows = read_audiocaps(csv, tmp_path / "audio", split="test")
    assert [(r.id, r.captions) for r in rows] == [("abc_30", ["A man speaks.", "Someone talks."]),
                                                  ("xyz_0", ["A car passes."])]
    assert rows[0].path == str(tmp_path / "audio" / "abc.wav") and rows[0].start is None
    assert rows[0].attributes["audiocap_ids"] == "1;2"
    full = read_audiocaps(csv, tmp_path, file_pattern="Y{youtube_id}_{start_time}.flac", trimmed=False)
    assert full[0].path.endswith("Yabc_30.flac") and (full[0].start, full[0].end) == (30.0, 40.0)
    bad = write(tmp_path / "bad.csv", "audiocap_id,youtube_id,start_time,caption\n1,abc,soon,x\n2,,0,\n")
    with pytest.raises(DataError) as e:
        read_audiocaps(bad, tmp_path)
    assert "line 2: start_time 'soon' is not a number" in str(e.value)
    assert "line 3: empty youtube_id, caption" in str(e.value)
    with pytest.raises(DataError, match="unknown field"):
        read_audiocaps(csv, tmp_path, file_pattern="{video}.wav")


def test_read_caption_pairs_csv_and_jsonl(tmp_path: Path):
    csv = write(tmp_path / "pairs.csv", "path,caption\nsounds/a.wav,A door slams.\nsounds/a.wav,Bang.\n"
                                        "/abs/b.flac,Wind.\n")
    rows = read_caption_pairs(csv)
    assert [(r.id, r.captions) for r in rows] == [("sounds/a.wav", ["A door slams.", "Bang."]),
                                                  ("/abs/b.flac", ["Wind."])]
    assert rows[0].path == str(tmp_path / "sounds" / "a.wav")
    jsonl = write(tmp_path / "pairs.jsonl", json.dumps({"path": "a.wav", "caption": "Birds.", "id": "bird"})
                  + "\n\n" + json.dumps({"path": "b.wav", "caption": "Rain.", "split": "train"}) + "\n")
    rows = read_caption_pairs(jsonl)
    assert [(r.id, r.captions, r.split) for r in rows] == [("bird", ["Birds."], ""), ("b.wav", ["Rain."], "train")]
    broken = write(tmp_path / "broken.jsonl", '{"path": "a.wav"}\nnot json\n[1]\n{"path": "c.wav", "caption": "x"}\n')
    with pytest.raises(DataError) as e:
        read_caption_pairs(broken, check_audio=True)
    msg = str(e.value)
    assert "line 1: missing or empty caption" in msg and "line 2: invalid JSON" in msg
    assert "line 3: not a JSON object" in msg and "c.wav not found" in msg
    with pytest.raises(DataError, match="unknown pairs format"):
        read_caption_pairs(tmp_path / "pairs.txt")
    with pytest.raises(DataError, match=r"missing column\(s\) caption"):
        read_caption_pairs(write(tmp_path / "p2.csv", "path,text\na.wav,b\n"))


def test_read_relevance_both_formats(tmp_path: Path):
    long = write(tmp_path / "relevance_evaluation.csv",
                 "query_id,caption,file_name,relevant_file_name\n"
                 "a.wav#1,Birds sing.,a.wav,a.wav\na.wav#1,Birds sing.,a.wav,c.wav\n"
                 "b.wav#1,Rain.,b.wav,b.wav\nc.wav#2,Birds sing.,c.wav,d.wav\n")
    assert read_relevance(long) == {"Birds sing.": frozenset({"a.wav", "c.wav", "d.wav"}),
                                    "Rain.": frozenset({"b.wav"})}
    lists = write(tmp_path / "metadata_eval.csv",
                  "query,audio_filenames\n\"Birds sing.\",\"['a.wav', 'c.wav']\"\nRain.,\"[\"\"b.wav\"\"]\"\n")
    assert read_relevance(lists) == {"Birds sing.": frozenset({"a.wav", "c.wav"}), "Rain.": frozenset({"b.wav"})}
    bad = write(tmp_path / "bad.csv", "query,audio_filenames\nx,not a list\ny,[]\n,['a.wav']\nz,[1]\n")
    with pytest.raises(DataError) as e:
        read_relevance(bad)
    msg = str(e.value)
    assert "4 problem(s)" in msg and "line 2: audio_filenames 'not a list' is not a list" in msg
    assert "line 3: no relevant file" in msg and "line 4: empty query" in msg and "line 5:" in msg
    with pytest.raises(DataError, match="unknown relevance format"):
        read_relevance(write(tmp_path / "other.csv", "a,b\n1,2\n"))
    with pytest.raises(DataError, match=r"2 relevant file\(s\) are not clips"):
        rows = read_caption_pairs(write(tmp_path / "p.csv", "path,caption\na.wav,x\n"))
        check_relevance(read_relevance(lists), rows)


@pytest.mark.data
@pytest.mark.skipif(not (RENDERED / "relevance_evaluation.csv").is_file(),
                    reason=f"rendered captions set not found at {RENDERED} (render.py --out; AUDIOFM_CAPTIONS)")
def test_rendered_evaluation_split():
    rows = read_clotho(RENDERED, "evaluation", check_audio=(RENDERED / "evaluation").is_dir())
    assert len(rows) == 300 and all(len(r.captions) == 5 for r in rows)
    assert "events" in rows[0].attributes and float(rows[0].attributes["duration"]) > 0
    rel = read_relevance(RENDERED / "relevance_evaluation.csv")
    check_relevance(rel, rows)
    pairs = pair_relevance(rows)
    captions = [c for r in rows for c in r.captions]
    ids = [r.id for r in rows]
    assert all(pairs[c] <= rel[c] for c in captions)  # the file a caption was written for is relevant
    n_rel = np.array([len(rel[c]) for c in captions])
    assert 2.5 < n_rel.mean() < 4.0 and n_rel.max() > 10  # README: 3.2 on average, up to 31 (seed 0)
    multi = relevance_matrix(captions, ids, rel)
    pair_m = np.zeros_like(multi)
    owner = [i for i, r in enumerate(rows) for _ in r.captions]
    pair_m[np.arange(len(captions)), owner] = True
    perfect = text_to_audio(multi.astype(float), pair_m, multi)
    # every relevant file ranked first: AP@16 = min(n, 16) / n
    assert perfect.metrics["map_at_16"] == pytest.approx(np.mean(np.minimum(n_rel, 16) / n_rel))
    assert perfect.metrics["map_at_16"] < 1.0  # some captions have more than 16 relevant files
    rng = np.random.default_rng(0)
    random_map = np.mean([text_to_audio(rng.standard_normal(multi.shape), pair_m, multi).metrics["map_at_16"]
                          for _ in range(5)])
    assert 0.005 < random_map < 0.025  # README: ≈ 0.012 for a random ranking


@pytest.mark.data
@pytest.mark.skipif(not (TUXPAINT / "relevance_evaluation.csv").is_file(), reason=f"{TUXPAINT} not found")
def test_tuxpaint_human_split():
    rows = read_clotho(TUXPAINT, "evaluation", check_audio=True)
    assert len(rows) == 118 and all(len(r.captions) == 1 for r in rows)
    rel = read_relevance(TUXPAINT / "relevance_evaluation.csv")
    check_relevance(rel, rows)
    assert max(len(v) for v in rel.values()) == 2


def test_quoted_multiline_caption_and_latin1_metadata(tmp_path: Path):
    write(tmp_path / "clotho_captions_validation.csv",
          'file_name,caption_1\r\nq.wav,"A bell rings,\nthen stops."\r\nr.wav,Wind.\r\n')
    (tmp_path / "clotho_metadata_validation.csv").write_bytes("file_name,keywords\nq.wav,caf\xe9\n".encode("latin-1"))
    rows = read_clotho(tmp_path, "validation")
    assert rows[0].captions == ["A bell rings,\nthen stops."] and rows[1].captions == ["Wind."]
    assert rows[0].attributes["keywords"] == "café"
