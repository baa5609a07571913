# distillkit: `make demo` and `make test` install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= outputs/demo
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install demo test test-all lint format clean reproduce-table bench

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,launchers,hpo,dashboard]"
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install distillkit (editable) with the pinned, tested set

demo: $(STAMP) ## Distil digits offline: DM vs random subset at IPC 1 and 10 (a few CPU minutes)
	rm -rf $(DEMO_DIR)
	$(VENV)/bin/distillkit -m experiment=demo method=random,dm ipc=1,10 hydra.sweep.dir=$(DEMO_DIR)
	$(VENV)/bin/distillkit-summary $(DEMO_DIR)

test: $(STAMP) ## Run the fast tests
	$(PY) -m pytest -q --durations=15 $(PYTEST_ARGS)

test-all: $(STAMP) ## Run every test, the slow ones too
	$(PY) -m pytest -q -m "slow or not slow" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check distillkit tests experiments benchmarks
	$(VENV)/bin/ruff format --check distillkit tests experiments benchmarks

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix distillkit tests experiments benchmarks
	$(VENV)/bin/ruff format distillkit tests experiments benchmarks

TABLE ?= fyi
SCALE ?= paper
LAUNCHER ?= basic
ARGS ?=
reproduce-table: $(STAMP) ## Run a paper table's sweep and render results/<TABLE>.md (TABLE= SCALE=paper|smoke LAUNCHER=basic|joblib|submitit_local|submitit_slurm ARGS="dry_run=true protocol=...")
	$(PY) -m distillkit.tables.reproduce table=$(TABLE) scale=$(SCALE) launcher=$(LAUNCHER) $(ARGS)

bench: $(STAMP) ## Run the CPU/GPU benchmarks; medians and ratios, JSON under benchmarks/results/
	$(PY) benchmarks/run_all.py

clean: ## Remove outputs (keeps .venv)
	rm -rf outputs multirun .pytest_cache
