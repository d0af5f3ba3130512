# driftline: two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup stack stack-stop demo test unit bench scoreboard compose-check clean

$(STAMP): requirements.lock requirements-build.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes -r requirements-build.lock
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

setup: $(STAMP)

stack:
	scripts/stack start

stack-stop:
	scripts/stack stop

demo: export DRIFTLINE_SIGNING_KEY ?= demo-only-signing-key-change-me
demo: setup stack
	$(VENV)/bin/driftline demo --config examples/content-filter.yaml

test: setup stack
	$(VENV)/bin/pytest -q -p no:cacheprovider tests

unit: setup
	$(VENV)/bin/pytest -q -p no:cacheprovider tests -m "not integration"

bench: setup stack
	$(PY) loadtest/bench_detectors.py
	$(PY) loadtest/bench_replay.py
	$(PY) loadtest/bench_pipeline.py

scoreboard: setup
	$(PY) loadtest/scoreboard.py --out reports/scoreboard.json

clean:
	scripts/stack reset
	rm -rf $(VENV) reports
