import json

from audiofm.demo import run_demo, verdict


def test_demo_runs_end_to_end_quickly(tmp_path, capsys):
    summary = run_demo(tmp_path / "demo", model="msm_vit_debug", per_family=10, batch_size=8,
                       precision="fp32", steps=15)
    out = capsys.readouterr().out
    assert "| log-mel mean+std |" in out and "pretrained" in out
    assert summary["steps"] == 15 and summary["loss_last"] < summary["loss_first"]
    names = [r["embedding"] for r in summary["results"]]
    assert names == ["msm_vit_debug pretrained", "msm_vit_debug pretrained, freq patches concatenated, mean+max",
                     "msm_vit_debug random init", "msm_vit_debug random init, freq patches concatenated, mean+max",
                     "log-mel mean+std"]
    from audiofm.api import random_like

    fp = random_like("msm_vit_debug").encoder.cfg.freq_patches  # concatenated patches, then mean+max
    assert summary["results"][1]["dim"] == 2 * fp * summary["results"][0]["dim"]
    assert summary["verdict"] == verdict([tuple(r.values()) for r in summary["results"]])
    assert all(line in out for line in summary["verdict"]) and len(summary["verdict"]) == 2
    assert all(0.0 <= r["knn_acc"] <= 1.0 for r in summary["results"])
    assert (tmp_path / "demo" / "run" / "model" / "model.safetensors").exists()
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["model"] == "msm_vit_debug"


def test_verdict_says_where_the_pretrained_encoder_stands():
    table = [("m pretrained", 8, 0.80, 3, 0.85), ("m pretrained, all", 16, 0.83, 3, 0.82),
             ("m random init", 8, 0.55, 1, 0.85), ("m random init, all", 16, 0.60, 1, 0.70),
             ("log-mel mean+std", 256, 0.82, 3, 0.83)]
    assert verdict(table) == [
        "m pretrained: kNN above random init (0.800 vs 0.550) and below log-mel (0.800 vs 0.820); "
        "linear level with random init (0.850 vs 0.850) and above log-mel (0.850 vs 0.830).",
        "m pretrained, all: kNN above random init (0.830 vs 0.600) and above log-mel (0.830 vs 0.820); "
        "linear above random init (0.820 vs 0.700) and below log-mel (0.820 vs 0.830).",
    ]
