# Two commands matter on a fresh machine: `make stress` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: stress fs-stress test lint bench fs-bench chaos clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(STAMP)

stress: $(STAMP)
	$(BIN)/raft-trio stress --clients 8 --batch 100

# The file system's checklist: 3 metadata members, 3 data nodes, 200 files.
fs-stress: $(STAMP)
	$(BIN)/raft-trio fs-stress --files 200 --clients 8

# 30 s of kills, partitions and pauses under concurrent clients, then the
# linearizability check and a comparison of every member's state.
chaos: $(STAMP)
	$(BIN)/raft-trio chaos --duration 30 --clients 5 --nemesis kill,partition,pause --seed 1

test: $(DEV_STAMP)
	$(BIN)/python -m pytest -q

lint: $(DEV_STAMP)
	$(BIN)/ruff check raft_trio stress tests examples
	$(BIN)/mypy

# The file system's puts, gets, creates and mkdirs against the local disk (256 MiB, 3 rounds).
fs-bench: $(STAMP)
	$(BIN)/python stress/fs_bench.py

bench: $(STAMP)
	$(BIN)/python stress/bench.py
	$(BIN)/python stress/snapbench.py

clean:
	rm -rf $(VENV) build *.egg-info
