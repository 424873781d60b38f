#!/usr/bin/env bash
# Healthcheck of the `mlflow` container: a real API call, authenticated as the read-only account, with the compose
# Host header. `/health` answers even when the Host check or authentication would refuse every client.
# The credentials reach curl on its standard input (`--config -`), never on a command line.
set -euo pipefail

secrets_dir="${CHURNOPS_SECRETS_DIR:-/run/secrets}"
password="$(<"$secrets_dir/mlflow_reader_password")"
printf 'user = "%s:%s"\n' "${MLFLOW_READER_USERNAME:-churnops-reader}" "$password" |
    curl --fail --silent --output /dev/null --config - --header "Host: mlflow:${MLFLOW_PORT:-5000}" \
        "http://localhost:${MLFLOW_PORT:-5000}/api/2.0/mlflow/experiments/search?max_results=1"
