"""Disk full, read-only and permission failures: one line naming the path and the cause, no
temporary file left, the old file intact, and found before long work starts where possible."""

from __future__ import annotations

import errno
import os
import shutil
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch

from audiofm import _commands, io
from audiofm.checkpoint import CheckpointSpec, save_checkpoint
from audiofm.cli import main
from audiofm.data import Row
from audiofm.embed_io import write_embeddings
from audiofm.embedding import Embeddings
from audiofm.io import WriteError, atomic_path, check_writable, write_text
from audiofm.models.registry import build_model, model_config

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
Usage = namedtuple("Usage", "total used free")


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _debug_checkpoint(path: Path) -> Path:
    cfg = model_config("msm_vit_debug")
    return save_checkpoint(path, CheckpointSpec.from_model_config(cfg), build_model(cfg))


def test_disk_full_leaves_no_temporary_and_the_old_file(tmp_path: Path) -> None:
    f = write_text(tmp_path / "a.txt", "old")
    with pytest.raises(WriteError) as e, atomic_path(f) as tmp:
        tmp.write_text("half")
        raise ENOSPC
    assert str(e.value) == f"{f}: cannot write: no space left on device (nothing was changed there)"
    assert e.value.errno == errno.ENOSPC and isinstance(e.value, OSError)
    assert f.read_text() == "old" and _listing(tmp_path) == ["a.txt"]
    with pytest.raises(ZeroDivisionError), atomic_path(f):  # other errors pass unchanged
        _ = 1 / 0
    assert f.read_text() == "old" and _listing(tmp_path) == ["a.txt"]
    assert (f.stat().st_mode & 0o777) == 0o666 & ~_umask()  # a normal file, not mkstemp's 0600


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_embeddings_file_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [Row(path=f"{i}.wav") for i in range(3)]
    embs = [Embeddings(np.ones(4, np.float32), np.ones((2, 4), np.float32), np.arange(2.0)) for _ in rows]
    out = write_embeddings(embs, rows, tmp_path / "e.npz")
    before = out.read_bytes()

    def savez(f, **arrays):  # writes part of the file, then the disk is full
        f.write(b"PK\x03\x04 partial")
        raise ENOSPC

    monkeypatch.setattr(np, "savez", savez)
    with pytest.raises(WriteError, match=r"e\.npz: cannot write: no space left on device"):
        write_embeddings(embs, rows, out, frames=True)
    assert out.read_bytes() == before and _listing(tmp_path) == ["e.npz"]  # no hidden .e.npz.*.tmp.npz


@pytest.mark.parametrize("failure", ["torch", "safetensors"])
def test_checkpoint_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    ckpts = tmp_path / "checkpoints"
    old = _debug_checkpoint(ckpts / "step_00000002")
    weights = (old / "model.safetensors").read_bytes()
    cfg = model_config("msm_vit_debug")
    if failure == "torch":  # torch.save reports a full disk as a RuntimeError from its zip writer
        def save(*a, **k):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

        monkeypatch.setattr(torch, "save", save)
        monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(1 << 30, 1 << 30, 4096))
    else:  # safetensors raises its own error type carrying the errno
        import safetensors.torch

        def save_file(*a, **k):
            raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device "
                                              "(os error 28)")

        monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    for target in ("step_00000004", "step_00000002"):  # a new one, and one replacing an existing one
        with pytest.raises(WriteError, match=f"{target}: cannot write: no space left on device"):
            save_checkpoint(ckpts / target, CheckpointSpec.from_model_config(cfg), build_model(cfg),
                            train_state={"step": 4}, overwrite=True)
    assert _listing(ckpts) == ["step_00000002"]  # no .step_*.tmp folder left behind
    assert (old / "model.safetensors").read_bytes() == weights


def test_read_only_and_unwritable_outputs_are_found_before_work(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    check_writable(tmp_path / "new" / "deeper" / "run")  # creatable: fine, and nothing is created
    assert _listing(tmp_path) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match="is not a directory"):
        check_writable(tmp_path / "file" / "out.npz")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(1 << 30, 1 << 30, 1 << 20))
    with pytest.raises(WriteError, match=r"no space left on device \(needs about 10.0 MB, 1.0 MB free\)"):
        check_writable(tmp_path / "e.npz", need_bytes=10 << 20)
    monkeypatch.undo()

    def read_only(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(io.tempfile, "mkstemp", read_only)
    with pytest.raises(WriteError, match=r"run: cannot write: read-only file system"):
        check_writable(tmp_path / "run")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories; simulated above")
def test_real_read_only_directory(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(WriteError, match="cannot write: permission denied"):
            check_writable(ro / "e.npz")
        with pytest.raises(WriteError, match="permission denied"):
            write_text(ro / "a.txt", "x")
        assert _listing(ro) == []
    finally:
        ro.chmod(0o755)


def test_commands_check_their_output_before_embedding_or_training(tmp_path: Path, audio_folder: Path,
                                                                  monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    ckpt = _debug_checkpoint(tmp_path / "ckpt")
    real_mkstemp = io.tempfile.mkstemp
    ro = tmp_path / "ro"

    def mkstemp(*a, dir=None, **k):  # the folder "ro" is on a read-only file system
        if dir is not None and Path(dir).is_relative_to(ro):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_mkstemp(*a, dir=dir, **k)

    monkeypatch.setattr(io.tempfile, "mkstemp", mkstemp)
    ro.mkdir()
    monkeypatch.setattr("audiofm.embed_io.embed_rows", lambda *a, **k: pytest.fail("embedded before checking"))
    assert main(["embed", str(ckpt), str(audio_folder), "--out", str(ro / "e.npz"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == f"audiofm embed: error: {ro / 'e.npz'}: cannot write: read-only file system " \
                  "(nothing was changed there)\n"
    monkeypatch.setattr("audiofm.train.pretrain.ClipStore", lambda *a, **k: pytest.fail("read data first"))
    assert main(["pretrain", "--model", "msm_vit_debug", "--data", str(audio_folder), "--out", str(ro / "run"),
                 "--no-progress"]) == 2
    assert f"{ro / 'run'}: cannot write: read-only file system" in capsys.readouterr().err
    assert _listing(ro) == []


def test_guard_names_path_and_cause_of_any_write_failure(capsys) -> None:
    def full() -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "run/metrics.jsonl")

    assert _commands.guarded("pretrain", full) == 2
    assert capsys.readouterr().err == "audiofm pretrain: error: run/metrics.jsonl: cannot write: no space " \
                                      "left on device\n"
