#!/usr/bin/env bash
# Starts the MLflow tracking server on PostgreSQL.
#
# MLflow has no option to read the backend URI from a file, so the Docker secret is read here and handed over in
# MLflow's own environment variable (not on the command line, where `ps` would show the password).
set -euo pipefail

secret="${CHURNOPS_SECRETS_DIR:-/run/secrets}/mlflow_db_url"
if [[ ! -s "$secret" ]]; then
    echo "mlflow: secret $secret is missing or empty; run scripts/generate-secrets.sh" >&2
    exit 1
fi
MLFLOW_BACKEND_STORE_URI="$(<"$secret")"
export MLFLOW_BACKEND_STORE_URI

# The Host check rejects `Host: mlflow:5000` (the compose service name) unless it is allowed explicitly; `/health`
# is exempt from that check, so the compose healthcheck calls a real API route instead.
exec mlflow server \
    --host 0.0.0.0 \
    --port "${MLFLOW_PORT:-5000}" \
    --workers "${MLFLOW_WORKERS:-2}" \
    --serve-artifacts \
    --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-/var/lib/mlflow/artifacts}" \
    --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-mlflow:*,localhost:*,127.0.0.1:*}"
