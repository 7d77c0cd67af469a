"""Every user mistake is one line on stderr and exit 2, never a traceback: manifests, HEAR task
folders, checkpoints (``audiofm info`` verifies the weights), ``--stats``, ``--layer``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_hear_task
from safetensors.torch import load_file, save_file

from audiofm.checkpoint import CheckpointError, CheckpointSpec, describe, save_checkpoint
from audiofm.cli import main
from audiofm.data import DataError, read_manifest
from audiofm.models.registry import build_model, model_config


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"audiofm {command}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("name,content,message", [
    ("empty.csv", "", "CSV manifest needs a header with a 'path' column (the file is empty)"),
    ("header.csv", "path,labels\n", "the manifest has no rows (only a header)"),
    ("nopath.csv", "file,labels\na.wav,x\n", "needs a header with a 'path' column; found columns file, labels"),
    ("empty.jsonl", "\n\n", "the manifest has no rows"),
    ("array.json", '[{"path": "a.wav"}]', "holds a JSON array; a manifest is JSON Lines"),
    ("array.jsonl", '[{"path": "a.wav"},\n {"path": "b.wav"}]', "holds a JSON array"),
    ("scalar.jsonl", '{"path": "a.wav"}\n"b.wav"\n', "scalar.jsonl:2: expected one JSON object per line"),
    ("start.csv", "path,start\na.wav,soon\n", "start.csv:2: invalid row (could not convert string to float"),
    ("labels.jsonl", '{"path": "a.wav", "labels": 3}\n', "labels.jsonl:1: invalid row (labels must be a list"),
    ("wide.csv", "path\na.wav,extra\n", "wide.csv:2: more values than the header has columns"),
    ("latin1.csv", b"path\ncaf\xe9.wav\n", "not UTF-8 text"),
])
def test_bad_manifests_are_data_errors(tmp_path: Path, name: str, content: str | bytes, message: str) -> None:
    f = tmp_path / name
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match=None) as e:
        read_manifest(f)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_csv_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    f = tmp_path / "excel.csv"
    f.write_bytes("\ufeffpath,labels\r\na.wav,dog;cat\r\n".encode())
    (row,) = read_manifest(f)
    assert row.path == str(tmp_path / "a.wav") and row.labels == ["dog", "cat"]
    j = tmp_path / "bom.jsonl"
    j.write_bytes('\ufeff{"path": "b.wav"}\n'.encode())
    assert read_manifest(j)[0].path == str(tmp_path / "b.wav")


def test_bad_manifest_through_the_cli(tmp_path: Path, capsys) -> None:
    ckpt = _checkpoint(tmp_path / "ckpt")
    (tmp_path / "m.csv").write_text("path\n")
    assert main(["embed", str(ckpt), str(tmp_path / "m.csv"), "--out", str(tmp_path / "e.npz")]) == 2
    assert "the manifest has no rows (only a header)" in _one_line_error(capsys, "embed")
    assert not (tmp_path / "e.npz").exists()


def _checkpoint(path: Path) -> Path:
    cfg = model_config("msm_vit_debug")
    return save_checkpoint(path, CheckpointSpec.from_model_config(cfg), build_model(cfg))


def test_info_verifies_the_weights(tmp_path: Path, capsys) -> None:
    good = _checkpoint(tmp_path / "good")
    assert main(["info", str(good)]) == 0
    capsys.readouterr()

    def broken(name: str, damage) -> Path:
        d = tmp_path / name
        shutil.copytree(good, d)
        damage(d)
        return d

    weights = "model.safetensors"
    cases = {
        "missing": (lambda d: (d / weights).unlink(), "model.safetensors is missing"),
        "truncated": (lambda d: (d / weights).write_bytes((good / weights).read_bytes()[:-100]),
                      "corrupt or truncated weights"),
        "foreign": (lambda d: save_file({"x": torch.zeros(3)}, str(d / weights)),
                    "the weights do not belong to this config.json: "),
        "changed": (lambda d: save_file({k: v + 1 for k, v in load_file(str(good / weights)).items()},
                                        str(d / weights)), "the weights changed after saving"),
        "reshaped": (lambda d: save_file({k: v[..., :1] if k == "encoder.norm.weight" else v
                                          for k, v in load_file(str(good / weights)).items()}, str(d / weights)),
                     "1 weight(s) have the wrong shape for this config.json, e.g. encoder.norm.weight"),
    }
    for name, (damage, message) in cases.items():
        d = broken(name, damage)
        assert main(["info", str(d)]) == 2, name
        assert message in _one_line_error(capsys, "info"), name
        with pytest.raises(CheckpointError):
            describe(d)


@pytest.mark.parametrize("edit,message", [
    (lambda m: m["encoder"].__setitem__("backbone", "rnn"),
     "unknown backbone 'rnn'; available: mamba, mamba2, transformer, xlstm"),
    (lambda m: m["encoder"]["backbone_cfg"].__setitem__("nope", 1), "backbone_cfg: unknown key(s) nope"),
    (lambda m: m["encoder"].__setitem__("patch_t", 0), "encoder.patch_t: got 0, expected an integer ≥ 1"),
])
def test_bad_checkpoint_config_is_one_line(tmp_path: Path, capsys, edit, message) -> None:
    d = _checkpoint(tmp_path / "ckpt")
    info = json.loads((d / "config.json").read_text())
    edit(info["model"])
    (d / "config.json").write_text(json.dumps(info))
    for argv in (["info", str(d)], ["embed", str(d), str(tmp_path), "--out", str(tmp_path / "e.npz")]):
        assert main(argv) == 2
        assert message in _one_line_error(capsys, argv[0])


def test_stats_file_and_layer_out_of_range(tmp_path: Path, audio_folder: Path, capsys) -> None:
    run = tmp_path / "run"
    for text, message in (("{not json", "expected the JSON written by 'audiofm stats'"),
                          ('{"mean": 1, "std": 0}', "needs a finite mean and a std > 0, got mean 1.0, std 0.0"),
                          ("[1, 2]", "expected the JSON written by 'audiofm stats'")):
        (tmp_path / "s.json").write_text(text)
        assert main(["pretrain", "--model", "msm_vit_debug", "--data", str(audio_folder), "--out", str(run),
                     "--stats", str(tmp_path / "s.json")]) == 2
        assert message in _one_line_error(capsys, "pretrain")
    assert main(["pretrain", "--model", "msm_vit_debug", "--data", str(audio_folder), "--out", str(run),
                 "--stats", str(tmp_path / "none.json")]) == 2
    assert "cannot read" in _one_line_error(capsys, "pretrain")
    assert not run.exists()
    ckpt = _checkpoint(tmp_path / "ckpt")
    for layer in ("2", "-3"):
        assert main(["embed", str(ckpt), str(audio_folder), "--out", str(tmp_path / "e.npz"), "--layer", layer]) == 2
        assert f"layer {layer} out of range for a 2-block encoder" in _one_line_error(capsys, "embed")


def test_two_tasks_with_one_name_are_refused_before_anything_is_written(tmp_path: Path, capsys) -> None:
    tasks = tmp_path / "tasks"
    make_hear_task(tasks, "toy", per_class=2)
    shutil.copytree(tasks / "toy", tasks / "toy_copy")  # same task_name in its task_metadata.json
    out = tmp_path / "run"
    assert main(["evaluate", "--baseline", "logmel", "--tasks", str(tasks), "--out", str(out), "--seeds", "1",
                 "--probes", "knn", "--no-progress"]) == 2
    err = _one_line_error(capsys, "evaluate")
    assert f"{tasks / 'toy'} and {tasks / 'toy_copy'} have the same task_name 'toy'" in err
    assert not out.exists()


@pytest.mark.parametrize("file,content,message", [
    ("fold00.json", "{oops", "fold00.json: invalid JSON"),
    ("fold00.json", '["a.wav"]', "fold00.json: expected a mapping of file name to its labels"),
    ("labelvocabulary.csv", "id,name\n0,a\n", "labelvocabulary.csv: needs a header with a 'label' column"),
    ("task_metadata.json", '{"task_name": "toy"}', "task_metadata.json: missing 'splits'"),
])
def test_broken_hear_task_files(tmp_path: Path, capsys, file: str, content: str, message: str) -> None:
    task = make_hear_task(tmp_path, "toy", per_class=2)
    (task / file).write_text(content)
    assert main(["evaluate", "--baseline", "logmel", "--tasks", str(task), "--out", str(tmp_path / "run")]) == 2
    assert message in _one_line_error(capsys, "evaluate")
