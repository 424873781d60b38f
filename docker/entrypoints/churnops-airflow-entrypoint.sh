#!/usr/bin/env bash
# Entrypoint of every container of the platform image (Airflow components, Spark master/worker).
#
# Airflow's SimpleAuthManager reads user passwords from a JSON file that it opens read-write, so the Docker secret
# (a read-only mount) cannot be that file: the admin password secret is copied into a private file under
# AIRFLOW_HOME at start. Every other Airflow secret is read by Airflow itself through `*_CMD` variables.
set -euo pipefail

secrets_dir="${CHURNOPS_SECRETS_DIR:-/run/secrets}"
admin_password_file="$secrets_dir/airflow_admin_password"

if [[ -r "$admin_password_file" ]]; then
    passwords_file="${AIRFLOW_HOME:?AIRFLOW_HOME must be set}/simple_auth_manager_passwords.json"
    # json.dumps quotes the password whatever characters it holds; umask 077 in a subshell keeps the file private
    # without changing the mode of what Airflow itself creates later.
    (umask 077 && python - "$admin_password_file" "$passwords_file" "${CHURNOPS_AIRFLOW_ADMIN_USER:-admin}") <<'PY'
import json, pathlib, sys

secret, target, user = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
password = secret.read_text().strip()
if not password:
    sys.exit(f"airflow entrypoint: secret file {secret} is empty (run scripts/generate-secrets.sh)")
target.write_text(json.dumps({user: password}) + "\n")
PY
    export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$passwords_file"
fi

exec "$@"
