#!/usr/bin/env bash
# One-shot initialisation of Airflow's metadata database (the `airflow-init` service); every other Airflow service
# waits for it with `condition: service_completed_successfully`.
set -euo pipefail

secrets_dir="${CHURNOPS_SECRETS_DIR:-/run/secrets}"
for secret in airflow_db_url airflow_fernet_key airflow_jwt_secret airflow_api_secret_key airflow_admin_password; do
    if [[ ! -s "$secrets_dir/$secret" ]]; then
        echo "airflow-init: secret $secrets_dir/$secret is missing or empty; run scripts/generate-secrets.sh" >&2
        exit 1
    fi
done

airflow db migrate
airflow version
