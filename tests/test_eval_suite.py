"""Suite plumbing: task discovery, split modes and HEAR fold rotation, label encoding, run rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiofm.config import ConfigError
from audiofm.data import TaskError, read_hear_task
from audiofm.embedding import Embeddings
from audiofm.eval.probes import ProbeConfig
from audiofm.eval.suite import (
    RESULT_FIELDS,
    EmbedderSpec,
    EvalConfig,
    EvalError,
    check_task,
    discover_tasks,
    encode_labels,
    limit_threads,
    round_data,
    run_evaluation,
    select_rounds,
)
from audiofm.outputs import OutputError


@pytest.fixture(autouse=True)
def _one_thread():  # tiny probes run much faster single-threaded on a shared machine
    with limit_threads(1):
        yield


def write_task(root: Path, name: str, *, mode: str = "new_split_kfold", folds: int = 3, per_class: int = 4,
               labels: tuple[str, ...] = ("low", "high"), multilabel: bool = False, sr: int = 16000,
               seconds: float = 0.3) -> Path:
    """A tiny HEAR task: class i is a tone at 300·(i+1) Hz (+ small jitter), lengths vary."""
    task = root / name
    splits = ["train", "valid", "test"] if mode == "trainvaltest" else [f"fold{i:02d}" for i in range(folds)]
    (task / str(sr)).mkdir(parents=True)
    meta = {"task_name": name, "version": "1", "embedding_type": "scene",
            "prediction_type": "multilabel" if multilabel else "multiclass", "split_mode": mode,
            "nfolds": len(splits), "splits": splits, "sample_duration": None,
            "evaluation": ["mAP", "d_prime"] if multilabel else ["top1_acc"]}
    (task / "task_metadata.json").write_text(json.dumps(meta))
    (task / "labelvocabulary.csv").write_text("idx,label\n" + "".join(f"{i},{lab}\n" for i, lab in enumerate(labels)))
    rng = np.random.default_rng(len(name))
    k = 0
    for split in splits:
        (task / str(sr) / split).mkdir()
        entries: dict[str, list[str]] = {}
        for li, lab in enumerate(labels):
            for _ in range(per_class):
                n = int(sr * seconds * (1 + 0.5 * rng.random()))
                t = np.arange(n) / sr
                freqs = [300.0 * (li + 1)]
                labs = [lab]
                if multilabel and rng.random() < 0.5:
                    other = (li + 1) % len(labels)
                    freqs.append(300.0 * (other + 1))
                    labs.append(labels[other])
                wave = sum(0.3 * np.sin(2 * np.pi * f * (1 + 0.02 * rng.standard_normal()) * t) for f in freqs)
                wave = wave + 0.01 * rng.standard_normal(n)
                fname = f"{lab}_{k:03d}.flac"
                k += 1
                sf.write(task / str(sr) / split / fname, np.asarray(wave, dtype=np.float32), sr)
                entries[fname] = labs
        (task / f"{split}.json").write_text(json.dumps(entries))
    return task


class ConstantFake:
    """An embedder mapping each clip to (RMS, length, frequency-ish) features, counting calls."""

    name = "fake"
    sample_rate = 16000
    embed_dim = 3

    def __init__(self) -> None:
        self.calls = 0

    def fingerprint(self) -> str:
        return "fake-v1"

    def embed(self, wave: np.ndarray, sr: int) -> Embeddings:
        return self.embed_batch([wave], sr)[0]

    def embed_batch(self, waves: list[np.ndarray], sr: int) -> list[Embeddings]:
        self.calls += 1
        out = []
        for w in waves:
            zc = float(np.mean(np.abs(np.diff(np.sign(w))) > 0))  # zero-crossing rate ~ frequency
            clip = np.asarray([np.sqrt(np.mean(w**2)), len(w) / sr, zc], dtype=np.float32)
            out.append(Embeddings(clip, clip[None, :], np.asarray([len(w) / sr / 2])))
        return out


def test_kfold_rotation_and_round_arrays(tmp_path: Path) -> None:
    root = write_task(tmp_path, "kf", folds=4, per_class=2)
    task = read_hear_task(root)
    rounds = task.rounds()
    assert [(r.test, r.valid, r.train) for r in rounds] == [
        (["fold00"], ["fold01"], ["fold02", "fold03"]),
        (["fold01"], ["fold02"], ["fold00", "fold03"]),
        (["fold02"], ["fold03"], ["fold00", "fold01"]),
        (["fold03"], ["fold00"], ["fold01", "fold02"]),
    ]
    clip = np.arange(len(task.rows), dtype=np.float32)[:, None]  # embedding = row index
    labels = encode_labels(task.rows, task.vocabulary, task.prediction_type)
    data = round_data(task, clip, labels, rounds[1])
    split_of = [r.split for r in task.rows]
    assert {split_of[int(i)] for i in data.x_test[:, 0]} == {"fold01"}
    assert {split_of[int(i)] for i in data.x_valid[:, 0]} == {"fold02"}
    assert {split_of[int(i)] for i in data.x_train[:, 0]} == {"fold00", "fold03"}
    assert len(data.x_train) + len(data.x_valid) + len(data.x_test) == len(task.rows)
    # labels stay aligned with their rows
    for x, y in zip(data.x_test[:, 0], data.y_test):
        assert task.vocabulary[y] == task.rows[int(x)].labels[0]


def test_trainvaltest_single_round(tmp_path: Path) -> None:
    task = read_hear_task(write_task(tmp_path, "tvt", mode="trainvaltest"))
    (r,) = task.rounds()
    assert (r.train, r.valid, r.test) == (["train"], ["valid"], ["test"])
    data = round_data(task, np.zeros((len(task.rows), 2), np.float32),
                      encode_labels(task.rows, task.vocabulary, "multiclass"), r)
    assert len(data.x_train) == len(data.x_valid) == len(data.x_test) == 8


def test_select_rounds(tmp_path: Path) -> None:
    rounds = read_hear_task(write_task(tmp_path, "kf", folds=5, per_class=1)).rounds()
    assert [r.name for r in select_rounds(rounds, None, 2)] == ["fold00", "fold01"]
    assert [r.name for r in select_rounds(rounds, [4, 1], None)] == ["fold01", "fold04"]
    assert [r.name for r in select_rounds(rounds, [1, 3, 4], 2)] == ["fold01", "fold03"]
    assert [r.name for r in select_rounds(rounds, [4, 7], None)] == ["fold04"]  # 7: not in this task
    with pytest.raises(TaskError, match="selects none"):
        select_rounds(rounds, [5], None)


def test_discover_tasks_and_only(tmp_path: Path) -> None:
    a = write_task(tmp_path, "a", per_class=1)
    write_task(tmp_path, "b", per_class=1)
    assert [p.name for p in discover_tasks(tmp_path)] == ["a", "b"]
    assert discover_tasks(a) == [a]
    assert [p.name for p in discover_tasks(tmp_path, ["b"])] == ["b"]
    with pytest.raises(EvalError, match="not in"):
        discover_tasks(tmp_path, ["c"])
    with pytest.raises(EvalError, match="no HEAR task"):
        discover_tasks(tmp_path / "a" / "16000")


def test_multilabel_encoding_and_unsupported_tasks(tmp_path: Path) -> None:
    task = read_hear_task(write_task(tmp_path, "ml", multilabel=True, labels=("a", "b", "c")))
    y = encode_labels(task.rows, task.vocabulary, "multilabel")
    assert y.shape == (len(task.rows), 3) and set(np.unique(y)) <= {0.0, 1.0}
    assert (y.sum(1) >= 1).all() and (y.sum(1) == 2).any()
    check_task(task)
    meta = task.metadata | {"prediction_type": "multiclass"}
    (task.root / "task_metadata.json").write_text(json.dumps(meta))
    with pytest.raises(TaskError, match="multiclass task but"):
        check_task(read_hear_task(task.root))
    (task.root / "task_metadata.json").write_text(json.dumps(meta | {"embedding_type": "event"}))
    with pytest.raises(TaskError, match="event"):
        check_task(read_hear_task(task.root))


def test_config_validation_and_yaml_dict() -> None:
    with pytest.raises(EvalError, match="unknown probe"):
        EvalConfig(probes=["svm"])
    with pytest.raises(EvalError, match="pooling"):
        EvalConfig(pooling="sum")
    cfg = EvalConfig.from_dict({"seeds": 2, "probe": {"knn": {"k_grid": [1, 3]}, "mlp": {"max_epochs": 5}}})
    assert cfg.probe.knn.k_grid == (1, 3) and cfg.probe.mlp.max_epochs == 5 and cfg.probe.linear.max_iter == 1000
    with pytest.raises(ConfigError, match="unknown key"):
        EvalConfig.from_dict({"probe": {"knn": {"kk": 1}}})


def test_run_rows_per_seed_and_fold(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    write_task(tasks, "kf", folds=3, per_class=4)
    write_task(tasks, "tvt", mode="trainvaltest", per_class=4, labels=("a", "b", "c"), multilabel=True)
    probe = ProbeConfig()
    probe.mlp.max_epochs, probe.mlp.hidden_dim = 15, 32
    cfg = EvalConfig(tasks=str(tasks), out=str(tmp_path / "run"), seeds=2, probe=probe, progress=False,
                     max_folds=2, threads=1)
    fake = ConstantFake()
    res = run_evaluation(cfg, embedders=[EmbedderSpec("fake", fake, {}, "test")])
    # long format, one row per metric value — kf: 2 rounds × 3 probes × 2 seeds × top1_acc;
    # tvt (multilabel): 1 round × 3 probes × 2 seeds × (mAP, d_prime)
    assert len(res.results) == 2 * 3 * 2 + 1 * 3 * 2 * 2
    with (tmp_path / "run" / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(res.results)
    assert list(rows[0]) == RESULT_FIELDS
    kf_lin = [r for r in rows if r["task"] == "kf" and r["method"] == "linear"]
    assert sorted((r["fold"], r["seed"]) for r in kf_lin) == [("fold00", "0"), ("fold00", "1"),
                                                             ("fold01", "0"), ("fold01", "1")]
    for rnd in ("fold00", "fold01"):  # deterministic probe: identical copies per seed
        assert len({r["value"] for r in kf_lin if r["fold"] == rnd}) == 1
    tvt = [r for r in rows if r["task"] == "tvt"]
    assert {r["metric"] for r in tvt} == {"mAP", "d_prime"}
    assert {r["metric"] for r in tvt if r["primary"] == "True"} == {"mAP"}
    assert all(r["value"] and r["valid_value"] for r in tvt)
    # one fit's rows share their metadata
    ml = [r for r in tvt if r["method"] == "mlp" and r["seed"] == "0"]
    assert len(ml) == 2 and ml[0]["hparams"] == ml[1]["hparams"] and ml[0]["fit_seconds"] == ml[1]["fit_seconds"]
    tasks_json = json.loads((tmp_path / "run" / "tasks.json").read_text())
    assert tasks_json["kf"]["fingerprint"]["clips"] == 24
    assert [r["name"] for r in tasks_json["kf"]["rounds"]] == ["fold00", "fold01"]
    assert fake.calls > 0
    with pytest.raises(OutputError, match="already exists and holds"):
        run_evaluation(cfg, embedders=[EmbedderSpec("fake", fake, {}, "test")])
