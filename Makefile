# The two commands a new user runs: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0

.PHONY: demo test setup lint bench peers clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch would resolve to a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/benchmint demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

# helpers the benchmarks start or import (servers, parsers), and peers.py (installs ~3.5 GB of other tools:
# run it on purpose with `make peers`) are not benchmarks of their own
BENCH_HELPERS := benchmarks/heldout_workloads.py benchmarks/mock_openai_server.py benchmarks/peers_parse.py benchmarks/peers.py

bench: $(STAMP)
	for f in $(filter-out $(BENCH_HELPERS),$(wildcard benchmarks/*.py)); do echo "== $$f"; $(BIN)/python $$f || exit 1; done

peers: $(STAMP)
	$(BIN)/python benchmarks/peers.py

clean:
	rm -rf $(VENV) benchmint-results demo-out
