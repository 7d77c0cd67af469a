"""Retrieval training and evaluation end to end on a tiny generated Clotho-format folder: tones,
noise and beeps with template captions (the logmel tower keeps steps to projections only)."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from crash import crash_after_checkpoint
from safetensors.torch import load_file

pytest.importorskip("sentence_transformers")

import audiofm
from audiofm.config import ConfigError, from_dict
from audiofm.data.captions import read_clotho
from audiofm.retrieval.commands import main
from audiofm.retrieval.config import RetrievalConfig
from audiofm.retrieval.evaluate import evaluate
from audiofm.retrieval.train import train

SR = 16000
KINDS = {
    "low": ["a low hum drones steadily", "a deep low tone hums", "low humming sound"],
    "high": ["a high pitched whistle", "a shrill high beep rings", "high whistling tone"],
    "noise": ["static noise hisses", "loud white noise rushes", "hissing static"],
    "pulse": ["a beeping alarm pulses", "short beeps repeat quickly", "pulsing beeps"],
}
SPLITS = {"development": 3, "validation": 2, "evaluation": 2}  # clips per kind


def _wave(kind: str, n: int, seconds: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(n)
    t = np.arange(int(seconds * SR)) / SR
    if kind == "low":
        w = 0.5 * np.sin(2 * np.pi * (200 + 15 * (n % 5)) * t)
    elif kind == "high":
        w = 0.5 * np.sin(2 * np.pi * (2500 + 100 * (n % 5)) * t)
    elif kind == "noise":
        w = 0.3 * rng.standard_normal(t.size)
    else:
        w = 0.5 * np.sin(2 * np.pi * 900 * t) * (np.sin(2 * np.pi * (4 + n % 3) * t) > 0)
    return (w + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def make_clotho(root: Path) -> Path:
    """12 development clips (2-3 captions each), 8 validation and 8 evaluation clips, and a
    relevance file for the evaluation split (every caption of a kind → every clip of that kind)."""
    n = 0
    kind_of: dict[str, str] = {}
    for split, k in SPLITS.items():
        (root / split).mkdir(parents=True)
        with open(root / f"clotho_captions_{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file_name", "caption_1", "caption_2", "caption_3"])
            for kind, caps in KINDS.items():
                for i in range(k):
                    n += 1
                    name = f"{kind}_{split[:3]}{i}.wav"
                    sf.write(root / split / name, _wave(kind, n), SR)
                    rot = caps[i % 3:] + caps[: i % 3]
                    w.writerow([name, rot[0], rot[1], rot[2] if i != 1 else ""])
                    kind_of[name] = kind
    with open(root / "relevance_evaluation.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["query_id", "caption", "file_name", "relevant_file_name"])
        q = 0
        for kind, caps in KINDS.items():
            clips = [c for c, k in kind_of.items() if k == kind and "_eva" in c]
            for cap in caps:
                q += 1
                for c in clips:
                    w.writerow([q, cap, clips[0], c])
    return root


def _cfg(data: Path, cache: Path, **kw) -> RetrievalConfig:
    base = {"model": {"audio_model": "logmel", "embed_dim": 32, "max_text_tokens": 16},
            "data": {"source": str(data)}, "cache": str(cache),
            "train": {"max_steps": 40, "batch_size": 8, "lr": 3e-3, "warmup_steps": 4, "log_every": 2,
                      "evaluate_every": 20, "ckpt_every": 20}}
    for k, v in kw.items():
        if isinstance(v, dict):
            base[k] = {**base.get(k, {}), **v}
        else:
            base[k] = v
    return from_dict(RetrievalConfig, base)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The folder and one finished run (MiniLM is loaded once per process and reused)."""
    root = tmp_path_factory.mktemp("retrieval")
    data = make_clotho(root / "clotho")
    t0 = time.perf_counter()
    res = train(_cfg(data, root / "cache"), root / "run", progress=False)
    return data, root, res, time.perf_counter() - t0


def test_learns_and_beats_random(setup):
    data, root, res, seconds = setup
    assert res["status"] == "completed" and (root / "run" / "train.json").is_file()
    run = root / "run" / "seed-0"
    losses = [m["loss"] for m in _metrics(run) if "loss" in m]
    assert len(losses) == 20 and np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])
    s = res["seeds"][0]
    assert s["best_valid_map_at_10"] > s["start_valid_map_at_10"]
    assert (run / "loss_curve.png").is_file() and not (run / "best").exists()
    model = audiofm.load(run / "model")  # the dual checkpoint, as users load it
    assert type(model).__name__ == "TextAudioModel"
    z = model.embed_text(["a low hum"])
    assert z.shape == (1, 32) and abs(float(np.linalg.norm(z)) - 1) < 1e-5
    ev = evaluate(root / "run", data, out=root / "eval")
    assert ev["primary"] == "map_at_16" and ev["relevance"].endswith("relevance_evaluation.csv")
    ours, rnd = ev["means"]["run/text_to_audio"], ev["means"]["random/text_to_audio"]
    assert ours["map_at_10"] > rnd["map_at_10"] + 0.1 and ours["map_at_16"] > rnd["map_at_16"]
    assert seconds < 60  # the tiny end-to-end run (MiniLM load included)


def test_evaluate_outputs(setup):
    data, root, _, _ = setup
    out = root / "eval-out"
    evaluate(root / "run", data, out=out)
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    got = {(r["model"], r["method"], r["metric"]) for r in rows}
    for m in ("r_at_1", "r_at_5", "r_at_10", "map_at_10", "map_at_16"):
        assert ("run", "text_to_audio", m) in got and ("random", "text_to_audio", m) in got
    for m in ("r_at_1", "r_at_5", "r_at_10", "map_at_10"):
        assert ("run", "audio_to_text", m) in got
    assert {r["task"] for r in rows} == {"clotho-evaluation"}
    assert next(r["primary"] for r in rows if r["metric"] == "map_at_16") == "True"
    q = [json.loads(x) for x in (out / "queries.jsonl").read_text().splitlines()]
    t2a = [r for r in q if r["direction"] == "text_to_audio"]
    assert len(t2a) == sum(len(r.captions) for r in read_clotho(data, "evaluation"))
    assert all(len(r["multi_relevant"]) == 2 for r in t2a)  # the relevance file: both clips of the kind
    summary = (out / "summary.md").read_text()
    assert "±" in summary and "random" in summary and "mAP@16" in summary
    t2a_md, a2t_md = summary.split("## Audio → text")
    assert "clotho-evaluation: mAP@16" in t2a_md and "clotho-evaluation: mAP@10" in a2t_md  # each its own
    main_a2t = a2t_md.split("### mAP")[0]
    assert "| run |" in main_a2t and "–" not in main_a2t.split("| run |")[1].splitlines()[0]
    ex = (out / "examples.md").read_text()
    assert ex.count("## “") == 5 and "✓" in ex
    with pytest.raises(ValueError, match="already exists"):  # never overwritten silently
        evaluate(root / "run", data, out=out)


def test_frozen_features_cached(setup, tmp_path, monkeypatch):
    """A second run with the same towers and data computes no feature: steps cost projections only."""
    data, root, first, _ = setup
    assert len(first["seeds"][0]["features_computed"]) == 4  # train/valid × audio/text
    from audiofm.retrieval.model import DualEncoder

    def no(*a, **k):
        raise AssertionError("features recomputed")

    monkeypatch.setattr(DualEncoder, "audio_features_frozen", no)
    res = train(_cfg(data, root / "cache", train={"max_steps": 4, "evaluate_every": 2}), tmp_path / "again",
                progress=False)
    s = res["seeds"][0]
    assert s["features_computed"] == [] and len(s["features_cached"]) == 4


def test_distillation_and_cluster_terms(setup, tmp_path):
    """Both extra terms enter the loss with their weights: total = InfoNCE + w_d·distill + w_c·CE."""
    data, root, _, _ = setup
    teacher = str(root / "run")
    extras = {"teachers": [teacher], "n_clusters": "4", "cluster_method": "kmeans",
              "train": {"max_steps": 3, "log_every": 1, "evaluate_every": 0}}
    runs = {}
    for name, wd, wc in (("plain", 0.0, 0.0), ("both", 0.5, 2.0)):
        cfg = _cfg(data, root / "cache", distill_weight=wd, cluster_weight=wc, **extras)
        runs[name] = train(cfg, tmp_path / name, progress=False)
        assert runs[name]["status"] == "completed"
    plain, both = (_metrics(tmp_path / n / "seed-0") for n in ("plain", "both"))
    assert plain[0]["loss"] == pytest.approx(plain[0]["contrastive"])
    first = both[0]
    for k in ("contrastive", "distillation", "cluster"):
        assert math.isfinite(first[k]) and first[k] > 0
    assert first["contrastive"] == pytest.approx(plain[0]["contrastive"], rel=1e-5)  # same start, same batch
    assert first["loss"] == pytest.approx(first["contrastive"] + 0.5 * first["distillation"] + 2.0 * first["cluster"],
                                          rel=1e-5)
    info = json.loads((tmp_path / "both" / "seed-0" / "retrieval.json").read_text())
    assert info["n_clusters"] == 4
    with pytest.raises(ValueError, match="needs teachers"):
        _cfg(data, root / "cache", distill_weight=0.5)


def _state(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_trained_audio_tower_resumes_exactly(setup, tmp_path, monkeypatch):
    """Trained towers (all audio blocks on random crops from the pairs' seeds, the top text layer):
    an interrupted run resumed retraces the uninterrupted one (metrics and weights)."""
    data, root, _, _ = setup
    cfg = _cfg(data, root / "cache", model={"audio_model": "msm_vit_debug", "audio_trainable": -1, "text_trainable": 1},
               crop_seconds=0.5, train={"max_steps": 6, "ckpt_every": 2, "evaluate_every": 3, "log_every": 1})
    full = train(cfg, tmp_path / "full", progress=False)
    assert full["status"] == "completed"

    with crash_after_checkpoint(monkeypatch, step=4):
        train(cfg, tmp_path / "resumed", progress=False)
    assert not (tmp_path / "resumed" / "seed-0" / "model").exists()
    with pytest.raises(ValueError, match="--resume"):
        train(cfg, tmp_path / "resumed", progress=False)
    res = train(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert res["status"] == "completed"
    strip = lambda ms: [{k: v for k, v in m.items() if k not in ("clips_per_s", "elapsed_s")} for m in ms]
    assert strip(_metrics(tmp_path / "full" / "seed-0")) == strip(_metrics(tmp_path / "resumed" / "seed-0"))
    a, b = _state(tmp_path / "full" / "seed-0" / "model"), _state(tmp_path / "resumed" / "seed-0" / "model")
    assert set(a) == set(b) and any(k.startswith("encoder.") for k in a) and any(k.startswith("text.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(FileExistsError, match="finished"):  # a finished run is never continued or overwritten
        train(cfg, tmp_path / "resumed", resume=True, progress=False)


def test_cli_train_and_evaluate(setup, tmp_path, capsys):
    data, root, _, _ = setup
    run = tmp_path / "cli"
    common = ["--no-progress", "--set", "model.embed_dim=16", "--set", "model.max_text_tokens=16",
              "--set", "train.evaluate_every=5", "--set", "train.warmup_steps=2"]
    assert main(["retrieval", "train", "--audio-model", "logmel", "--data", str(data), "--out", str(run),
                 "--seeds", "2", "--max-steps", "10", "--batch-size", "8", "--cache", str(root / "cache"),
                 *common]) == 0
    out = capsys.readouterr().out
    assert "seed 0:" in out and "seed 1:" in out
    assert (run / "seed-0" / "model" / "config.json").is_file() and (run / "seed-1" / "model").is_dir()
    assert (run / "run_config.yaml").is_file()
    assert main(["retrieval", "evaluate", str(run), "--data", str(data)]) == 0
    ev = run / "eval-evaluation"
    assert all((ev / f).is_file() for f in ("results.csv", "summary.md", "examples.md", "queries.jsonl"))
    assert "text->audio map_at_16" in capsys.readouterr().out
    with open(ev / "results.csv") as f:
        assert {r["seed"] for r in csv.DictReader(f) if r["model"] == "cli"} == {"0", "1"}
    # mistakes: one line, exit 2, nothing overwritten
    assert main(["retrieval", "evaluate", str(run), "--data", str(data)]) == 2
    assert main(["retrieval", "train", "--data", str(data), "--out", str(run), "--audio-model", "logmel"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "already holds a finished retrieval run" in err
    assert main(["retrieval", "train", "--out", str(tmp_path / "x"), "--set", "train.lr=-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--data is required" in err and "train.lr" in err


def test_help_of_the_subcommands():
    """Every option of train/evaluate says its default or that it is required (as the top-level
    help test asks of every command)."""
    import argparse
    import re

    from audiofm.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    nested = next(a for a in sub.choices["retrieval"]._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in nested.choices.items():
        text = p.format_help()
        assert p.description and not re.search(r"`|\{@?[\w.:]+\}|:class:|\*\*", text), name
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            shown = " ".join((action.help or "").split())
            assert re.search(r"\((default|required)[:,)]|\(required", shown) or "default:" in shown, (name, action.dest)


def test_config_checks():
    with pytest.raises(ConfigError, match="n_clusters"):
        from_dict(RetrievalConfig, {"n_clusters": "many"})
    with pytest.raises(ConfigError, match="valid_split"):
        from_dict(RetrievalConfig, {"data": {"train_split": "a", "valid_split": "a"}})
    cfg = from_dict(RetrievalConfig, {"n_clusters": 8, "seeds": 3, "train": {"seed": 5}})
    assert cfg.clusters == 8 and cfg.seed_list == [5, 6, 7]


def test_dataset_augmentation(setup, tmp_path):
    """Mixed/concatenated clip pairs and paraphrased captions become extra training items (their
    frozen features cached like the clips'); the augmented set is a function of the seed."""
    data, _, base, _ = setup
    cfg = _cfg(data, tmp_path / "cache", augmentation={"mix_pairs": 4, "paraphrases": 1},
               train={"max_steps": 4, "evaluate_every": 0, "log_every": 1})
    res = train(cfg, tmp_path / "aug", progress=False)["seeds"][0]
    assert res["train_clips"] == 12 + 4
    assert res["train_pairs"] > base["seeds"][0]["train_pairs"] + 4
    assert all(math.isfinite(m["loss"]) for m in _metrics(tmp_path / "aug" / "seed-0"))
    again = train(cfg, tmp_path / "aug2", progress=False)["seeds"][0]
    assert again["features_computed"] == [] and again["train_pairs"] == res["train_pairs"]


def test_cli_resume_continues_with_saved_settings(setup, tmp_path, monkeypatch, capsys):
    """``--resume`` alone continues an interrupted run with its saved settings; a change of meaning
    is refused unless allowed; the finished run is never continued again."""
    data, root, _, _ = setup
    import audiofm.train.engine as eng

    orig = eng.Engine.save

    def save_then_stop(self, optimizer, final=False):
        out = orig(self, optimizer, final)
        if self.step == 4 and not final:
            raise KeyboardInterrupt
        return out

    run = tmp_path / "r"
    monkeypatch.setattr(eng.Engine, "save", save_then_stop)
    assert main(["retrieval", "train", "--audio-model", "logmel", "--data", str(data), "--out", str(run),
                 "--max-steps", "6", "--batch-size", "8", "--cache", str(root / "cache"), "--no-progress",
                 "--set", "model.embed_dim=16", "--set", "train.ckpt_every=2", "--set", "train.evaluate_every=3",
                 "--set", "train.warmup_steps=1"]) == 130
    monkeypatch.setattr(eng.Engine, "save", orig)
    capsys.readouterr()
    assert main(["retrieval", "train", "--out", str(run), "--resume", "--lr", "0.1", "--no-progress"]) == 2
    assert "train.lr" in capsys.readouterr().err
    assert main(["retrieval", "train", "--out", str(run), "--resume", "--no-progress"]) == 0
    info = json.loads((run / "seed-0" / "retrieval.json").read_text())
    assert info["steps"] == 6 and info["status"] == "completed" and (run / "train.json").is_file()
    assert main(["retrieval", "train", "--out", str(run), "--resume", "--no-progress"]) == 2
    assert "finished" in capsys.readouterr().err


def test_data_formats(setup, tmp_path):
    """Clotho folder, AudioCaps folder (or one of its CSVs) and a pairs file with splits."""
    from audiofm.retrieval.config import RetrievalDataConfig
    from audiofm.retrieval.train import data_format, read_split

    data, _, _, _ = setup
    assert data_format(RetrievalDataConfig(str(data))) == "clotho"
    assert len(read_split(RetrievalDataConfig(str(data)), "validation")) == 8
    ac = tmp_path / "audiocaps"
    (ac / "audio").mkdir(parents=True)
    for split, n in (("train", 3), ("val", 2)):
        lines = ["audiocap_id,youtube_id,start_time,caption"]
        for i in range(n):
            sf.write(ac / "audio" / f"{split}{i}.wav", _wave("low", i), SR)
            lines += [f"{10 * i},{split}{i},0,a low hum {i}", f"{10 * i + 1},{split}{i},0,humming {i}"]
        (ac / f"{split}.csv").write_text("\n".join(lines) + "\n")
    cfg = RetrievalDataConfig(str(ac / "train.csv"), train_split="train", valid_split="val",
                              audio_dir=str(ac / "audio"))
    assert data_format(cfg) == "audiocaps"
    rows = read_split(cfg, "val")
    assert len(rows) == 2 and all(len(r.captions) == 2 for r in rows)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"path": f"audiocaps/audio/train{i}.wav", "caption": c, "split": s}) + "\n"
                             for i, s in ((0, "development"), (1, "development"), (2, "validation"))
                             for c in ("one", "two")))
    cfg = RetrievalDataConfig(str(pairs))
    assert data_format(cfg) == "pairs" and len(read_split(cfg, "development")) == 2
    with pytest.raises(ValueError, match="no pairs of split"):
        read_split(cfg, "evaluation")


def test_cluster_run_resumes_exactly(setup, tmp_path, monkeypatch):
    """The cluster classifier (a training-only head, ``aux.*``) round-trips through the periodic
    checkpoints, so a run with cluster_weight > 0 resumes exactly too."""
    data, root, _, _ = setup
    cfg = _cfg(data, root / "cache", cluster_weight=1.0, n_clusters="4", cluster_method="kmeans",
               train={"max_steps": 6, "ckpt_every": 2, "evaluate_every": 3, "log_every": 1})
    full = train(cfg, tmp_path / "full", progress=False)
    with crash_after_checkpoint(monkeypatch, step=4):
        train(cfg, tmp_path / "resumed", progress=False)
    res = train(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert full["status"] == res["status"] == "completed"
    strip = lambda ms: [{k: v for k, v in m.items() if k not in ("clips_per_s", "elapsed_s")} for m in ms]
    assert strip(_metrics(tmp_path / "full" / "seed-0")) == strip(_metrics(tmp_path / "resumed" / "seed-0"))


def test_a_cluster_term_without_clusters_is_refused(setup, tmp_path, monkeypatch):
    """'auto' may find no cluster structure (one cluster): the pseudo-class term would then be a
    constant 0, silently; the run refuses with the fix instead."""
    import audiofm.retrieval.clusters as clusters

    orig = clusters.cluster_captions
    monkeypatch.setattr(clusters, "cluster_captions",
                        lambda x, n, method, seed=0, **kw: orig(x, 1, method, seed=seed, **kw))
    data, root, _, _ = setup
    cfg = _cfg(data, root / "cache", cluster_weight=0.5, train={"max_steps": 2, "evaluate_every": 0})
    with pytest.raises(ValueError, match="one cluster in the training captions.*set n_clusters to a count"):
        train(cfg, tmp_path / "run", progress=False)
