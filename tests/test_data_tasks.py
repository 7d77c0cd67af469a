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
