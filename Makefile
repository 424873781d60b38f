# churnops — the commands the README, CI and people use alike.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
# uv is bootstrapped with pip on a fresh machine and always run as a module, so no PATH set-up is needed.
UV := $(PYTHON) -m uv
VENV_BIN := .venv/bin
DATASET ?= synthetic
TRIALS ?=

.PHONY: run test env check-prerequisites serve airflow-ui mlflow-ui lint format clean stack-up stack-down stack-status

env: ## Create .venv from the lock file (bootstrapping uv if needed)
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	@$(UV) sync --frozen --quiet
	@# A venv made before the lock dropped pyspark-client lost pyspark's shared files when sync removed it.
	@test -f $(VENV_BIN)/../lib/python3.11/site-packages/pyspark/find_spark_home.py || $(UV) sync --frozen --quiet --reinstall-package pyspark

run: env ## The main job end to end: data, features (Spark), training (Optuna + MLflow), scoring, via Airflow
	@$(VENV_BIN)/churnops run --dataset $(DATASET) $(if $(TRIALS),--trials $(TRIALS))

check-prerequisites: env ## Check (never install or start) what the tests need: PostgreSQL, promtool, Java 17
	@$(VENV_BIN)/python .ci/check-prerequisites

test: check-prerequisites ## The whole test suite (says what is missing first; .ci/run installs it on CI)
	@$(VENV_BIN)/ruff check .
	@$(VENV_BIN)/pytest $(PYTEST_ARGS)

serve: env ## Serve the champion on http://127.0.0.1:8000
	@$(VENV_BIN)/churnops serve --dataset $(DATASET)

airflow-ui: env ## The embedded Airflow with its UI on http://127.0.0.1:8080 (scheduler, dag-processor, api-server)
	@eval "$$($(VENV_BIN)/python -c 'from churnops.config import Settings; import shlex; [print(f"export {k}={shlex.quote(v)}") for k, v in Settings().airflow_environment().items()]')" && \
	  $(VENV_BIN)/airflow standalone

mlflow-ui: env ## The MLflow UI on http://127.0.0.1:5000 over the embedded tracking store
	@$(VENV_BIN)/mlflow ui --backend-store-uri "$$($(VENV_BIN)/python -c 'from churnops.config import Settings; print(Settings().tracking_uri)')" --port 5000

lint: env
	@$(VENV_BIN)/ruff check . && $(VENV_BIN)/ruff format --check .

format: env
	@$(VENV_BIN)/ruff check --fix . && $(VENV_BIN)/ruff format .

clean: ## Remove the embedded working folder (data, snapshots, MLflow, Airflow metadata)
	rm -rf .churnops

stack-up: check-prerequisites ## The full deployment natively (no Docker): PostgreSQL, Spark, MLflow, Airflow, API, exporter, Prometheus
	@$(VENV_BIN)/python scripts/native_stack.py up

stack-down: ## Stop the native stack (data is kept under .churnops/stack)
	@$(VENV_BIN)/python scripts/native_stack.py down

stack-status:
	@$(VENV_BIN)/python scripts/native_stack.py status
