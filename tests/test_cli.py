import json

import numpy as np
import pytest

from audiofm.cli import main


def test_pretrain_embed_info_stats(tmp_path, audio_folder, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--model", "msm_vit_debug", "--data", str(audio_folder), "--out", str(run),
                 "--max-steps", "3", "--batch-size", "2", "--no-progress",
                 "--set", "model_overrides.segment_seconds=0.5", "--set", "train.warmup_steps=1"]) == 0
    assert "completed at step 3" in capsys.readouterr().out
    for f in ("run_config.yaml", "run_info.json", "metrics.jsonl", "model/model.safetensors"):
        assert (run / f).exists(), f
    info = json.loads((run / "run_info.json").read_text())
    assert info["data_fingerprint"]["clips"] == 8 and "torch" in info["versions"]

    out = tmp_path / "emb.npz"
    assert main(["embed", str(run), str(audio_folder), "--out", str(out), "--frames", "--no-progress"]) == 0
    z = np.load(out)
    assert z["clip"].shape == (8, 64) and z["frame_offsets"][-1] == len(z["frames"]) == len(z["timestamps"])
    # never silently overwritten
    assert main(["embed", str(run), str(audio_folder), "--out", str(out), "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err

    pq = tmp_path / "emb.parquet"
    assert main(["embed", str(run), str(audio_folder), "--out", str(pq), "--no-progress"]) == 0
    import pyarrow.parquet as papq

    assert papq.read_table(pq).num_rows == 8
    capsys.readouterr()

    assert main(["info", str(run), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "msm_vit_debug" and summary["step"] == 3
    assert summary["data_fingerprint"]["clips"] == 8

    st = tmp_path / "stats.json"
    assert main(["stats", str(audio_folder), "--model", "msm_vit_debug", "--out", str(st)]) == 0
    stats = json.loads(st.read_text())
    assert stats["std"] > 0 and stats["clips_used"] == 8


def test_config_file_and_resume(tmp_path, audio_folder, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: msm_vit_debug\nmodel_overrides:\n  segment_seconds: 0.5\n  mask_mode: time\n"
                   f"data:\n  source: {audio_folder}\n"
                   "train:\n  max_steps: 2\n  batch_size: 2\n  warmup_steps: 1\n  log_every: 1\n")
    run = tmp_path / "run"
    assert main(["pretrain", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    assert json.loads((run / "model" / "config.json").read_text())["model"]["pretraining"]["mask_mode"] == "time"
    assert main(["pretrain", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    # a longer schedule changes the run: refused unless asked for, then recorded
    assert main(["pretrain", "--out", str(run), "--max-steps", "4", "--resume", "--no-progress"]) == 2
    assert "train.max_steps: 2 → 4" in capsys.readouterr().err
    assert main(["pretrain", "--out", str(run), "--max-steps", "4", "--resume", "--allow-change", "train.max_steps",
                 "--no-progress"]) == 0
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


@pytest.mark.parametrize("argv,msg", [
    (["pretrain", "--model", "msm_vit_debug", "--data", "/no/such/dir", "--out", "X"], "no such file"),
    (["pretrain", "--model", "nope", "--data", ".", "--out", "X"], "unknown model"),
    (["pretrain", "--model", "msm_vit_debug", "--out", "X"], "--data is required"),
    (["pretrain", "--model", "msm_vit_debug", "--data", ".", "--out", "X", "--set", "train.nope=1"],
     "unknown key"),
    (["embed", "/no/ckpt", ".", "--out", "x.npz"], "no such checkpoint"),
    (["info", "/no/ckpt"], "no such checkpoint"),
])
def test_errors_are_one_line(tmp_path, monkeypatch, capsys, argv, msg):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"audiofm {argv[0]}: error:") and msg in err and "\n" not in err


def test_bad_audio_in_dataset_reports_all(tmp_path, audio_folder, capsys):
    (audio_folder / "low" / "bad1.wav").write_bytes(b"junk")
    (audio_folder / "high" / "bad2.wav").write_bytes(b"")
    assert main(["pretrain", "--model", "msm_vit_debug", "--data", str(audio_folder), "--out",
                 str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "2 of 10 audio files are unusable" in err and "bad1.wav" in err and "bad2.wav" in err
    assert not (tmp_path / "r").exists()  # nothing half-written
