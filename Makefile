# luigi_pipelines: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# The benchmark's measured commands run in an install of the package alone (what `pip install` gives a user),
# not in .venv, whose test tools (moto's server brings jsonschema, which luigi imports whenever it is installed)
# slow every `luigi` process's start.
BENCH_VENV ?= .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo test test-fast bench lint clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the package with its local, test and dev extras

demo: $(STAMP) ## run the example backfill on a local PostgreSQL and S3 that it starts (and stops) itself
	$(BIN)/luigi-pipelines demo

test: $(STAMP) ## run every test (real PostgreSQL, moto's S3 server, luigid and workers)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## run the tests not marked slow
	$(BIN)/python -m pytest -m 'not slow' $(PYTEST_ARGS)

$(BENCH_STAMP): setup.cfg setup.py
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet '.[parquet]'
	touch $(BENCH_STAMP)

bench: $(STAMP) $(BENCH_STAMP) ## measure load speed and memory against psql \copy and luigi's CopyToTable
	$(BIN)/python -m bench --python $(BENCH_VENV)/bin/python $(BENCH_ARGS)

lint: $(STAMP) ## ruff, mypy and the import layers (import-linter contracts in setup.cfg)
	$(BIN)/ruff check luigi_pipelines tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# -- luigid and its workers (docs/scheduling.md) ----------------------------------------------------------
LUIGID_ADDRESS ?= 127.0.0.1
LUIGID_HOST ?= 127.0.0.1
LUIGID_PORT ?= 8082
LUIGID_DIR ?= .local/luigid
N ?= 2
MODULE ?= luigi_pipelines.pipelines.transactions
TASK ?= LoadTransactions
WORKER_ARGS ?=
.PHONY: scheduler workers

scheduler: $(STAMP) ## run luigid in the foreground (configs/luigid.cfg; LUIGID_ADDRESS=0.0.0.0 to serve other hosts)
	mkdir -p $(LUIGID_DIR)
	LUIGI_CONFIG_PATH=configs/luigid.cfg $(BIN)/luigid --address $(LUIGID_ADDRESS) --port $(LUIGID_PORT) \
		--state-path $(abspath $(LUIGID_DIR))/state.pickle

workers: $(STAMP) ## run N=2 backfill workers on luigid (LUIGID_HOST): DAYS_BACK=7, or START=YYYY-MM-DD [STOP=]
	$(if $(DAYS_BACK)$(START),,$(error give DAYS_BACK=N or START=YYYY-MM-DD [STOP=YYYY-MM-DD]))
	@pids=; for i in $$(seq $(N)); do \
		$(BIN)/luigi-pipelines backfill --module $(MODULE) --task $(TASK) \
			$(if $(DAYS_BACK),--days-back $(DAYS_BACK),--start $(START) $(if $(STOP),--stop $(STOP))) \
			--scheduler-host $(LUIGID_HOST) --scheduler-port $(LUIGID_PORT) $(WORKER_ARGS) & pids="$$pids $$!"; \
	done; rc=0; for p in $$pids; do wait $$p || rc=$$?; done; exit $$rc
