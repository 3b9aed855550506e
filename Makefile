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

# uv installs the pinned stack in well under a minute where pip takes about three. It does
# not read pip's configuration, so the indexes, find-links and constraint file that pip is
# configured with here are handed to it; pip is the fallback. Bytecode is compiled at install
# (as pip does): where PYTHONDONTWRITEBYTECODE is set, every process (each stage, each Ray
# worker) would otherwise compile torch and Ray from source, doubling its start-up.
define PIP_TO_UV
import shlex, sys
flags = {"extra-index-url": "--extra-index-url", "index-url": "--index-url",
         "find-links": "--find-links", "constraint": "--constraint"}
out = ["--index-strategy", "unsafe-best-match"]
for line in sys.stdin:
    key, _, value = line.strip().partition("=")
    name = key.rsplit(".", 1)[-1]
    if name in flags:
        for item in shlex.split(value)[0].split() if value else []:
            out += [flags[name], item]
print(" ".join(shlex.quote(o) for o in out))
endef
export PIP_TO_UV

.PHONY: setup demo test test-fast bench clean system-packages

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip uv 2>&1 | { grep -v "$(PIP_NOISE)" || true; }
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PYTHON) -e '.[test]' \
	    $$(python3 -m pip config list 2>/dev/null | python3 -c "$$PIP_TO_UV") \
	  || $(PYTHON) -m pip install --quiet -e '.[test]' 2>&1 | { grep -v "$(PIP_NOISE)" || true; }
	$(PYTHON) -c "import dml, torch, ray, faiss, dvc"
	touch $(STAMP)

# The stages fork from one warm interpreter (dml/pipeline/warm.py): no stage pays for importing torch.
demo: setup
	dml run -- dvc repro --quiet
	dml report

# The playing-card set's builder (benchmarks/real_sets/cards.py) renders SVG decks with
# rsvg-convert (Debian's librsvg2-bin); the browse page's test drives Debian's chromium through
# its chromedriver. Installed here where missing (as root).
system-packages:
	@command -v rsvg-convert >/dev/null && command -v chromedriver >/dev/null || { apt-get update -qq \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq librsvg2-bin chromium chromium-driver >/dev/null; }

test: setup system-packages
	$(PYTHON) -m pytest -q --durations=15

test-fast: setup system-packages
	$(PYTHON) -m pytest -q -m "not slow"

# The peer library the benchmarks measure against comes with the bench extra (never with the library).
bench: setup
	$(VENV)/bin/uv pip install --quiet --python $(PYTHON) -e '.[test,bench]' \
	    $$(python3 -m pip config list 2>/dev/null | python3 -c "$$PIP_TO_UV") \
	  || $(PYTHON) -m pip install --quiet -e '.[test,bench]' 2>&1 | { grep -v "$(PIP_NOISE)" || true; }
	$(PYTHON) benchmarks/bench_evaluate.py --n 20000 --dim 64
	$(PYTHON) benchmarks/bench_evaluate.py --n 100000 --dim 128 --repeats 2 --full 0
	$(PYTHON) benchmarks/bench_losses.py
	$(PYTHON) benchmarks/bench_train.py
	$(PYTHON) benchmarks/bench_pipeline.py
	$(PYTHON) benchmarks/bench_scale.py

clean:
	rm -rf .scratch
