# The README's front door: `make demo` and `make test` work on a fresh machine with nothing done first.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON      ?= $(shell devtools/find-python.sh)
VENV        := .venv
TOOLS_VENV  := .venv-tools
VPY         := $(VENV)/bin/python
PIP_FLAGS   := --quiet --disable-pip-version-check
# One line per step: a step's output (pip's) is shown only when it fails.
define step
	@echo "   $(1)"; log=$$(mktemp); if ! { $(2); } >"$$log" 2>&1; then cat "$$log"; \
	    rm -f "$$log"; echo "== failed: $(1)" >&2; exit 1; fi; rm -f "$$log"
endef
# sam/cfn-lint run offline: a region and dummy credentials are all they need.
AWS_OFFLINE := AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing \
               AWS_SECRET_ACCESS_KEY=testing SAM_CLI_TELEMETRY=0

.PHONY: help venv tools lint typecheck template unit integration e2e pytest test demo sandbox clean

help:
	@echo "make demo      run the main job locally (sandbox + embedded AWS), nothing to set up"
	@echo "make e2e       only the end-to-end tests (the whole pipeline through the local runner)"
	@echo "make reliability  1,000 seeded fault-injection runs; figures and violations (~30 min)"
	@echo "make test      lint, type-check, validate the template and run every test"
	@echo "make sandbox   run the Certiverse sandbox on http://127.0.0.1:8080/api (token: sandbox-token)"
	@echo "make bench     benchmarks (API calls, cold start, memory, writes, e2e): see BENCHMARKS.md"
	@echo "make build     sam build (no Docker) into .aws-sam/build; make build-check inspects it"
	@echo "make scan      checkov security scan of template.yaml"
	@echo "make clean     remove the virtual environments and build output"

$(VENV)/.installed: requirements-dev.txt layers/common/requirements.txt pyproject.toml
	@echo "== project venv ($(PYTHON))"
	@rm -rf $(VENV)
	$(call step,python -m venv $(VENV),$(PYTHON) -m venv $(VENV))
	$(call step,pip install --upgrade pip,$(VPY) -m pip install $(PIP_FLAGS) --upgrade pip)
	$(call step,pip install -r requirements-dev.txt,$(VPY) -m pip install $(PIP_FLAGS) -r requirements-dev.txt)
	$(call step,pip install -e . (the project),$(VPY) -m pip install $(PIP_FLAGS) --no-deps -e .)
	@touch $@

$(TOOLS_VENV)/.installed: requirements-tools.txt
	@echo "== tools venv (aws-sam-cli, cfn-lint)"
	@rm -rf $(TOOLS_VENV)
	$(call step,python -m venv $(TOOLS_VENV),$(PYTHON) -m venv $(TOOLS_VENV))
	$(call step,pip install --upgrade pip,$(TOOLS_VENV)/bin/python -m pip install $(PIP_FLAGS) --upgrade pip)
	$(call step,pip install -r requirements-tools.txt,$(TOOLS_VENV)/bin/python -m pip install $(PIP_FLAGS) -r requirements-tools.txt)
	@touch $@

venv: $(VENV)/.installed
tools: $(TOOLS_VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

template: tools
	$(AWS_OFFLINE) $(TOOLS_VENV)/bin/sam validate --template template.yaml
	$(AWS_OFFLINE) $(TOOLS_VENV)/bin/sam validate --lint --template template.yaml
	$(AWS_OFFLINE) $(TOOLS_VENV)/bin/cfn-lint template.yaml

# The suite runs in parallel (pytest-xdist) on three workers on the 2-core machines. Measured on
# a fresh clone on an idle 2-core machine: the whole pytest took 720 s with -n auto (2 workers)
# and 549 s with -n 3, the same 1,220 tests: much of each test is waiting on loopback HTTP
# (moto's server, the sandbox, the local callbacks), so a third worker fills the cores. (On a
# busy shared machine an earlier round found 4 slower than 2; another, slower 2-core machine
# took 830 s with -n 3.) --dist loadgroup keeps each
# xdist_group on one worker: a module whose tests share a stack (tests/conftest.py), the
# fault-injection seeds' harnesses.
# `make unit` stays serial: it is seconds, and a worker's start costs more than it saves.
PYTEST_WORKERS ?= 3
XDIST := -n $(PYTEST_WORKERS) --dist loadgroup

unit: venv
	$(VPY) -m pytest tests/unit -q
integration: venv
	$(VPY) -m pytest tests/integration -q $(XDIST)
e2e: venv
	$(VPY) -m pytest tests/e2e -q $(XDIST)

# >=1,000 seeded fault-injection runs through the whole local pipeline (make test runs a seeded
# share of 30); prints the figures table, ending "runs: N, faults: F, violations: V".
RELIABILITY_RUNS ?= 1000
RELIABILITY_WORKERS ?= 3
.PHONY: reliability
reliability: venv
	$(VPY) -m tests.reliability.run --runs $(RELIABILITY_RUNS) --workers $(RELIABILITY_WORKERS) \
	    --out local-results/reliability

# --durations: CI's log names the 25 slowest tests, the ones to look at when the loop slows.
pytest: venv
	$(VPY) -m pytest -q $(XDIST) --durations=25

# On a fresh machine most of `make test` before the tests is pip and single-threaded checkers:
# the three venvs install side by side (mostly downloads), then the static checks run two at a
# time (one per core; each one's output kept together), then the suite on every core.
test:
	@$(MAKE) --no-print-directory -j3 venv tools $(SCAN_VENV)/.installed
	@$(MAKE) --no-print-directory -j2 --output-sync=target lint typecheck template scan build-check
	@$(MAKE) --no-print-directory pytest

# The main job on the embedded local default: events/sample-recipients.csv (2,500 rows, two
# programs, some bad rows) through the whole pipeline; results land in local-results/.
demo: venv
	@echo "== local run events/sample-recipients.csv --partner 'Acme Corp' (each code mailed: local-results/mail/*.eml)"
	@$(VENV)/bin/voucher-distributor local run events/sample-recipients.csv \
	    --partner "Acme Corp" --out local-results
	@echo "== email preview --template events/sample-template/de --row events/sample-recipients.csv:2 (the German sample template, offline: local-results/preview/preview.eml)"
	@$(VENV)/bin/voucher-distributor email preview --template events/sample-template/de \
	    --row events/sample-recipients.csv:2 --partner "Acme Corp" --out local-results/preview

sandbox: venv
	$(VENV)/bin/voucher-distributor sandbox --port 8080

# Benchmarks (not part of `make test`): prints a table, writes bench-results.json. ~10 min on 2 cores.
.PHONY: bench
bench: venv
	$(VPY) -m bench

# ---- deploy artifact and template scan (issue 4)
SCAN_VENV   := .venv-scan
BUILD_DIR   := .aws-sam/build
# sam build needs an interpreter of the functions' runtime (python3.12) on PATH, no Docker.
BUILD_PATH  := $(dir $(PYTHON)):$(PATH)

$(SCAN_VENV)/.installed: requirements-scan.txt
	@echo "== scan venv (checkov)"
	@rm -rf $(SCAN_VENV)
	$(call step,python -m venv $(SCAN_VENV),$(PYTHON) -m venv $(SCAN_VENV))
	$(call step,pip install -r requirements-scan.txt,$(SCAN_VENV)/bin/python -m pip install $(PIP_FLAGS) -r requirements-scan.txt)
	@touch $@

.PHONY: scan build build-check
# Security scan of template.yaml; accepted findings are skipped in the template with a reason.
scan: $(SCAN_VENV)/.installed
	$(SCAN_VENV)/bin/checkov --file template.yaml --framework cloudformation --quiet --compact \
	    --skip-download

# `sam build` without Docker: the layer's Makefile fetches aarch64/CPython 3.12 wheels and
# compiles .pyc with Python 3.12; build-check inspects the artifact and imports every handler.
build: tools
	PATH="$(BUILD_PATH)" $(AWS_OFFLINE) $(TOOLS_VENV)/bin/sam build --template template.yaml \
	    --build-dir $(BUILD_DIR)
build-check: build venv
	$(VPY) devtools/check_build.py $(BUILD_DIR) --template template.yaml

clean:
	rm -rf $(VENV) $(TOOLS_VENV) $(SCAN_VENV) .aws-sam .mypy_cache .pytest_cache .ruff_cache local-results
