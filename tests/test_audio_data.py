import json

import numpy as np
import pytest
import soundfile as sf
from conftest import make_hear_task, tone

from audiofm.audio import AudioError, load_audio, prepare, resample, scan_files
from audiofm.data import (
    DataError,
    Row,
    fingerprint,
    read_folder,
    read_hear_task,
    read_manifest,
    read_rows,
    write_manifest,
)
from audiofm.data.dataset import ClipStore


@pytest.mark.parametrize("fmt,ext", [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3")])
def test_decode_formats_mono_and_resample(tmp_path, fmt, ext):
    sr = 22050
    t = np.arange(sr) / sr
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)], 1) * 0.5
    path = tmp_path / f"x.{ext}"
    sf.write(path, stereo, sr, format=fmt)
    w, rate = load_audio(path, 16000)
    assert rate == 16000 and w.ndim == 1 and w.dtype == np.float32
    assert abs(len(w) - 16000) < 1200  # mp3 adds encoder delay/padding
    spec = np.abs(np.fft.rfft(w[:8000]))
    assert abs(np.argmax(spec) * 16000 / 8000 - 440) < 5


def test_resample_preserves_tone():
    w = tone(1.0, sr=48000, freq=1000)
    r = resample(w, 48000, 16000)
    assert len(r) == 16000
    assert abs(np.argmax(np.abs(np.fft.rfft(r))) - 1000) <= 1


def test_bad_files_are_named(tmp_path):
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage")
    sf.write(tmp_path / "empty.wav", np.zeros(0), 16000)
    with pytest.raises(AudioError, match=r"corrupt\.wav.*cannot decode"):
        load_audio(tmp_path / "corrupt.wav")
    with pytest.raises(AudioError, match=r"empty\.wav.*empty"):
        load_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioError, match=r"nope\.wav.*no such"):
        load_audio(tmp_path / "nope.wav")
    bad = scan_files([tmp_path / "corrupt.wav", tmp_path / "empty.wav", tmp_path / "nope.wav"])
    assert len(bad) == 3  # all reported at once
    with pytest.raises(AudioError):
        prepare(np.zeros((2, 2, 2)), 16000, 16000)


def test_clipstore_reports_all_bad_files(tmp_path, audio_folder):
    (audio_folder / "low" / "broken.wav").write_bytes(b"not audio")
    (audio_folder / "high" / "broken2.flac").write_bytes(b"not audio either")
    store = ClipStore(read_folder(audio_folder), 16000)
    with pytest.raises(DataError, match=r"2 of 10 audio files are unusable") as err:
        store.check()
    assert "broken.wav" in str(err.value) and "broken2.flac" in str(err.value)


def test_crops_are_deterministic_and_tile_short_clips(audio_folder):
    store = ClipStore(read_folder(audio_folder), 16000)
    a, b = store.crop(0, 32000, seed=5), store.crop(0, 32000, seed=5)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 32000  # clip is 0.5 s: tiled
    assert not np.array_equal(store.crop(3, 4000, 1), store.crop(3, 4000, 2))


def test_folder_adapter_labels(audio_folder):
    rows = read_folder(audio_folder, label_from_parent=True)
    assert len(rows) == 8 and {r.labels[0] for r in rows} == {"low", "high"}
    assert rows[0].id == "high/high_0.flac"
    empty = audio_folder.parent / "empty_dir"
    empty.mkdir()
    with pytest.raises(DataError, match="no audio files"):
        read_folder(empty)


@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_manifest_round_trip(tmp_path, ext):
    rows = [Row(path="a.wav", labels=["x", "y"], split="train", captions=["a dog; barks"],
                attributes={"spd": "090"}, start=0.5, end=1.5),
            Row(path="sub/b.wav", id="b", domain="target")]
    write_manifest(rows, tmp_path / f"m.{ext}")
    back = read_manifest(tmp_path / f"m.{ext}")
    assert back[0].labels == ["x", "y"] and back[0].captions == ["a dog; barks"]
    assert back[0].attributes == {"spd": "090"} and back[0].start == 0.5
    assert back[1].id == "b" and back[1].domain == "target"
    assert back[1].path == str(tmp_path / "sub/b.wav")  # relative to the manifest


def test_manifest_errors(tmp_path):
    (tmp_path / "m.csv").write_text("file,label\na.wav,x\n")
    with pytest.raises(DataError, match="'path' column"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "d.csv").write_text("path,id\na.wav,1\nb.wav,1\n")
    with pytest.raises(DataError, match="duplicate clip id"):
        read_manifest(tmp_path / "d.csv")
    with pytest.raises(DataError, match="not found"):
        read_manifest(tmp_path / "none.csv")
    extra = tmp_path / "e.csv"
    extra.write_text("path,machine\na.wav,fan\n")
    assert read_manifest(extra)[0].attributes == {"machine": "fan"}


def test_hear_task_kfold_rotation(hear_task):
    task = read_hear_task(hear_task)
    assert task.name == "toy" and task.vocabulary == ["a", "b"] and len(task.rows) == 36
    rounds = task.rounds()
    assert [(r.test, r.valid, r.train) for r in rounds] == [
        (["fold00"], ["fold01"], ["fold02"]), (["fold01"], ["fold02"], ["fold00"]),
        (["fold02"], ["fold00"], ["fold01"])]
    assert all(r.split in task.split_names for r in task.rows)


def test_hear_task_trainvaltest_and_errors(tmp_path):
    t = make_hear_task(tmp_path, "tvt", mode="trainvaltest")
    assert [(r.train, r.valid, r.test) for r in read_hear_task(t).rounds()] == [(["train"], ["valid"], ["test"])]
    bad = json.loads((t / "test.json").read_text())
    bad[next(iter(bad))] = ["zebra"]
    (t / "test.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match="zebra.*not in labelvocabulary"):
        read_hear_task(t)
    with pytest.raises(DataError, match="not a HEAR task"):
        read_hear_task(tmp_path)


def test_read_rows_dispatch_and_fingerprint(tmp_path, hear_task, audio_folder):
    make_hear_task(tmp_path, "toy2")
    pooled = read_rows(tmp_path, splits=["fold02"])
    assert {r.id.split("/")[0] for r in pooled} == {"toy", "toy2"} and len(pooled) == 24
    fp = fingerprint(pooled)
    assert fp["clips"] == 24 and fp == fingerprint(list(reversed(pooled)))
    assert fingerprint(pooled[:-1]) != fp
    assert len(read_rows(audio_folder)) == 8
    with pytest.raises(DataError, match="no such file"):
        read_rows(tmp_path / "missing")
