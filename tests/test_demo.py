import json

from audiofm.demo import run_demo


def test_demo_runs_end_to_end_quickly(tmp_path, capsys):
    summary = run_demo(tmp_path / "demo", model="msm_vit_debug", per_family=10, batch_size=8,
                       precision="fp32", steps=15)
    out = capsys.readouterr().out
    assert "| log-mel mean+std |" in out and "pretrained" in out
    assert summary["steps"] == 15 and summary["loss_last"] < summary["loss_first"]
    names = [r["embedding"] for r in summary["results"]]
    assert names == ["msm_vit_debug pretrained", "msm_vit_debug random init", "log-mel mean+std"]
    assert all(0.0 <= r["knn_acc"] <= 1.0 for r in summary["results"])
    assert (tmp_path / "demo" / "run" / "model" / "model.safetensors").exists()
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["model"] == "msm_vit_debug"
