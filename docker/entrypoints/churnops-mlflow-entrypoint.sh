#!/usr/bin/env bash
# Starts the MLflow tracking server on PostgreSQL with MLflow's basic-auth app (compose's `mlflow` service and the
# native stack's).
#
# MLflow has no option to read the backend URI or the Flask secret key from a file, so the Docker secrets are read
# here and handed over in MLflow's own environment variables (not on the command line, where `ps` would show
# them). churnops-mlflow-auth.py writes the auth app's private configuration (its user store's URL) and sets the
# administrator's and the reader's passwords from their secret files before the server starts.
set -euo pipefail

secrets_dir="${CHURNOPS_SECRETS_DIR:-/run/secrets}"
for secret in mlflow_db_url mlflow_auth_db_url mlflow_admin_password mlflow_reader_password mlflow_flask_secret_key; do
    if [[ ! -s "$secrets_dir/$secret" ]]; then
        echo "mlflow: secret $secrets_dir/$secret is missing or empty; run scripts/generate-secrets.sh" >&2
        exit 1
    fi
done
MLFLOW_BACKEND_STORE_URI="$(<"$secrets_dir/mlflow_db_url")"
# Signs the CSRF tokens of the auth app's sign-up form; every worker must share it.
MLFLOW_FLASK_SERVER_SECRET_KEY="$(<"$secrets_dir/mlflow_flask_secret_key")"
MLFLOW_AUTH_CONFIG_PATH="${MLFLOW_AUTH_CONFIG_DIR:-${TMPDIR:-/tmp}/churnops-mlflow-auth}/basic_auth.ini"
# The platform runs no MLflow server jobs (GenAI evaluations, trace roll-ups); switched on, MLflow 3.17 starts a job
# runner with seven Huey consumer processes beside the server, a load a two-core machine does not need.
MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
export MLFLOW_BACKEND_STORE_URI MLFLOW_FLASK_SERVER_SECRET_KEY MLFLOW_AUTH_CONFIG_PATH MLFLOW_SERVER_ENABLE_JOB_EXECUTION

python "$(dirname "$0")/churnops-mlflow-auth.py" "$secrets_dir" "$MLFLOW_AUTH_CONFIG_PATH"

# The Host check rejects `Host: mlflow:5000` (the compose service name) unless it is allowed explicitly; `/health`
# is exempt from that check (and from authentication), so the healthcheck calls a real API route instead.
exec mlflow server \
    --app-name basic-auth \
    --host "${MLFLOW_HOST:-0.0.0.0}" \
    --port "${MLFLOW_PORT:-5000}" \
    --workers "${MLFLOW_WORKERS:-2}" \
    --serve-artifacts \
    --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-/var/lib/mlflow/artifacts}" \
    --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-mlflow:*,localhost:*,127.0.0.1:*}"
