"""`audiofm asd run` end to end (and its stages) on generated machine-like audio in the DCASE
2023 layout; `audiofm report` merges the runs."""

import csv

import pytest
from asd_synth import make_dcase2023

import audiofm
from audiofm.cli import main


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_dcase2023(tmp_path_factory.mktemp("dcase") / "dev")


def _results(run):
    with (run / "results.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_run_logmel_ae_and_report(root, tmp_path, capsys):
    r1 = tmp_path / "logmel"
    assert main(["asd", "run", "--data", str(root), "--model", "logmel", "--seeds", "2", "--out", str(r1),
                 "--no-progress"]) == 0
    res = _results(r1)
    assert {r["task"] for r in res} == {"fan", "pump"}
    assert {r["metric"] for r in res} == {"auc_source", "auc_target", "pauc", "official_score"}
    assert {r["seed"] for r in res} == {"0", "1"} and {r["method"] for r in res} == {"frozen+knn"}
    for f in ("table.md", "table.csv", "config.json", "timings.json", "plots/roc_fan.png", "plots/hist_pump.png",
              "submission/seed0/anomaly_score_fan_section_00_test.csv",
              "submission/seed1/decision_result_pump_section_00_test.csv", "scores/seed0.csv"):
        assert (r1 / f).is_file(), f
    table = (r1 / "table.md").read_text()
    assert "| all |" in table and "official_score" in table
    # the machine-like anomalies (knocks, whine) are easy for log-mel statistics
    off = [float(r["value"]) for r in res if r["metric"] == "official_score"]
    assert min(off) > 0.6

    r2 = tmp_path / "ae"
    assert main(["asd", "run", "--data", str(root), "--method", "ae", "--ae-epochs", "2", "--out", str(r2),
                 "--no-progress", "--set", "ae.batch_size=64"]) == 0
    assert {r["method"] for r in _results(r2)} == {"ae"}

    rep = tmp_path / "report"
    assert main(["report", str(r1), str(r2), "--out", str(rep)]) == 0
    summary = (rep / "summary.md").read_text()
    assert "logmel" in summary and "ae-mse" in summary
    capsys.readouterr()
    assert main(["asd", "run", "--data", str(root), "--model", "logmel", "--out", str(r1), "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_run_pseudo_and_attr_finetuning(root, tmp_path):
    ft = ["--set", "finetune.train.batch_size=6", "--set", "finetune.augment.crop_seconds=0.5", "--no-progress"]
    r3 = tmp_path / "pseudo"
    assert main(["asd", "run", "--data", str(root), "--model", "msm_vit_debug", "--method", "pseudo-ft",
                 "--epochs", "1", "--backend", "knn-domain", "--out", str(r3), *ft]) == 0
    clusters = (r3 / "clusters.json").read_text()
    assert '"source": "clusters"' in clusters and "agreement_with_attributes" in clusters
    clf = audiofm.load(r3 / "seed0" / "finetune" / "model")
    assert isinstance(clf, audiofm.api.Classifier)
    assert all(v.startswith(("fan/", "pump/")) for v in clf.vocabulary)

    r4 = tmp_path / "attr"
    assert main(["asd", "run", "--data", str(root), "--model", "msm_vit_debug", "--method", "attr-ft", "--head",
                 "adacos", "--epochs", "1", "--backend", "mahalanobis", "--out", str(r4), *ft]) == 0
    clf = audiofm.load(r4 / "seed0" / "finetune" / "model")
    assert "fan/mdl=A;spd=090" in clf.vocabulary  # the real attributes
    assert {r["method"] for r in _results(r4)} == {"attr-ft+mahalanobis"}

    r5 = tmp_path / "dapt"
    assert main(["asd", "run", "--data", str(root), "--model", "msm_vit_debug", "--method", "dapt",
                 "--backend", "knn-kmeans", "--out", str(r5), "--no-progress", "--set", "dapt.budget_minutes=null",
                 "--set", "dapt.max_steps=2", "--set", "dapt.batch_size=4"]) == 0
    assert (r5 / "seed0" / "dapt" / "model" / "config.json").is_file()
    assert len(_results(r5)) == 8


def test_stages_alone(root, tmp_path):
    emb = tmp_path / "emb.npz"
    assert main(["asd", "embed", "--data", str(root), "--model", "msm_vit_debug", "--out", str(emb)]) == 0
    ps = tmp_path / "pseudo"
    assert main(["asd", "pseudo", "--data", str(root), "--embeddings", str(emb), "--out", str(ps)]) == 0
    labels = (ps / "labels.csv").read_text().splitlines()
    assert labels[0] == "id,label" and len(labels) == 1 + 2 * 15
    ftd = tmp_path / "ft"
    assert main(["asd", "finetune", "--data", str(root), "--model", "msm_vit_debug", "--labels",
                 str(ps / "labels.csv"), "--out", str(ftd), "--epochs", "1", "--no-progress"]) == 0
    emb2 = tmp_path / "emb2.npz"
    assert main(["asd", "embed", "--data", str(root), "--model", str(ftd / "model"), "--out", str(emb2)]) == 0
    sc = tmp_path / "score"
    assert main(["asd", "score", "--data", str(root), "--embeddings", str(emb2), "--out", str(sc)]) == 0
    assert {r["metric"] for r in _results(sc)} == {"auc_source", "auc_target", "pauc", "official_score"}


def _peer_installed(name):
    """The peer builds here (its optional packages are installed), else the reason it does not."""
    from audiofm.peers import get_peer

    try:
        get_peer(name)
    except ImportError as e:
        return str(e)
    return None


@pytest.mark.parametrize("peer", ["aisfx", "birdnet"])
def test_run_frozen_peer(root, tmp_path, capsys, peer):
    """Peers are frozen ASD baselines by name, resolved by audiofm.eval.baselines.make_baseline."""
    missing = _peer_installed(peer)
    if missing:
        pytest.skip(f"peer {peer} not installed: {missing}")
    run = tmp_path / peer
    assert main(["asd", "run", "--data", str(root), "--model", peer, "--out", str(run), "--no-progress"]) == 0
    res = _results(run)
    assert {r["task"] for r in res} == {"fan", "pump"} and {r["model"] for r in res} == {peer}
    assert all(0.0 <= float(r["value"]) <= 1.0 for r in res)
    capsys.readouterr()
    # a peer has no audiofm weights to adapt
    assert main(["asd", "run", "--data", str(root), "--model", peer, "--method", "pseudo-ft",
                 "--out", str(tmp_path / "ft"), "--no-progress"]) == 2
    assert f"peer {peer!r} is not an audiofm model" in capsys.readouterr().err


def test_make_embedder_names(tmp_path):
    from audiofm.asd.pipeline import baseline_name, make_embedder
    from audiofm.eval.baselines import LogMelEmbedder

    assert isinstance(make_embedder("logmel"), LogMelEmbedder)
    assert baseline_name("logmel") == "logmel" and baseline_name("aisfx") == "aisfx"
    assert baseline_name("birdnet:min_conf=0.2") == "birdnet" and baseline_name("msm_vit_tiny") is None
    with pytest.raises(ValueError, match="takes no settings"):
        make_embedder("logmel:n_mels=64")
    with pytest.raises(FileNotFoundError, match="nor a preset name.*'logmel' or a peer \\(aisfx, birdnet"):
        make_embedder(str(tmp_path / "nope"))
    (tmp_path / "aisfx").mkdir()  # an existing path is a checkpoint, never a peer name
    assert baseline_name(str(tmp_path / "aisfx")) is None


def test_first_seed(root, tmp_path):
    """--first-seed adds seeds to a finished run in a new run directory (plots from its first seed)."""
    run = tmp_path / "more"
    assert main(["asd", "run", "--data", str(root), "--model", "msm_vit_debug", "--seeds", "1", "--first-seed", "2",
                 "--out", str(run), "--no-progress"]) == 0
    assert {r["seed"] for r in _results(run)} == {"2"}
    assert (run / "scores" / "seed2.csv").is_file() and (run / "plots" / "roc_fan.png").is_file()
    assert not (run / "scores" / "seed0.csv").exists()
