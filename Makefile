# The two README commands: `make run` and `make test`. Both make .venv when it is missing.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mlcycle-installed
# checkov, for the chart test, in an environment of its own (constraints-scan.txt says why).
SCAN_STAMP := .venv-scan/.installed

.PHONY: install scan-env run test test-fast lint docs clean

install: $(STAMP)

# torch goes first, alone and pinned, so pip takes the local CPU wheel rather than a
# multi-GB CUDA build; constraints.txt locks everything else.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/mlcycle run --config examples/support_tickets.yaml --summary-json .mlcycle/summary.json

$(SCAN_STAMP): constraints-scan.txt
	@test -x .venv-scan/bin/python || $(PYTHON) -m venv .venv-scan || python3 -m venv .venv-scan
	.venv-scan/bin/python -m pip install -q -c constraints-scan.txt checkov
	@touch $(SCAN_STAMP)

scan-env: $(SCAN_STAMP)

test: $(STAMP) $(SCAN_STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The configuration reference, from the settings model (a test checks it is current).
docs: $(STAMP)
	$(BIN)/mlcycle config reference --out docs/configuration.md

clean:
	-$(BIN)/mlcycle serve --stop
	rm -rf .mlcycle
