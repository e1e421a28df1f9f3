# Every target creates .venv if needed and installs the pinned versions first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export TMIV_HOME ?= $(CURDIR)/.tmiv
export TMIV_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(TMIV_HOME)/dagster
# MLflow's own default is ./mlflow.db in the working directory; point its CLI at the platform's store.
export MLFLOW_TRACKING_URI ?= sqlite:///$(TMIV_HOME)/mlflow/mlflow.db

.PHONY: install demo test ui mlflow-ui instance benchmarks clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch from local disk first; otherwise a dependency pulls GBs of CUDA.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

instance: install
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: instance
	$(BIN)/python -m tmiv_assets.demo

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest -n 2 --dist loadfile --durations=10

ui: instance
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

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
