"""The bad-input table (benchmarks/bad_inputs.py): every case through the CLI gives one line on
stderr, exit 2, no traceback and writes nothing; a few cases also as a fresh `python -m audiofm.cli`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bad_inputs.py"


@pytest.fixture(scope="module")
def bad_inputs():
    spec = importlib.util.spec_from_file_location("bad_inputs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bad_inputs"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bad_inputs", None)


def test_every_bad_input_is_one_line_exit_2_and_writes_nothing(bad_inputs, tmp_path: Path) -> None:
    outcomes = bad_inputs.run_cases(ws=tmp_path / "ws")
    failures = {o.case.name: o.problems() for o in outcomes if o.problems()}
    assert not failures, bad_inputs.table(outcomes)
    sections = {o.case.section for o in outcomes}
    assert sections == {"Configuration values", "Input files", "Disk and permissions"}
    assert len(outcomes) == len(bad_inputs.CASES) >= 25


def test_cases_as_fresh_processes(bad_inputs, tmp_path: Path) -> None:
    """The same verdict from `python -m audiofm.cli` itself (fast cases: they fail before torch loads)."""
    picked = [c for c in bad_inputs.CASES if c.name in ("embedding batch size 0", "stats over 0 clips")]
    picked += [c for c in bad_inputs.CASES if c.name == "embed into a read-only folder"]
    outcomes = bad_inputs.run_cases(picked, spawn=True, ws=tmp_path / "ws")
    assert len(outcomes) == 3 and not [o.problems() for o in outcomes if o.problems()], bad_inputs.table(outcomes)
