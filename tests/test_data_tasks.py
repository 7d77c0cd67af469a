"""The one task module: checks, label encodings, round selection and labelled rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_eval_suite import write_task

from audiofm.data import (
    MULTICLASS,
    MULTILABEL,
    DataError,
    LabelledRows,
    Row,
    TaskError,
    check_task,
    encode_labels,
    label_matrix,
    pick_round,
    read_hear_task,
    round_rows,
    select_rounds,
)


def test_encodings() -> None:
    vocab = ["a", "b", "c"]
    rows = [Row("x1", labels=["b"]), Row("x2", labels=["a", "c"]), Row("x3", labels=["c"])]
    m = label_matrix(rows, vocab)
    assert m.dtype == np.float32 and m.tolist() == [[0, 1, 0], [1, 0, 1], [0, 0, 1]]
    assert np.array_equal(encode_labels(rows, vocab, MULTILABEL), m)
    single = [rows[0], rows[2]]
    y = encode_labels(single, vocab, MULTICLASS)
    assert y.dtype == np.int64 and y.tolist() == [1, 2]
    with pytest.raises(TaskError, match="exactly one label"):
        encode_labels(rows, vocab, MULTICLASS)
    with pytest.raises(TaskError, match="not in the vocabulary"):
        label_matrix([Row("x4", labels=["z"])], vocab)
    with pytest.raises(TaskError, match="prediction_type"):
        encode_labels(rows, vocab, "regression")


def test_check_task_errors_are_task_errors(tmp_path: Path) -> None:
    task = read_hear_task(write_task(tmp_path, "ml", multilabel=True, labels=("a", "b", "c")))
    check_task(task)
    meta = task.metadata | {"prediction_type": "multiclass"}
    (task.root / "task_metadata.json").write_text(json.dumps(meta))
    with pytest.raises(TaskError, match="multiclass task but"):
        check_task(read_hear_task(task.root))
    (task.root / "task_metadata.json").write_text(json.dumps(meta | {"prediction_type": "regression"}))
    with pytest.raises(TaskError, match="not supported"):
        check_task(read_hear_task(task.root))
    assert issubclass(TaskError, DataError)


def test_rounds_and_labelled_rows(tmp_path: Path) -> None:
    task = read_hear_task(write_task(tmp_path, "kf", folds=4, per_class=2))
    rounds = task.rounds()
    assert pick_round(task, 1) is not None and pick_round(task, 1).name == "fold01"
    with pytest.raises(TaskError, match=r"0\.\.3"):
        pick_round(task, 4)
    with pytest.raises(TaskError, match="max-folds"):
        select_rounds(rounds, None, 0)
    lr = round_rows(task, rounds[1])
    assert isinstance(lr, LabelledRows) and (lr.name, lr.round) == ("kf", "fold01")
    assert {r.split for r in lr.test} == {"fold01"} and {r.split for r in lr.valid} == {"fold02"}
    assert {r.split for r in lr.train} == {"fold00", "fold03"}
    assert [r.id for r in lr.train] == [r.id for r in task.rows if r.split in ("fold00", "fold03")]  # task order
    y = lr.labels("test")
    assert y.dtype == np.int64 and [lr.vocabulary[i] for i in y] == [r.labels[0] for r in lr.test]
    assert lr.targets("train").shape == (len(lr.train), 2)
    with pytest.raises(ValueError, match="part"):
        lr.rows("holdout")
    empty = type(rounds[0])("x", ["fold00"], ["nope"], ["fold01"])
    with pytest.raises(TaskError, match="no clips in valid"):
        round_rows(task, empty)


def test_training_splits_leave_out_other_tasks_held_out_audio(tmp_path: Path, capsys) -> None:
    """Tasks cut from one source share clips (fsdd-digit / fsdd-speaker): a clip in one task's
    training fold that is another task's test clip is left out of the pretraining rows."""
    import shutil

    from conftest import make_hear_task

    from audiofm.data import read_rows, select_splits
    from audiofm.train.pretrain import DataConfig, load_rows

    root = tmp_path / "tasks"
    a = make_hear_task(root, "a", folds=3, per_class=2)
    b = root / "b"
    shutil.copytree(a, b)
    meta = json.loads((b / "task_metadata.json").read_text())
    (b / "task_metadata.json").write_text(json.dumps({**meta, "task_name": "b"}))
    folds = {f: json.loads((b / f"{f}.json").read_text()) for f in ("fold00", "fold02")}
    moved = sorted(folds["fold00"])[0]  # task a's test clip becomes a training clip of b
    shutil.move(b / "16000" / "fold00" / moved, b / "16000" / "fold02" / moved)
    folds["fold02"][moved] = folds["fold00"].pop(moved)
    for f, entries in folds.items():
        (b / f"{f}.json").write_text(json.dumps(entries))

    left: list = []
    rows = read_rows(root, ["fold02"], left_out=left)
    assert [r.id for r in left] == [f"b/fold02/{moved}"]
    assert len(rows) == 2 * 4 and all(r.split == "fold02" for r in rows)  # 4 clips per fold and task
    assert f"b/fold02/{moved}" not in {r.id for r in rows}
    assert len(read_rows(root)) == 2 * 12  # no selection: every row
    # one task alone has no other task's clips to leave out
    assert len(read_rows(b, ["fold02"])) == 5
    kept, out = select_splits(read_rows(root), ["fold01"], "x")
    assert len(kept) == 8 and out == []
    with pytest.raises(DataError, match="no rows in split"):
        select_splits(read_rows(root), ["fold09"], "x")
    assert len(load_rows(DataConfig(source=str(root), splits=["fold02"]))) == 8
    assert "left out 1 clips of fold02 whose audio is also in another split" in capsys.readouterr().out
