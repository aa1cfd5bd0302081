# driftline: the two README commands (demo, test) and the checks.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test system-packages lint typecheck check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Run the whole service on the embedded broker and SQLite; show drift and a delivered trigger.
demo: $(STAMP)
	$(BIN)/driftline demo

## Install and run the whole test suite (and, as root, the Debian packages it runs).
test: system-packages $(STAMP)
	$(BIN)/python -m pytest

## Prometheus, Alertmanager and docker-compose for the config checks and the alerting test.
system-packages:
	@bash .ci/system-packages

lint: $(STAMP)
	$(BIN)/ruff check driftline tests bench
	$(BIN)/ruff format --check driftline tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

## Benchmarks (each prints its figures and the machine): one window evaluation, the cost of
## all-or-nothing processing, detection latency, worker memory, end-to-end throughput
## against plain Faust and raw aiokafka, and 2 workers against 1 on 4 partitions.
bench: $(STAMP)
	$(BIN)/python bench/window_eval.py
	$(BIN)/python bench/all_or_nothing.py
	$(BIN)/python bench/latency.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/scale_out.py

clean:
	rm -rf $(VENV) .driftline driftline.db .pytest_cache .mypy_cache .ruff_cache
