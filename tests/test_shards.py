"""Indexed webdataset shards: write/read round trip (audio bit-exact, metadata), tamper checks,
and shards as a data source — pretraining (== the folder it came from; exact resume; 2
processes == 1), embedding and evaluation."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_hear_task, tone
from safetensors.torch import load_file

from audiofm.audio import load_audio
from audiofm.cli import main
from audiofm.data import DataError, Row, fingerprint, is_shard_dir, read_rows, write_manifest, write_shards
from audiofm.data.dataset import ClipStore, load_row, row_duration
from audiofm.data.shards import INDEX, open_shards, shard_tasks
from audiofm.train.engine import TrainConfig
from audiofm.train.pretrain import DataConfig, PretrainConfig, pretrain


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """A manifest over FLAC, 16-bit WAV, 24-bit stereo WAV at 22.05 kHz and float WAV, with
    every metadata field in use (labels, captions, split, domain, attributes, a segment)."""
    audio = tmp_path / "src"
    audio.mkdir()
    sf.write(audio / "a.flac", tone(0.5), 16000)
    sf.write(audio / "b.wav", tone(0.7, freq=300), 16000, subtype="PCM_16")
    sf.write(audio / "c.wav", np.stack([tone(0.3), tone(0.3, freq=90, seed=2)], 1), 22050, subtype="PCM_24")
    sf.write(audio / "d.wav", tone(0.4, freq=700), 16000, subtype="FLOAT")
    rows = [Row(str(audio / "a.flac"), id="a", labels=["dog", "bark"], captions=["a dog barks", "woof"],
                split="train", domain="source", attributes={"mic": "1", "room": "small"}),
            Row(str(audio / "b.wav"), id="b", labels=["cat"], split="valid", domain="target"),
            Row(str(audio / "c.wav"), id="c", captions=["stereo"], split="train"),
            Row(str(audio / "d.wav"), id="d", split="test"),
            Row(str(audio / "b.wav"), id="b-seg", labels=["cat"], start=0.1, end=0.35)]
    write_manifest(rows, tmp_path / "m.jsonl")
    return tmp_path / "m.jsonl"


def _meta(r: Row) -> tuple:
    return (r.id, r.labels, r.captions, r.split, r.domain, r.attributes, r.start, r.end)


def test_round_trip_audio_and_metadata(tmp_path: Path, mixed: Path) -> None:
    assert main(["shards", str(mixed), "--out", str(tmp_path / "sh"), "--shard-size", "2", "--no-progress"]) == 0
    src, got = read_rows(mixed), read_rows(tmp_path / "sh")
    assert is_shard_dir(tmp_path / "sh") and fingerprint(got) == fingerprint(src)
    assert [_meta(r) for r in got] == [_meta(r) for r in src]  # every field, in dataset order
    for a, b in zip(src, got):
        for sr in (16000, 8000):  # at the native rate and resampled
            wa, wb = load_row(a, sr), load_row(b, sr)
            if a.id == "d":  # float source: stored as 24-bit FLAC (resampling spreads the rounding)
                assert np.abs(wa - wb).max() <= (2.0**-24 if sr == 16000 else 1e-6)
            else:  # FLAC copied, integer PCM re-encoded at its width: the same samples
                assert wa.dtype == wb.dtype and np.array_equal(wa, wb), a.id
        assert row_duration(b) == pytest.approx(row_duration(a))
    # the tars are plain webdataset shards: <key>.flac + <key>.json per sample, in key order
    index = json.loads((tmp_path / "sh" / INDEX).read_text())
    assert [s["nsamples"] for s in index["shardlist"]] == [2, 2, 1] and index["audiofm"]["clips"] == 5
    with tarfile.open(tmp_path / "sh" / "shard-000001.tar") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["000000002.flac", "000000002.json", "000000003.flac", "000000003.json"]
        sample = json.loads(tar.extractfile("000000002.json").read())  # type: ignore[union-attr]
        assert sample["id"] == "c" and sample["source"] == src[2].path and sample["index"] == 2
        # the index's offsets are the members' data offsets
        assert index["shardlist"][1]["flac"] == [[members[0].offset_data, members[0].size],
                                                 [members[2].offset_data, members[2].size]]
        data = tar.extractfile("000000002.flac").read()  # type: ignore[union-attr]
    assert sf.info(io.BytesIO(data)).channels == 2 and sf.info(io.BytesIO(data)).samplerate == 22050
    flac = index["shardlist"][0]["flac"][0]  # a FLAC source is stored byte for byte
    assert (tmp_path / "sh" / "shard-000000.tar").read_bytes()[flac[0] : flac[0] + flac[1]] == \
        Path(src[0].path).read_bytes()
    # the same input gives the same bytes (fixed member metadata)
    write_shards(src, tmp_path / "again", 2)
    for name in ("shard-000000.tar", "shard-000001.tar", "shard-000002.tar"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "sh" / name).read_bytes()


def test_bad_input_and_changed_shards_are_refused(tmp_path: Path, mixed: Path) -> None:
    rows = read_rows(mixed)
    (tmp_path / "junk.wav").write_bytes(b"not audio")
    bad = [*rows, Row(str(tmp_path / "junk.wav")), Row(str(tmp_path / "gone.wav"))]
    with pytest.raises(DataError, match="2 of 7 audio files are unusable") as e:
        write_shards(bad, tmp_path / "sh", 3)
    assert "junk.wav" in str(e.value) and "gone.wav" in str(e.value)
    assert not (tmp_path / "sh").exists() and not list(tmp_path.glob(".sh.*"))  # nothing left behind
    write_shards(rows, tmp_path / "sh", 3)
    with pytest.raises(FileExistsError):
        write_shards(rows, tmp_path / "sh", 3)
    assert main(["shards", str(mixed), "--out", str(tmp_path / "sh"), "--no-progress"]) == 2
    tar = tmp_path / "sh" / "shard-000001.tar"
    tar.write_bytes(tar.read_bytes() + b"\0" * 512)
    with pytest.raises(DataError, match="shard-000001.tar: .* the index expects"):
        read_rows(tmp_path / "sh")


def test_clip_store_and_check_read_shards(tmp_path: Path, audio_folder: Path) -> None:
    write_shards(read_rows(audio_folder), tmp_path / "sh", 3)
    a, b = ClipStore(read_rows(audio_folder), 16000), ClipStore(read_rows(tmp_path / "sh"), 16000)
    b.check()
    for i in range(len(a)):
        assert np.array_equal(a.crop(i, 12000, seed=i), b.crop(i, 12000, seed=i))
    assert open_shards(tmp_path / "sh") is open_shards(tmp_path / "sh")  # the index is read once


def _cfg(source: Path, steps: int = 8) -> PretrainConfig:
    t = TrainConfig(max_steps=steps, batch_size=4, warmup_steps=2, log_every=1, ckpt_every=4, seed=3)
    return PretrainConfig(model="msm_vit_debug", model_overrides={"segment_seconds": 1.0},
                          data=DataConfig(source=str(source)), train=t, stats_clips=10)


def _losses(run: Path) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (run / "metrics.jsonl").read_text().splitlines()]


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)


def test_pretraining_from_shards_equals_the_folder_and_resumes_exactly(tmp_path: Path, audio_folder: Path) -> None:
    write_shards(read_rows(audio_folder), tmp_path / "sh", 3)
    pretrain(_cfg(audio_folder), tmp_path / "folder", progress=False)
    pretrain(_cfg(tmp_path / "sh"), tmp_path / "shards", progress=False)
    assert _losses(tmp_path / "shards") == _losses(tmp_path / "folder")  # same clips, same order, same audio
    _same_weights(tmp_path / "folder", tmp_path / "shards")
    info = json.loads((tmp_path / "shards" / "run_info.json").read_text())
    assert info["data_fingerprint"] == fingerprint(read_rows(audio_folder))
    # interrupted after the step-4 checkpoint, resumed: the uninterrupted trajectory
    import audiofm.train.engine as eng

    orig = eng.Engine.save

    class Stop(Exception):
        pass

    def save_then_stop(self, optimizer, final=False):  # type: ignore[no-untyped-def]
        out = orig(self, optimizer, final)
        if self.step == 4 and not final:
            raise Stop()
        return out

    eng.Engine.save = save_then_stop  # type: ignore[method-assign]
    try:
        with pytest.raises(Stop):
            pretrain(_cfg(tmp_path / "sh"), tmp_path / "resumed", progress=False)
    finally:
        eng.Engine.save = orig  # type: ignore[method-assign]
    assert pretrain(_cfg(tmp_path / "sh"), tmp_path / "resumed", resume=True, progress=False)["step"] == 8
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "shards")
    _same_weights(tmp_path / "shards", tmp_path / "resumed")


def test_ddp_two_processes_from_shards_match_one(tmp_path: Path, audio_folder: Path) -> None:
    """torchrun with 2 CPU processes (gloo) reading shards == 1 process reading them."""
    write_shards(read_rows(audio_folder), tmp_path / "sh", 3)
    common = ["pretrain", "--model", "msm_vit_debug", "--data", str(tmp_path / "sh"), "--max-steps", "6",
              "--batch-size", "4", "--seed", "1", "--no-progress", "--set", "model_overrides.segment_seconds=1.0",
              "--set", "train.warmup_steps=2", "--set", "train.log_every=1", "--set", "stats_clips=10"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "audiofm.cli", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "run_info.json").read_text())["world_size"] == 2
    assert _losses(tmp_path / "one") == pytest.approx(_losses(tmp_path / "two"), rel=1e-4)
    a = load_file(tmp_path / "one" / "model" / "model.safetensors")
    b = load_file(tmp_path / "two" / "model" / "model.safetensors")
    # gradients are averaged in another order: Adam's steps differ by float noise (lr 5e-4)
    diffs = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    assert diffs.max() < 1e-4 and diffs.mean() < 1e-6


def test_embed_and_evaluate_from_shards(tmp_path: Path) -> None:
    task = make_hear_task(tmp_path / "tasks", per_class=3)
    assert main(["shards", str(task), "--out", str(tmp_path / "sh"), "--shard-size", "5", "--no-progress"]) == 0
    (t,) = shard_tasks(tmp_path / "sh")
    from audiofm.data import read_hear_task

    ref = read_hear_task(task)
    assert (t.name, t.metadata, t.vocabulary, t.sample_rate) == (ref.name, ref.metadata, ref.vocabulary,
                                                                 ref.sample_rate)
    assert [_meta(r) for r in t.rows] == [_meta(r) for r in ref.rows]
    assert np.array_equal(load_row(t.rows[0], 16000), load_audio(ref.rows[0].path, 16000)[0])
    # evaluation of the log-mel baseline: the same results from the shards as from the task
    for name, src in (("dir", task), ("sh", tmp_path / "sh")):
        assert main(["evaluate", "--baseline", "logmel", "--tasks", str(src), "--out", str(tmp_path / f"ev_{name}"),
                     "--probes", "linear", "--seeds", "1", "--max-folds", "1", "--no-progress"]) == 0
    res = [list(csv.DictReader((tmp_path / f"ev_{n}" / "results.csv").open())) for n in ("dir", "sh")]
    assert [(r["task"], r["metric"], r["value"]) for r in res[0]] == [(r["task"], r["metric"], r["value"])
                                                                      for r in res[1]]
    # embedding a shard dir with a model: the same embeddings as the source task
    run = tmp_path / "run"
    pretrain(_cfg(task, steps=2), run, progress=False)
    for name, src in (("dir", task), ("sh", tmp_path / "sh")):
        assert main(["embed", str(run), str(src), "--out", str(tmp_path / f"{name}.npz"), "--no-progress"]) == 0
    with np.load(tmp_path / "dir.npz") as a, np.load(tmp_path / "sh.npz") as b:
        assert [str(i) for i in a["ids"]] == [str(i) for i in b["ids"]]
        np.testing.assert_array_equal(a["clip"], b["clip"])
