# Every target creates .venv if needed and installs the pinned versions first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export TMIV_HOME ?= $(CURDIR)/.tmiv
export TMIV_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(TMIV_HOME)/dagster
# MLflow's own default is ./mlflow.db in the working directory; point its CLI at the platform's store.
export MLFLOW_TRACKING_URI ?= sqlite:///$(TMIV_HOME)/mlflow/mlflow.db

# torch's CPU build goes in first, or a dependency pulls GBs of CUDA: from pip's configured sources where they have
# it (local wheels here; its dependencies from the registry), else from TORCH_INDEX (PyTorch's CPU index by default;
# name a mirror here).
TORCH_VERSION ?= 2.13.0+cpu
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: install demo test ui mlflow-ui instance benchmarks clean python-version browser servers

install: $(VENV)/.installed

python-version:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || { \
	  echo "tmiv_assets needs Python 3.11 (the pinned torch, numba and dagster wheels); '$(PYTHON)' is" \
	  "$$($(PYTHON) --version 2>&1 | head -1). Run e.g. 'make PYTHON=python3.11 demo'."; exit 1; }

$(VENV)/.installed: pyproject.toml constraints.txt | python-version
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)" 2>/dev/null || \
	  $(BIN)/pip install --quiet --index-url $(TORCH_INDEX) --extra-index-url https://pypi.org/simple \
	  "torch==$(TORCH_VERSION)"
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

# PROFILE=postgres takes the instance settings of the PostgreSQL profile (deploy/postgres; README "Scaling out").
PROFILE ?= default
INSTANCE_FILE := $(if $(filter postgres,$(PROFILE)),deploy/postgres/dagster.yaml,dagster.yaml)

instance: install
	mkdir -p $(DAGSTER_HOME)
	cp $(INSTANCE_FILE) $(DAGSTER_HOME)/dagster.yaml

# Debian's Chromium, which the browser test of the Dagster UI drives through Playwright (no browser download).
browser:
	command -v chromium >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

# Debian's PostgreSQL and Redis servers, which the scale-out test starts on loopback (no service is enabled).
servers:
	command -v redis-server >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  postgresql redis-server; }

demo: instance
	$(BIN)/python -m tmiv_assets.demo

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest -n 2 --dist loadfile --durations=10

# From DAGSTER_HOME: `dagster dev` then reads the instance file there, not the template at the project root.
ui: instance
	cd $(DAGSTER_HOME) && $(CURDIR)/$(BIN)/dagster dev -w $(CURDIR)/workspace.yaml -h 127.0.0.1 -p 3000

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) -h 127.0.0.1 -p 5000

benchmarks: install
	$(BIN)/python benchmarks/feature_store.py
	$(BIN)/python benchmarks/automl.py --budgets 30,60
	$(BIN)/python benchmarks/automl.py --budgets 30 --busy-core
	$(BIN)/python benchmarks/drift.py --rows 1000000
	$(BIN)/python benchmarks/monitoring_replay.py
	$(BIN)/python benchmarks/explain.py

clean:
	rm -rf $(TMIV_HOME)
