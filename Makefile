# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Each creates .venv from nothing. torch==2.13.0 is installed first: a loose torch requirement
# would otherwise pull a multi-GB CUDA build.
# The browser test of `audiofm serve` also needs Debian's chromium + chromium-driver (not pip
# packages): .ci/run installs them when missing (apt-get install -y --no-install-recommends chromium
# chromium-driver); without them that test is skipped locally and fails in CI (CI set).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements-peers.txt 2>/dev/null | cksum | cut -d' ' -f1)

.PHONY: setup demo test lint typecheck unit clean

setup: $(STAMP)

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps -r requirements-peers.txt
	rm -f $(VENV)/.installed-*
	touch $@

demo: setup
	$(BIN)/audiofm demo --out demo_run

lint: setup
	$(BIN)/ruff check src tests benchmarks

typecheck: setup
	$(BIN)/mypy src/audiofm

unit: setup
	$(BIN)/python -m pytest -q

test: lint typecheck unit

clean:
	rm -rf $(VENV) demo_run .pytest_cache .mypy_cache .ruff_cache
