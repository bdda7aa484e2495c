# The README's commands. Everything installs what it needs on a fresh Debian/Ubuntu machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test setup services-up services-down lint bench clean

## demo: broker + database + service + simulated plant, with the live dashboard (Ctrl-C stops all)
demo: setup
	$(BIN)/cems demo

## test: the whole test suite (unit, property, integration on real mosquitto and InfluxDB)
test: setup
	$(PY) cems/localservices.py install
	$(BIN)/ruff check .
	$(BIN)/pytest
	NUMBA_DISABLE_JIT=1 $(BIN)/pytest -q tests/compute

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

## services-up / services-down: mosquitto and InfluxDB on 127.0.0.1:1883 / :8086, data in var/services
services-up:
	deploy/services start
services-down:
	deploy/services stop

lint: setup
	$(BIN)/ruff check .

## bench: the kernel benchmark (numba vs plain NumPy vs pandas), readings/s
bench: setup
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python -m bench

## bench-e2e: the end-to-end benchmark, mosquitto -> cems serve -> InfluxDB on this machine (about 10 min;
## `make bench-e2e ARGS=--quick` for a 2-minute smoke run)
.PHONY: bench-e2e
bench-e2e: setup
	$(BIN)/python -m bench.e2e $(ARGS)

## bench-pipeline: the pipeline alone, in process (no broker, no database), readings/s
.PHONY: bench-pipeline
bench-pipeline: setup
	$(BIN)/python -m bench.pipeline $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
