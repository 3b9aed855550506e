# One entry point per job; every target creates .venv first if it is missing or stale.
SHELL       := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# DVC stages run whatever `python` is on PATH: make it the project's.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export RAY_AUTH_MODE := disabled
export RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# This machine's pip configuration names local indexes that may be absent; not an error.
PIP_NOISE := is ignored: it is neither

.PHONY: setup demo test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip 2>&1 | { grep -v "$(PIP_NOISE)" || true; }
	$(PYTHON) -m pip install --quiet -e '.[test]' 2>&1 | { grep -v "$(PIP_NOISE)" || true; }
	$(PYTHON) -c "import dml, torch, ray, faiss, dvc"
	touch $(STAMP)

demo: setup
	dvc repro
	dml report

test: setup
	$(PYTHON) -m pytest -q

test-fast: setup
	$(PYTHON) -m pytest -q -m "not slow"

bench: setup
	$(PYTHON) benchmarks/bench_evaluate.py
	$(PYTHON) benchmarks/bench_train.py

clean:
	rm -rf .scratch
