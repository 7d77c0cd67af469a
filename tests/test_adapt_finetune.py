"""Fine-tuning and contrastive-tuning end to end on generated HEAR tasks (debug presets)."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_hear_task, tone
from crash import crash_after_checkpoint
from safetensors.torch import load_file

import audiofm
from audiofm import checkpoint as ckpt
from audiofm.adapt import AdaptModel, finetune, finetune_config_from, layerwise_param_groups
from audiofm.adapt.commands import main
from audiofm.models.heads import ClassifierHead
from audiofm.train.engine import lr_at


def make_multilabel_task(root: Path, folds: int = 3, per_fold: int = 12) -> Path:
    """Clips are sums of 1–2 tones; label = which tones (Jaccard-weighted contrastive path)."""
    task = root / "ml"
    labels = ["lo", "mid", "hi"]
    freqs = {"lo": 250.0, "mid": 700.0, "hi": 1800.0}
    combos = [["lo"], ["mid"], ["hi"], ["lo", "mid"], ["mid", "hi"], ["lo", "hi"]]
    splits = [f"fold{i:02d}" for i in range(folds)]
    (task / "16000").mkdir(parents=True)
    meta = {"task_name": "ml", "embedding_type": "scene", "prediction_type": "multilabel",
            "split_mode": "new_split_kfold", "nfolds": folds, "splits": splits}
    (task / "task_metadata.json").write_text(json.dumps(meta))
    (task / "labelvocabulary.csv").write_text("idx,label\n" + "".join(f"{i},{x}\n" for i, x in enumerate(labels)))
    k = 0
    for split in splits:
        (task / "16000" / split).mkdir()
        entries = {}
        for j in range(per_fold):
            labs = combos[j % len(combos)]
            k += 1
            w = sum(tone(0.5, freq=freqs[lab] * (1 + 0.01 * j), seed=k) for lab in labs)
            sf.write(task / "16000" / split / f"c{k:03d}.flac", w / len(labs), 16000)
            entries[f"c{k:03d}.flac"] = labs
        (task / f"{split}.json").write_text(json.dumps(entries))
    return task


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt")
    task = make_hear_task(root, "toy", folds=3, per_class=6, labels=("a", "b", "c"))
    torch.manual_seed(0)
    base = audiofm.create_model("msm_vit_debug", segment_seconds=1.0, encoder={"frontend": {"mean": -3.5, "std": 2.7}})
    ckpt.save_checkpoint(root / "base", ckpt.CheckpointSpec.from_model_config(base.cfg), base)
    return task, root / "base"


def _cfg(base, task, **kw):
    train = {"max_steps": 6, "batch_size": 6, "lr": 1e-3, "warmup_steps": 1, "log_every": 1, "ckpt_every": 100,
             "threads": 2, **kw.pop("train", {})}
    d = {"model": str(base), "task": str(task), "epochs": None, "warmup_fraction": None, "train": train, **kw}
    return finetune_config_from(d)


def _state(path):
    """Weights of a checkpoint, or of a run directory's final ``model/``."""
    return load_file(str(ckpt.resolve(path) / "model.safetensors"))


def test_supervised_learns_and_roundtrips(setup, tmp_path):
    task, base = setup
    out = tmp_path / "sup"
    cfg = _cfg(base, task, epochs=8, evaluate_every_epochs=1, warmup_fraction=0.1,
               supervised={"label_smoothing": 0.1, "mixup_alpha": 0.2, "mixup_level": "waveform",
                           "head_init": "random"})  # the training has to do all the work
    res = finetune(cfg, out, progress=False)
    evals = [json.loads(ln)["eval"]["score"] for ln in (out / "metrics.jsonl").read_text().splitlines()
             if "eval" in ln]
    assert res["status"] == "completed" and res["steps"] == 24 and len(evals) == 9  # step 0 + every epoch
    assert evals[0] < 0.5 and res["best_valid_score"] >= 0.8  # from chance (3 classes) to well above it
    for f in ("model/config.json", "model/model.safetensors", "finetune.json", "run_config.yaml", "run_info.json",
              "metrics.jsonl"):
        assert (out / f).is_file(), f
    assert not (out / "best").exists() and not list(out.rglob("head.json"))  # the head is inside the checkpoint
    # one classifier checkpoint: tuned encoder + head, no decoder
    a, b = _state(base), _state(out)
    assert {k for k in b if not k.startswith("head.")} == {k for k in a if k.startswith("encoder.")}
    assert any(k.startswith("head.") for k in b)
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("encoder."))
    info = json.loads((out / "model" / "config.json").read_text())
    assert info["kind"] == "classifier" and info["adaptation"]["method"] == "supervised"
    # audiofm.load embeds with the tuned encoder, exactly like the training-time pooling
    wave = tone(0.6, freq=600.0)
    emb = audiofm.load(out)
    clip = emb.embed(wave, 16000).clip
    assert clip.shape == (64,) and not np.allclose(clip, audiofm.load(base).embed(wave, 16000).clip)
    with torch.inference_mode():
        ref = emb.encoder.clip_embedding(torch.from_numpy(wave)[None])[0].numpy()
    np.testing.assert_allclose(clip, ref, rtol=1e-5, atol=1e-5)
    p = emb.predict(tone(0.6, freq=900.0), 16000)  # audiofm.load gives the classifier
    assert emb.vocabulary == ["a", "b", "c"] and p.shape == (3,) and p.sum() == pytest.approx(1.0, abs=1e-5)
    with torch.inference_mode():
        direct = emb.head(torch.from_numpy(emb.embed(tone(0.6, freq=900.0), 16000).clip)[None]).softmax(1)[0]
    np.testing.assert_allclose(p, direct.numpy(), rtol=1e-5, atol=1e-6)

    # dual-probe report, base vs tuned
    rep = tmp_path / "rep"
    assert main(["adapt-report", str(base), str(out), "--task", str(task), "--out", str(rep), "--no-progress"]) == 0
    r = json.loads((rep / "report.json").read_text())
    assert [x["model"] for x in r["results"]] == ["base", "tuned"] and (rep / "projection.png").stat().st_size > 0
    assert all(-1 <= x["inter_cosine"] <= x["intra_cosine"] + 1 and x["rankme"] >= 1 for x in r["results"])
    assert main(["adapt-report", str(base), str(out), "--task", str(task), "--out", str(rep), "--no-progress"]) == 2
    assert main(["adapt-report", str(base), str(out), "--task", str(task), "--out", str(rep), "--overwrite",
                 "--no-progress"]) == 0
    assert main(["adapt-report", str(base), str(out), "--task", str(task), "--out", str(out / "model"),
                 "--overwrite", "--no-progress"]) == 2  # never over an input checkpoint


def test_frozen_blocks_and_layer_decay(setup, tmp_path):
    task, base = setup
    out = tmp_path / "frozen"
    cfg = _cfg(base, task, freeze_blocks=1, freeze_patch_embed=True, layer_decay=0.5, evaluate_every_epochs=0,
               train={"max_steps": 3, "warmup_steps": 2, "precision": "bf16"})
    res = finetune(cfg, out, progress=False)
    assert res["probe_C"] in (0.01, 0.1, 1.0, 10.0) and 0 <= res["probe_valid_score"] <= 1  # LP-FT head start
    a, b = _state(base), _state(out)
    frozen = [k for k in a if k.startswith(("encoder.patch_embed.", "encoder.backbone.blocks.0."))]
    trained = [k for k in a if k.startswith(("encoder.backbone.blocks.1.", "encoder.norm."))]
    assert frozen and trained
    assert all(torch.equal(a[k], b[k]) for k in frozen)  # bitwise
    assert all(not torch.equal(a[k], b[k]) for k in trained if "weight" in k)
    # the engine applied lr · lr_scale to every group at the last step
    state = ckpt.load_train_state(next((out / "checkpoints").iterdir()))
    lr_last = lr_at(cfg.train.__class__(**{**vars(cfg.train), "max_steps": 3, "warmup_steps": 2}), 2)
    scales = sorted({g["lr_scale"] for g in state["optimizer"]["param_groups"]})
    assert scales == [0.5, 1.0]  # block 1 and norm/head; block 0 and patch embedding are frozen
    for g in state["optimizer"]["param_groups"]:
        assert g["lr"] == pytest.approx(lr_last * g["lr_scale"])

    # expected scales with nothing frozen: decay^(depth + 1 − layer)
    model = audiofm.create_model("msm_vit_debug")
    groups = layerwise_param_groups(AdaptModel(model.encoder, ClassifierHead(64, 3)), 0.05, 0.5)
    by_name = {n: g["lr_scale"] for g in groups for n in g["names"]}
    assert by_name["encoder.patch_embed.weight"] == 0.125
    assert {v for k, v in by_name.items() if k.startswith("encoder.backbone.blocks.0.")} == {0.25}
    assert {v for k, v in by_name.items() if k.startswith("encoder.backbone.blocks.1.")} == {0.5}
    assert by_name["encoder.norm.weight"] == by_name["head.fc.weight"] == 1.0
    assert all(g["weight_decay"] == 0.0 for g in groups if all(p.ndim < 2 for p in g["params"]))


def test_early_stopping_keeps_best(setup, tmp_path):
    task, base = setup
    cfg = _cfg(base, task, epochs=10, evaluate_every_epochs=1, patience=2, keep_start=True, train={"lr": 0.0})
    res = finetune(cfg, tmp_path / "es", progress=False)  # weights never change: no improvement after step 0
    assert res["status"] == "early stopped" and res["steps"] == 6 and res["best_step"] == 0
    assert res["weights"] == "best (step 0)" and res["start_valid_score"] == res["best_valid_score"]
    # by default the start is scored but not eligible: the first trained weights win the tie
    cfg = _cfg(base, task, epochs=10, evaluate_every_epochs=1, patience=2, train={"lr": 0.0})
    res = finetune(cfg, tmp_path / "es2", progress=False)
    assert res["best_step"] == 3 and res["weights"] == "best (step 3)"
    assert res["start_valid_score"] == res["best_valid_score"]


def test_contrastive_multilabel_exact_resume(setup, tmp_path, monkeypatch):
    _, base = setup
    task = make_multilabel_task(tmp_path)
    cfg = _cfg(base, task, method="contrastive", evaluate_every_epochs=1.5,
               train={"max_steps": 6, "ckpt_every": 2, "batch_size": 6}, contrastive={"clips_per_class": 2})
    full = finetune(cfg, tmp_path / "full", progress=False)
    assert full["status"] == "completed" and full["best_step"] is not None
    # an encoder checkpoint: the projection head is dropped, no decoder
    assert set(_state(tmp_path / "full")) == {k for k in _state(base) if k.startswith("encoder.")}
    assert json.loads((tmp_path / "full" / "model" / "config.json").read_text())["kind"] == "encoder"

    with crash_after_checkpoint(monkeypatch, step=4):
        finetune(cfg, tmp_path / "resumed", progress=False)
    assert not (tmp_path / "resumed" / "finetune.json").exists() and not (tmp_path / "resumed" / "model").exists()
    res = finetune(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert res["best_step"] == full["best_step"] and res["best_valid_score"] == full["best_valid_score"]
    m_full = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    m_res = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if k not in ("clips_per_s", "elapsed_s")}
                           for x in lines]
    assert strip(m_full) == strip(m_res)
    a, b = _state(tmp_path / "full"), _state(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)


# every backbone fine-tunes (also after embedding under inference_mode: the Mamba scan's
# cached workspace must not leak inference tensors into training)
@pytest.mark.parametrize("preset", ["msm_mamba_debug", "msm_xlstm_debug"])
def test_other_backbones(setup, tmp_path, preset):
    task, _ = setup
    cfg = _cfg(preset, task, evaluate_every_epochs=0, freeze_blocks=1, layer_decay=0.8,
               train={"max_steps": 2}, augment={"crop_seconds": 0.5}, supervised={"head_init": "random"})
    res = finetune(cfg, tmp_path / preset, progress=False)
    assert res["status"] == "completed"
    assert audiofm.load(tmp_path / preset).embed(tone(0.6), 16000).clip.shape == (64,)


def test_cli_errors_are_one_line(setup, tmp_path, capsys):
    task, base = setup
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("keep")
    args = ["finetune", "--model", str(base), "--task", str(task), "--no-progress", "--max-steps", "1"]
    assert main([*args, "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and (taken / "x").read_text() == "keep"
    assert main(["finetune", "--model", str(base), "--task", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a HEAR task directory" in err and not (tmp_path / "o").exists()
    assert main([*args, "--fold", "7", "--out", str(tmp_path / "o")]) == 2
    assert "round" in capsys.readouterr().err
    assert main([*args, "--epochs", "2", "--out", str(tmp_path / "o")]) == 2
    assert "not both" in capsys.readouterr().err
    assert main([*args, "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert main([*args, "--set", "method=magic", "--out", str(tmp_path / "o")]) == 2
    assert "method" in capsys.readouterr().err
    # the loss couples the batch (batch-statistics heads): accumulation would split it
    assert main([*args, "--set", "train.accum_steps=2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "accum_steps" in err and not (tmp_path / "o").exists()


def test_probe_head_init_is_the_linear_probe_solver(setup, tmp_path):
    """LP-FT: the head starts as the scikit-learn-equivalent logistic regression (the linear
    probe's solver) on the standardised frozen training embeddings, at the chosen C."""
    from sklearn.linear_model import LogisticRegression

    from audiofm.adapt.supervised import SupervisedRecipe
    from audiofm.adapt.tune import load_base
    from audiofm.data import read_hear_task
    from audiofm.data.tasks import pick_round, round_rows

    task_dir, base = setup
    cfg = _cfg(base, task_dir)
    task = read_hear_task(task_dir)
    encoder, spec, _ = load_base(str(base))
    recipe = SupervisedRecipe(cfg, encoder, spec, round_rows(task, pick_round(task, 0)))
    info = recipe.prepare()
    head = recipe.model.head.eval()
    z = recipe.embed(recipe.store)
    with torch.no_grad():
        x = head.norm(torch.from_numpy(z)).double().numpy()
        ours = torch.log_softmax(head.fc(torch.from_numpy(x).float()).double(), 1).numpy()
    y = recipe.y_train.argmax(1)
    ref = LogisticRegression(C=info["probe_C"], tol=1e-10, max_iter=10000).fit(x, y)
    # a nearly separable toy task: the optimum is flat in the far tails, so compare probabilities
    np.testing.assert_allclose(np.exp(ours), ref.predict_proba(x), atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["contrastive", "supervised"])
def test_two_processes_equal_one(setup, tmp_path, method):
    """Batch-coupled losses (SupCon, batch-statistics heads, mixup pairs) under DDP: 2 gloo
    processes with the same global batch train exactly what 1 process does."""
    import os
    import subprocess
    import sys

    task, base = setup
    common = ["finetune", "--model", str(base), "--task", str(task), "--method", method, "--max-steps", "3",
              "--batch-size", "8", "--lr", "1e-3", "--no-progress", "--set", "train.warmup_steps=1",
              "--set", "train.log_every=1", "--set", "evaluate_every_epochs=0", "--set", "augment.crop_seconds=0.5"]
    if method == "supervised":
        common += ["--set", "supervised.mixup_alpha=0.4", "--set", "supervised.mixup_level=waveform"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(audiofm.__file__).parents[1])}
    one = subprocess.run([sys.executable, "-m", "audiofm.cli", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "audiofm.cli", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    losses = [[json.loads(x)["loss"] for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()
               if '"loss"' in x] for r in ("one", "two")]
    assert len(losses[0]) == 3 and losses[0] == pytest.approx(losses[1], rel=1e-4)
    a, b = _state(tmp_path / "one"), _state(tmp_path / "two")
    assert set(a) == set(b)
    diffs = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    assert diffs.mean() < 1e-6
    # Two kinds of weights have an exactly zero true gradient, so Adam's normalised steps follow
    # float noise (which differs with the reduction order) there: the final norm's bias (the head
    # standardises the batch, cancelling any common shift) and the attention key bias (a constant
    # added to every logit of a softmax row); the head's running mean follows the former.
    # Everything else agrees far below one step (lr 1e-3).
    def signal(k: str, t: torch.Tensor) -> torch.Tensor:
        if k in ("encoder.norm.bias", "head.norm.running_mean"):
            return t[:0]
        if k.endswith("attn.qkv.bias"):
            q, _, v = t.chunk(3)
            return torch.cat([q, v])
        return t.flatten()

    assert torch.cat([signal(k, a[k] - b[k]).abs() for k in a]).max() < 1e-4


def test_heads_standardise_and_projection_is_centred():
    from audiofm.models.heads import ProjectionHead, Standardize

    rng = np.random.default_rng(1)
    z = rng.normal(loc=5.0, scale=[0.1, 1.0, 30.0], size=(200, 3))  # BN eps=1e-5 damps std ≪ 0.03
    norm = Standardize(3)
    norm.set(z)
    norm.eval()  # running statistics = those of the frozen training embeddings
    out = norm(torch.from_numpy(z)).double().numpy()
    np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-3)  # float32 inside
    np.testing.assert_allclose(out.std(0), 1.0, atol=1e-2)
    head = ProjectionHead(3, 8, 4).train()
    p = head(torch.from_numpy(z).float() + 100.0)  # a common shift is cancelled by batch statistics
    np.testing.assert_allclose(p.mean(0).detach().numpy(), 0.0, atol=1e-5)
    assert p.std(0).min() > 0.5  # not collapsed to a single point


def test_cli_resume_continues_with_saved_settings(setup, tmp_path, monkeypatch, capsys):
    """``finetune --resume`` alone continues the saved run (epochs-derived schedule, head init,
    lr); a changed option is refused with the difference; an allowed one is recorded."""
    task, base = setup
    args = ["finetune", "--model", str(base), "--task", str(task), "--epochs", "1.5", "--batch-size", "6",
            "--lr", "1e-3", "--no-progress", "--set", "train.ckpt_every=2", "--set", "train.log_every=1",
            "--set", "evaluate_every_epochs=0"]
    full, run = tmp_path / "full", tmp_path / "run"
    assert main([*args, "--out", str(full)]) == 0
    with crash_after_checkpoint(monkeypatch, step=2):
        main([*args, "--out", str(run)])
    capsys.readouterr()
    assert main(["finetune", "--out", str(run), "--resume", "--lr", "0.01", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "train.lr: 0.001 → 0.01" in err and "--allow-change train.lr" in err and err.count("\n") == 1
    assert main(["finetune", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert json.loads((run / "finetune.json").read_text())["steps"] == json.loads(
        (full / "finetune.json").read_text())["steps"]
    a, b = _state(full), _state(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a finished run is never resumed or overwritten
    assert main(["finetune", "--out", str(run), "--resume", "--no-progress"]) == 2
    assert "finished fine-tuning run" in capsys.readouterr().err


def test_resume_records_an_allowed_change(setup, tmp_path, monkeypatch):
    import yaml

    from audiofm.train.engine import RunDirError

    task, base = setup
    cfg = _cfg(base, task, evaluate_every_epochs=0, train={"max_steps": 4, "ckpt_every": 2})
    import audiofm.train.engine as eng

    orig = eng.Engine.save

    def save_then_stop(self, optimizer, final=False):
        out = orig(self, optimizer, final)
        if self.step == 2 and not final:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(eng.Engine, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg, tmp_path / "r", progress=False)
    monkeypatch.setattr(eng.Engine, "save", orig)
    longer = _cfg(base, task, evaluate_every_epochs=0, train={"max_steps": 6, "ckpt_every": 2})
    with pytest.raises(RunDirError, match=r"train\.max_steps: 4 → 6"):
        finetune(longer, tmp_path / "r", resume=True, progress=False)
    res = finetune(longer, tmp_path / "r", resume=True, progress=False, allow_change=["train.max_steps"])
    assert res["steps"] == 6
    saved = yaml.safe_load((tmp_path / "r" / "run_config.yaml").read_text())
    assert saved["train"]["max_steps"] == 6
    assert saved["history"][0]["step"] == 2
    assert saved["history"][0]["changes"]["train.max_steps"] == {"saved": 4, "given": 6}
